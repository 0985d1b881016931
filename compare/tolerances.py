"""The training app's bounds (``crosscheck train``), built on the referee's
(``compare.check.tolerances``, re-exported here), each with the reason for its value."""

from __future__ import annotations

import numpy as np

from compare.check.tolerances import (  # noqa: F401  (the referee's bounds, as the app names them)
    FD_STEP, FINITE_DIFF_REL, FLOAT32_ELEM, FLOAT32_REL, FLOAT64_ELEM, FLOAT64_REL, NOISE_FACTOR,
    TINY, TWO_COMPUTATIONS, elementwise_rel, gamma, gradient_rel, linear_bound, matmul_bound, noise_floor, sum_bound,
    unit_roundoff)

# Free-mode training in float64: two trajectories from one start round differently and drift
# apart slowly (largest seen over 14,070 steps of 784-256-10: gradients 1.8e-13, losses 3.3e-14).
# Three orders of magnitude for longer runs, still far below a wrong derivative.
FREE_LOSS_REL = 1e-10
FREE_GRAD_REL = 1e-9

# Free-mode training in float32 (not the default): float32 trajectories part much faster (5 epochs
# of 784-256-10: gradients 5.3e-6, losses 3.1e-6 apart). A factor ~200; lockstep, the float32
# default, is the strict float32 check.
FREE32_GRAD_REL = 1e-3
FREE32_LOSS_REL = 1e-3

# Free mode, float64: as FREE_GRAD_REL (largest seen: 8.5e-14 at batch 64).
FREE_ELEM_REL = 1e-9
# Free mode, float32: FREE32_GRAD_REL times the factor by which the elementwise error exceeded the
# relative one (up to 5.4; largest seen: 2.9e-5), so no run that drift alone keeps within
# FREE32_GRAD_REL fails here; below a bug's 1e-2.
FREE32_ELEM_REL = 5e-3
# `crosscheck train --step fast`, free mode: the weights after each step drift as any free-mode run's
# (largest seen: 4.2e-15 after 9,440 float64 steps), so the free-mode loss bounds serve; a wrong
# step moves a parameter by lr·‖∂L/∂θ‖, ~1e-3 to 1 of ‖θ‖.
FREE_WEIGHT_REL = FREE_LOSS_REL
FREE32_WEIGHT_REL = FREE32_LOSS_REL

# `--step fast`, lockstep: the update read back from the weights, θ − θ', carries the rounding of
# θ' = fl(θ − lr·g) (≤ u·|θ'| per element) on top of the gradient's own error: two roundings
# (subtraction and read-back), and a factor 2.
UPDATE_ROUNDINGS = 4


def weight_bound(dtype) -> float:
    """`--step fast`, free mode: the bound on the weights after each step (FREE_WEIGHT_REL in
    float64, FREE32_WEIGHT_REL in float32)."""
    return FREE_WEIGHT_REL if np.dtype(dtype) == np.float64 else FREE32_WEIGHT_REL


def update_bounds(dtype, grad_allowed: float, elem_allowed: float, norms: tuple[float, float],
                  peaks: tuple[float, float]) -> tuple[float, float]:
    """Bounds on an update read back from the weights (`--step fast`, lockstep), with θ' the
    weights after the step and lr·g the update wanted: relative error
    grad_allowed + UPDATE_ROUNDINGS·u·‖θ'‖/‖lr·g‖ and elementwise error (each element's rounding is
    at most u·|θ'ᵢ|) elem_allowed + UPDATE_ROUNDINGS·u·max|θ'|/max|lr·g|.

    Args: norms = (‖θ'‖, ‖lr·g‖), peaks = (max|θ'|, max|lr·g|).
    """
    k = UPDATE_ROUNDINGS * unit_roundoff(dtype)
    return (grad_allowed + k * norms[0] / max(norms[1], TINY), elem_allowed + k * peaks[0] / max(peaks[1], TINY))


def run_bounds(dtype, lockstep: bool) -> dict[str, float]:
    """{"grad", "loss", "elem"}: a training run's bounds before widening for confident batches, on
    the relative error of gradients and loss and on the gradients' elementwise error. Lockstep
    compares at identical weights (the dtype's bound); free mode allows the measured drift of two
    trajectories (FREE_* above)."""
    if lockstep:
        rel = gradient_rel(dtype)
        return {"grad": rel, "loss": rel, "elem": elementwise_rel(dtype)}
    if np.dtype(dtype) == np.float64:
        return {"grad": FREE_GRAD_REL, "loss": FREE_LOSS_REL, "elem": FREE_ELEM_REL}
    return {"grad": FREE32_GRAD_REL, "loss": FREE32_LOSS_REL, "elem": FREE32_ELEM_REL}


def step_bounds(base: dict, dtype, loss: float, logit_scale: float) -> tuple[float, float, float]:
    """(relative error of the gradients, of the loss, elementwise error of the gradients) allowed at
    one checked step: `base` (``run_bounds``) widened for a confident batch of batch-mean `loss`
    and max |logit| `logit_scale` (``gradient_rel``)."""
    return tuple(gradient_rel(dtype, loss, base=base[k], logit_scale=logit_scale) for k in ("grad", "loss", "elem"))


