"""The reference network as a PyTorch ``nn.Module``: the same math, gradients by autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchMLP(nn.Module):
    """``nn.Linear`` layers with `activation` between them; ``forward`` returns the logits.

    Args:
        sizes: layer widths (input, hidden..., classes).
        activation: "sigmoid", "tanh" or "relu".
        dtype: torch.float32 or torch.float64.

    Attributes:
        layers: ``nn.ModuleList`` of ``nn.Linear(sizes[i], sizes[i+1])``; ``layers[i].weight`` has
            shape (sizes[i+1], sizes[i]), the same layout as the manual side's ``weights[i]``.

    The initial parameters are ``nn.Linear``'s own; ``torch_ref.convert.from_manual`` replaces
    them with the manual side's.
    """

    def __init__(self, sizes, activation: str = "sigmoid", dtype: torch.dtype = torch.float64):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if dtype not in DTYPES.values():
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.sizes = tuple(int(s) for s in sizes)
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"sizes must hold at least 2 positive integers, got {list(self.sizes)}")
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, dtype=dtype) for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:])
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, sizes[0]) or (B, 28, 28) inputs -> (B, sizes[-1]) logits."""
        x = check_input(x, self.sizes[0], self.dtype)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Batch-mean cross-entropy, ``torch.nn.functional.cross_entropy(self(x), y)``."""
        logits = self(x)
        return F.cross_entropy(logits, check_labels(y, len(logits), self.sizes[-1]))


def check_input(x, n_in: int, dtype: torch.dtype) -> torch.Tensor:
    """Validate a batch: a tensor of shape (B, n_in) (or (B, 28, 28) images), `dtype`, finite."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, {n_in}), got {type(x).__name__}")
    if x.dim() == 3 and x.shape[1] * x.shape[2] == n_in:
        x = x.reshape(len(x), n_in)
    if x.dim() != 2 or x.shape[1] != n_in or len(x) == 0:
        raise ValueError(f"x must have shape (B, {n_in}) with B >= 1, got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the weights are {dtype}; convert one of them")
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x


def check_labels(y, batch: int, classes: int) -> torch.Tensor:
    """Validate labels: an integer tensor of shape (batch,) with values in 0..classes−1."""
    if not isinstance(y, torch.Tensor) or y.shape != (batch,) or y.dtype.is_floating_point:
        raise ValueError(f"y must be an integer tensor of shape ({batch},), got {getattr(y, 'shape', y)}")
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}, got values from {int(y.min())} to {int(y.max())}")
    return y
