"""The training loop's fast path to the referee's measure (``compare.check.measure``): the same
``measure``, swept by one compiled pass over both arrays, and the per-step helpers built on it.

A checked training run measures every parameter's gradient at every step, so the sweep's cost is
the check's cost; the referee itself, which measures a handful of tensors once, uses NumPy's.
``tests/test_agreement_kernel.py`` holds the compiled sweep to the NumPy one.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from compare.check.measure import Agreement, _flat, message, param_message  # noqa: F401  (the app's names)
from compare.check.measure import measure as _measure
from compare.check.tolerances import TINY


# ------------------------------------------------------------------ the one-pass kernel
#
# Every figure of an Agreement comes from one sweep over both arrays, compiled by numba and vectorised
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


def greatest_magnitude(a: np.ndarray) -> float:
    """max|a| (0 for an empty array; NaN if `a` holds a NaN, else inf if it holds an inf). One
    compiled call: cheaper per step than NumPy's max and min, whose reduction machinery dominates
    for a batch of logits."""
    return _greatest_bits(_flat(np.asarray(a)))


def sum_of_squares(a: np.ndarray) -> float:
    """Σ a² (inf or NaN when `a` holds a non-finite value)."""
    flat = _flat(np.asarray(a))
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(flat, flat))


def rel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖a‖ (a cheaper sibling of `measure`, for the weight drift of free-mode runs)."""
    aa, _, dd, *_ = _one_pass(_flat(np.asarray(a)), _flat(np.asarray(b)))
    return math.sqrt(dd) / max(math.sqrt(aa), TINY)


def measure(a: np.ndarray, b: np.ndarray, layer: int, param: str, allowed: float,
            elem_allowed: float | None = None) -> Agreement:
    """``compare.check.measure.measure`` with the compiled sweep."""
    return _measure(a, b, layer, param, allowed, elem_allowed, sweep=_one_pass)


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
