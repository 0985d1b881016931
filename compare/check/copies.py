"""The float64 copy of a net or a layer: the referee that tells float32 rounding from a wrong
derivative, and the function finite differences perturb.

One rule for every object (an ``MLP``, a ``Stack``, a user's layer, a layer wrapping another): a
deep copy in which every float32 NumPy array the object holds becomes a float64 array, and every
``dtype`` attribute that says float32 says float64. A net computing on torch tensors (``Stack.to``)
is copied to NumPy the same way: every tensor becomes a float64 NumPy array, every torch float dtype
NumPy's float64 (the referee computes in NumPy, whatever the net computes on). ``copy.deepcopy``
keeps the sharing of the original (a wrapper's ``params`` that are its inner layer's arrays stay one
array in the copy), and the float64 arrays take the place of the float32 ones wherever those were
referenced, so the copy reads the arrays that are perturbed. Arrays already float64 are copied as
they are.
"""

from __future__ import annotations

import copy

import numpy as np

_FLOAT32 = np.dtype(np.float32)


def _reachable(obj, seen: set, depth: int = 0):
    """Every object reachable from `obj` through attributes, dicts, lists and tuples (not into
    arrays, types, functions or modules)."""
    if id(obj) in seen or depth > 50 or isinstance(obj, (type, str, bytes, int, float, complex)):
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, np.ndarray):
        return
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    for child in children:
        yield from _reachable(child, seen, depth + 1)


def _tensor(a) -> bool:
    """A torch tensor (this module never imports torch: it knows one by its methods)."""
    return not isinstance(a, np.ndarray) and all(hasattr(a, m) for m in ("detach", "cpu", "numpy"))


def _float64(a) -> np.ndarray:
    return np.array(a.detach().cpu().numpy() if _tensor(a) else a, dtype=np.float64, order="C")


def _float_dtype(value) -> bool:
    """A float32 NumPy dtype (or scalar type), or any torch floating dtype."""
    if getattr(value, "is_floating_point", None) is True:  # torch.float32, torch.float64
        return True
    return isinstance(value, (np.dtype, type)) and np.dtype(value) == _FLOAT32


def float64_copy(obj):
    """A deep copy of `obj` computing in float64 NumPy (see the module docstring).

    Raises TypeError naming the object when it cannot be deep-copied."""
    originals = list(_reachable(obj, set()))
    memo = {id(a): _float64(a) for a in originals
            if (isinstance(a, np.ndarray) and a.dtype == _FLOAT32) or (_tensor(a) and a.is_floating_point())}
    memo[id(memo)] = originals  # deepcopy's convention: keeps the originals alive while it copies
    try:
        clone = copy.deepcopy(obj, memo)
    except Exception as e:
        raise TypeError(f"{type(obj).__name__} cannot be copied (copy.deepcopy: {type(e).__name__}: {e}); the check "
                        "runs every witness on a copy of it") from None
    for part in _reachable(clone, set()):
        try:
            if _float_dtype(vars(part).get("dtype")):
                part.dtype = np.dtype(np.float64)
        except (TypeError, AttributeError):  # no __dict__, not a dtype, or read-only
            pass
    return clone
