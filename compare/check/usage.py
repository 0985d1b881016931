"""What a user hands the check API, validated: one clear TypeError or ValueError line for each way
to misuse it, raised before any witness runs (or as soon as a witness shows it)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import numpy as np

from compare.check import precision

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_float(a: np.ndarray) -> bool:
    """Differentiated (float32, float64) or passed unchanged (integer, bool)."""
    return a.dtype in FLOATS


def input_array(v, label: str) -> np.ndarray:
    """`v` as a NumPy array the check can take: finite float32/float64 (differentiated), or integer
    or bool (ids, masks, labels: passed unchanged). Not copied."""
    if isinstance(v, (float, np.floating)):
        v = np.asarray(v)
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{label} is a {type(v).__name__}; expected a NumPy array (float32 or float64 to be "
                        "differentiated, integer or bool to pass unchanged)")
    if not (is_float(v) or np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
        raise TypeError(f"{label} has dtype {v.dtype}; expected float32 or float64 (differentiated), or an integer "
                        "or bool array (passed unchanged)")
    if is_float(v):
        bad = ~np.isfinite(v)
        if bad.any():
            idx = tuple(int(i) for i in np.unravel_index(int(bad.argmax()), v.shape))
            raise ValueError(f"{label} holds {int(bad.sum())} non-finite value{'s' * (int(bad.sum()) > 1)} "
                             f"(first at index {idx}: {v[idx]}); expected finite values (finite differences "
                             "cannot move an infinity: a mask of −inf goes in as a bool array, filled inside fn)")
    return v


def outputs(y, who: str, precise: bool, expected: int | None = None) -> list[np.ndarray]:
    """A forward's result as a list of float array copies (the next call may reuse its buffers): one
    array, or a tuple or list of them; float64 throughout for the float64 referee."""
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    if not ys:
        raise TypeError(f"{who} returned an empty {type(y).__name__}; expected one NumPy array or a tuple of them")
    out = []
    for i, v in enumerate(ys):
        which = who if len(ys) == 1 else f"{who}'s output {i}"
        if isinstance(v, (float, np.floating)):
            v = np.asarray(v)
        if not isinstance(v, np.ndarray) or not is_float(v):
            what = f"an array of dtype {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
            raise TypeError(f"{which} is {what}; expected a NumPy array of float32 or float64")
        if precise and v.dtype != np.float64:
            raise TypeError(f"{which} is {v.dtype} for float64 inputs and parameters; the float64 referee needs the "
                            "computation to follow its inputs' dtype")
        out.append(np.array(v))
    if expected is not None and len(out) != expected:
        raise ValueError(f"{who} returned {len(out)} outputs, then {expected}; expected the same every call")
    return out


def gradient(d, shape: tuple, dtype, what: str, expected: str) -> np.ndarray:
    """A copy of one returned gradient, checked to be a float array of `shape` and of its tensor's
    `dtype`. Another precision is refused, not measured: a float32 gradient of a float64 tensor
    fails the float64 bounds by its rounding alone (~1e-8), which says nothing of the derivation,
    and a float64 one of a float32 tensor is a computation the float32 run did not make."""
    if isinstance(d, (float, np.floating)):
        d = np.asarray(d)
    if not isinstance(d, np.ndarray) or not is_float(d):
        got = f"an array of dtype {d.dtype}" if isinstance(d, np.ndarray) else type(d).__name__
        raise TypeError(f"{what} is {got}; expected a NumPy array of float32 or float64")
    if d.shape != tuple(shape):
        raise ValueError(f"{what} has shape {d.shape}; expected {tuple(shape)} ({expected})")
    if d.dtype != dtype:
        fix = precision.dtype_fix(str(d.dtype), str(np.dtype(dtype)), ".astype(x.dtype)")
        raise TypeError(f"{what} is {d.dtype} for a {np.dtype(dtype)} tensor; a gradient must have its tensor's dtype "
                        f"({fix})")
    return np.array(d)


def per_input(result, n: int, who: str, names: list[str], what: str) -> list:
    """A backward's or vjp's result as one entry per input: a tuple or list of n, or (one input)
    the array alone."""
    if not isinstance(result, (tuple, list)):
        if n == 1:
            return [result]
        if not isinstance(result, np.ndarray):
            raise TypeError(f"{who} returned {type(result).__name__}; expected one {what} per input "
                            f"({', '.join(names)}): a tuple, or the array alone for one input")
        result = [result]
    listed = ", ".join(names)
    if len(result) != n:
        raise ValueError(f"{who} returned {len(result)} {what}{'s' * (len(result) != 1)} for {n} "
                         f"input{'s' * (n != 1)} ({listed}); expected one per input, in order (None for an integer "
                         "or bool input)")
    return list(result)


def check_protocol(layer) -> None:
    """The layer protocol: params (a dict), forward, backward; buffers and torch_names dicts if any."""
    missing = [a for a in ("params", "forward", "backward") if not hasattr(layer, a)]
    if missing:
        raise TypeError(f"check_layer expects a layer with .params (dict name -> array), .forward(*x), "
                        f".backward(*dy) and .grads; {type(layer).__name__} has no "
                        f"{', '.join('.' + a for a in missing)}")
    if not (callable(layer.forward) and callable(layer.backward)):
        raise TypeError("layer.forward and layer.backward must be methods")
    for attr in ("params", "buffers", "torch_names"):
        value = getattr(layer, attr, None)
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"layer.{attr} must be a dict (name -> {'array' if attr != 'torch_names' else 'name'}); "
                            f"got {type(value).__name__}")


def positional_names(f, n: int, skip: int = 0) -> list[str]:
    """f's positional parameter names after the first `skip` (a vjp's g), the first n of them;
    x (one) or x0, x1, ... (several) where the signature does not say (*args)."""
    try:
        params = [p.name for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][skip:]
    except (TypeError, ValueError):
        params = []
    if len(params) >= n:
        return params[:n]
    return ["x"] if n == 1 else [f"x{i}" for i in range(n)]


def callable_name(f) -> str:
    """What a report calls a function: its qualified name (``Softplus.forward``, ``softplus``), a
    partial as partial(name), a lambda with where it was written, a callable object by its class."""
    if isinstance(f, functools.partial):
        return f"partial({callable_name(f.func)})"
    module = getattr(f, "__module__", None) or ""
    if module in ("torch", "numpy", "torch.nn.functional") and getattr(f, "__name__", None):
        return f"{module}.{f.__name__}"
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None)
    if name is None:
        return type(f).__name__
    name = name.replace("<locals>.", "")
    if name.endswith("<lambda>"):
        code = getattr(f, "__code__", None)
        if code is not None:
            name += f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
    return name


def check_arity(f, n: int, who: str, what: str) -> None:
    """ValueError when f cannot be called with n positional arguments (`what`: what they are)."""
    try:
        inspect.signature(f).bind(*range(n))
    except TypeError:
        raise ValueError(f"{who} cannot take {n} positional argument{'s' * (n != 1)} ({what})") from None
    except ValueError:  # no signature to read (a builtin): the call itself will tell
        pass
