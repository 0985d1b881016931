"""The referee's bounds, in one place, each with the reason for its value (the training app's own
bounds, built on these, are in ``compare.tolerances``).

The bounds are on the relative error ‖a − b‖ / max(‖a‖, ‖b‖, tiny) of a whole parameter's
gradient, or (the *_ELEM ones) on the elementwise error max|a − b| / max(max|a|, max|b|) (see
``compare.check.measure``). A real derivative bug (a dropped σ', a sign, a transpose, a missing 1/B)
gives either of order 1e-2 to 1, far above every bound here.
"""

from __future__ import annotations

import math

import numpy as np

# Manual vs torch in float64: the same formulas summed in another order (BLAS blocking, fused
# kernels). Sums of a few thousand terms round to ~1e-15 (largest seen: 5e-15); 1e-10 leaves five
# orders of magnitude for unlucky cancellation and is eight below a real bug.
FLOAT64_REL = 1e-10

# Manual vs torch in float32 (eps 1.2e-7): sums over 784 inputs and a batch round to ~1e-6
# (largest seen: 3e-6); 1e-4 is a hundredfold margin.
FLOAT32_REL = 1e-4

# Central finite differences in float64, step FD_STEP: truncation h²·f‴/6 plus rounding eps·|L|/h
# per coordinate. h = 1e-4 balances the two for MNIST nets (largest seen: 1.2e-8, 784-64-32-16-10;
# h = 1e-6 gave 1.1e-6, h = 1e-3 5e-7). 1e-6, torch.autograd.gradcheck's usual bound, leaves ~80.
FINITE_DIFF_REL = 1e-6
FD_STEP = 1e-4

# The elementwise measure max|a − b| / max(max|a|, max|b|) (``compare.check.measure``), which one wrong
# element cannot hide in. An element summed from k terms rounds by at most γ_k·Σ|terms| on each side,
# so two sides differ by at most 2γ_k·ρ of the greatest magnitude, ρ = max Σ|terms| / max|g| (below
# 8 on MNIST, 784-256-10); with the forward's fan-in sums k ≈ B + 1,050: at batch 512 the worst case
# is ~2.6e-12 in float64 and ~1.1e-3 in float32.
#
# float64 at identical weights: a margin of ~40 over that worst case; one element off by 1e-8 of the
# greatest still fails.
FLOAT64_ELEM = 1e-10
# float32 at identical weights: the worst case at batch 512 (largest seen: 2.1e-5, batch 32).
FLOAT32_ELEM = 1e-3
# Finite differences against an analytic gradient, relative to the greatest sampled entry: the
# rounding and truncation of FINITE_DIFF_REL (largest seen: 1.6e-8, 784-64-32-16-10).
FINITE_DIFF_ELEM = 1e-6
# A kink (``compare.check.kinks``): the one-sided differences of a smooth function differ by
# about h·f″ (1e-4·f″ at FD_STEP), and by that amount halved at h/2; at a kink (a ReLU's input at
# 0, a tie in a max) by a jump that stays as the step halves. A coordinate is at a kink when the
# jump exceeds KINK_JUMP of its own larger one-sided difference (10x what a curvature f″ = f′·10
# would give) and NOISE_FACTOR times their rounding bounds, and changes by less than KINK_STABLE of
# itself from h to h/2 (a smooth jump halves).
KINK_JUMP = 1e-3
KINK_STABLE = 0.1

TINY = np.finfo(np.float64).tiny  # keeps 0/0 out of the relative error of two zero gradients


# Confident batches: when p_y = 1 − r for every example, the loss and the output delta
# (p − onehot(y))/B are of size r, but they are computed from quantities of size 1 (p) and of the
# size of the logits (ẑ − c, logsumexp − ẑ_y), so their absolute rounding error is ~eps·(1 + max|ẑ|)
# and their relative error ~eps·(1 + max|ẑ|)/r, with r ≈ the batch-mean loss when it is small.
# Both sides suffer it, each differently (neither is wrong: a float64 computation agrees with both
# within that noise), so no bound tighter than NOISE_FACTOR times that can hold. It only widens a
# bound for tiny losses: in float32 with logits ~10, below ~7e-2 for the 1e-4 bound, and in float64
# below ~2e-4 for the 1e-10 bound.
NOISE_FACTOR = 10


def noise_floor(dtype, loss: float, logit_scale: float = 0.0) -> float:
    """Relative rounding noise of a batch's loss and gradients: NOISE_FACTOR·eps·(1 + max|ẑ|)/loss."""
    if not loss > 0 or not math.isfinite(loss):
        return 0.0
    return NOISE_FACTOR * float(np.finfo(np.dtype(dtype)).eps) * (1.0 + logit_scale) / loss


def gradient_rel(dtype, loss: float | None = None, base: float | None = None, logit_scale: float = 0.0) -> float:
    """Manual-vs-torch bound for gradients (and losses) computed in `dtype` at identical weights.

    Args:
        dtype: float32 or float64.
        loss: the batch-mean loss; when small, the bound widens to `noise_floor`.
        base: the bound before widening (default FLOAT32_REL or FLOAT64_REL).
        logit_scale: max |logit| of the batch (the size of the quantities the loss cancels).
    """
    if base is None:
        base = FLOAT32_REL if np.dtype(dtype) == np.float32 else FLOAT64_REL
    return base if loss is None else max(base, noise_floor(dtype, loss, logit_scale))


def elementwise_rel(dtype, loss: float | None = None, base: float | None = None, logit_scale: float = 0.0) -> float:
    """The same for the elementwise measure max|a − b| / max(max|a|, max|b|): `base` (default
    FLOAT32_ELEM or FLOAT64_ELEM), widened to `noise_floor` for confident batches as in `gradient_rel`."""
    if base is None:
        base = FLOAT32_ELEM if np.dtype(dtype) == np.float32 else FLOAT64_ELEM
    return gradient_rel(dtype, loss, base, logit_scale)


# ------------------------------------------------------------------------------------------------
# Elementwise error bounds for products and sums (for tests and checkers).
#
# A float dot product of length k, summed in any order (BLAS blocking, FMA, pairwise, another
# library's kernel), satisfies |fl(a·b) − a·b| ≤ γ_k·Σ|aᵢbᵢ|, γ_k = k·u/(1 − k·u), u = eps/2 the unit
# roundoff (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1, (3.5)). So two
# computations of the same product, each in some order, differ by at most 2·γ_k·(|A| @ |B|)
# elementwise; a float64 reference of float32 operands counts as one of them (its own error is
# ~2^-29 of the float32 one). A fixed atol cannot do this: the error scales with Σ|aᵢbᵢ|, which
# for cancelling terms is far larger than the result itself (784 terms up to ~50 summing to ~0.26).
# The bound is a worst case: typical errors are ~√k smaller, and a real error (a wrong operand, a
# dropped or doubled term, a transpose) is of the size of the terms, ~1/(k·u) times larger.

# Two computations, each within γ_k of the exact value.
TWO_COMPUTATIONS = 2.0


def unit_roundoff(dtype) -> float:
    """u = eps/2 of `dtype` (float32: 5.96e-8, float64: 1.11e-16): |fl(x) − x| ≤ u·|x|."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def gamma(k: int, dtype) -> float:
    """γ_k = k·u/(1 − k·u): the relative error bound of k roundings (Higham (3.4)).

    Raises ValueError when k·u ≥ 1 (no bound exists: the sum may have lost every digit).
    """
    ku = int(k) * unit_roundoff(dtype)
    if ku >= 1.0:
        raise ValueError(f"no rounding error bound for {k} terms in {np.dtype(dtype)}: k·u = {ku:.3g} ≥ 1")
    return ku / (1.0 - ku)


def _compute_dtype(dtype, *arrays):
    """The precision whose rounding is bounded: `dtype` if given, else the lowest of the operands'."""
    if dtype is not None:
        return np.dtype(dtype)
    kinds = [a.dtype for a in arrays if np.issubdtype(a.dtype, np.floating)]
    return max(kinds, key=lambda d: np.finfo(d).eps) if kinds else np.dtype(np.float64)


def _underflow(k: int, dtype) -> float:
    """k·tiny: the absolute error that underflow (or flush-to-zero) may add to k products."""
    return int(k) * float(np.finfo(np.dtype(dtype)).tiny)


def matmul_bound(a, b, dtype=None, factor: float = TWO_COMPUTATIONS) -> np.ndarray:
    """Elementwise allowance for two computations of a @ b: factor·γ_k·(|a| @ |b|) + k·tiny.

    Args:
        a: (..., m, k) or (k,) array; b: (..., k, n) or (k,) array (anything ``@`` accepts).
        dtype: the precision the products were computed in (default: the lower of a's and b's).
        factor: 2 for two computations in any summation order (the default); 1 for one computation
            against the exact value (e.g. against a float64 reference, within its own tiny error).
    Returns:
        float64 array of a @ b's shape. |a| @ |b| is taken in float64 so that the bound itself
        carries no float32 rounding.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dt = _compute_dtype(dtype, np.asarray(a), np.asarray(b))
    k = a64.shape[-1]
    return factor * gamma(k, dt) * (np.abs(a64) @ np.abs(b64)) + _underflow(k, dt)


def sum_bound(x, axis=None, dtype=None, factor: float = TWO_COMPUTATIONS) -> np.ndarray:
    """Elementwise allowance for two computations of x.sum(axis): factor·γ_(k−1)·Σ|xᵢ| + k·tiny.

    A sum of k terms takes k − 1 roundings in any order (Higham (4.4)). For a mean divide the bound
    by k and add one rounding of the result (u·|mean|).

    Args:
        x: array; axis: as for ``np.sum`` (None: all elements; a tuple of axes counts all their terms).
        dtype: the precision the sum was computed in (default: x's).
        factor: as for ``matmul_bound``.
    Returns:
        float64 array (or 0-d array) of x.sum(axis)'s shape.
    """
    x64 = np.asarray(x, dtype=np.float64)
    dt = _compute_dtype(dtype, np.asarray(x))
    k = x64.size if axis is None else int(np.prod([x64.shape[i] for i in np.atleast_1d(axis)]))
    return factor * gamma(max(k - 1, 0), dt) * np.abs(x64).sum(axis=axis) + _underflow(k, dt)


def linear_bound(x, W, b, dtype=None, factor: float = TWO_COMPUTATIONS) -> np.ndarray:
    """Elementwise allowance for two computations of x @ Wᵀ + b: the bias is one more term of each
    dot product, so it is ``matmul_bound([x, 1], [Wᵀ; b])`` = factor·γ_(k+1)·(|x| @ |Wᵀ| + |b|).

    Args: x (B, in), W (out, in), b (out,). Returns: float64 (B, out).
    """
    x, W, b = np.asarray(x), np.asarray(W), np.asarray(b)
    dt = _compute_dtype(dtype, x, W, b)
    xa = np.hstack([np.abs(x.astype(np.float64)), np.ones((len(x), 1))])
    wa = np.vstack([np.abs(W.astype(np.float64)).T, np.abs(b.astype(np.float64))[None, :]])
    return matmul_bound(xa, wa, dt, factor)


# ------------------------------------------------------------------------------------------------
# Bounds of the check API (``compare.check``), combined here like every other.


def finite_difference_bounds(analytic, differences, rounding) -> tuple[float, float]:
    """(relative, elementwise) bounds of an analytic gradient against finite differences at the
    same coordinates (or one directional difference): FINITE_DIFF_REL and FINITE_DIFF_ELEM for the
    truncation h²·f‴/6, or more where the differences' own rounding bound (``compare.check.fd``; NOISE_FACTOR times
    it, as the noise of confident batches) relative to the norm or the greatest magnitude exceeds
    it (outputs much larger than their derivatives).

    Args: analytic, differences, rounding: 1-D float arrays of one length.
    """
    a, d, r = (np.asarray(v, dtype=np.float64) for v in (analytic, differences, rounding))
    with np.errstate(all="ignore"):
        norm = max(float(np.sqrt(a @ a)), float(np.sqrt(d @ d)), TINY)
        peak = max(float(np.abs(a).max(initial=0)), float(np.abs(d).max(initial=0)), TINY)
        return (max(FINITE_DIFF_REL, NOISE_FACTOR * float(np.sqrt(r @ r)) / norm),
                max(FINITE_DIFF_ELEM, NOISE_FACTOR * float(r.max(initial=0)) / peak))


def float32_bounds(rel_noise: float, elem_noise: float) -> tuple[float, float]:
    """(relative, elementwise) bounds between a float32 computation and another float32 or float64
    one: FLOAT32_REL, or NOISE_FACTOR times how far the reference's own float32 result lies from its
    float64 one (`rel_noise`, `elem_noise`), where the function is ill-conditioned enough to lose
    more digits than FLOAT32_REL allows."""
    return max(FLOAT32_REL, NOISE_FACTOR * rel_noise), max(FLOAT32_REL, NOISE_FACTOR * elem_noise)


# fd's truncation error h²·f‴/6 is estimated from a second step 2h (``fd.truncation``). The estimate
# is itself a difference of two truncated values and misses higher-order terms where f‴ varies
# within the step; 3 times it covers the c·h⁴ term up to |c| of the h² one's size.
TRUNCATION_FACTOR = 3


def difference_error(rounding, truncation):
    """The error of finite differences allowed for once a second step 2h estimated their truncation:
    rounding + TRUNCATION_FACTOR·truncation (elementwise for arrays, plain for floats)."""
    return rounding + TRUNCATION_FACTOR * truncation


# ------------------------------------------------------------------------------------------------
# Low precision (float16, bfloat16; ``compare.check.precision``). No fixed bound can serve: the
# rounding error of a backward in bfloat16 (unit roundoff 2^-8) ranges from ~1e-3 to ~1e-1 with
# the conditioning of the function. So the hand-written result is held against the float64 truth
# (the counterpart's autograd in float64 on float64 copies of the very rounded inputs) to
# LOW_FACTOR times the error the counterpart's own autograd makes in the same dtype against the
# same truth, measured on the spot per tensor, norm-wise and elementwise, but never less than
# LOW_FLOOR unit roundoffs (autograd can be exact by luck: a 10-element bias, a sum of few terms).
#
# Measured (tools/calibrate_precision.py: 200 seeds and shapes x bfloat16 and float16 x six right
# hand-written backwards: fused softmax + cross-entropy, softplus, layer norm, gelu, matmul,
# attention; every gradient tensor, norm-wise and elementwise): the worst right result used 0.34
# of the bound below (float16 softplus: an elementwise error of 1.35u where autograd's was 0.8u,
# 1.65x; in bfloat16, softplus again: 1.3u, 1.9x, 0.32 of the bound). Where the factor rather than
# the floor decides (4x autograd's error above 4u), right code stayed within 0.96x autograd's; the
# largest ratio anywhere, 1.9x, was where the floor decides. FlashAttention's tests allow 2x
# (outputs) and 3x (gradients) against a float32 reference; ours is measured against float64 and
# allows LOW_FACTOR = 4, twice the largest ratio seen. A factor of 1.05 in a bfloat16 gradient
# (error 5e-2) is 3x above the floor.
LOW_FACTOR = 4
# LOW_FLOOR: a result rounded once to the dtype is off by up to u; autograd may be exact by luck
# (a short sum, a 10-element bias), and right code a few roundings off. 4u (bfloat16: 1.6e-2,
# float16: 2e-3) is about three times the worst right error measured against it (1.35u, 0.34 of
# the bound); a factor of 1.02 in bfloat16 is still seen.
LOW_FLOOR = 4
