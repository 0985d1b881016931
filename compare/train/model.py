"""``crosscheck train --model FILE.py:build``: a user's stack of layers, trained side by side.

``build`` is called with the run's generator and dtype (as the keyword arguments ``rng`` and
``dtype``, each only if its signature takes it) and returns a list whose entries are

- a layer of ``manual/layers.py`` (``Linear``, ``Sigmoid``, ``Tanh``, ``ReLU``): its torch
  counterpart is the module it names in ``torch_module`` (``nn.Linear`` sized from W);
- or a pair ``(layer, torch_module)``: a layer of the user's own with the layer protocol
  (``params``, ``grads``, ``forward``, ``backward``; ``torch_names`` optional) and the
  ``torch.nn.Module`` that computes the same function.

The last entry outputs the logits (B, 10) of a (B, 784) batch; softmax cross-entropy goes on top
on both sides. The torch side is an ``nn.Sequential`` of the counterparts in the run's dtype,
holding copies of the manual parameters (never two initialisations that "should" agree).
Anything wrong is one ``ModelError`` line naming the entry and what was expected (exit code 2).
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np

from compare.errors import UsageError
from compare.options import MNIST_CLASSES, MNIST_IN


class ModelError(UsageError):
    """A --model that cannot be loaded, built or paired with torch (exit code 2)."""


def load_build(spec: str):
    """The callable named by "path/to/file.py:name" (":build" if no name is given)."""
    head, _, tail = spec.rpartition(":")
    path_text, name = (head, tail or "build") if head.endswith(".py") else (spec, "build")
    path = Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        raise ModelError(f"argument --model: invalid value {spec!r}: must be FILE.py:FUNCTION with an existing "
                         f"Python file (no such file: {path})")
    module_spec = importlib.util.spec_from_file_location(f"crosscheck_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise ModelError(f"argument --model: {path} could not be imported: {type(e).__name__}: {e}") from None
    build = getattr(module, name, None)
    if not callable(build):
        raise ModelError(f"argument --model: {path} has no function {name!r} (it should return the list of layers)")
    return build


def call_build(build, spec: str, rng: np.random.Generator, dtype: np.dtype) -> list:
    """build(rng=..., dtype=...) with the arguments its signature takes; the list it returns."""
    try:
        takes = inspect.signature(build).parameters
    except (TypeError, ValueError):
        takes = {}
    kwargs = {k: v for k, v in (("rng", rng), ("dtype", dtype)) if k in takes}
    try:
        entries = build(**kwargs)
    except Exception as e:
        raise ModelError(f"argument --model: {spec} raised {type(e).__name__}: {e}") from None
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ModelError(f"argument --model: {spec} returned {type(entries).__name__}; expected a non-empty list "
                         f"of layers and (layer, torch module) pairs")
    return list(entries)


def _is_layer(obj) -> bool:
    return all(hasattr(obj, a) for a in ("params", "grads", "forward", "backward")) and isinstance(obj.params, dict)


def _counterpart(i: int, layer, torch_dtype):
    """The torch module a project layer names (``torch_module``), or ModelError."""
    from compare.check.model import counterpart

    module = counterpart(layer, torch_dtype)
    if module is None:
        raise ModelError(f"argument --model: entry {i} ({type(layer).__name__}) names no torch module it can be "
                         f"paired with; give it as a pair (layer, torch_module)")
    return module


def split(entries: list, torch_dtype) -> tuple[list, list]:
    """(manual layers, torch modules) from build()'s entries (see the module docstring)."""
    import torch

    layers, modules = [], []
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, tuple) and len(entry) == 2 and _is_layer(entry[0]):
            layer, module = entry
            if not isinstance(module, torch.nn.Module):
                raise ModelError(f"argument --model: entry {i} pairs {type(layer).__name__} with "
                                 f"{type(module).__name__}; expected a torch.nn.Module")
        elif _is_layer(entry):
            layer, module = entry, _counterpart(i, entry, torch_dtype)
        else:
            raise ModelError(f"argument --model: entry {i} is {type(entry).__name__}; expected a layer (params, "
                             f"grads, forward, backward) or a (layer, torch module) pair")
        layers.append(layer)
        modules.append(module.to(torch_dtype))
    return layers, modules


def torch_params(layers, modules) -> list:
    """The torch parameters matching each manual layer's params (by ``torch_names``, else the same
    name, through ``compare.names.match_names``), in the manual order; ModelError where names or
    shapes differ."""
    from compare.check.names import match_names

    out = []
    for i, (layer, module) in enumerate(zip(layers, modules), start=1):
        theirs = dict(module.named_parameters())
        try:
            pairs = match_names({k: np.shape(a) for k, a in layer.params.items()},
                                {k: tuple(p.shape) for k, p in theirs.items()}, getattr(layer, "torch_names", {}) or {})
        except ValueError as e:
            raise ModelError(f"argument --model: entry {i} ({type(layer).__name__}) and its torch module "
                             f"{type(module).__name__}: {e}") from None
        out += [theirs[pairs[k]] for k in layer.params]
    return out


def check_params_dtype(layers, dtype: np.dtype) -> None:
    for i, layer in enumerate(layers, start=1):
        for name, a in layer.params.items():
            if not isinstance(a, np.ndarray) or a.dtype != dtype:
                got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise ModelError(f"argument --model: entry {i} ({type(layer).__name__}) {name} is {got}; the run is "
                                 f"{dtype} (build(dtype=...) receives it)")


def check_shapes(manual_forward, torch_module, dtype: np.dtype) -> int:
    """Both sides on a (2, 784) batch of zeros must give (2, 10) logits; returns the class count."""
    import torch

    x = np.zeros((2, MNIST_IN), dtype)
    try:
        shape_m = np.shape(manual_forward(x))
        with torch.no_grad():
            shape_t = tuple(torch_module(torch.from_numpy(x)).shape)
    except Exception as e:
        raise ModelError(f"argument --model: the model's forward failed on a (2, {MNIST_IN}) batch: "
                         f"{type(e).__name__}: {e}") from None
    if shape_m != (2, MNIST_CLASSES) or shape_t != (2, MNIST_CLASSES):
        raise ModelError(f"argument --model: a (2, {MNIST_IN}) MNIST batch gives logits of shape {shape_m} "
                         f"(manual) and {shape_t} (torch); expected (2, {MNIST_CLASSES})")
    return MNIST_CLASSES
