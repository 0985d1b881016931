"""What kind of mistake a failing gradient is: the hand-written result m tested against the
reference r, torch's gradient, for the classic mistakes of a derivation.

Diagnosed: each gradient tensor whose exact pair (manual vs torch; in float32 checks the float64
witnesses manual64 vs torch64) disagrees, unless finite differences name the torch counterpart
as the suspect or the outputs themselves differ (``compare.check.blame``): then r is no reference.

Each pattern predicts m from r, from the upstream gradient g or from the inputs, and fits when
``measure(m, prediction)`` is within the bounds of the comparison that failed (the check's own,
``compare.check.tolerances``), for g and for a second random upstream gradient g₂ alike (one seeded
draw more, the hand-written side and torch rerun with it): a coincidence of one g does not hold
for two. Tried in this order, the first that fits is the diagnosis:

    non-finite     NaN or inf in m
    zero           m = 0 everywhere
    g ignored      m(g₂) = m(g), or m(2g) = m(g)           (the VJP must be linear in g)
    not linear     m(2g) ≠ 2·m(g)
    local derivative missing   m = g
    constant factor / sign error   m = c·r, c = ⟨m, r⟩/⟨r, r⟩ (least squares); named ×2, ×½,
                   ×B, ×1/B (B: the leading axis of the first input, the batch), −1
    transpose, layout   m = rᵀ (square), r with its axes permuted, reshaped from a permutation,
                   or reversed along an axis
    wrong axis     m = g summed (or averaged) over axes A, r = g summed over other axes A′
    wrong reduction   m = g summed or averaged over A (and broadcast back), r no such reduction
    extra reduction   m = r summed or averaged over an axis and broadcast back
    g mis-broadcast   m(g) = r(P g): torch's gradient for g transposed, or summed or averaged
                   over an axis and broadcast back
    (compare.check.patterns)   a flipped mask, repeated indices dropped by a scatter, a kernel
                   flipped along several axes, an input's gradient with the kernel not flipped
                   (torch rerun with the kernel reversed), a normalisation's missing mean terms,
                   accumulation cut short in a recurrence, a reduction over the wrong axis inside a
                   Jacobian
    mask           m = r except exactly where an input is 0 (a kink), < 0, > 0, ≤ 0 or ≥ 0, or
                   except on one row, column or index of an axis (with the count)
    zero, non-zero   m = r except exactly where m is 0 and r is not, or r is 0 and m is not
    float32 precision   in a float64 comparison, m holds float32 numbers only (computed in float32,
                   cast back) and m = r within the float32 check's bounds

In a float64 check where none fits and the hand-written gradient holds float32 numbers only (computed
in float32 and cast back), the patterns but the last are tried again within the float32 check's
bounds, and one that fits says so.
Otherwise "no simple pattern", with the count of differing elements and the best constant factor
(facts, not a kind). A pattern with a free constant needs two or more non-zero elements of r.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np

from compare.check import patterns
from compare.check.findings import Diagnosis, Suspect
from compare.check.measure import measure
from compare.check.tolerances import FLOAT32_ELEM, FLOAT32_REL, TINY

FLOAT32_BOUNDS = (FLOAT32_REL, FLOAT32_ELEM)  # the float32 check's, for code that computes in float32

# g₂ comes from its own stream of the check's seed, so that the check's own draws (g, u, the fd
# coordinates) are those of a check without diagnosis or self-test.
SECOND_STREAM = 2
# Layouts and g's reductions are searched over every permutation and subset of axes up to this
# many axes (5! = 120 permutations); beyond it over none.
MAX_AXES = 5


class Reruns:
    """The hand-written side and torch rerun with other upstream gradients, each run at most once:
    "g" (the check's: its `runs`, {witness: Run}, are reused), "g2" (a second seeded draw, in the
    outputs' dtypes) and "2g". precise=True gives the float64 witnesses (manual64, torch64) of a
    float32 check."""

    def __init__(self, subject, gs: list, seed: int, runs: dict):
        rng = np.random.default_rng((seed, SECOND_STREAM))
        self.subject, self.gs = subject, list(gs)
        self.gs2 = [subject.rounded(i, np.asarray(rng.standard_normal(g.shape)).astype(g.dtype)) for i, g in enumerate(gs)]
        self._runs = {}  # (side, which, precise, change of g, replaced tensors): Run; first the check's own, with g
        for w, run in runs.items():
            self._runs[(w.removesuffix("64"), "g", w.endswith("64"), None, None)] = run

    def upstream(self, which: str, precise: bool) -> list:
        gs = {"g": self.gs, "g2": self.gs2, "2g": [2 * g for g in self.gs]}[which]
        return [np.asarray(g, np.float64) for g in gs] if precise else gs

    def manual(self, which: str, precise: bool):
        precise = precise and not getattr(self.subject, "half_only", "")  # a kernel with no float64 run
        key = ("manual", which, precise, None, None)
        if key not in self._runs:
            self._runs[key] = self.subject.manual(precise, self.upstream(which, precise))
        return self._runs[key]

    def torch(self, which: str, precise: bool, change=None, replace=None):
        """torch's run with the upstream gradients `which`; with change = (j, name, function), the
        j-th of them replaced by function(g_j); with replace = (name, {label: array}), those inputs
        or parameters run with other values."""
        key = ("torch", which, precise, None if change is None else change[:2], None if replace is None else replace[0])
        if key not in self._runs:
            gs = list(self.upstream(which, precise))
            if change is not None:
                gs[change[0]] = np.ascontiguousarray(change[2](gs[change[0]]))
            self._runs[key] = self.subject.torch(precise, gs, None if replace is None else replace[1])
        return self._runs[key]


# ------------------------------------------------------------------------------ the evidence


class Evidence:
    """m and r of one tensor for g and g₂, the bounds they are held to, and what they came from."""

    def __init__(self, label, bounds, names, reruns, precise, subject):
        self.label, self.bounds, self.names, self.reruns, self.precise = label, bounds, names, reruns, precise
        self.cases = []
        for which in ("g", "g2"):
            m = np.asarray(reruns.manual(which, precise).grads[label], np.float64)
            r = np.asarray(reruns.torch(which, precise).grads[label], np.float64)
            self.cases.append((m, r, [np.asarray(g, np.float64) for g in reruns.upstream(which, precise)]))
        self.m, self.r, self.gs = self.cases[0]
        self.inputs = {lab: a for lab, a in zip(subject.input_labels, subject.inputs(True))}
        self.batch = next(((a.shape[0], lab) for lab, a in zip(subject.input_labels, subject.pristine)
                           if a.ndim >= 1), None)

    @functools.cached_property
    def float32_values(self) -> bool:
        """Every element of m, for g and g₂, is a float32 number where r's are not all: the
        hand-written result was computed in float32 and cast back (``.astype(np.float64)``,
        ``.to(x.dtype)``)."""
        def float32(a):
            return np.array_equal(a, a.astype(np.float32).astype(np.float64))
        return all(float32(m) and not float32(r) for m, r, _ in self.cases)

    def fit(self, a, b):
        """The Agreement of a and b when within the bounds, else None."""
        if a is None or b is None or np.shape(a) != np.shape(b):
            return None
        agr = measure(np.asarray(a, np.float64), np.asarray(b, np.float64), 0, self.label, *self.bounds)
        return agr if agr.ok else None

    def holds(self, predict, of: str = "m"):
        """The Agreement (for g) of m (or r, of="r") with predict(case, r, gs) for both upstream
        gradients, or None."""
        first = None
        for i, (m, r, gs) in enumerate(self.cases):
            agr = self.fit(m if of == "m" else r, predict(i, r, gs))
            if agr is None:
                return None
            first = first or agr
        return first

    def small(self, a) -> np.ndarray:
        """Elements within the elementwise bound of zero, relative to the greatest of m and r."""
        peak = max(float(np.abs(self.m).max(initial=0)), float(np.abs(self.r).max(initial=0)), TINY)
        return np.abs(a) <= self.bounds[1] * peak

    def differing(self, m, r) -> np.ndarray:
        peak = max(float(np.abs(m).max(initial=0)), float(np.abs(r).max(initial=0)), TINY)
        with np.errstate(invalid="ignore"):
            return ~(np.abs(m - r) <= self.bounds[1] * peak)

    def g_name(self, j: int) -> str:
        return "g" if len(self.gs) == 1 else f"g {j}"


def _axes(t) -> str:
    t = tuple(t)
    return f"axis {t[0]}" if len(t) == 1 else f"axes {t}"


def _res(agr) -> str:
    return f"residual {agr.rel_err:.1g}"


# ------------------------------------------------------------------------------ the patterns


def _non_finite(ev):
    bad = int(np.count_nonzero(~np.isfinite(ev.m)))
    if bad:
        return Diagnosis(ev.label, "non-finite", f"non-finite values (NaN or inf) at {bad} of {ev.m.size} elements of "
                         f"{ev.names[0]}", bad)


def _zero(ev):
    if all(not m.any() for m, _, _ in ev.cases):
        return Diagnosis(ev.label, "zero", f"zero everywhere ({ev.m.size} elements) where {ev.names[1]}'s gradient "
                         "is not: the gradient is never written, or multiplied by 0", ev.m.size)


def _linearity(ev):
    """g ignored, or the VJP not linear in g (checked on the hand-written side alone)."""
    mn, rn = ev.names
    m, m2 = ev.m, ev.cases[1][0]
    m2g = np.asarray(ev.reruns.manual("2g", ev.precise).grads[ev.label], np.float64)
    same = ev.fit(m2, m)
    if same is not None and ev.fit(ev.cases[1][1], ev.r) is None:
        moved = measure(ev.cases[1][1], ev.r, 0, ev.label, np.inf).rel_err
        return Diagnosis(ev.label, "g ignored", f"the upstream gradient is ignored: {mn} is the same for another "
                         f"random g (relative difference {same.rel_err:.1g}) while {rn}'s changes (relative "
                         f"difference {moved:.2g})", same.rel_err)
    if ev.fit(m2g, 2 * m) is None:
        if ev.fit(m2g, m) is not None:
            return Diagnosis(ev.label, "g ignored", f"the upstream gradient is ignored: {mn} stays the same when g is "
                             "doubled", 1.0)
        c = float(np.dot(m2g.ravel(), m.ravel()) / max(np.dot(m.ravel(), m.ravel()), TINY))
        residual = measure(m2g, c * m, 0, ev.label, np.inf).rel_err
        return Diagnosis(ev.label, "not linear in g", f"not linear in the upstream gradient: with 2g, {mn} is {c:.4g} "
                         f"times its value with g (least squares, residual {residual:.2g}) where a VJP gives 2", c)


def _local_derivative(ev):
    for j, g in enumerate(ev.gs):
        fit = ev.holds(lambda i, r, gs: gs[j])
        if fit is not None:
            return Diagnosis(ev.label, "local derivative missing", f"the local derivative is missing: {ev.names[0]} = "
                             f"the upstream gradient {ev.g_name(j)} itself ({_res(fit)})", j)


def _named_factors(ev) -> list[tuple[float, str, str]]:
    """(factor, name, what it means) of the factors a derivation commonly gets wrong."""
    named = [(2.0, "×2", ""), (0.5, "×½", "")]
    if ev.batch is not None and ev.batch[0] > 2:
        B, where = ev.batch
        named += [(float(B), "×B", f"; B = {B}, the leading axis of {where}"),
                  (1.0 / B, "×1/B", f"; B = {B}, the leading axis of {where}")]
    return named


def _factor(ev):
    mn, rn = ev.names
    if np.count_nonzero(~ev.small(ev.r)) < 2:
        return None
    c = float(np.dot(ev.m.ravel(), ev.r.ravel()) / np.dot(ev.r.ravel(), ev.r.ravel()))
    fit = ev.holds(lambda i, r, gs: c * r)
    if fit is None or c == 0:
        return None
    numbers = f"{mn} = {patterns.factor(c)} × {rn}, {_res(fit)}"
    if ev.holds(lambda i, r, gs: -r) is not None:
        return Diagnosis(ev.label, "sign error", f"a sign error ({numbers})", c)
    for sign, prefix in ((1.0, "a constant factor"), (-1.0, "a sign error and a constant factor")):
        for k, name, meaning in _named_factors(ev):
            if ev.holds(lambda i, r, gs: sign * k * r) is not None:
                return Diagnosis(ev.label, "constant factor" if sign > 0 else "sign error",
                                 f"{prefix} {name} ({numbers}{meaning})", c)
    return Diagnosis(ev.label, "constant factor", f"a constant factor ×{patterns.factor(c)} ({numbers})", c)


def _layouts(shape, target) -> list:
    """(kind, text, value, function of r) for r's other layouts that have m's shape `target`."""
    n = len(shape)
    out = []
    if 2 <= n <= MAX_AXES:
        for p in itertools.permutations(range(n)):
            if p == tuple(range(n)):
                continue
            moved = tuple(shape[i] for i in p)
            if moved == tuple(target):
                kind, text = ("transpose", "the transpose of") if n == 2 else \
                    ("layout", f"with its axes permuted to {p}")
                out.append((kind, text, p, lambda r, p=p: r.transpose(p)))
            else:
                out.append(("layout", f"with its axes in the order {p} read as shape {tuple(target)}", p,
                            lambda r, p=p: r.transpose(p).reshape(target)))
    for a in range(n):
        if shape[a] > 1:
            out.append(("layout", f"reversed along axis {a}", a, lambda r, a=a: np.flip(r, a)))
    return out


def _layout(ev):
    for kind, text, value, f in _layouts(ev.r.shape, ev.m.shape):
        fit = ev.holds(lambda i, r, gs: f(r))
        if fit is not None:
            mn, rn = ev.names
            if kind == "transpose":
                return Diagnosis(ev.label, kind, f"{text} the right gradient ({mn} = {rn}ᵀ, {_res(fit)})", value)
            return Diagnosis(ev.label, kind, f"the right values in another layout: {mn} = {rn}'s gradient {text} "
                             f"({_res(fit)})", value)


def _subsets(n: int) -> list[tuple]:
    return [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)] if n <= MAX_AXES else []


def _reductions(g_shape, target) -> list:
    """(words, axes, function of g) for g summed or averaged over axes and of `target`'s shape,
    directly or broadcast back to g's shape."""
    out = []
    for axes in _subsets(len(g_shape)):
        size = int(np.prod([g_shape[a] for a in axes]))
        if size <= 1:
            continue
        reduced = tuple(s for i, s in enumerate(g_shape) if i not in axes)
        for op, scale in (("summed", 1.0), ("averaged", 1.0 / size)):
            if reduced == tuple(target):
                out.append((f"{op} over {_axes(axes)}", axes, lambda g, a=axes, s=scale: s * g.sum(axis=a)))
            if tuple(g_shape) == tuple(target):
                out.append((f"{op} over {_axes(axes)} and broadcast back", axes,
                            lambda g, a=axes, s=scale: np.broadcast_to(s * g.sum(axis=a, keepdims=True), g.shape)))
    return out


def _g_reduction(ev):
    mn, rn = ev.names
    for j, g in enumerate(ev.gs):
        candidates = _reductions(g.shape, ev.m.shape)
        for words, axes, f in candidates:
            fit = ev.holds(lambda i, r, gs: f(gs[j]))
            if fit is None:
                continue
            gj = ev.g_name(j)
            for words_r, axes_r, f_r in candidates:
                if axes_r != axes and ev.holds(lambda i, r, gs: f_r(gs[j]), of="r") is not None:
                    return Diagnosis(ev.label, "wrong axis", f"a sum over the wrong axis: {mn} = {gj} {words}, "
                                     f"{rn} = {gj} {words_r} ({_res(fit)})", axes)
            return Diagnosis(ev.label, "wrong reduction", f"a reduction of the upstream gradient: {mn} = {gj} {words}, "
                             f"which {rn}'s gradient is not ({_res(fit)})", axes)


def _r_reduction(ev):
    for words, axes, f in _reductions(ev.r.shape, ev.r.shape):
        if len(axes) == 1 and words.endswith("broadcast back"):
            fit = ev.holds(lambda i, r, gs: f(r))
            if fit is not None:
                return Diagnosis(ev.label, "extra reduction", f"an extra reduction: {ev.names[0]} = {ev.names[1]}'s "
                                 f"gradient {words} ({_res(fit)})", axes)


def _g_changes(g_shape) -> list:
    """(name, function of g) for the ways g is mis-broadcast: transposed (axes permuted, same
    shape), summed or averaged over an axis and broadcast back."""
    n = len(g_shape)
    out = []
    if 2 <= n <= MAX_AXES:
        for p in itertools.permutations(range(n)):
            if p != tuple(range(n)) and tuple(g_shape[i] for i in p) == tuple(g_shape):
                name = "transposed" if n == 2 else f"with its axes permuted to {p}"
                out.append((name, lambda g, p=p: g.transpose(p)))
    for words, axes, f in _reductions(g_shape, g_shape):
        if len(axes) == 1:
            out.append((words, f))
    return out


def _misbroadcast(ev):
    for j, g in enumerate(ev.gs):
        for name, f in _g_changes(g.shape):
            change = (j, name, f)
            fit = ev.holds(lambda i, r, gs: np.asarray(
                ev.reruns.torch(("g", "g2")[i], ev.precise, change).grads[ev.label], np.float64))
            if fit is not None:
                return Diagnosis(ev.label, "g mis-broadcast", f"the upstream gradient is mis-broadcast: "
                                 f"{ev.names[0]} = {ev.names[1]}'s gradient for {ev.g_name(j)} {name} ({_res(fit)})",
                                 name)


def _structures(ev) -> list[tuple[str, np.ndarray]]:
    """(words, mask) of the element sets a mistake is often confined to: an input's zeros (a
    kink) and signs, where the tensor has the input's shape."""
    out = []
    for lab, x in ev.inputs.items():
        if x.shape == ev.m.shape and np.issubdtype(x.dtype, np.floating):
            out += [(f"where {lab} is 0 (a kink)", x == 0), (f"where {lab} < 0", x < 0), (f"where {lab} > 0", x > 0),
                    (f"where {lab} <= 0", x <= 0), (f"where {lab} >= 0", x >= 0)]
    return out


def _one_index(D: np.ndarray) -> str:
    """Where every element of D shares one index along an axis: "row 2 (all 5 elements)" (or "")."""
    where = np.argwhere(D)
    for a in range(D.ndim):
        if D.shape[a] > 1 and len(np.unique(where[:, a])) == 1:
            i = int(where[0, a])
            whole = int(D.take(i, axis=a).size)
            name = {(2, 0): f"row {i}", (2, 1): f"column {i}"}.get((D.ndim, a), f"index {i} of axis {a}")
            return f"{name} ({'all' if len(where) == whole else len(where)} of its {whole} elements)"
    return ""


def _mask(ev):
    mn, rn = ev.names
    D = ev.differing(ev.m, ev.r)
    k, n = int(D.sum()), D.size
    if not 0 < k < n or not np.array_equal(D, ev.differing(*ev.cases[1][:2])):
        return None
    zero_m, zero_r = ev.small(ev.m), ev.small(ev.r)
    note = ""
    if zero_m[D].all() and not zero_r[D].any():
        note = f"; {mn} is 0 there and {rn}'s is not"
    elif zero_r[D].all() and not zero_m[D].any():
        note = f"; {rn}'s is 0 there and {mn} is not"
    for words, S in _structures(ev):
        if np.array_equal(D, S):
            return Diagnosis(ev.label, "mask", f"wrong only on a pattern of elements: exactly the {k} of {n} elements "
                             f"{words}{note}", k)
    if k == 1:
        index = tuple(int(i) for i in np.argwhere(D)[0])
        return Diagnosis(ev.label, "mask", f"wrong only at one element of {n}, index {index}{note}", k)
    row = _one_index(D) if D.ndim >= 2 else ""
    if row:
        return Diagnosis(ev.label, "mask", f"wrong only on {row}, {k} of {n} elements of the tensor{note}", k)
    if note:
        kind = "zero" if note.startswith(f"; {mn} is 0") else "non-zero"
        text = (f"zero at {k} of {n} elements where {rn}'s gradient is not" if kind == "zero" else
                f"non-zero at {k} of {n} elements where {rn}'s gradient is 0")
        return Diagnosis(ev.label, kind, f"{text}, right elsewhere", k)


def _float32_precision(ev):
    """m computed in float32 (``Evidence.float32_values``) and within the float32 check's bounds of r, for g
    and g₂, in a float64 comparison it fails: the derivation agrees as far as float32 shows (a
    mistake as small as its rounding, an ε, would look the same). The check still fails: the
    gradient is not float64's."""
    if not ev.float32_values:
        return None
    mn, rn = ev.names  # (a comparison held to bounds as wide as these failed them: it fails these too)
    first, second = (measure(m, r, 0, ev.label, *FLOAT32_BOUNDS) for m, r, _ in ev.cases)
    if not (first.ok and second.ok):
        return None
    return Diagnosis(ev.label, "float32 precision",
                     f"{mn} holds float32 numbers only and agrees with {rn} within float32's bounds, not float64's "
                     f"(relative error {first.rel_err:.2g}; float32's bound {FLOAT32_REL:g}, float64's "
                     f"{ev.bounds[0]:g}): the computation runs in float32 and is cast back; compute in float64, or "
                     "check in float32 (a mistake as small as float32's rounding, an ε, would look the same)",
                     first.rel_err)


def _nothing(ev):
    mn, rn = ev.names
    D = ev.differing(ev.m, ev.r)
    rr = float(np.dot(ev.r.ravel(), ev.r.ravel()))
    text = f"no simple pattern: {mn} differs from {rn} at {int(D.sum())} of {D.size} elements"
    if rr > 0:
        c = float(np.dot(ev.m.ravel(), ev.r.ravel())) / rr
        residual = measure(ev.m, c * ev.r, 0, ev.label, np.inf).rel_err
        text += f"; the best constant factor {c:.3g} leaves a residual {residual:.2g}"
    return Diagnosis(ev.label, "no simple pattern", text)


def _named(pattern):
    """A pattern of ``compare.check.patterns`` ((kind, text, value) or None) as one of these."""
    def fit(ev):
        found = pattern(ev)
        return None if found is None else Diagnosis(ev.label, *found)
    return fit


PATTERNS = (_non_finite, _zero, _linearity, _local_derivative, _factor, _layout, _g_reduction, _r_reduction,
            _misbroadcast, *map(_named, patterns.ALL), _mask,
            _float32_precision)  # last: an exact pattern (a factor 1 + 1e-06) is named before precision is


# ------------------------------------------------------------------------------ the diagnoses


def _torch_suspected(findings, label: str) -> bool:
    """blame's verdict that the torch counterpart, not the hand-written side, is wrong for `label`."""
    return any(isinstance(f, Suspect) and f.tensor == label and f.side == "counterpart" for f in findings)


def diagnose(subject, comparisons, exact, findings, reruns: Reruns) -> dict[str, Diagnosis]:
    """{tensor: Diagnosis} of every gradient whose exact pair fails, where torch's is a reference."""
    failing = {c.tensor: c for c in comparisons if not c.ok and (c.a, c.b) == exact}
    if any(t.startswith("output") for t in failing):
        return {}  # the two forwards differ: torch's gradient is no reference for the hand-written one
    out = {}
    for label in subject.labels:
        c = failing.get(label)
        if c is None or _torch_suspected(findings, label):
            continue
        bounds = (c.agreement.allowed, c.agreement.elem_allowed)
        ev = Evidence(label, bounds, exact, reruns, subject.float32, subject)
        if not all(np.isfinite(r).all() for _, r, _ in ev.cases):
            continue  # torch's gradient is no reference here
        found = _first(ev, PATTERNS)
        if found is None and bounds[0] < FLOAT32_REL and bounds[1] < FLOAT32_ELEM and ev.float32_values:
            found = _in_float32(_first(Evidence(label, FLOAT32_BOUNDS, exact, reruns, subject.float32, subject),
                                       PATTERNS[:-1]))
        out[label] = found or _nothing(ev)
    return out | _ties(comparisons, failing)


def _ties(comparisons, failing) -> dict[str, Diagnosis]:
    """A tie's gradient shared wrongly (``compare.check.kinks.ties``), where only the sum at the ties
    fails: value, yours over the one-sided derivative along the ties (2 where each of two tied
    maxima takes the whole; 0 where none does)."""
    out = {}
    for c in comparisons:
        if c.b == "ties" and not c.ok and c.tensor not in failing:
            ours, theirs = c.agreement.a_value, c.agreement.b_value
            ratio = ours / theirs if theirs else math.inf
            out[c.tensor] = Diagnosis(c.tensor, "tie shared", (
                f"tie shared: at the {c.compared} kinks where yours takes a whole one-sided derivative, yours add "
                f"up to {ours:.6g} where the function moves by {theirs:.6g} as they move together ({ratio:.3g}×): a tie's "
                "gradient given whole to each of the tied elements (or to none), where their shares add up to it"),
                ratio)
    return out


def _first(ev, patterns) -> Diagnosis | None:
    return next((d for d in (p(ev) for p in patterns) if d is not None), None)


def _in_float32(found: Diagnosis | None) -> Diagnosis | None:
    """A pattern that fits within the float32 check's bounds only, said so: a mistake made in float32
    arithmetic cast back (``Evidence.float32_values``) is that mistake, plus float32's rounding."""
    if found is None:
        return None
    return dataclasses.replace(found, text=f"{found.text}, within float32's bounds, not float64's: the computation "
                                           "runs in float32 and is cast back")
