"""Check your own derivation: a hand-written backward pass against autograd and finite differences.

    report = check_function(fn, vjp, torch_fn, *inputs)   # a NumPy function and its VJP
    report = check_layer(layer, module, x)                # a layer with the protocol below
    report.ok;  print(report);  report.assert_ok()

A layer has ``params`` (dict name -> array), ``grads`` (the same names, filled by ``backward``),
``forward(x) -> y`` (keeps its base point) and ``backward(dy) -> dx``; optionally ``torch_names``
(its parameter names -> the module's). ``forward`` must read its parameters from ``params`` (the
same array objects): the finite differences perturb them in place, on a float64 copy of the layer.

Witnesses of one vector–Jacobian product Jᵀg (g: a seeded random upstream gradient of y's shape),
each tensor's compared pair by pair by ``compare.agreement.measure``, the relative error
‖a − b‖/max(‖a‖, ‖b‖) and the elementwise error max|a − b|/max(max|a|, max|b|) each bounded:

- manual: the hand-written pass, in the inputs' dtype;  torch: autograd on the torch counterpart,
  same values, same dtype;
- manual64, torch64 (float32 inputs only): the same two run in float64, the referee that tells
  float32 rounding from a wrong derivative. The derivation is judged in float64 (manual64 against
  torch64, fd and dir); the float32 run is held to the float64 one within float32 rounding;
- fd: central differences (⟨g, f(θ + h·eₖ)⟩ − ⟨g, f(θ − h·eₖ)⟩)/2h in float64, coordinate by
  coordinate: all of a tensor's coordinates while that is cheap, a seeded sample above;
- dir: the same along a seeded random direction u (N(0, 1) entries) against ⟨Jᵀg, u⟩: two forward
  passes whatever the size, so it still sees a wrong VJP of a tensor too large for fd.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from collections.abc import Mapping

import numpy as np

from compare import tolerances
from compare.agreement import Agreement, measure
from compare.options import format_table

WITNESSES = {
    "manual": "the hand-written pass (NumPy), in the inputs' dtype",
    "torch": "PyTorch autograd on the torch counterpart, same values and dtype",
    "manual64": "the hand-written pass run in float64 (float32 inputs: the referee)",
    "torch64": "autograd run in float64 (float32 inputs)",
    "fd": "central finite differences of <g, f> in float64, coordinate by coordinate",
    "dir": "the central difference of <g, f> in float64 along a random direction u, against <Jᵀg, u>",
}
COLUMNS = [("manual", "torch"), ("manual", "manual64"), ("manual64", "torch64"), ("manual", "fd"),
           ("torch", "fd"), ("manual64", "fd"), ("torch64", "fd"), ("manual", "dir"), ("torch", "dir"),
           ("manual64", "dir"), ("torch64", "dir")]
# fd costs two forward passes per coordinate. A tensor gets every coordinate while 2·size forward
# passes stay within FD_BUDGET evaluated elements (a forward pass counted as the size of its
# output and of every tensor it reads), else a seeded sample of at most FD_SAMPLES coordinates,
# else (fewer than MIN_SAMPLES affordable: ~1M-element tensors) none: dir stands in.
FD_SAMPLES = 256
FD_BUDGET = 10_000_000
MIN_SAMPLES = 8
EPS64 = float(np.finfo(np.float64).eps)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One tensor as two witnesses (`a`, `b`) see it, measured by ``compare.agreement.measure``."""

    tensor: str  # "output", "input x", "parameter W"
    shape: tuple  # the tensor's shape
    a: str
    b: str
    agreement: Agreement
    index: tuple  # where the greatest difference is, in the tensor (() along a direction)
    differ: int  # compared elements farther apart than elem_allowed × the greatest magnitude
    compared: int  # elements compared: all, the fd coordinates, or 1 (dir)

    @property
    def ok(self) -> bool:
        return self.agreement.ok

    def describe(self) -> str:
        """The disagreement in words: where, which witnesses, by how much, what was allowed."""
        g, where = self.agreement, f"{self.tensor} {self.shape}: {self.a} vs {self.b}"
        if not (math.isfinite(g.a_value) and math.isfinite(g.b_value)):
            return (f"{where}: non-finite value at index {self.index} "
                    f"({self.a} {g.a_value:.6g}, {self.b} {g.b_value:.6g})")
        if self.b == "dir":
            return (f"{where}: along a random direction u, <{self.a}, u> = {g.a_value:.6g} but the central "
                    f"difference gives {g.b_value:.6g}; relative error {g.rel_err:.3g} > allowed {g.allowed:.2g}")
        rel = (f"relative error {g.rel_err:.3g} {'>' if 'relative error' in g.failed else '<='} "
               f"allowed {g.allowed:.2g}")
        elem = (f"elementwise error (greatest difference / greatest magnitude) {g.elem_rel:.3g} "
                f"{'>' if 'elementwise error' in g.failed else '<='} allowed {g.elem_allowed:.2g}")
        verdicts = f"{elem}, {rel}" if g.failed == ["elementwise error"] else f"{rel}, {elem}"
        what = "coordinates" if self.b == "fd" else "elements"
        return (f"{where}: {verdicts}; {self.differ} of {self.compared} {what} differ by more than "
                f"{g.elem_allowed:.2g} x the greatest magnitude {g.peak:.3g}; "
                f"greatest absolute difference {g.max_abs:.3g} at index {self.index} "
                f"({self.a} {g.a_value:.6g}, {self.b} {g.b_value:.6g})")


class DerivationError(AssertionError):
    """A hand-written derivative disagrees with a witness; ``report`` holds every comparison."""

    def __init__(self, report: Report):
        self.report = report
        first, more = report.failures[0], len(report.failures) - 1
        head = f"derivative disagrees: {first.tensor} ({first.a} vs {first.b})"
        head += f" and {more} more comparison{'s' * (more > 1)}" if more else ""
        lines = [head, *("  " + c.describe() for c in report.failures), "", report.table()]
        super().__init__("\n".join(lines))


class Report:
    """What check_function / check_layer found: ``ok``, ``failures``, ``str()`` (the table of
    relative errors, one row per tensor, one column per witness pair) and ``assert_ok()``."""

    def __init__(self, title: str, comparisons: list[Comparison], notes: list[str]):
        self.title, self.comparisons, self.notes = title, comparisons, notes

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        """Relative error per tensor (rows) and witness pair (columns); failures marked, '-' where
        a pair does not apply."""
        pairs = [p for p in COLUMNS if any((c.a, c.b) == p for c in self.comparisons)]
        cells = {(c.tensor, (c.a, c.b)): c for c in self.comparisons}
        rows = [["tensor", "shape", *(f"{a}~{b}" for a, b in pairs)]]
        for tensor, shape in dict.fromkeys((c.tensor, c.shape) for c in self.comparisons):
            row = [tensor, "x".join(map(str, shape)) or "()"]
            for pair in pairs:
                c = cells.get((tensor, pair))
                row.append("-" if c is None else _cell(c.agreement))
            rows.append(row)
        return format_table(rows, align="l")

    def __str__(self) -> str:
        n = len(self.comparisons)
        verdict = (f"PASS: all {n} comparisons agree" if self.ok
                   else f"FAIL: {len(self.failures)} of {n} comparisons disagree")
        return "\n".join([self.title, self.table(), *self.notes, verdict,
                          *("  " + c.describe() for c in self.failures)])

    def __repr__(self) -> str:
        return f"<Report {'ok' if self.ok else 'FAILED'}: {self.title}>"

    def assert_ok(self) -> Report:
        """Raise DerivationError (an AssertionError) naming every failing comparison; pytest hides
        this frame, so the failure reads as the caller's assertion."""
        __tracebackhide__ = True
        if not self.ok:
            raise DerivationError(self)
        return self


def _cell(g: Agreement) -> str:
    """The relative error, marked when it fails; the elementwise error where only that fails."""
    if g.failed == ["elementwise error"]:
        return f"{g.elem_rel:.1e} FAIL (elementwise)"
    return f"{g.rel_err:.1e}" + (" FAIL" if g.failed else "")


# ------------------------------------------------------------------------------ the public API


def check_function(fn, vjp, torch_fn, *inputs, seed: int = 0, h: float = tolerances.FD_STEP,
                   fd_samples: int = FD_SAMPLES, fd_budget: int = FD_BUDGET) -> Report:
    """Check a hand-derived vector–Jacobian product against autograd and finite differences.

    Args:
        fn: fn(*inputs) -> y, one NumPy array.
        vjp: vjp(g, *inputs) -> Jᵀg, one gradient per input of its input's shape: a tuple, or the
            array alone for one input. g has y's shape and dtype.
        torch_fn: the same function on torch tensors (e.g. ``torch.nn.functional.softplus``).
        inputs: NumPy arrays of float32 or float64, finite (float32 gets the float64 referee).
        seed: draws g, the directions u and the sampled fd coordinates.
        h: the finite-difference step.
        fd_samples, fd_budget: how many coordinates fd may take (see FD_BUDGET).
    Returns:
        a Report. Bad use (a wrong type, count or shape) raises TypeError or ValueError instead.
    """
    return _check(_FunctionSubject(fn, vjp, torch_fn, inputs), seed, h, fd_samples, fd_budget)


def check_layer(layer, module, x, seed: int = 0, h: float = tolerances.FD_STEP,
                fd_samples: int = FD_SAMPLES, fd_budget: int = FD_BUDGET) -> Report:
    """Check a layer's hand-written backward (its dx and every parameter gradient) against a torch
    module: the layer's values are copied into (a copy of) the module, then y, dx and each
    parameter gradient are compared against autograd and finite differences.

    Args:
        layer: the layer protocol (module docstring); ``torch_names`` maps its names to torch's.
        module: a ``torch.nn.Module`` whose ``named_parameters()`` carry the same names (after
            ``torch_names``) and shapes; the caller's module is not changed.
        x: the input, a finite NumPy array of float32 or float64.
        seed, h, fd_samples, fd_budget: as for ``check_function``.
    Returns:
        a Report. Bad use (a missing or extra parameter, a shape that differs, a wrong type)
        raises TypeError or ValueError instead.
    """
    return _check(_LayerSubject(layer, module, x), seed, h, fd_samples, fd_budget)


# ------------------------------------------------------------------------------ the witnesses


def _check(subject, seed: int, h: float, fd_samples: int, fd_budget: int) -> Report:
    """Every witness of every tensor of `subject`, compared pair by pair."""
    rng = np.random.default_rng(seed)
    g, results = _analytic(subject, rng)
    comparisons = _compare_analytic(subject, results)
    numeric, notes = _compare_numeric(subject, g, results, rng, h, fd_samples, fd_budget)
    if subject.float32:
        notes.append(f"float32: manual and torch are held to max({tolerances.FLOAT32_REL:g}, "
                     f"{tolerances.NOISE_FACTOR} x torch's own distance from torch64) per tensor; "
                     "the derivation is judged in float64 (manual64, torch64, fd, dir)")
    title = f"{subject.title}: {'float32' if subject.float32 else 'float64'}, seed {seed}, g of shape {g.shape}"
    return Report(title, comparisons + numeric, notes)


def _compare_numeric(subject, g, results, rng, h, fd_samples, fd_budget):
    """fd and dir for each tensor, against the float64 analytic witnesses. Returns (comparisons,
    notes: which fd coordinates were taken, and any tensor whose move left the output unchanged)."""
    exact = ("manual64", "torch64") if subject.float32 else ("manual", "torch")
    cost = g.size + sum(t.size for t in subject.tensors64.values())
    out, coverage, notes, skipped = [], [], [], False
    for label, t in subject.tensors64.items():
        grads = {w: results[w][1][label] for w in exact}
        u = rng.standard_normal(t.shape)
        coords = _coordinates(t.size, cost, fd_samples, fd_budget, rng)
        if coords is not None:
            values, bounds = _finite_differences(subject, t, g, coords, h)
            out += [_fd_pair(label, t.shape, w, grads[w], values, bounds, coords) for w in exact]
        coverage.append(f"{label} {'-' if coords is None else len(coords)}/{t.size}")
        skipped |= coords is None
        value, bound = _directional(subject, t, g, u, h)
        out += [_dir_pair(label, t.shape, w, grads[w], u, value, bound) for w in exact]
        if value == 0 and bound == 0 and any(d.any() for d in grads.values()):
            notes.append(f"note: moving {label} did not change the output at all; forward must read it "
                         "from the array checked (a parameter: the array in layer.params)")
    head = f"fd coordinates: {', '.join(coverage)}"
    return out, [head + (" ('-': too large for per-coordinate differences; dir stands in)" if skipped else ""), *notes]


def _analytic(subject, rng: np.random.Generator):
    """y and every gradient from manual and torch (and, for float32, from both in float64), all
    with one upstream gradient g drawn from N(0, 1) and rounded to y's dtype. Returns (g as
    float64, {witness: (y, {label: gradient})})."""
    y = subject.forward(precise=False)
    g = np.asarray(rng.standard_normal(y.shape)).astype(y.dtype)
    results = {"manual": (y, subject.backward(False, g)), "torch": subject.torch(False, g)}
    g64 = g.astype(np.float64)
    if subject.float32:
        results["manual64"] = (subject.forward(precise=True), subject.backward(True, g64))
        results["torch64"] = subject.torch(True, g64)
    return g64, results


def _compare_analytic(subject, results) -> list[Comparison]:
    """The output and each gradient, between the analytic witnesses. Pairs run in float32 may
    differ by float32 rounding, which grows with the conditioning of the function: they are held
    to max(FLOAT32_REL, NOISE_FACTOR × how far torch's own float32 result is from float64)."""
    exact = (tolerances.FLOAT64_REL, tolerances.FLOAT64_REL)
    out = []
    for label in ["output", *subject.tensors64]:
        values = {w: (y if label == "output" else grads[label]) for w, (y, grads) in results.items()}
        pairs = [("manual", "torch", exact)]
        if subject.float32:
            noise = measure(values["torch"], values["torch64"], 0, label, math.inf, math.inf)
            rounding = (max(tolerances.FLOAT32_REL, tolerances.NOISE_FACTOR * noise.rel_err),
                        max(tolerances.FLOAT32_REL, tolerances.NOISE_FACTOR * noise.elem_rel))
            pairs = [("manual", "torch", rounding), ("manual", "manual64", rounding), ("manual64", "torch64", exact)]
        out += [_pair(label, values[a].shape, a, b, values[a], values[b], *allowed) for a, b, allowed in pairs]
    return out


def _coordinates(size: int, cost: int, samples: int, budget: int, rng: np.random.Generator):
    """The flat indices fd differentiates (see FD_BUDGET); None when too few are affordable."""
    affordable = budget // (2 * max(cost, 1))
    if size <= affordable:
        return np.arange(size)
    n = min(samples, affordable)
    return np.sort(rng.choice(size, size=n, replace=False)) if n >= MIN_SAMPLES else None


def _difference(g: np.ndarray, up: np.ndarray, down: np.ndarray, h: float):
    """(⟨g, up⟩ − ⟨g, down⟩)/2h, taken as ⟨g, up − down⟩/2h (outputs the step does not reach
    cancel exactly), and its rounding bound eps·Σ|g|(|up| + |down|)/2h over the outputs it reaches."""
    with np.errstate(all="ignore"):
        g, d = g.reshape(-1), (up - down).reshape(-1)
        reached = (np.abs(up) + np.abs(down)).reshape(-1) * (d != 0)
        return float(np.dot(g, d)) / (2 * h), EPS64 * float(np.dot(np.abs(g), reached)) / (2 * h)


def _finite_differences(subject, t: np.ndarray, g: np.ndarray, coords: np.ndarray, h: float):
    """fd at each flat index of `coords` of the float64 tensor `t`, perturbed in place (the subject
    computes from it). Returns (values, rounding bounds), 1-D float64."""
    flat = t.reshape(-1)  # a view: t is C-contiguous
    values, bounds = np.empty(len(coords)), np.empty(len(coords))
    for n, k in enumerate(coords):
        saved = flat[k]
        try:
            flat[k] = saved + h
            up = subject.forward64()
            flat[k] = saved - h
            down = subject.forward64()
        finally:
            flat[k] = saved
        values[n], bounds[n] = _difference(g, up, down, h)
    return values, bounds


def _directional(subject, t: np.ndarray, g: np.ndarray, u: np.ndarray, h: float):
    """The derivative of ⟨g, f⟩ along u by central differences: (value, rounding bound)."""
    saved = t.copy()
    try:
        np.add(saved, h * u, out=t)
        up = subject.forward64()
        np.subtract(saved, h * u, out=t)
        down = subject.forward64()
    finally:
        t[...] = saved
    return _difference(g, up, down, h)


def _fd_allowed(a: np.ndarray, b: np.ndarray, bounds: np.ndarray) -> tuple[float, float]:
    """Bounds on the relative and the elementwise error against fd or dir: FINITE_DIFF_REL
    (truncation, h²·f'''/6), or more where the differences' rounding bound NOISE_FACTOR·bounds
    (outputs much larger than the derivative), relative to the norm or to the greatest magnitude,
    exceeds it."""
    with np.errstate(all="ignore"):
        norm = max(math.sqrt(_dot(a, a)), math.sqrt(_dot(b, b)), tolerances.TINY)
        peak = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)), tolerances.TINY)
    noise = tolerances.NOISE_FACTOR
    return (max(tolerances.FINITE_DIFF_REL, noise * math.sqrt(_dot(bounds, bounds)) / norm),
            max(tolerances.FINITE_DIFF_REL, noise * float(bounds.max(initial=0)) / peak))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        return float(np.dot(a.reshape(-1), b.reshape(-1)))


def _pair(label, shape, a, b, A, B, allowed, elem_allowed, coords=None) -> Comparison:
    """Compare A (witness a) with B (witness b); `coords`: the flat indices A and B were taken at."""
    g = measure(A, B, 0, label, allowed, elem_allowed)
    index = g.worst_index
    if coords is not None and len(coords):
        index = tuple(int(i) for i in np.unravel_index(coords[index[0]], shape))
    with np.errstate(all="ignore"):
        d = np.abs(np.asarray(A, np.float64) - np.asarray(B, np.float64))
        differ = int(np.count_nonzero(~(d <= elem_allowed * max(g.peak, tolerances.TINY))))
    return Comparison(label, tuple(shape), a, b, g, index, differ, int(np.size(A)))


def _fd_pair(label, shape, w, grad, values, bounds, coords) -> Comparison:
    analytic = np.asarray(grad).reshape(-1)[coords]
    return _pair(label, shape, w, "fd", analytic, values, *_fd_allowed(analytic, values, bounds), coords)


def _dir_pair(label, shape, w, grad, u, value, bound) -> Comparison:
    """⟨grad, u⟩ against the central difference along u (one number: both measures coincide)."""
    a, b = np.array([_dot(np.asarray(grad, np.float64), u)]), np.array([value])
    g = measure(a, b, 0, label, *_fd_allowed(a, b, np.array([bound])))
    return Comparison(label, tuple(shape), w, "dir", g, (), int(not g.ok), 1)


# ------------------------------------------------------------------------------ what is checked


class _FunctionSubject:
    """check_function's view: the inputs by label ("input x"), float64 copies fd perturbs in
    place, and each witness's run."""

    def __init__(self, fn, vjp, torch_fn, inputs):
        for f, what in ((fn, "fn"), (vjp, "vjp"), (torch_fn, "torch_fn")):
            if not callable(f):
                raise TypeError(f"{what} must be callable; got {type(f).__name__}")
        if not inputs:
            raise TypeError("check_function(fn, vjp, torch_fn, *inputs) needs at least one input array")
        self.fn, self.vjp, self.torch_fn = fn, vjp, torch_fn
        labels = [f"input {name}" for name in _input_names(fn, len(inputs))]
        self.given = {k: _float_array(v, k) for k, v in zip(labels, inputs)}
        self.float32 = any(v.dtype == np.float32 for v in self.given.values())
        self.tensors64 = {k: np.array(v, dtype=np.float64, order="C") for k, v in self.given.items()}
        self.title = f"check_function({_name(fn)}, {_name(vjp)}, {_name(torch_fn)})"

    def _arrays(self, precise: bool) -> list:
        return list((self.tensors64 if precise else self.given).values())

    def forward(self, precise: bool) -> np.ndarray:
        return _output(self.fn(*self._arrays(precise)), "fn", precise)

    def forward64(self) -> np.ndarray:
        return self.forward(True)

    def backward(self, precise: bool, g: np.ndarray) -> dict:
        grads = self.vjp(g, *self._arrays(precise))
        if isinstance(grads, (np.ndarray, np.floating, float)):
            grads = (grads,)  # one input: the array alone (a NumPy scalar for a 0-d input)
        names = ", ".join(k.removeprefix("input ") for k in self.given)
        if not isinstance(grads, (tuple, list)):
            raise TypeError(f"vjp returned {type(grads).__name__}; expected one NumPy array per input ({names}): "
                            "a tuple, or the array alone for one input")
        if len(grads) != len(self.given):
            raise ValueError(f"vjp returned {len(grads)} gradient{'s' * (len(grads) != 1)} for {len(self.given)} "
                             f"input{'s' * (len(self.given) != 1)} ({names}); expected one per input, in order")
        return {k: _gradient(d, v.shape, f"vjp's gradient for {k}", f"the shape of {k}")
                for (k, v), d in zip(self.given.items(), grads)}

    def torch(self, precise: bool, g: np.ndarray):
        leaves = {k: _leaf(v) for k, v in zip(self.given, self._arrays(precise))}
        return _torch_run(self.torch_fn(*leaves.values()), "torch_fn", g, leaves)


class _LayerSubject:
    """check_layer's view: x and the parameters by label ("input x", "parameter W"), the float64
    referee (a copy of the layer) whose arrays fd perturbs in place, and each witness's run."""

    def __init__(self, layer, module, x):
        import torch

        _check_protocol(layer)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"check_layer's module must be a torch.nn.Module; got {type(module).__name__}")
        self.layer, self.module, self.name = layer, module, type(layer).__name__
        params = {f"parameter {n}": _float_array(p, f"parameter {n}") for n, p in layer.params.items()}
        self.given = {"input x": _float_array(x, "input x"), **params}
        self.torch_names = _match_parameters(layer, module)
        self.float32 = any(v.dtype == np.float32 for v in self.given.values())
        self.referee = _float64_copy(layer)
        self.tensors64 = {"input x": np.array(x, dtype=np.float64, order="C"),
                          **{f"parameter {n}": p for n, p in self.referee.params.items()}}
        self.title = f"check_layer({self.name}, {module})"

    def _side(self, precise: bool):
        return (self.referee, self.tensors64["input x"]) if precise else (self.layer, self.given["input x"])

    def forward(self, precise: bool) -> np.ndarray:
        layer, x = self._side(precise)
        return _output(layer.forward(x), f"{self.name}.forward", precise)

    def forward64(self) -> np.ndarray:
        return self.forward(True)

    def backward(self, precise: bool, g: np.ndarray) -> dict:
        layer, x = self._side(precise)
        dx = _gradient(layer.backward(g), x.shape, f"{self.name}.backward(dy)'s dx", "the shape of x")
        grads = getattr(layer, "grads", None)
        if not isinstance(grads, Mapping):
            raise TypeError(f"{self.name}.grads must be a dict of the parameters' gradients, filled by backward; "
                            f"got {type(grads).__name__}")
        if set(grads) != set(layer.params):
            raise ValueError(f"{self.name}.grads holds {sorted(grads)} after backward; expected the names of "
                             f"params, {sorted(layer.params)}")
        return {"input x": dx, **{f"parameter {n}": _gradient(grads[n], p.shape, f"{self.name}.grads[{n!r}]",
                                                              f"the shape of params[{n!r}]")
                                  for n, p in layer.params.items()}}

    def torch(self, precise: bool, g: np.ndarray):
        """The module, copied, cast to the side's dtype and loaded with that side's values."""
        import torch

        layer, x = self._side(precise)
        module = copy.deepcopy(self.module).to(torch.float64 if x.dtype == np.float64 else torch.float32)
        named = dict(module.named_parameters())
        with torch.no_grad():
            for n, t in self.torch_names.items():
                named[t].copy_(torch.from_numpy(np.array(layer.params[n], order="C")))
                named[t].grad = None
        leaves = {"input x": _leaf(x), **{f"parameter {n}": named[t] for n, t in self.torch_names.items()}}
        return _torch_run(module(leaves["input x"]), f"the module {type(module).__name__}", g, leaves)


# ------------------------------------------------------------------------------ bad use, in one line


def _check_protocol(layer) -> None:
    missing = [a for a in ("params", "forward", "backward") if not hasattr(layer, a)]
    if missing:
        raise TypeError(f"check_layer expects a layer with .params (dict name -> array), .forward(x), .backward(dy) "
                        f"and .grads; {type(layer).__name__} has no {', '.join('.' + a for a in missing)}")
    if not isinstance(layer.params, Mapping):
        raise TypeError(f"layer.params must be a dict (name -> array); got {type(layer.params).__name__}")
    if not (callable(layer.forward) and callable(layer.backward)):
        raise TypeError("layer.forward and layer.backward must be methods")


def _match_parameters(layer, module) -> dict[str, str]:
    """{layer name: module name}, every parameter on both sides, same shapes; else ValueError."""
    names = getattr(layer, "torch_names", None) or {}
    if not isinstance(names, Mapping):
        raise TypeError(f"layer.torch_names must be a dict (layer name -> torch name); got {type(names).__name__}")
    unknown = [n for n in names if n not in layer.params]
    if unknown:
        raise ValueError(f"layer.torch_names maps {unknown}, which layer.params ({list(layer.params)}) does not hold")
    mapping = {n: names.get(n, n) for n in layer.params}
    theirs = {n: tuple(p.shape) for n, p in module.named_parameters()}
    missing = [n if t == n else f"{n} (torch name {t})" for n, t in mapping.items() if t not in theirs]
    if missing:
        raise ValueError(f"the module has no parameter {', '.join(missing)}; its parameters are {list(theirs)} "
                         "(layer.torch_names maps the layer's names to the module's)")
    extra = [t for t in theirs if t not in mapping.values()]
    if extra:
        raise ValueError(f"the module's parameter{'s' * (len(extra) > 1)} {', '.join(extra)} "
                         f"{'have' if len(extra) > 1 else 'has'} no counterpart in layer.params ({list(mapping)}); "
                         "give the layer the same parameters, or map names with layer.torch_names")
    for n, t in mapping.items():
        if theirs[t] != np.shape(layer.params[n]):
            raise ValueError(f"parameter {n} has shape {np.shape(layer.params[n])} in the layer but {theirs[t]} "
                             f"in the module ({t})")
    return mapping


def _float_array(v, label: str) -> np.ndarray:
    """`v` as a finite float32/float64 NumPy array (not copied), else TypeError/ValueError."""
    if isinstance(v, (float, np.floating)):
        v = np.asarray(v)
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{label} is a {type(v).__name__}; expected a NumPy array of float32 or float64")
    if v.dtype not in (np.float32, np.float64):
        raise TypeError(f"{label} has dtype {v.dtype}; expected float32 or float64")
    bad = ~np.isfinite(v)
    if bad.any():
        idx = tuple(int(i) for i in np.unravel_index(int(bad.argmax()), v.shape))
        raise ValueError(f"{label} holds {int(bad.sum())} non-finite value{'s' * (int(bad.sum()) > 1)} "
                         f"(first at index {idx}: {v[idx]}); expected finite values")
    return v


def _output(y, who: str, precise: bool) -> np.ndarray:
    """A copy of the forward output (the next call may reuse its buffer), checked to be one float
    array; in float64 for the referee."""
    if isinstance(y, (tuple, list)):
        raise TypeError(f"{who} returned a {type(y).__name__} of {len(y)}; expected one NumPy array")
    if isinstance(y, (float, np.floating)):
        y = np.asarray(y)
    if not isinstance(y, np.ndarray) or y.dtype not in (np.float32, np.float64):
        what = f"an array of dtype {y.dtype}" if isinstance(y, np.ndarray) else type(y).__name__
        raise TypeError(f"{who} returned {what}; expected one NumPy array of float32 or float64")
    if precise and y.dtype != np.float64:
        raise TypeError(f"{who} returned {y.dtype} for float64 inputs and parameters; the float64 referee needs "
                        "the computation to follow its inputs' dtype")
    return np.array(y)


def _gradient(d, shape: tuple, what: str, expected: str) -> np.ndarray:
    """A copy of one returned gradient, checked to be a float array of `shape`."""
    if isinstance(d, (float, np.floating)):
        d = np.asarray(d)
    if not isinstance(d, np.ndarray) or d.dtype not in (np.float32, np.float64):
        got = f"an array of dtype {d.dtype}" if isinstance(d, np.ndarray) else type(d).__name__
        raise TypeError(f"{what} is {got}; expected a NumPy array of float32 or float64")
    if d.shape != tuple(shape):
        raise ValueError(f"{what} has shape {d.shape}; expected {tuple(shape)} ({expected})")
    return np.array(d)


def _leaf(v: np.ndarray):
    import torch

    return torch.from_numpy(np.array(v, order="C")).requires_grad_()


def _torch_run(y, who: str, g: np.ndarray, leaves: dict):
    """Backpropagate g through the torch output y; (y, {label: leaf gradient}) as NumPy copies
    (zeros for a leaf the output does not depend on)."""
    import torch

    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{who} returned {type(y).__name__}; expected one torch.Tensor")
    if tuple(y.shape) != g.shape:
        raise ValueError(f"{who} returned shape {tuple(y.shape)}; the NumPy side returned {g.shape}")
    if y.requires_grad:
        y.backward(torch.from_numpy(np.array(g, order="C")).to(y.dtype))
    grads = {k: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().cpu().numpy().copy()
             for k, t in leaves.items()}
    return y.detach().cpu().numpy().copy(), grads


def _float64_copy(layer):
    """A deep copy of `layer` with its params and grads as float64 C arrays. Attributes that were
    the very same arrays follow (a forward reading self.W where W is params["W"]), and a float32
    ``dtype`` attribute becomes float64."""
    clone = copy.deepcopy(layer)
    attrs = getattr(clone, "__dict__", {})
    grads = getattr(clone, "grads", None)
    for store in (clone.params, grads if isinstance(grads, Mapping) else {}):
        for name, old in list(store.items()):
            store[name] = new = np.array(old, dtype=np.float64, order="C")
            for attr, value in list(attrs.items()):
                if value is old:
                    setattr(clone, attr, new)
    try:
        if np.dtype(getattr(clone, "dtype", None) or np.float64) == np.float32:
            clone.dtype = np.dtype(np.float64)
    except (TypeError, AttributeError):  # not a dtype, or read-only: the layer follows its arrays
        pass
    return clone


def _input_names(fn, n: int) -> list[str]:
    """fn's first n positional parameter names, or 0..n−1 where the signature does not say."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return params[:n] if len(params) >= n else [str(i) for i in range(n)]


def _name(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__
