"""Batch normalisation of (B, C) inputs with running statistics, derived by hand, checked against
``torch.nn.BatchNorm1d``.

Training mode. For each channel c, over the B rows of the batch:

    μ = (1/B) Σ_b x_b        v = (1/B) Σ_b (x_b − μ)²        s = √(v + ε)
    x̂ = (x − μ)/s            y = γ ⊙ x̂ + β

with ε = 1e-5 and the biased variance v, as torch normalises. The forward also updates two
buffers, state carried to evaluation, with momentum m = 0.1 (torch's rule):

    running_mean ← (1 − m) · running_mean + m · μ
    running_var  ← (1 − m) · running_var  + m · v · B/(B − 1)

the running variance from the UNBIASED batch variance v·B/(B − 1), while the normalisation above
uses the biased v. Evaluation mode uses the running statistics in place of μ and v and updates
nothing:

    y = γ ⊙ (x − running_mean)/√(running_var + ε) + β

The parameters keep torch's names: ``weight`` γ and ``bias`` β, shape (C,); so do the buffers.

Backward, training mode, with dy = ∂L/∂y (B, C). The parameters, summed over the batch:

    ∂L/∂β = Σ_b dy_b             ∂L/∂γ = Σ_b dy_b ⊙ x̂_b

and ĝ = ∂L/∂x̂ = dy ⊙ γ. The batch statistics μ, v and s of channel c depend on every x_b of that
channel, so x̂'s Jacobian couples the rows of the batch (each channel on its own). For one channel,
∂μ/∂x_a = 1/B; ∂v/∂x_a = (2/B)(x_a − μ) (the term −(2/B²)·Σ_b (x_b − μ) is zero);
∂s/∂x_a = ∂v/∂x_a / (2s) = (x_a − μ)/(B·s) = x̂_a/B. So

    ∂x̂_b/∂x_a = (δ_ba − 1/B)/s − (x_b − μ)/s² · x̂_a/B = (δ_ba − 1/B − x̂_b x̂_a/B) / s

and its vector–Jacobian product, Σ_b ĝ_b ∂x̂_b/∂x_a, is

    ∂L/∂x_a = (ĝ_a − mean_b(ĝ) − x̂_a · mean_b(ĝ ⊙ x̂)) / s          (means over the batch)

layer normalisation's formula with the batch axis in place of the feature axis. The buffers do
not enter the training-mode output: they get no gradient. In evaluation mode μ and s are
constants (the running statistics), and ∂L/∂x = ĝ/s.

Two deliberately wrong variants, each caught in its own tensor while the rest passes:

- ``BatchNormConstantStatistics`` treats the batch statistics as constants in the backward,
  ∂L/∂x = ĝ/s (the evaluation-mode formula in training mode): ``check_layer`` names input x.
- ``BatchNormBiasedRunningVar`` updates the running variance with the biased v where torch uses
  the unbiased one: every gradient is right, and the buffer comparison names buffer running_var.

Check at a generic point: γ, β and the running statistics are drawn at random (``rng``), so that
a dropped γ or a lost running term cannot hide behind γ = 1, β = 0, running_mean = 0,
running_var = 1.

    python examples/batchnorm.py      # the checks, printed
"""

from __future__ import annotations

import numpy as np


class BatchNorm:
    """y = γ ⊙ (x − μ)/√(v + ε) + β over the batch axis (``torch.nn.BatchNorm1d(c)``), with
    running statistics updated in training mode and used in evaluation mode.

    Args:
        c: C, the number of channels (features).
        eps: ε, added to the variance.  momentum: m of the running statistics' update.
        rng: None for torch's start (γ = 1, β = 0, running_mean = 0, running_var = 1); a Generator
            for γ ~ 1 + N(0, 0.25), β ~ N(0, 1), running_mean ~ N(0, 1), running_var ~ U(0.5, 2).
        dtype: of the parameters and buffers.
    Attributes:
        params: {"weight": γ (C,), "bias": β (C,)}.  grads: the same names, after ``backward``.
        buffers: {"running_mean": (C,), "running_var": (C,)}, updated in place by a training forward.
        training: True (batch statistics, buffers updated) or False (running statistics).
        xhat, s: x̂ (B, C) and s (C,) of the last ``forward``, the base point of backward.
    """

    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1,
                 rng: np.random.Generator | None = None, dtype=np.float64):
        gamma, beta, mean, var = np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)
        if rng is not None:
            gamma, beta = 1 + 0.5 * rng.standard_normal(c), rng.standard_normal(c)
            mean, var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
        self.params = {"weight": gamma.astype(dtype), "bias": beta.astype(dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.buffers = {"running_mean": mean.astype(dtype), "running_var": var.astype(dtype)}
        self.eps, self.momentum = eps, momentum
        self.training = True
        self.xhat: np.ndarray | None = None
        self.s: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, C) -> y (B, C); keeps x̂ and s; in training mode updates the buffers (B > 1)."""
        if self.training:
            mu, v = x.mean(axis=0), x.var(axis=0)
            self._update_running(mu, v, len(x))
        else:
            mu, v = self.buffers["running_mean"], self.buffers["running_var"]
        self.s = np.sqrt(v + self.eps)
        self.xhat = (x - mu) / self.s
        return self.params["weight"] * self.xhat + self.params["bias"]

    def _update_running(self, mu: np.ndarray, v: np.ndarray, b: int) -> None:
        """running ← (1 − m)·running + m·batch statistic, in place (the arrays in ``buffers``)."""
        m = self.momentum
        for name, stat in (("running_mean", mu), ("running_var", self._running_variance(v, b))):
            self.buffers[name] *= 1 - m
            self.buffers[name] += m * stat

    def _running_variance(self, v: np.ndarray, b: int) -> np.ndarray:
        """The unbiased batch variance v·B/(B − 1), the one the running variance follows."""
        return v * (b / (b - 1))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy = ∂L/∂y (B, C) -> ∂L/∂x (B, C); fills grads["weight"], grads["bias"] (C,)."""
        self.grads["bias"] = dy.sum(axis=0)
        self.grads["weight"] = (dy * self.xhat).sum(axis=0)
        ghat = dy * self.params["weight"]
        return self._dx(ghat) if self.training else ghat / self.s

    def _dx(self, ghat: np.ndarray) -> np.ndarray:
        """Training mode: (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / s, the means over the batch."""
        mean_g = ghat.mean(axis=0)
        mean_gx = (ghat * self.xhat).mean(axis=0)
        return (ghat - mean_g - self.xhat * mean_gx) / self.s


class BatchNormConstantStatistics(BatchNorm):
    """Deliberately wrong: training mode's ∂L/∂x with μ and s taken as constants (ĝ/s)."""

    def _dx(self, ghat: np.ndarray) -> np.ndarray:
        return ghat / self.s


class BatchNormBiasedRunningVar(BatchNorm):
    """Deliberately wrong: the running variance updated with the biased batch variance v."""

    def _running_variance(self, v: np.ndarray, b: int) -> np.ndarray:
        return v


def main() -> None:
    import torch

    from compare import check_layer

    x = 2 + 3 * np.random.default_rng(3).standard_normal((8, 5))
    reports = [check_layer(BatchNorm(5, rng=np.random.default_rng(1)), torch.nn.BatchNorm1d(5), x, training=mode)
               for mode in (True, False)]
    reports += [check_layer(wrong(5, rng=np.random.default_rng(1)), torch.nn.BatchNorm1d(5), x, training=True)
                for wrong in (BatchNormConstantStatistics, BatchNormBiasedRunningVar)]
    print("\n\n".join(map(str, reports)))


if __name__ == "__main__":
    main()
