"""Weights between the manual side and the PyTorch side, and gradients in the manual structure.

The manual side is duck-typed here (anything with ``sizes``, ``weights``, ``biases``, ``dtype``
and ``activation.name``), so this package does not depend on ``manual``. Its arrays may be NumPy
arrays or torch tensors (a manual net moved with ``.to(torch, device)``); what comes back to the
manual structure is NumPy.
"""

from __future__ import annotations

import numpy as np
import torch

from torch_ref.model import DTYPES, TorchMLP


def _torch_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {name}")
    return DTYPES[name]


def from_manual(mlp, device=None) -> TorchMLP:
    """A ``TorchMLP`` with exactly the manual net's parameters (copies, same dtype), on `device`
    (default: the CPU)."""
    module = TorchMLP(mlp.sizes, mlp.activation.name, _torch_dtype(mlp.dtype)).to(device)
    load_manual(module, mlp.weights, mlp.biases)
    return module


def load_manual(module: TorchMLP, weights, biases) -> None:
    """Copy `weights` [(out, in), ...] and `biases` [(out,), ...] (NumPy arrays or torch tensors,
    on any device) into `module`'s layers.

    Shapes and dtype must match the module exactly (ValueError / TypeError otherwise).
    """
    if len(weights) != len(module.layers) or len(biases) != len(module.layers):
        raise ValueError(
            f"expected {len(module.layers)} weight and bias arrays for sizes {list(module.sizes)}, "
            f"got {len(weights)} and {len(biases)}"
        )
    with torch.no_grad():
        for i, (layer, W, b) in enumerate(zip(module.layers, weights, biases), start=1):
            for name, param, value in (("weight", layer.weight, W), ("bias", layer.bias, b)):
                if not isinstance(value, (np.ndarray, torch.Tensor)):
                    raise TypeError(f"layer {i} {name}: expected a numpy array or a torch tensor, "
                                    f"got {type(value).__name__}")
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"layer {i} {name}: expected shape {tuple(param.shape)}, got {tuple(value.shape)}")
                if _torch_dtype(value.dtype) != param.dtype:
                    raise TypeError(f"layer {i} {name}: expected dtype {param.dtype}, got {value.dtype}")
                param.copy_(torch.from_numpy(value) if isinstance(value, np.ndarray) else value)


def to_manual(module: TorchMLP):
    """The module's parameters as NumPy copies: (weights, biases) in the manual layout."""
    weights = [layer.weight.detach().cpu().numpy().copy() for layer in module.layers]
    biases = [layer.bias.detach().cpu().numpy().copy() for layer in module.layers]
    return weights, biases


def grads_to_manual(module: TorchMLP):
    """The ``.grad`` of every layer as [(dW, db), ...] NumPy arrays (views on the CPU, no copy;
    copies of a GPU's)."""
    grads = []
    for i, layer in enumerate(module.layers, start=1):
        if layer.weight.grad is None or layer.bias.grad is None:
            raise RuntimeError(f"layer {i} has no gradient yet; call loss_and_grads first")
        grads.append((layer.weight.grad.cpu().numpy(), layer.bias.grad.cpu().numpy()))
    return grads


def loss_and_grads(module: TorchMLP, x, y):
    """Batch-mean cross-entropy and its gradients by autograd, in the manual structure.

    Args:
        module: the reference net.
        x: (B, in) inputs, a tensor or a NumPy array (shared with torch on the CPU, not copied;
            moved to the module's device).
        y: (B,) int64 labels, tensor or NumPy array.
    Returns:
        (loss as a float, [(dW, db), ...] NumPy views of the ``.grad`` tensors).
    """
    where = module.layers[0].weight.device
    x, y = (torch.as_tensor(a, device=where) for a in (x, y))
    module.zero_grad(set_to_none=True)
    loss = module.loss(x, y)
    loss.backward()
    return loss.item(), grads_to_manual(module)
