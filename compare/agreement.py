"""Per-layer agreement of two gradients, and failure messages that say where and by how much.

For each layer i (1-based, as Wⁱ in the notes) and parameter ("W" or "b"), two measures, each held
to its own bound from ``compare.tolerances``:

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

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from compare.tolerances import TINY


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


# ------------------------------------------------------------------ the one-pass kernel
#
# Every figure above comes from one sweep over both arrays, compiled by numba and vectorised
# (AVX2/AVX-512 where the CPU has them), single-threaded: the arrays were just written by the two
# sides and sit in cache, and a second thread waiting for a busy core costs more than it saves.
# Sums are taken in float64 whatever the inputs. Float maxima do not vectorise (LLVM may reorder
# them only if it may assume there is no NaN), so maxima are taken over the magnitudes' bits: 45 µs
# against 219 µs with float maxima for a 200,704-element gradient (docs/performance.md, "Checks"),
# the difference between a check within 10 % of the step and one above it. The one trick, written
# out below; tests/test_agreement_kernel.py holds the kernel to its plain NumPy twin.

_SIGN = (1 << 63) - 1  # every bit but the sign bit of a float64


@intrinsic
def _magnitude_bits(typingctx, x):
    """|x| for a float64 x, as the unsigned integer of its bits (the sign bit cleared).

    Unsigned order of these integers is the order of |x|, with inf above every finite value and
    NaN above inf, so an integer maximum finds the greatest magnitude and flags a non-finite one.
    """
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(64))
        return builder.and_(bits, ir.Constant(ir.IntType(64), _SIGN))

    return types.uint64(types.float64), codegen


@intrinsic
def _float_of_bits(typingctx, q):
    """The float64 whose bits are the uint64 q (the inverse of `_magnitude_bits` for |x|)."""
    if q != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


# Elements per block: the greatest |a − b| of each block is compared with the running one, and
# the winner's index is searched for in its block alone at the end (an index inside the
# vectorised loop would serialise it). Long enough that the per-block reductions cost nothing.
BLOCK = 1024


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _one_pass(a, b):  # pragma: no cover (compiled; tested through `measure`)
    """Σa², Σb², Σ(a − b)², the first index of the greatest |a − b|, and max|a|, max|b|,
    max|a − b| of two 1-D contiguous float arrays of one length, in one sweep.

    "reassoc" lets the sums run in vector lanes (a different order, as any BLAS dot); NaN and inf
    propagate as in IEEE arithmetic (no fast-math assumption about them).
    """
    n = a.size
    aa = bb = dd = 0.0
    top_a = top_b = top_d = np.uint64(0)
    top_block = 0
    full = n // BLOCK
    for j in range(full + 1):
        start = j * BLOCK
        m = BLOCK if j < full else n - start
        saa = sbb = sdd = 0.0
        qa = qb = qd = np.uint64(0)
        for i in range(m):
            x, y = np.float64(a[start + i]), np.float64(b[start + i])
            d = x - y
            saa += x * x
            sbb += y * y
            sdd += d * d
            qa = max(qa, _magnitude_bits(x))
            qb = max(qb, _magnitude_bits(y))
            qd = max(qd, _magnitude_bits(d))
        aa, bb, dd = aa + saa, bb + sbb, dd + sdd
        top_a, top_b = max(top_a, qa), max(top_b, qb)
        if qd > top_d:
            top_d, top_block = qd, start
    k = top_block
    for i in range(top_block, min(top_block + BLOCK, n)):
        if _magnitude_bits(np.float64(a[i]) - np.float64(b[i])) == top_d:
            k = i
            break
    return aa, bb, dd, k, _float_of_bits(top_a), _float_of_bits(top_b), _float_of_bits(top_d)


@numba.njit(nogil=True, cache=True)
def _greatest_bits(x):  # pragma: no cover (compiled; tested through `greatest_magnitude`)
    """max|x| of a 1-D contiguous float array, as `_magnitude_bits` (NaN above inf)."""
    top = np.uint64(0)
    for i in range(x.size):
        top = max(top, _magnitude_bits(np.float64(x[i])))
    return _float_of_bits(top)


# Compile (or load from numba's cache) now, so that no checked step is charged for it: float64,
# float32, and the two mixed (the float64 referee of float32 runs).
for _a, _b in [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float32)]:
    _one_pass(np.zeros(1, _a), np.zeros(1, _b))
    _greatest_bits(np.zeros(1, _a))
del _a, _b


def _flat(x: np.ndarray) -> np.ndarray:
    """x as a contiguous 1-D float32 or float64 array in row-major order (a view where it already
    is one)."""
    return (x if x.dtype.char in "fd" else x.astype(np.float64)).ravel()


def greatest_magnitude(a: np.ndarray) -> float:
    """max|a| (0 for an empty array; NaN if `a` holds a NaN, else inf if it holds an inf). One
    compiled call: cheaper per step than NumPy's max and min, whose reduction machinery dominates
    for a batch of logits."""
    return _greatest_bits(_flat(np.asarray(a)))


def _index(k: int, shape: tuple) -> tuple:
    """The index of flat (row-major) position k in an array of `shape` (np.unravel_index's,
    in plain arithmetic: it runs at every checked step)."""
    index = []
    for n in reversed(shape):
        k, i = divmod(k, n)
        index.append(i)
    return tuple(reversed(index))


def sum_of_squares(a: np.ndarray) -> float:
    """Σ a² (inf or NaN when `a` holds a non-finite value)."""
    flat = _flat(np.asarray(a))
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(flat, flat))


def rel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖a‖ (a cheaper sibling of `measure`, for the weight drift of free-mode runs)."""
    aa, _, dd, *_ = _one_pass(_flat(np.asarray(a)), _flat(np.asarray(b)))
    return math.sqrt(dd) / max(math.sqrt(aa), TINY)


# ------------------------------------------------------------------ the measures


def _non_finite(a: np.ndarray, fa, fb, layer, param, allowed, elem_allowed, aa, bb) -> Agreement:
    """The Agreement of arrays holding NaN or inf: both measures inf, at the first such index."""
    k = int(np.flatnonzero(~(np.isfinite(fa) & np.isfinite(fb)))[0])
    return Agreement(layer, param, a.shape, math.inf, math.inf, _index(k, a.shape), float(fa[k]), float(fb[k]),
                     math.nan, allowed, "", math.sqrt(aa), math.sqrt(bb), math.inf, elem_allowed, math.inf)


def measure(a: np.ndarray, b: np.ndarray, layer: int, param: str, allowed: float,
            elem_allowed: float | None = None) -> Agreement:
    """Compare two arrays of the same shape (one parameter's gradient from two sides).

    Args:
        a, b: arrays of one shape, float32 or float64 (mixed is fine; sums are taken in float64).
        layer, param: where they come from (1-based layer, "W" or "b"), for the messages.
        allowed: bound on the relative error ‖a − b‖ / max(‖a‖, ‖b‖).
        elem_allowed: bound on max|a − b| / max(max|a|, max|b|); default `allowed`.
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
    aa, bb, dd, k, max_a, max_b, max_d = _one_pass(fa, fb)
    peak = max(max_a, max_b)
    scale = 1.0
    if not math.isfinite(peak):  # NaN or inf in an entry (NaN's bits rank above inf's)
        return _non_finite(a, fa, fb, layer, param, allowed, elem_allowed, aa, bb)
    if not (math.isfinite(aa) and math.isfinite(bb) and math.isfinite(dd)):  # finite entries, squares overflow
        scale = peak  # the scale cancels in every ratio below
        aa, bb, dd, k, _, _, _ = _one_pass(fa / scale, fb / scale)
    na, nb = math.sqrt(aa), math.sqrt(bb)
    rel = math.sqrt(dd) / max(na, nb, TINY)
    cosine = 1.0 if na == 0 and nb == 0 else (aa + bb - dd) / 2 / max(na * nb, TINY)
    idx = _index(k, a.shape)
    va, vb = float(fa[k]), float(fb[k])
    return Agreement(layer, param, a.shape, rel, abs(va - vb), idx, va, vb, min(1.0, max(-1.0, cosine)),
                     allowed, "", na * scale, nb * scale, max_d / max(peak, TINY), elem_allowed, peak)


def compare_grads(grads_a, grads_b, allowed: float, elem_allowed: float | None = None) -> list[Agreement]:
    """Agreement of two gradients in the manual structure [(dW, db), ...], layer by layer
    (`allowed` bounds the relative error, `elem_allowed`, default `allowed`, the elementwise one)."""
    if len(grads_a) != len(grads_b):
        raise ValueError(f"the two sides have {len(grads_a)} and {len(grads_b)} layers")
    out = []
    for i, ((dWa, dba), (dWb, dbb)) in enumerate(zip(grads_a, grads_b), start=1):
        out.append(measure(dWa, dWb, i, "W", allowed, elem_allowed))
        out.append(measure(dba, dbb, i, "b", allowed, elem_allowed))
    return out


# ------------------------------------------------------------------ messages


def count_differing(a: np.ndarray, b: np.ndarray, agr: Agreement) -> int:
    """Elements of a and b farther apart than the elementwise bound times the greatest magnitude
    (a NaN difference counts)."""
    with np.errstate(all="ignore"):
        d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        return int(np.count_nonzero(~(d <= agr.elem_allowed * max(agr.peak, TINY))))


def _verdicts(agr: Agreement) -> str:
    """Both measures against their bounds, the failing ones first."""
    rel = f"relative error {agr.rel_err:.3g} {{}} allowed {agr.allowed:.2g}"
    elem = (f"elementwise error (greatest difference / greatest magnitude) {agr.elem_rel:.3g} {{}} "
            f"allowed {agr.elem_allowed:.2g}")
    parts = [(rel, "relative error"), (elem, "elementwise error")]
    parts.sort(key=lambda p: p[1] not in agr.failed)
    return ", ".join(text.format(">" if name in agr.failed else "<=") for text, name in parts)


def message(agr: Agreement, label: str, names=("manual", "torch"), count: tuple[int, int] | None = None,
            what: str = "elements", shape: tuple | None = None, index: tuple | None = None) -> str:
    """One comparison in words: the one wording of every verdict (training, gradcheck, the check API).

    Args:
        agr: the Agreement (``measure``).   label: what was compared ("layer 2 W", "input x").
        names: the two witnesses, as g's a and b.
        count: (how many elements differ beyond the elementwise bound, how many were compared);
            ``count_differing`` gives the first.
        what: "elements", "coordinates" (finite differences) or "direction" (one number: the
            derivative along a random direction).
        shape, index: the tensor's shape and the worst index in it, where agr measured a sample.
    """
    a, b = names
    index = agr.worst_index if index is None else index
    shape = tuple(agr.shape if shape is None else shape)
    where = f"{label}{f' {shape}' if shape else ''}: {a} vs {b}"
    if agr.note:
        return f"{where}: {agr.note}"
    if not (math.isfinite(agr.a_value) and math.isfinite(agr.b_value)):
        return f"{where}: non-finite value at index {index} ({a} {agr.a_value:.6g}, {b} {agr.b_value:.6g})"
    if what == "direction":
        return (f"{where}: along a random direction u, <{a}, u> = {agr.a_value:.6g} but the central difference "
                f"gives {agr.b_value:.6g}; relative error {agr.rel_err:.3g} > allowed {agr.allowed:.2g}")
    text = f"{where}: {_verdicts(agr)}"
    if count is not None:
        text += (f"; {count[0]} of {count[1]} {what} differ by more than {agr.elem_allowed:.2g} of the greatest "
                 f"magnitude {agr.peak:.3g}")
    return (f"{text}; greatest absolute difference {agr.max_abs:.3g} at index {index} "
            f"({a} {agr.a_value:.6g}, {b} {agr.b_value:.6g}); cosine similarity {agr.cosine:.6f}")


def param_message(agr: Agreement, names=("manual", "torch"), arrays=None) -> str:
    """``message`` for one parameter of a net ("layer 2 W"); `arrays` = (a, b) adds the count."""
    count = None if arrays is None or agr.note else (count_differing(*arrays, agr), int(np.prod(agr.shape)))
    return message(agr, f"layer {agr.layer} {agr.param}", names, count)


class AgreementError(AssertionError):
    """Two gradients disagree. ``failures`` holds the Agreement of each failing parameter."""

    def __init__(self, failures: list[Agreement], names=("manual", "torch"), context: str = "", grads=None):
        self.failures = failures
        self.names = names
        self.context = context
        lines = []
        for agr in failures:
            arrays = None
            if grads is not None and not agr.note:
                j = 0 if agr.param == "W" else 1
                arrays = (np.asarray(grads[0][agr.layer - 1][j]), np.asarray(grads[1][agr.layer - 1][j]))
            lines.append(param_message(agr, names, arrays))
        first = failures[0]
        head = (f"gradients disagree ({names[0]} vs {names[1]}){' at ' + context if context else ''}: "
                f"layer {first.layer} {first.param}")
        others = len(failures) - 1
        head += f" and {others} more parameter{'s' * (others > 1)}" if others else ""
        super().__init__(head + "\n  " + "\n  ".join(lines))


def assert_grads_agree(grads_a, grads_b, allowed: float, names=("manual", "torch"), context: str = "",
                       elem_allowed: float | None = None):
    """Compare and raise AgreementError naming every failing layer and parameter.

    Returns the list of Agreements when all pass.
    """
    agreements = compare_grads(grads_a, grads_b, allowed, elem_allowed)
    failures = [agr for agr in agreements if not agr.ok]
    if failures:
        raise AgreementError(failures, names, context, grads=(grads_a, grads_b))
    return agreements
