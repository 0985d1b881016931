"""The user's side on tensors, in any precision: torch tensors (CPU or CUDA), a
``torch.autograd.Function``, a ``jax.custom_vjp`` function, NumPy float16.

The witnesses see NumPy float64 arrays, whatever the user computes on: every float input is
taken once, exactly, as a float64 array of its rounded values (``pristine``), and each run
converts it back to the user's kind, dtype and device (``Adapter``): the very rounded values in
the user's dtype for the low-precision witnesses (manual, torch), float64 copies of them for the
referee (manual64, torch64, fd, dir). Upstream gradients are drawn in float64 and rounded to the
output's precision before any witness sees them, so every witness differentiates at one point
with one g. On CUDA the tensors stay on the device for every run (torch64 too, where the device
has float64); only results come back, converted once.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from compare.check import precision, tolerances, usage
from compare.check.measure import measure
from compare.check.subjects import FunctionSubject, Referee, Run, _flat


def _torch():
    import torch

    return torch


def is_tensor(v) -> bool:
    """A torch tensor, a JAX array or a NumPy float16 array: what this module takes instead of
    ``compare.check.subjects``."""
    if isinstance(v, np.ndarray):
        return v.dtype == np.float16
    kind = type(v).__module__ or ""
    return kind.startswith("torch") or kind.startswith("jax") or kind.startswith("jaxlib")


def is_autograd_function(f) -> bool:
    """A ``torch.autograd.Function`` subclass (handed as the class; ``apply`` runs its backward)."""
    if not inspect.isclass(f):
        return False
    return issubclass(f, _torch().autograd.Function)


def is_custom_vjp(f) -> bool:
    """A ``jax.custom_vjp`` function."""
    return type(f).__name__ == "custom_vjp" and (type(f).__module__ or "").startswith("jax")


class Adapter:
    """One user tensor's kind ("torch", "jax" or "numpy"), precision and device; converts float64
    arrays to it and back."""

    def __init__(self, value, label: str):
        self.kind = "numpy" if isinstance(value, np.ndarray) else ("torch" if (type(value).__module__ or "")
                                                                  .startswith("torch") else "jax")
        if self.kind == "torch" and not isinstance(value, _torch().Tensor):
            raise TypeError(f"{label} is a {type(value).__name__}; expected a tensor")
        self.precision = precision.name_of(value.dtype)
        self.device = getattr(value, "device", None) if self.kind == "torch" else None
        self.dtype = value.dtype

    def array(self, value, label: str) -> np.ndarray:
        """The value as a NumPy array: float ones exactly in float64, others as they are."""
        if self.kind == "torch":
            value = value.detach()
            a = value.to("cpu", _torch().float64).numpy() if self.precision else value.cpu().numpy()
        else:
            a = np.asarray(value, np.float64) if self.precision else np.asarray(value)
        if not (self.precision or np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise TypeError(f"{label} has dtype {self.dtype}; expected float64, float32, float16 or bfloat16 "
                            "(differentiated), or an integer or bool tensor (passed unchanged)")
        return usage.input_array(np.array(a, order="C"), label)

    def user(self, a: np.ndarray, precise: bool, grad: bool = False):
        """A float64 array as the user's kind in the user's dtype (float64 if `precise`), fresh."""
        name = "float64" if precise or not self.precision else self.precision
        if self.kind == "torch":
            torch = _torch()
            dtype = getattr(torch, name) if self.precision else None
            t = torch.tensor(a, dtype=dtype, device=self.device)
            return t.requires_grad_(grad)
        if self.kind == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a, getattr(jnp, name)) if self.precision else jnp.asarray(a)
        return np.array(a, dtype=name if self.precision else a.dtype)


def to_numpy(v, who: str, precise: bool) -> np.ndarray:
    """One result of the user's code as a float64 NumPy array (exact)."""
    if isinstance(v, (float, np.floating)) or (isinstance(v, np.ndarray) and v.dtype.kind == "f"):
        dtype = np.asarray(v).dtype
    elif hasattr(v, "dtype") and hasattr(v, "shape"):
        dtype = v.dtype
    else:
        raise TypeError(f"{who} is {type(v).__name__}; expected a tensor (or array) of floats")
    name = precision.name_of(dtype)
    if not name:
        raise TypeError(f"{who} has dtype {dtype}; expected a float tensor")
    if precise and name != "float64":
        raise TypeError(f"{who} is {name} for float64 inputs; the float64 referee needs the computation to follow "
                        "its inputs' dtype")
    if hasattr(v, "detach"):
        return v.detach().to("cpu", _torch().float64).numpy().copy()
    return np.array(v, dtype=np.float64)


def gradient_array(d, expected: str | None, what: str) -> np.ndarray:
    """One returned gradient as a float64 NumPy array (exact), refused in one line when its precision
    is not its tensor's (`expected`; None: any), as ``usage.gradient`` refuses it on NumPy: a float32 gradient of
    a float64 tensor fails the float64 bounds by its rounding alone, and a gradient in more
    precision than its tensor is a computation the run in that precision did not make."""
    a = to_numpy(d, what, False)
    got = precision.name_of(d.dtype) if hasattr(d, "dtype") else "float64"
    if expected is not None and got != expected:
        cast = ".to(x.dtype)" if hasattr(d, "detach") else ".astype(x.dtype)"
        raise TypeError(f"{what} is {got} for a {expected} tensor; a gradient must have its tensor's dtype "
                        f"({precision.dtype_fix(got, expected, cast)})")
    return a


def results(y, who: str, precise: bool, expected=None) -> list[np.ndarray]:
    """A forward's result (one tensor or a tuple) as float64 arrays."""
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    out = [to_numpy(v, who if len(ys) == 1 else f"{who}'s output {i}", precise) for i, v in enumerate(ys)]
    if expected is not None and len(out) != expected:
        raise ValueError(f"{who} returned {len(out)} outputs, then {expected}; expected the same every call")
    return out


def changed(before, after) -> bool:
    """Whether a call changed a tensor's values (what user code wrote into its argument)."""
    def values(v):
        return v.detach().to("cpu", _torch().float64).numpy() if hasattr(v, "detach") else np.asarray(v, np.float64)

    return not np.array_equal(values(before), values(after), equal_nan=True)


def below_float64(subject) -> str:
    """Why the user's code cannot be judged in float64 ("" where it can): it fails or returns another
    dtype when handed float64 (a half-only kernel), or its float64 outputs are off the truth by more
    than float64 rounding yet less than the bound of its own precision (it computes in float32
    whatever it is handed: a ``.float()`` inside). A larger difference is left to the check to
    report: the forward computes another function."""
    if subject.precision == "float64":
        return ""
    try:
        ours = subject.forward(True)
    except Exception as e:
        return f"your code does not run in float64 ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    theirs = subject.torch(True, [np.zeros(y.shape) for y in ours]).outputs
    rel, elem = precision.bounds(subject.precision, 0.0, 0.0)
    for y, t in zip(ours, theirs):
        exact = measure(y, t, 0, "output", tolerances.FLOAT64_REL, tolerances.FLOAT64_ELEM)
        if not exact.ok and exact.rel_err <= rel and exact.elem_rel <= elem:
            return (f"your code computes below float64 when handed float64 (its float64 output is {exact.rel_err:.1g} "
                    "from the truth; a .float() inside?)")
    return ""


class TensorFunctionSubject(FunctionSubject):
    """check_function's subject on tensors: fn and vjp(g, *inputs) on tensors, a
    ``torch.autograd.Function`` (vjp None: its backward), or a ``jax.custom_vjp`` (vjp None)."""

    def __init__(self, fn, vjp, torch_fn, inputs, name=None):
        self.style = "autograd.Function" if is_autograd_function(fn) else ("custom_vjp" if is_custom_vjp(fn)
                                                                             else "vjp")
        if self.style != "vjp" and vjp is not None:
            raise TypeError(f"fn is a {self.style}, whose own backward is checked; give vjp=None")
        for f, what in ((fn, "fn"), (torch_fn, "torch_fn")) + (((vjp, "vjp"),) if self.style == "vjp" else ()):
            if not callable(f):
                raise TypeError(f"{what} must be callable; got {type(f).__name__}"
                                + ("" if what != "vjp" else " (vjp=None only for a torch.autograd.Function or a "
                                   "jax.custom_vjp function)"))
        if not inputs:
            raise TypeError("check_function(fn, vjp, torch_fn, *inputs) needs at least one input tensor")
        self.fn, self.vjp, self.torch_fn, self.output_map, self.params = fn, vjp, torch_fn, None, {}
        call = fn.forward if self.style == "autograd.Function" else fn
        names = usage.positional_names(call, len(inputs), skip=int(self.style == "autograd.Function"))
        self.input_labels = [f"input {n}" for n in names]
        self.adapters = [Adapter(v, lab) for v, lab in zip(inputs, self.input_labels)]
        self.pristine = [a.array(v, lab) for a, v, lab in zip(self.adapters, inputs, self.input_labels)]
        self.differentiable = [bool(a.precision) for a in self.adapters]
        if not any(self.differentiable):
            raise TypeError("check_function needs at least one float input to differentiate; integer and bool "
                            "inputs pass unchanged")
        self.out_precisions = None
        self.counterpart_name = "torch_fn"
        self.title = name or (f"check_function({usage.callable_name(fn)}"
                              f"{'' if vjp is None else ', ' + usage.callable_name(vjp)}, "
                              f"{usage.callable_name(torch_fn)})")
        self.names = [lab.removeprefix("input ") for lab in self.input_labels]

    # ------------------------------------------------------------------ precisions

    @property
    def float32(self) -> bool:
        """Not float64: the low-precision witnesses are judged against the float64 referee."""
        return self.precision != "float64"

    @property
    def precision(self) -> str:
        return precision.lowest(a.precision for a, d in zip(self.adapters, self.differentiable) if d)

    def rounded(self, i: int, g: np.ndarray) -> np.ndarray:
        return precision.rounded(np.asarray(g, np.float64), self.out_precisions[i])

    @functools.cached_property
    def half_only(self) -> str:
        """Why the code runs in no float64 (``below_float64``), or ""."""
        return below_float64(self)

    # ------------------------------------------------------------------ the hand-written side

    def user_inputs(self, precise: bool, grad: bool = False) -> list:
        return [ad.user(a, precise, grad and d) for ad, a, d in zip(self.adapters, self.pristine, self.differentiable)]

    def _call(self, xs):
        if self.style == "autograd.Function":
            return self.fn.apply(*xs)
        return self.fn(*xs)

    def forward(self, precise: bool) -> list[np.ndarray]:
        with self._x64(precise):
            ys = self._call(self.user_inputs(precise))
        if self.out_precisions is None:
            outs = ys if isinstance(ys, (tuple, list)) else [ys]
            self.out_precisions = [precision.name_of(getattr(y, "dtype", None)) or "float64" for y in outs]
        return results(ys, "fn", precise)

    def _x64(self, precise: bool):
        return _x64(precise and self.adapters[0].kind == "jax")

    def manual(self, precise: bool, gs: list[np.ndarray]) -> Run:
        with self._x64(precise):
            return self._manual(precise, gs)

    def _manual(self, precise: bool, gs: list[np.ndarray]) -> Run:
        xs = self.user_inputs(precise, grad=self.style == "autograd.Function")
        before = [x.clone() if hasattr(x, "clone") else np.array(x) for x in xs]
        labels = ["g" if len(gs) == 1 else f"g {i}" for i in range(len(gs))]
        g_user = [upstream(self.adapters, g, "float64" if precise else self.out_precisions[i])
                  for i, g in enumerate(gs)]
        g_before = [g.clone() if hasattr(g, "clone") else np.array(g) for g in g_user]
        if self.style == "autograd.Function":
            ys, dxs = autograd_function_vjp(self.fn, xs, g_user, self.differentiable)
        elif self.style == "custom_vjp":
            ys, dxs = custom_vjp(self.fn, xs, g_user, self.differentiable)
        else:
            ys = self.fn(*xs)
            usage.check_arity(self.vjp, 1 + len(xs), "vjp", f"g, then one per input: {', '.join(self.names)}")
            dxs = usage.per_input(self.vjp(g_user[0] if len(g_user) == 1 else tuple(g_user), *xs), len(xs), "vjp",
                                  self.names, "gradient")
        outputs = results(ys, "fn", precise, len(gs))
        who = {"vjp": "vjp", "autograd.Function": "backward", "custom_vjp": "the custom vjp"}[self.style]
        notes = [f"{who} wrote into {lab}" for lab, b, a in zip(labels, g_before, g_user) if changed(b, a)]
        notes += [f"the function wrote into {lab}" for lab, b, a, d in zip(self.input_labels, before, xs,
                                                                          self.differentiable) if changed(b, a)]
        grads = {lab: self._gradient(d, a.shape, f"{who}'s gradient for {lab}", "float64" if precise else ad.precision)
                 for lab, d, a, ad, diff in zip(self.input_labels, dxs, self.pristine, self.adapters, self.differentiable)
                 if diff}
        return Run(outputs, grads, {}, notes)

    def _gradient(self, d, shape, what, expected: str) -> np.ndarray:
        if d is None:
            return np.zeros(shape)
        a = gradient_array(d, expected, what)
        if a.shape != tuple(shape):
            raise ValueError(f"{what} has shape {a.shape}; expected {tuple(shape)} (the shape of its input)")
        return a

    # ------------------------------------------------------------------ torch and the referee

    def torch(self, precise: bool, gs: list[np.ndarray], replace: dict | None = None) -> Run:
        """Autograd on the counterpart, on torch tensors of each input's precision (float64 if
        `precise`), on the inputs' device; `replace` ({label: array}) runs those inputs with other
        values (a diagnosis's "what if")."""
        torch = _torch()
        replace = replace or {}
        device = next((ad.device for ad in self.adapters if ad.kind == "torch"), None)
        xs = [torch_tensor(ad, replace.get(lab, a), precise, d, device)
              for ad, lab, a, d in zip(self.adapters, self.input_labels, self.pristine, self.differentiable)]
        ys = self.torch_outputs(self.torch_fn(*xs))
        self._check_torch_outputs(ys, [g.shape for g in gs])
        pairs = [(y, torch.tensor(np.asarray(g, np.float64), device=y.device).to(y.dtype)) for y, g in zip(ys, gs)
                 if y.requires_grad]
        if pairs:
            torch.autograd.backward([y for y, _ in pairs], [g for _, g in pairs])
        grads = {lab: (to_numpy(x.grad, lab, False) if x.grad is not None else np.zeros(x.shape))
                 for lab, x, d in zip(self.input_labels, xs, self.differentiable) if d}
        return Run([to_numpy(y, "torch_fn", False) for y in ys], grads, {})

    def referee(self) -> Referee:
        inputs = [np.array(a) for a in self.pristine]
        tensors = {lab: a for lab, a, d in zip(self.input_labels, inputs, self.differentiable) if d}

        def evaluate():
            with self._x64(True):
                return _flat(results(self._call([ad.user(a, True) for ad, a in zip(self.adapters, inputs)]), "fn",
                                     True))

        return Referee(tensors, evaluate)


def upstream(adapters, g, name: str):
    """The upstream gradient g as the user's kind of array (of the first differentiated input's
    adapter: torch on its device, jax, NumPy), in precision `name`."""
    adapter = next(ad for ad in adapters if ad.precision)
    if adapter.kind == "torch":
        torch = _torch()
        return torch.tensor(np.asarray(g, np.float64), dtype=getattr(torch, name), device=adapter.device)
    if adapter.kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(np.asarray(g, np.float64), getattr(jnp, name))
    return np.asarray(g, np.float64).astype(name)


def autograd_function_vjp(fn, xs, gs, differentiable):
    """(outputs, a gradient or None per input) of a ``torch.autograd.Function`` run under autograd,
    which runs its own backward."""
    torch = _torch()
    ys = fn.apply(*xs)
    outs = list(ys) if isinstance(ys, (tuple, list)) else [ys]
    leaves = [x for x, d in zip(xs, differentiable) if d]
    pairs = [(y, g) for y, g in zip(outs, gs) if y.requires_grad]
    found = torch.autograd.grad([y for y, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)
    it = iter(found)
    return ys, [next(it) if d else None for d in differentiable]


def custom_vjp(fn, xs, gs, differentiable):
    """(outputs, a gradient or None per input) of a ``jax.custom_vjp`` function through jax.vjp,
    which runs its own backward rule."""
    import jax

    diff = [i for i, d in enumerate(differentiable) if d]

    def f(*args):
        full = list(xs)
        for i, a in zip(diff, args):
            full[i] = a
        return fn(*full)

    ys, pullback = jax.vjp(f, *[xs[i] for i in diff])
    cotangent = tuple(gs) if isinstance(ys, (tuple, list)) else gs[0]
    found = iter(pullback(cotangent))
    return ys, [next(found) if d else None for d in differentiable]


def torch_tensor(adapter: Adapter, a: np.ndarray, precise: bool, grad: bool, device):
    """The counterpart's input: a torch tensor of the input's precision (float64 if `precise`)."""
    torch = _torch()
    if not adapter.precision:
        return torch.tensor(a, device=device)
    name = "float64" if precise else adapter.precision
    return torch.tensor(a, dtype=getattr(torch, name), device=device).requires_grad_(grad)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _x64(on: bool):
    """JAX's float64 for the referee's runs, for the duration of a call only."""
    if not on:
        return _nothing()
    import jax

    return jax.enable_x64(True)
