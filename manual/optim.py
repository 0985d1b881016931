"""Stochastic gradient descent, in place, on the arrays of any array library (NumPy, torch
tensors with requires_grad off, ...): the update is the arrays' own in-place subtraction."""

from __future__ import annotations

import math


def _arrays(group, grad_group):
    """(θ, dθ) pairs of one layer: groups are (W, b) tuples (``MLP.parameters()``) or dicts name ->
    array (``Stack.layer_params()``), matched by name."""
    if isinstance(group, dict):
        if set(group) != set(grad_group):
            raise ValueError(f"gradients for {sorted(grad_group)} do not match parameters {sorted(group)}")
        return [(group[name], grad_group[name]) for name in group]
    return list(zip(group, grad_group, strict=True))


class SGD:
    """Plain SGD: θ ← θ − lr · ∂L/∂θ for every parameter, updating the arrays in place.

    Args:
        lr: the learning rate, a finite number > 0.
    """

    def __init__(self, lr: float):
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        self.lr = lr

    def step(self, params, grads) -> None:
        """Update `params` with `grads` of the same structure, shapes and library: lists of
        per-layer groups, each a (W, b) pair or a dict name -> array."""
        for group, grad_group in zip(params, grads, strict=True):
            for theta, grad in _arrays(group, grad_group):
                theta -= grad * self.lr
