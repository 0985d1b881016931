"""Layer normalisation over the last axis, derived by hand, checked against ``torch.nn.LayerNorm``.

Forward, for each row x of D features (every leading axis is a batch axis):

    μ = (1/D) Σⱼ xⱼ        v = (1/D) Σⱼ (xⱼ − μ)²        s = √(v + ε)
    x̂ = (x − μ)/s          y = γ ⊙ x̂ + β

with ε = 1e-5 and the biased variance v, as ``torch.nn.LayerNorm``. Its parameters keep torch's
names: ``weight`` γ and ``bias`` β, shape (D,).

Backward. With dy = ∂L/∂y, the parameters are easy (summed over the rows):

    ∂L/∂β = Σ_rows dy            ∂L/∂γ = Σ_rows dy ⊙ x̂

and ĝ = ∂L/∂x̂ = dy ⊙ γ. The hard part is x̂'s Jacobian: μ, v and s depend on every xⱼ of the row.
∂μ/∂xⱼ = 1/D; ∂v/∂xⱼ = (2/D)(xⱼ − μ) (the term −2/D·Σ(xₖ − μ) is zero); ∂s/∂xⱼ = (xⱼ − μ)/(D·s)
= x̂ⱼ/D. So

    ∂x̂ᵢ/∂xⱼ = (δᵢⱼ − 1/D)/s − (xᵢ − μ)/s² · x̂ⱼ/D = (δᵢⱼ − 1/D − x̂ᵢ x̂ⱼ/D) / s

and its vector–Jacobian product, Σᵢ ĝᵢ ∂x̂ᵢ/∂xⱼ, is

    ∂L/∂xⱼ = (ĝⱼ − mean(ĝ) − x̂ⱼ · mean(ĝ ⊙ x̂)) / s        (means over the row)

``LayerNormMissingFactor`` drops the factor x̂ⱼ of the last term, the slip this derivation invites:
``check_layer`` names input x, the index of the greatest difference and its size, while weight
and bias still pass.

Check at a generic point: at torch's initial γ = 1, β = 0 a dropped γ would go unseen, so
``LayerNorm(n, rng=...)`` draws γ and β at random.

    python examples/layernorm.py      # both checks, printed
"""

from __future__ import annotations

import numpy as np


class LayerNorm:
    """y = γ ⊙ (x − μ)/√(v + ε) + β over the last axis (``torch.nn.LayerNorm(n)``).

    Args:
        n: D, the size of the last axis.
        eps: ε, added to the variance.
        rng: None for γ = 1, β = 0 (torch's start); a Generator for γ ~ 1 + N(0, 0.25), β ~ N(0, 1).
        dtype: of the parameters.
    Attributes:
        params: {"weight": γ (n,), "bias": β (n,)}.  grads: the same names, after ``backward``.
        xhat, s: x̂ (..., n) and s (..., 1) of the last ``forward``, the base point of backward.
    """

    def __init__(self, n: int, eps: float = 1e-5, rng: np.random.Generator | None = None, dtype=np.float64):
        gamma, beta = np.ones(n), np.zeros(n)
        if rng is not None:
            gamma, beta = 1 + 0.5 * rng.standard_normal(n), rng.standard_normal(n)
        self.params = {"weight": gamma.astype(dtype), "bias": beta.astype(dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.eps = eps
        self.xhat: np.ndarray | None = None
        self.s: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(..., n) -> (..., n); keeps x̂ and s."""
        mu = x.mean(axis=-1, keepdims=True)
        v = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        self.s = np.sqrt(v + self.eps)
        self.xhat = (x - mu) / self.s
        return self.params["weight"] * self.xhat + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy = ∂L/∂y (..., n) -> ∂L/∂x (..., n); fills grads["weight"], grads["bias"] (n,)."""
        n = self.xhat.shape[-1]
        self.grads["bias"] = dy.reshape(-1, n).sum(axis=0)
        self.grads["weight"] = (dy * self.xhat).reshape(-1, n).sum(axis=0)
        ghat = dy * self.params["weight"]
        return self._dx(ghat)

    def _dx(self, ghat: np.ndarray) -> np.ndarray:
        """(ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / s."""
        mean_g = ghat.mean(axis=-1, keepdims=True)
        mean_gx = (ghat * self.xhat).mean(axis=-1, keepdims=True)
        return (ghat - mean_g - self.xhat * mean_gx) / self.s


class LayerNormMissingFactor(LayerNorm):
    """Deliberately wrong: the factor x̂ⱼ of the last term of ∂L/∂x is missing."""

    def _dx(self, ghat: np.ndarray) -> np.ndarray:
        mean_g = ghat.mean(axis=-1, keepdims=True)
        mean_gx = (ghat * self.xhat).mean(axis=-1, keepdims=True)
        return (ghat - mean_g - mean_gx) / self.s


def main() -> None:
    import torch

    from compare import check_layer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8))
    print(check_layer(LayerNorm(8, rng=np.random.default_rng(1)), torch.nn.LayerNorm(8), x))
    print()
    print(check_layer(LayerNormMissingFactor(8, rng=np.random.default_rng(1)), torch.nn.LayerNorm(8), x))


if __name__ == "__main__":
    main()
