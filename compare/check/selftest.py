"""Proof the check can see a mistake here: the standard wrong variants of each hand-written
gradient, injected into the check's own comparisons, one tensor at a time.

For each differentiated tensor with hand-written gradient m (in every hand-written witness alike,
manual and the float64 manual64 of a float32 check, as a mistake in the code would change both):

    scaled        m·(1 + 2ε), ε the smallest relative error the check's bounds are sure to see
    sign flipped  −m
    transposed    m with its last two axes swapped, where they are of one size
    averaged      m averaged over its first (and over its last) axis and broadcast back: a sum
                  over the wrong axis, at the right scale (two or more axes)
    g ignored     the hand-written backward run with another upstream gradient g₂

The witnesses that do not read the hand-written gradient (torch, torch64 and the finite
differences fd and dir) are the check's own runs, reused: a variant costs its comparisons, and
"g ignored" one hand-written run more for all tensors. A variant is caught when any comparison of
its tensor fails.

ε of one comparison of a hand-written witness a with b, bounds A (relative) and Aₑ (elementwise):
scaling a by 1 + ε moves ‖a − b‖ by at least ε‖a‖ − ‖a − b‖ and max(‖a‖, ‖b‖) by at most the
factor 1 + ε, so the relative error exceeds A once

    ε > (A + r₀)/(q − A),      r₀ the relative error now, q = ‖a‖/max(‖a‖, ‖b‖),

and the elementwise error likewise (max|·| for ‖·‖). The tensor's ε is the least over its
comparisons with a witness that does not read m (not manual vs manual64: both change); none
where q ≤ A everywhere (no scaling is sure to be seen): then ×2 is injected.

A variant that leaves m unchanged (a symmetric matrix transposed, zeros negated, an axis of one
element averaged; up to the mean's rounding, ``tolerances.sum_bound``) is no mistake there: it is
skipped, not counted; so is every variant of a tensor the check already fails.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compare.check import tolerances
from compare.check.subjects import Run
from compare.check.witnesses import compare_analytic
from compare.check.tolerances import TINY

MANUAL = ("manual", "manual64")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One injected mistake: its tensor, its name ("sign flipped"), its outcome ("caught", "missed"
    or "skipped") and the detail (the comparisons that caught it; how far it moved the gradient;
    why it was skipped)."""

    tensor: str
    name: str
    outcome: str
    detail: str


class SelfTest:
    """The injected mistakes and what the check made of them.

    Attributes:
        variants: every ``Variant``; ``caught``, ``missed``, ``skipped`` those of each outcome.
        smallest: {tensor: (ε, the comparison that sees it)}: the smallest relative error of the
            hand-written gradient the check is sure to detect; (inf, why) where no scaling is.
        precision, in_precision: a check below float64: its precision and {tensor: (ε, comparison)},
            the smallest error of the low-precision run alone the check is sure to detect (a factor
            1 + ε in bfloat16, say, where the float64 run is right).
        shapes: {tensor: shape}.   note: why it did not run, or "".
    ``ok``: it ran and missed nothing. ``str()``: the counts, then each tensor's ε and variants.
    """

    def __init__(self, variants: list[Variant], smallest: dict, shapes: dict, note: str = "",
                 in_precision: tuple[str, dict] = ("", {})):
        self.variants, self.smallest, self.shapes, self.note = variants, smallest, shapes, note
        self.precision, self.in_precision = in_precision

    def _of(self, outcome: str) -> list[Variant]:
        return [v for v in self.variants if v.outcome == outcome]

    @property
    def caught(self) -> list[Variant]:
        return self._of("caught")

    @property
    def missed(self) -> list[Variant]:
        return self._of("missed")

    @property
    def skipped(self) -> list[Variant]:
        return self._of("skipped")

    @property
    def ok(self) -> bool:
        return not self.note and not self.missed

    def __str__(self) -> str:
        if self.note:
            return f"self-test: not run: {self.note}"
        tried = len(self.caught) + len(self.missed)
        head = f"self-test: the check caught {len(self.caught)} of {tried} injected mistakes"
        if self.skipped:
            head += f" ({len(self.skipped)} more skipped: no change, or the check already fails there)"
        lines = [head + ("" if self.ok else f"; MISSED {len(self.missed)}")]
        for tensor, (eps, by) in self.smallest.items():
            shape = "x".join(map(str, self.shapes[tensor])) or "()"
            sees = f"detects a relative error from {eps:.1e} ({by})" if math.isfinite(eps) else \
                by or "no scaling is sure to be seen"
            lines.append(f"  {tensor} ({shape}): {sees}")
            eps, by = self.in_precision.get(tensor, (math.inf, ""))
            if math.isfinite(eps):
                lines.append(f"    in {self.precision} alone (a mistake of the low-precision run only): from {eps:.1e}, "
                             f"a factor {1 + eps:.3g} ({by})")
            mine = [v for v in self.variants if v.tensor == tensor]
            caught = [v.name for v in mine if v.outcome == "caught"]
            if caught:
                lines.append(f"    caught: {', '.join(caught)}")
            lines += [f"    MISSED: {v.name} ({v.detail})" for v in mine if v.outcome == "missed"]
            skipped = {}
            for v in mine:
                if v.outcome == "skipped":
                    skipped.setdefault(v.detail, []).append(v.name)
            lines += [f"    skipped: {', '.join(names)} ({why})" for why, names in skipped.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<SelfTest caught {len(self.caught)}, missed {len(self.missed)}, skipped {len(self.skipped)}>"


def not_run(why: str) -> SelfTest:
    return SelfTest([], {}, {}, why)


# ------------------------------------------------------------------------------ the smallest error


def _threshold(allowed: float, now: float, q: float) -> float:
    """The least ε for which (1 + ε)·a is sure to exceed `allowed` (module docstring)."""
    return (allowed + now) / (q - allowed) if q > allowed else math.inf


def smallest(label: str, comparisons, runs, numeric) -> tuple[float, str]:
    """(ε, "a~b"): the smallest relative error of `label`'s hand-written gradient that one of its
    comparisons is sure to see, and that comparison; (inf, "") where none is."""
    best = (math.inf, "")
    for c in comparisons:
        # At kinks yours is held to an interval (one-sided, ties): a small scale can stay inside it.
        if c.tensor != label or c.a not in MANUAL or c.b in MANUAL or c.b in ("one-sided", "ties"):
            continue
        agr = c.agreement
        a = np.asarray(runs[c.a].grads[label], np.float64).ravel()
        if c.b == "fd":
            a = a[numeric.coords[label]]
        top = abs(agr.a_value) if c.b == "dir" else float(np.abs(a).max(initial=0))
        eps = min(_threshold(agr.allowed, agr.rel_err, agr.norm_a / max(agr.norm_a, agr.norm_b, TINY)),
                  _threshold(agr.elem_allowed, agr.elem_rel, top / max(agr.peak, TINY)))
        if eps < best[0]:
            best = (eps, f"{c.a}~{c.b}")
    return best


# ------------------------------------------------------------------------------ the variants


def _averaged(v: np.ndarray, axis: int) -> np.ndarray:
    mean = np.asarray(v, np.float64).mean(axis=axis, keepdims=True)
    return np.broadcast_to(mean, v.shape).astype(v.dtype)


def _unchanged_mean(m: np.ndarray, axis: int) -> np.ndarray:
    """How far averaging along `axis` may move each element of m by rounding alone."""
    n = m.shape[axis]
    mean = np.abs(m).mean(axis=axis, keepdims=True)
    rounding = np.expand_dims(tolerances.sum_bound(m, axis, np.float64, factor=1), axis) / n
    return rounding + tolerances.unit_roundoff(np.float64) * mean


def variants(label: str, m: np.ndarray, eps: float, reruns) -> list[tuple[str, object, bool]]:
    """(name, change(witness, value) -> new value, whether it leaves m unchanged) for the tensor
    `label` whose exact hand-written gradient is m (float64)."""
    if m.size == 0:
        return []
    factor = 1 + 2 * eps if math.isfinite(eps) else 2.0
    scale = f"scaled by 1+{2 * eps:.1e}" if math.isfinite(eps) else "scaled by 2"
    out = [(scale, lambda w, v: (np.asarray(v, np.float64) * factor).astype(v.dtype), not np.any(m * factor != m)),
           ("sign flipped", lambda w, v: -v, not m.any())]
    if m.ndim >= 2 and m.shape[-1] == m.shape[-2]:
        symmetric = np.array_equal(np.swapaxes(m, -1, -2), m)
        out.append(("transposed", lambda w, v: np.swapaxes(v, -1, -2).copy(), symmetric))
    if m.ndim >= 2:
        for axis in sorted({0, m.ndim - 1}):
            still = bool(np.all(np.abs(_averaged(m, axis) - m) <= _unchanged_mean(m, axis)))
            out.append((f"averaged over axis {axis}", lambda w, v, a=axis: _averaged(v, a), still))
    other = reruns.manual("g2", reruns.subject.float32).grads[label]
    out.append(("g ignored", lambda w, v: reruns.manual("g2", w == "manual64").grads[label],
                np.array_equal(np.asarray(other, np.float64), m)))
    return out


def _recheck(subject, runs, numeric, exact, label: str, new: dict) -> list:
    """The check's comparisons of `label` with the hand-written witnesses' gradients replaced by
    `new` ({witness: array}); every other run is the check's own."""
    alone = {w: Run([], {label: new.get(w, run.grads[label])}) for w, run in runs.items()}
    return compare_analytic(subject, alone) + numeric.compare(alone, exact, [label])[0]


def run(subject, runs, numeric, comparisons, exact, reruns) -> SelfTest:
    """Every variant of every differentiated tensor through the check's comparisons."""
    failing = {c.tensor for c in comparisons if not c.ok}
    witnesses = [w for w in MANUAL if w in runs]
    out, least, shapes = [], {}, {}
    for label in subject.labels:
        m = np.asarray(runs[exact[0]].grads[label], np.float64)
        least[label] = (math.inf, "the check already fails on it") if label in failing else \
            smallest(label, comparisons, runs, numeric) if m.any() else (math.inf, "its gradient is 0 here")
        shapes[label] = m.shape
        for name, change, unchanged in variants(label, m, least[label][0], reruns):
            if label in failing:
                out.append(Variant(label, name, "skipped", "the check already fails on this tensor"))
                continue
            if unchanged:
                out.append(Variant(label, name, "skipped", "it leaves this gradient unchanged"))
                continue
            new = {w: change(w, runs[w].grads[label]) for w in witnesses}
            seen = [f"{c.a}~{c.b}" for c in _recheck(subject, runs, numeric, exact, label, new) if not c.ok]
            if seen:
                out.append(Variant(label, name, "caught", f"by {', '.join(seen)}"))
            else:
                moved = np.linalg.norm(np.asarray(new[exact[0]], np.float64) - m) / max(np.linalg.norm(m), TINY)
                out.append(Variant(label, name, "missed", f"it moves the gradient by {moved:.2g} relative, within "
                                   "every bound of the check"))
    alone = {}
    if subject.precision != "float64":  # what the check sees in the low-precision run alone
        mine = [c for c in comparisons if c.a == "manual"]
        alone = {label: smallest(label, mine, runs, numeric) for label in least if math.isfinite(least[label][0])}
    return SelfTest(out, least, shapes, in_precision=(subject.precision, alone))
