"""Dropout with a fixed mask, derived by hand, checked against the same mask applied in torch.

Forward, elementwise, with drop probability p and a mask m of zeros and ones (mᵢ = 1 keeps xᵢ,
each kept with probability 1 − p):

    y = x ⊙ m / (1 − p)

the "inverted" scaling: the kept elements are scaled up at training time so that E[y] = x and
evaluation needs no rescaling (there dropout is the identity).

Derivative: yᵢ depends on xᵢ alone, with ∂yᵢ/∂xᵢ = mᵢ/(1 − p): 0 where the element was dropped.
The Jacobian is diag(m)/(1 − p) and its vector–Jacobian product

    ∂L/∂x = ∂L/∂y ⊙ m / (1 − p)          (dx = dy * mask / (1 - p))

A dropped element must get no gradient: the same mask, in the backward too.

Determinism. A check runs the forward hundreds of times (finite differences) and compares it with
the torch side at the same point, so the forward must give the same output every time: the mask is
drawn once, when the layer is made (from a seeded generator, or given), and kept. For the same
reason ``torch.nn.Dropout`` cannot serve as the counterpart: it draws a fresh mask at every call,
so two calls at the same point differ, from each other and from this layer. The counterpart is a
torch function applying this layer's own mask: ``lambda x: x * mask / (1 - p)``.

``DropoutMaskMissing`` returns dy/(1 − p), the mask missing from dx, the classic bug: every
dropped element gets a gradient. ``check_layer`` names input x.

    python examples/dropout.py        # both checks, printed
"""

from __future__ import annotations

import numpy as np


class Dropout:
    """y = x ⊙ m/(1 − p) with a mask m fixed at construction; backward dy ⊙ m/(1 − p).

    Args:
        p: the drop probability, in [0, 1).
        shape: the input's shape, for a mask drawn here (each element kept with probability 1 − p).
        rng: the generator that draws the mask (default: seeded with 0).
        mask: a given mask instead (bool, the input's shape); then shape and rng are not used.
    Attributes:
        params: {} and grads: {} (no parameters).  mask: m, bool (the input's shape).
    """

    def __init__(self, p: float, shape: tuple | None = None, rng: np.random.Generator | None = None,
                 mask: np.ndarray | None = None):
        if mask is None:
            rng = np.random.default_rng(0) if rng is None else rng
            mask = rng.random(shape) >= p
        self.p = p
        self.mask = np.asarray(mask, dtype=bool)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (the mask's shape) -> y, same shape and dtype."""
        return x * self.mask / (1 - self.p)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy = ∂L/∂y -> ∂L/∂x = dy ⊙ m/(1 − p), same shape and dtype."""
        return dy * self.mask / (1 - self.p)


class DropoutMaskMissing(Dropout):
    """Deliberately wrong: the mask is missing from dx (dy/(1 − p))."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy / (1 - self.p)


def main() -> None:
    import torch

    from compare import check_layer

    x = np.random.default_rng(1).standard_normal((4, 6))
    layer = Dropout(0.3, x.shape, np.random.default_rng(2))
    mask = torch.from_numpy(layer.mask)  # the counterpart applies the layer's own mask
    print(check_layer(layer, lambda x: x * mask / (1 - 0.3), x))
    print()
    print(check_layer(DropoutMaskMissing(0.3, mask=layer.mask), lambda x: x * mask / (1 - 0.3), x))


if __name__ == "__main__":
    main()
