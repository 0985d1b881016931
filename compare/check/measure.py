"""Per-layer agreement of two gradients, and failure messages that say where and by how much.

For each layer i (1-based, as Wⁱ in the notes) and parameter ("W" or "b"), two measures, each held
to its own bound from ``compare.check.tolerances``:

- relative error ‖a − b‖ / max(‖a‖, ‖b‖, tiny) (Euclidean norms over the whole array);
- elementwise error max|a − b| / max(max|a|, max|b|, tiny): the greatest difference relative to
  the greatest magnitude. One wrong element among n hides in the first (its share of ‖a − b‖ is
  diluted by the √n-sized ‖a‖), never in the second.

Also recorded: the greatest absolute difference and the index where it occurs, with both values
there, and the cosine similarity a·b / (‖a‖‖b‖) (1 for two zero arrays).

A failure reads like ``torch.testing.assert_close``: which layer and parameter, which measure
failed, how many elements differ, the greatest difference, its index, both values, and what was
allowed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from compare.check.findings import Failure, Greatest, Measure
from compare.check.text import one_line
from compare.check.tolerances import TINY


# Not frozen: a frozen dataclass sets each field through object.__setattr__, at twice the cost,
# and a run builds one Agreement per parameter at every checked step.
@dataclasses.dataclass(slots=True)
class Agreement:
    """How closely two gradients of one parameter agree (``a`` and ``b`` name the two sides)."""

    layer: int  # 1-based
    param: str  # "W" or "b"
    shape: tuple
    rel_err: float  # ‖a − b‖ / max(‖a‖, ‖b‖)
    max_abs: float  # max|a − b|
    worst_index: tuple  # where max|a − b| occurs (the first such index)
    a_value: float
    b_value: float
    cosine: float
    allowed: float  # bound on rel_err
    note: str = ""  # why the comparison could not be made (shape mismatch), if so
    norm_a: float = math.nan  # ‖a‖ and ‖b‖ (inf or NaN for a non-finite gradient)
    norm_b: float = math.nan
    elem_rel: float = math.nan  # max|a − b| / max(max|a|, max|b|); NaN (never ok) if not measured
    elem_allowed: float = math.nan  # bound on elem_rel
    peak: float = math.nan  # max(max|a|, max|b|)

    @property
    def failed(self) -> list[str]:
        """The measures out of their bounds: "relative error", "elementwise error" (or "shape")."""
        if self.note:
            return ["shape"]
        out = [] if math.isfinite(self.rel_err) and self.rel_err <= self.allowed else ["relative error"]
        return out + ([] if self.elem_rel <= self.elem_allowed else ["elementwise error"])

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"], d["worst_index"], d["ok"] = list(self.shape), list(self.worst_index), self.ok
        return d


# ------------------------------------------------------------------ the sweep


def one_pass(a: np.ndarray, b: np.ndarray):
    """Σa², Σb², Σ(a − b)², the first index of the greatest |a − b|, and max|a|, max|b|, max|a − b|
    of two 1-D float arrays of one length, sums and differences in float64; a NaN anywhere makes
    the maxima NaN (``measure`` then reports the first non-finite element). The training loop
    hands ``measure`` a compiled sweep of the same contract (``compare.train.kernel``)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(all="ignore"):
        d = a64 - b64
        ad = np.abs(d)
        k = int(np.argmax(ad)) if ad.size else 0
        return (float(a64 @ a64), float(b64 @ b64), float(d @ d), k, float(np.max(np.abs(a64), initial=0.0)),
                float(np.max(np.abs(b64), initial=0.0)), float(np.max(ad, initial=0.0)))


def _flat(x: np.ndarray) -> np.ndarray:
    """x as a contiguous 1-D float32 or float64 array in row-major order (a view where it already
    is one)."""
    return (x if x.dtype.char in "fd" else x.astype(np.float64)).ravel()


def _index(k: int, shape: tuple) -> tuple:
    """The index of flat (row-major) position k in an array of `shape` (np.unravel_index's,
    in plain arithmetic: it runs at every checked step)."""
    index = []
    for n in reversed(shape):
        k, i = divmod(k, n)
        index.append(i)
    return tuple(reversed(index))


# ------------------------------------------------------------------ the measures


def _non_finite(a: np.ndarray, fa, fb, layer, param, allowed, elem_allowed, aa, bb) -> Agreement:
    """The Agreement of arrays holding NaN or inf: both measures inf, at the first such index."""
    k = int(np.flatnonzero(~(np.isfinite(fa) & np.isfinite(fb)))[0])
    return Agreement(layer, param, a.shape, math.inf, math.inf, _index(k, a.shape), float(fa[k]), float(fb[k]),
                     math.nan, allowed, "", math.sqrt(aa), math.sqrt(bb), math.inf, elem_allowed, math.inf)


def measure(a: np.ndarray, b: np.ndarray, layer: int, param: str, allowed: float,
            elem_allowed: float | None = None, sweep=one_pass) -> Agreement:
    """Compare two arrays of the same shape (one parameter's gradient from two sides).

    Args:
        a, b: arrays of one shape, float32 or float64 (mixed is fine; sums are taken in float64).
        layer, param: where they come from (1-based layer, "W" or "b"), for the messages.
        allowed: bound on the relative error ‖a − b‖ / max(‖a‖, ‖b‖).
        elem_allowed: bound on max|a − b| / max(max|a|, max|b|); default `allowed`.
        sweep: ``one_pass`` or a faster function of its contract.
    """
    a, b = np.asarray(a), np.asarray(b)
    elem_allowed = allowed if elem_allowed is None else elem_allowed
    if a.shape != b.shape:
        note = f"shapes differ: {a.shape} vs {b.shape}"
        return Agreement(layer, param, a.shape, math.inf, math.inf, (), math.nan, math.nan, math.nan, allowed,
                         note, elem_rel=math.inf, elem_allowed=elem_allowed)
    if a.size == 0:
        return Agreement(layer, param, a.shape, 0.0, 0.0, (), 0.0, 0.0, 1.0, allowed, "", 0.0, 0.0, 0.0,
                         elem_allowed, 0.0)
    fa, fb = _flat(a), _flat(b)
    aa, bb, dd, k, max_a, max_b, max_d = sweep(fa, fb)
    peak = max(max_a, max_b)
    scale = 1.0
    if not (math.isfinite(max_a) and math.isfinite(max_b)):  # NaN or inf in an entry
        return _non_finite(a, fa, fb, layer, param, allowed, elem_allowed, aa, bb)
    if not (math.isfinite(aa) and math.isfinite(bb) and math.isfinite(dd)):  # finite entries, squares overflow
        scale = peak  # the scale cancels in every ratio below
        aa, bb, dd, k, _, _, _ = sweep(fa / scale, fb / scale)
    na, nb = math.sqrt(aa), math.sqrt(bb)
    rel = math.sqrt(dd) / max(na, nb, TINY)
    cosine = 1.0 if na == 0 and nb == 0 else (aa + bb - dd) / 2 / max(na * nb, TINY)
    idx = _index(k, a.shape)
    va, vb = float(fa[k]), float(fb[k])
    return Agreement(layer, param, a.shape, rel, abs(va - vb), idx, va, vb, min(1.0, max(-1.0, cosine)),
                     allowed, "", na * scale, nb * scale, max_d / max(peak, TINY), elem_allowed, peak)


# ------------------------------------------------------------------ messages


def count_differing(a: np.ndarray, b: np.ndarray, agr: Agreement) -> int:
    """Elements of a and b farther apart than the elementwise bound times the greatest magnitude
    (a NaN difference counts)."""
    with np.errstate(all="ignore"):
        d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        return int(np.count_nonzero(~(d <= agr.elem_allowed * max(agr.peak, TINY))))


def failure(agr: Agreement, label: str, names=("manual", "torch"), count: tuple[int, int] | None = None,
            what: str = "elements", shape: tuple | None = None, index: tuple | None = None) -> Failure:
    """One comparison as a ``Failure`` (``compare.check.findings``), the facts its message is made of.

    Args:
        agr: the Agreement (``measure``).   label: what was compared ("layer 2 W", "input x").
        names: the two witnesses, as g's a and b.
        count: (how many elements differ beyond the elementwise bound, how many were compared);
            ``count_differing`` gives the first.
        what: "elements", "coordinates" (finite differences) or "direction" (one number: the
            derivative along a random direction).
        shape, index: the tensor's shape and the worst index in it, where agr measured a sample.
    """
    index = agr.worst_index if index is None else index
    shape = tuple(agr.shape if shape is None else shape)
    rel_ok = math.isfinite(agr.rel_err) and agr.rel_err <= agr.allowed
    if what == "direction":
        measures = (Measure("relative error", agr.rel_err, agr.allowed, rel_ok),)
    else:
        measures = (Measure("relative error", agr.rel_err, agr.allowed, rel_ok),
                    Measure("elementwise error", agr.elem_rel, agr.elem_allowed, agr.elem_rel <= agr.elem_allowed))
    greatest = None if agr.note else Greatest(tuple(index), agr.a_value, agr.b_value, agr.max_abs)
    differ, compared = (None, 1) if count is None else count
    return Failure(label, shape, tuple(names), measures, greatest, differ, compared, what, agr.peak, agr.cosine,
                   agr.note)


def message(agr: Agreement, label: str, names=("manual", "torch"), count: tuple[int, int] | None = None,
            what: str = "elements", shape: tuple | None = None, index: tuple | None = None) -> str:
    """One comparison on one line (``failure``'s arguments): the training loop's and gradcheck's
    wording, ``compare.check.text.one_line``."""
    return one_line(failure(agr, label, names, count, what, shape, index))


def param_message(agr: Agreement, names=("manual", "torch"), arrays=None) -> str:
    """``message`` for one parameter of a net ("layer 2 W"); `arrays` = (a, b) adds the count."""
    count = None if arrays is None or agr.note else (count_differing(*arrays, agr), int(np.prod(agr.shape)))
    return message(agr, f"layer {agr.layer} {agr.param}", names, count)
