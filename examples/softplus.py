"""Softplus as an activation layer, derived by hand, and its check against ``torch.nn.Softplus``.

Forward, elementwise:

    y = softplus(x) = ln(1 + eˣ)

computed as ``logaddexp(0, x)`` (no overflow for large x). Like ``torch.nn.Softplus`` (β = 1,
threshold 20) it reverts to the identity where x > 20: there ln(1 + eˣ) = x + ln(1 + e⁻ˣ) differs
from x by less than 2.1e-9, and following torch keeps the two sides identical.

Derivative: d/dx ln(1 + eˣ) = eˣ/(1 + eˣ) = 1/(1 + e⁻ˣ) = σ(x), the logistic sigmoid (1 where
the identity takes over). Every yᵢ depends on xᵢ alone, so the Jacobian ∂y/∂x is diag(σ(x)) and
its vector–Jacobian product is a product element by element:

    ∂L/∂x = ∂L/∂y ⊙ σ(x)          (dx = dy * sigmoid(x))

The layer has no parameters. ``SoftplusMissingFactor`` is the same layer with the chain rule's
factor dy dropped (it returns σ(x), the local derivative alone): ``check_layer`` names input x,
the index of the greatest difference and its size.

    python examples/softplus.py       # both checks, printed
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 20.0  # torch.nn.Softplus's default: the identity above it


def softplus(x: np.ndarray) -> np.ndarray:
    """ln(1 + eˣ) elementwise, x itself above THRESHOLD; the dtype of x."""
    return np.where(x > THRESHOLD, x, np.logaddexp(0, x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1/(1 + e⁻ˣ) = exp(−ln(1 + e⁻ˣ)), without overflow; 1 above THRESHOLD."""
    return np.where(x > THRESHOLD, 1, np.exp(-np.logaddexp(0, -x))).astype(x.dtype)


class Softplus:
    """y = softplus(x) elementwise (``torch.nn.Softplus()``); backward dy ⊙ σ(x).

    The layer protocol: params {} and grads {} (no parameters), forward keeps x (the base point).
    """

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(B, n) -> (B, n)."""
        self.x = x
        return softplus(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy = ∂L/∂y (B, n) -> ∂L/∂x = dy ⊙ σ(x) (B, n)."""
        return dy * sigmoid(self.x)


class SoftplusMissingFactor(Softplus):
    """Deliberately wrong: the factor dy is missing (σ(x), the local derivative alone)."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return sigmoid(self.x)


def build(rng: np.random.Generator | None = None, dtype=np.float64):
    """A 784-128-10 net for MNIST with a softplus hidden layer: the project's ``Linear`` layers
    around this file's ``Softplus``, paired with its torch counterpart."""
    import torch

    from manual.layers import Linear

    rng = np.random.default_rng(0) if rng is None else rng
    return [Linear.init(784, 128, rng, dtype), (Softplus(), torch.nn.Softplus()), Linear.init(128, 10, rng, dtype)]


def main() -> None:
    import torch

    from compare import check_layer

    x = 3 * np.random.default_rng(0).standard_normal((4, 6))
    print(check_layer(Softplus(), torch.nn.Softplus(), x))
    print()
    print(check_layer(SoftplusMissingFactor(), torch.nn.Softplus(), x))


if __name__ == "__main__":
    main()
