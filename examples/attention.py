"""Scaled dot-product attention of three inputs q, k, v, derived by hand, checked against
``torch.nn.functional.scaled_dot_product_attention``.

Shapes: queries q (B, L, d), keys k (B, S, d), values v (B, S, dv); every leading axis before the
last two is a batch axis. Forward, for each batch element:

    A = q kᵀ / √d               (L, S): the score of each query against each key
    P = softmax(A)              row by row, over the keys (the last axis): Pᵢⱼ = e^{Aᵢⱼ} / Σₖ e^{Aᵢₖ}
    y = P v                     (L, dv)

with A's row maximum subtracted before the exponential (no overflow). This is torch's function
with its defaults (no mask, no dropout, scale 1/√d).

Backward, with dy = ∂L/∂y (B, L, dv), one step at a time through the three lines in reverse:

    ∂L/∂v = Pᵀ dy               (S, dv)            ∂L/∂P = dy vᵀ          (L, S)

softmax's Jacobian acts on each row i separately: ∂Pᵢⱼ/∂Aᵢₖ = Pᵢⱼ (δⱼₖ − Pᵢₖ), the matrix
diag(s) − s sᵀ of the row s = Pᵢ, and no entry of row i depends on another row. Its
vector–Jacobian product, with G = ∂L/∂P,

    ∂L/∂Aᵢₖ = Σⱼ Gᵢⱼ Pᵢⱼ (δⱼₖ − Pᵢₖ) = Pᵢₖ (Gᵢₖ − Σⱼ Gᵢⱼ Pᵢⱼ)

(the sum over j along the same last axis the forward normalised over). Then A = q kᵀ/√d is a
product of two inputs:

    ∂L/∂q = ∂L/∂A · k / √d      (L, d)             ∂L/∂k = (∂L/∂A)ᵀ · q / √d     (S, d)

The layer has no parameters and three inputs, so ``backward`` returns three gradients.
``AttentionSoftmaxWrongAxis`` takes the sum Σⱼ Gᵢⱼ Pᵢⱼ over the queries (axis −2) instead of the
keys, the slip of a softmax backward that ignores its axis: ``check_layer`` names inputs q and k,
while v, whose gradient does not pass through softmax, still passes.

    python examples/attention.py      # both checks, printed
"""

from __future__ import annotations

import math

import numpy as np


def softmax(a: np.ndarray) -> np.ndarray:
    """softmax over the last axis, the row maximum subtracted first; the shape and dtype of a."""
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Attention:
    """y = softmax(q kᵀ/√d) v (``torch.nn.functional.scaled_dot_product_attention(q, k, v)``).

    The layer protocol with three inputs: params {} and grads {} (no parameters); forward keeps
    q, k, v and P (the base point); backward returns (∂L/∂q, ∂L/∂k, ∂L/∂v).
    """

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.q = self.k = self.v = self.P = None

    def forward(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        """q (..., L, d), k (..., S, d), v (..., S, dv) -> y (..., L, dv); keeps q, k, v, P."""
        self.q, self.k, self.v = q, k, v
        self.P = softmax(q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]))
        return self.P @ v

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dy = ∂L/∂y (..., L, dv) -> (∂L/∂q (..., L, d), ∂L/∂k (..., S, d), ∂L/∂v (..., S, dv))."""
        scale = 1 / math.sqrt(self.q.shape[-1])  # a Python float: keeps float32 float32
        dv = self.P.swapaxes(-1, -2) @ dy
        dA = self._softmax_vjp(dy @ self.v.swapaxes(-1, -2))
        return dA @ self.k * scale, dA.swapaxes(-1, -2) @ self.q * scale, dv

    def _softmax_vjp(self, G: np.ndarray) -> np.ndarray:
        """∂L/∂A = P ⊙ (G − Σⱼ G ⊙ P), the sum over the keys (the last axis); G = ∂L/∂P (..., L, S)."""
        return self.P * (G - (G * self.P).sum(axis=-1, keepdims=True))


class AttentionSoftmaxWrongAxis(Attention):
    """Deliberately wrong: softmax's Jacobian summed over the queries (axis −2), not the keys."""

    def _softmax_vjp(self, G: np.ndarray) -> np.ndarray:
        return self.P * (G - (G * self.P).sum(axis=-2, keepdims=True))


def main() -> None:
    from torch.nn.functional import scaled_dot_product_attention

    from compare import check_layer

    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 5, 3))
    print(check_layer(Attention(), scaled_dot_product_attention, (q, k, v)))
    print()
    print(check_layer(AttentionSoftmaxWrongAxis(), scaled_dot_product_attention, (q, k, v)))


if __name__ == "__main__":
    main()
