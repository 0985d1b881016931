"""Per-layer agreement of two gradients, and failure messages that say where and by how much.

For each layer i (1-based, as Wⁱ in the notes) and parameter ("W" or "b"):

- relative error ‖a − b‖ / max(‖a‖, ‖b‖, tiny) (Euclidean norms over the whole array) — the
  number held to the tolerances of ``compare.tolerances``;
- greatest absolute difference and the index where it occurs, with both values there;
- cosine similarity a·b / (‖a‖‖b‖) (1 for two zero arrays).

A failure reads like ``torch.testing.assert_close``: which layer and parameter, how many elements
differ, the greatest difference, its index, both values, and what was allowed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compare.tolerances import TINY


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How closely two gradients of one parameter agree (``a`` and ``b`` name the two sides)."""

    layer: int  # 1-based
    param: str  # "W" or "b"
    shape: tuple
    rel_err: float
    max_abs: float
    worst_index: tuple
    a_value: float
    b_value: float
    cosine: float
    allowed: float
    note: str = ""  # why the comparison could not be made (shape mismatch), if so

    @property
    def ok(self) -> bool:
        return math.isfinite(self.rel_err) and self.rel_err <= self.allowed and not self.note

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"], d["worst_index"], d["ok"] = list(self.shape), list(self.worst_index), self.ok
        return d


def _sq(v: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled by the caller
        return float(np.dot(v, v))


def measure(a: np.ndarray, b: np.ndarray, layer: int, param: str, allowed: float) -> Agreement:
    """Compare two arrays of the same shape (one parameter's gradient from two sides)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        note = f"shapes differ: {a.shape} vs {b.shape}"
        return Agreement(layer, param, a.shape, math.inf, math.inf, (), math.nan, math.nan, math.nan, allowed, note)
    if a.size == 0:
        return Agreement(layer, param, a.shape, 0.0, 0.0, (), 0.0, 0.0, 1.0, allowed)
    fa, fb = a.ravel(), b.ravel()
    d = fa - fb
    # Squared norms by BLAS dot products: one pass each. a·b follows from the three of them.
    aa, bb, dd = _sq(fa), _sq(fb), _sq(d)
    if not all(map(math.isfinite, (aa, bb, dd))):  # NaN/inf, or an overflow of the squares
        fa, fb = fa.astype(np.float64), fb.astype(np.float64)
        d = fa - fb
        if not (np.isfinite(fa).all() and np.isfinite(fb).all()):
            k = int(np.flatnonzero(~(np.isfinite(fa) & np.isfinite(fb)))[0])
            idx = tuple(int(i) for i in np.unravel_index(k, a.shape))
            return Agreement(layer, param, a.shape, math.inf, math.inf, idx, float(fa[k]), float(fb[k]),
                             math.nan, allowed, "")
        scale = max(np.abs(fa).max(), np.abs(fb).max())
        aa, bb, dd = _sq(fa / scale), _sq(fb / scale), _sq(d / scale)
    na, nb = math.sqrt(aa), math.sqrt(bb)
    rel = math.sqrt(dd) / max(na, nb, TINY)
    cosine = 1.0 if na == 0 and nb == 0 else (aa + bb - dd) / 2 / max(na * nb, TINY)
    k = int(np.argmax(np.abs(d)))
    idx = tuple(int(i) for i in np.unravel_index(k, a.shape))
    return Agreement(layer, param, a.shape, rel, float(abs(d[k])), idx, float(fa[k]), float(fb[k]),
                     float(min(1.0, max(-1.0, cosine))), allowed)


def compare_grads(grads_a, grads_b, allowed: float) -> list[Agreement]:
    """Agreement of two gradients in the manual structure [(dW, db), ...], layer by layer."""
    if len(grads_a) != len(grads_b):
        raise ValueError(f"the two sides have {len(grads_a)} and {len(grads_b)} layers")
    out = []
    for i, ((dWa, dba), (dWb, dbb)) in enumerate(zip(grads_a, grads_b), start=1):
        out.append(measure(dWa, dWb, i, "W", allowed))
        out.append(measure(dba, dbb, i, "b", allowed))
    return out


def worst(agreements: list[Agreement]) -> Agreement:
    """The agreement closest to (or furthest past) its tolerance."""
    return max(agreements, key=lambda g: g.rel_err / g.allowed if g.allowed else math.inf)


def _mismatched(a: np.ndarray, b: np.ndarray, allowed: float) -> int:
    """Elements whose difference exceeds `allowed` times the larger array's greatest magnitude."""
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), TINY)
    return int(np.count_nonzero(np.abs(a.astype(np.float64) - b) > allowed * scale))


def describe(g: Agreement, names=("manual", "torch"), arrays=None) -> str:
    """One parameter's disagreement in words (`arrays` = (a, b) adds the count of bad elements)."""
    where = f"layer {g.layer} {g.param}"
    if g.note:
        return f"{where}: {g.note}"
    if not math.isfinite(g.max_abs):
        return (f"{where} {g.shape}: non-finite gradient at index {g.worst_index} "
                f"({names[0]} {g.a_value:.6g}, {names[1]} {g.b_value:.6g})")
    count = ""
    if arrays is not None:
        count = f"; {_mismatched(*arrays, g.allowed)} of {int(np.prod(g.shape))} elements differ"
    return (f"{where} {g.shape}: relative error {g.rel_err:.3g} > allowed {g.allowed:.0e}{count}; "
            f"greatest absolute difference {g.max_abs:.3g} at index {g.worst_index} "
            f"({names[0]} {g.a_value:.6g}, {names[1]} {g.b_value:.6g}); cosine similarity {g.cosine:.6f}")


class AgreementError(AssertionError):
    """Two gradients disagree. ``failures`` holds the Agreement of each failing parameter."""

    def __init__(self, failures: list[Agreement], names=("manual", "torch"), context: str = "", grads=None):
        self.failures = failures
        self.names = names
        self.context = context
        lines = []
        for g in failures:
            arrays = None
            if grads is not None and not g.note:
                pair = (grads[0][g.layer - 1], grads[1][g.layer - 1])
                j = 0 if g.param == "W" else 1
                arrays = (np.asarray(pair[0][j]), np.asarray(pair[1][j]))
            lines.append(describe(g, names, arrays))
        first = failures[0]
        head = (f"gradients disagree ({names[0]} vs {names[1]}){' at ' + context if context else ''}: "
                f"layer {first.layer} {first.param}")
        others = len(failures) - 1
        head += f" and {others} more parameter{'s' * (others > 1)}" if others else ""
        super().__init__(head + "\n  " + "\n  ".join(lines))


def assert_grads_agree(grads_a, grads_b, allowed: float, names=("manual", "torch"), context: str = ""):
    """Compare and raise AgreementError naming every failing layer and parameter.

    Returns the list of Agreements when all pass.
    """
    agreements = compare_grads(grads_a, grads_b, allowed)
    failures = [g for g in agreements if not g.ok]
    if failures:
        raise AgreementError(failures, names, context, grads=(grads_a, grads_b))
    return agreements
