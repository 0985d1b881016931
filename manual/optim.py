"""Stochastic gradient descent, in place."""

from __future__ import annotations

import numpy as np


class SGD:
    """Plain SGD: θ ← θ − lr · ∂L/∂θ for every parameter, updating the arrays in place.

    Args:
        lr: the learning rate, a finite number > 0.
    """

    def __init__(self, lr: float):
        lr = float(lr)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        self.lr = lr
        self._scratch: dict[int, np.ndarray] = {}

    def step(self, params, grads) -> None:
        """Update `params` [(W, b), ...] with `grads` [(dW, db), ...] of the same shapes.

        ``lr · dθ`` goes to a scratch array kept between steps, so neither a temporary is
        allocated nor the gradient overwritten.
        """
        for pair, grad_pair in zip(params, grads, strict=True):
            for theta, grad in zip(pair, grad_pair, strict=True):
                scratch = self._scratch.get(id(theta))
                if scratch is None or scratch.shape != grad.shape or scratch.dtype != grad.dtype:
                    scratch = self._scratch[id(theta)] = np.empty_like(grad)
                np.multiply(grad, self.lr, out=scratch)
                theta -= scratch
