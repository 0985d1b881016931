"""The two sides of a run as the harness sees them: a flat list of named parameters, a loss and
its gradients in the same order, an SGD step, predictions.

Parameters are named by the layers that hold them, counted from 1 ("layer 2 W" is the W of the
second layer with parameters: the built-in net's second ``Linear``). The manual side's arrays are
the net's own (an update changes them); the torch side's ``views`` are NumPy views of its
parameters' memory, so both can be compared without a copy.

What a side hands to the harness (parameters, gradients, logits, predictions) is NumPy, whatever
the side computes on: ``to_numpy`` is the one crossing (a view of a CPU tensor's memory, a copy
of a GPU's). The built-in manual net may compute on torch tensors (``manual_arrays="torch"``), on
the run's device like the torch side; batches arrive as NumPy and each side takes them as its own.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np

from compare.agreement import greatest_magnitude
from compare.check.copies import float64_copy
from manual.optim import SGD


def to_numpy(a) -> np.ndarray:
    """A side's array as the checks take it: a NumPy array as it is, a torch tensor as a NumPy
    view of its memory (CPU; it follows in-place updates) or a copy (another device)."""
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


@dataclasses.dataclass(frozen=True)
class ParamKey:
    """One parameter array: `layer` counts the layers that hold parameters, from 1; `name` is the
    manual side's name ("W", "b", ...)."""

    layer: int
    name: str

    def __str__(self) -> str:
        return f"layer {self.layer} {self.name}"

    @property
    def file_key(self) -> str:
        """Its entry in the checkpoint's manual.npz: W1, b1, W2, ..."""
        return f"{self.name}{self.layer}"


class ManualMLP:
    """The built-in manual net (``manual.mlp.MLP``) and how it takes its SGD step.

    step "reference": ``loss_and_grads`` gives the gradients (checked against torch's), then
    ``SGD.step`` (θ ← θ − lr·∂L/∂θ). step "fast": ``manual.fast.FastStep`` (NumPy) or
    ``manual.fast_torch.FastTorchStep`` (torch tensors), forward, backward and update in one call
    that returns only the loss (the harness checks what it did to the weights).
    arrays "torch": the net computes on torch tensors on `device` (no autograd), the same weights.
    """

    def __init__(self, sizes, activation: str, dtype, rng: np.random.Generator, lr: float, step: str = "reference",
                 arrays: str = "numpy", device: str = "cpu"):
        from manual.mlp import MLP

        self.mlp = MLP(sizes, activation, np.dtype(dtype), seed=rng)
        self.arrays = arrays
        self.dtype, self.lr = self.mlp.dtype, lr
        self.keys = [ParamKey(i, p) for i in range(1, len(self.mlp.sizes)) for p in "Wb"]
        self.opt = SGD(lr)
        self.fast = None
        self.own = lambda a: a  # a NumPy batch as the net's own array
        if arrays == "torch":
            import torch

            self.mlp.to(torch, device=device)
            self.own = partial(torch.as_tensor, device=device)  # on the CPU: the batch's memory, no copy
        if step == "fast" and arrays == "torch":
            from manual.fast_torch import FastTorchStep

            self.fast = FastTorchStep(self.mlp)
        elif step == "fast":
            from manual.fast import FastStep

            self.fast = FastStep(self.mlp)  # may give W another memory layout: take the arrays after

    @property
    def model(self):
        """What the layer-by-layer check walks (``compare.check.check_model``, which takes NumPy
        arrays): the net, or its float64 NumPy copy where it computes on torch tensors."""
        return self.mlp if self.arrays == "numpy" else float64_copy(self.mlp)

    @property
    def params(self) -> list[np.ndarray]:
        """[W1, b1, W2, b2, ...]: the net's own arrays (as NumPy, ``to_numpy``)."""
        return [to_numpy(a) for pair in self.mlp.parameters() for a in pair]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Batch-mean loss and [dW1, db1, ...] (the net's buffers, overwritten next call)."""
        loss, grads = self.mlp.loss_and_grads(self.own(x), self.own(y))
        return loss, [to_numpy(g) for pair in grads for g in pair]

    def sgd_step(self) -> None:
        """θ ← θ − lr·g for every parameter, g the net's gradients of the last ``loss_and_grads``
        (``manual.optim.SGD``)."""
        self.opt.step(self.mlp.parameters(), self.mlp.grads)

    def fast_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One fast step: the update applied in place; returns the batch-mean loss."""
        return self.fast(self.own(x), self.own(y), self.lr)

    @property
    def classes(self) -> int:
        return self.mlp.sizes[-1]

    def logit_scale(self) -> float:
        """max |logit| of the last forward pass (of ``loss_and_grads``)."""
        return greatest_magnitude(to_numpy(self.mlp.zhats[-1]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return to_numpy(self.mlp.predict(self.own(x)))

    def set_params(self, arrays: list[np.ndarray]) -> None:
        """Copy `arrays` (in the order of ``keys``) into the net."""
        self.mlp.set_parameters(arrays[0::2], arrays[1::2])

    def float64_grads(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """The gradients of the same net and batch recomputed in float64 NumPy (the referee,
        ``compare.copies.float64_copy``, whatever the net computes on)."""
        _, grads = float64_copy(self.mlp).loss_and_grads(x.astype(np.float64), y)
        return [g for pair in grads for g in pair]

    def torch_module(self, device: str = "cpu"):
        """A ``TorchMLP`` on `device` holding copies of this net's parameters, in the order of ``keys``."""
        from torch_ref.convert import from_manual

        return from_manual(self.mlp, device)


class TorchSide:
    """The reference: a torch module, autograd, ``torch.optim.SGD``. `params` are the module's
    parameters in the manual side's order (``module.parameters()`` unless given); the module's
    device is where batches go."""

    def __init__(self, module, lr: float, params=None):
        import torch

        self.module = module
        self.params = list(module.parameters()) if params is None else list(params)
        self.device = self.params[0].device
        self.logits = None
        self.opt = torch.optim.SGD(self.params, lr=lr)

    @property
    def views(self) -> list[np.ndarray]:
        """The parameters as NumPy (``to_numpy``: on the CPU views that follow the in-place updates)."""
        return [to_numpy(p) for p in self.params]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Batch-mean cross-entropy of the logits by autograd; grads are views of ``.grad``."""
        import torch
        import torch.nn.functional as F

        self.module.zero_grad(set_to_none=True)
        logits = self.module(torch.as_tensor(x, device=self.device))
        loss = F.cross_entropy(logits, torch.as_tensor(y, device=self.device))
        self.logits = logits.detach()
        loss.backward()
        return loss.item(), [to_numpy(p.grad) for p in self.params]

    def logit_scale(self) -> float:
        """max |logit| of the last ``loss_and_grads``."""
        return greatest_magnitude(to_numpy(self.logits))

    def sgd_step(self) -> None:
        self.opt.step()

    def load(self, arrays: list[np.ndarray]) -> None:
        """Copy NumPy `arrays` (the manual side's, same order, shapes and dtype) into the parameters."""
        import torch

        with torch.no_grad():
            for p, a in zip(self.params, arrays, strict=True):
                p.copy_(torch.from_numpy(a))

    def predict(self, x) -> np.ndarray:
        """Predicted classes for a (N, in) tensor on the module's device, (N,) int64."""
        import torch

        with torch.no_grad():
            return to_numpy(self.module(x).argmax(dim=1))


class ManualStack:
    """A user's stack of layers (``manual.mlp.Stack``, see ``compare.train.model``) and its
    reference step: ``loss_and_layer_grads``, then ``SGD``."""

    def __init__(self, layers, dtype, lr: float):
        from manual.mlp import Stack

        self.net = Stack(layers, np.dtype(dtype))
        self.dtype, self.lr, self.fast, self.classes = self.net.dtype, lr, None, 0
        self.keys = [ParamKey(i, name) for i, p in enumerate(self.net.layer_params(), start=1) for name in p]
        self.opt = SGD(lr)
        self._logits = None
        self.model = self.net  # build_user_model pairs each layer with its torch module here

    @property
    def params(self) -> list[np.ndarray]:
        return [a for p in self.net.layer_params() for a in p.values()]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """``Stack.loss_and_layer_grads``, step by step so that the logits are kept (the bounds
        widen with max |logit|); grads in the order of ``keys``."""
        from manual.mlp import check_labels

        net = self.net
        self._logits = logits = net.forward(x)
        loss = net.loss_layer.forward(logits, check_labels(y, len(logits), logits.shape[1]))
        net.backward(net.loss_layer.backward())
        return loss, [g[k] for p, g in zip(net.layer_params(), net.layer_grads()) for k in p]

    def sgd_step(self) -> None:
        """θ ← θ − lr·g with the gradients of the last ``loss_and_grads``."""
        self.opt.step(self.net.layer_params(), self.net.layer_grads())

    def logit_scale(self) -> float:
        return greatest_magnitude(self._logits)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(x)

    def set_params(self, arrays: list[np.ndarray]) -> None:
        it = iter(arrays)
        self.net.set_layer_params([{k: next(it) for k in p} for p in self.net.layer_params()])

    def float64_grads(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """The referee: the stack's float64 copy (``compare.copies.float64_copy``) on the same batch."""
        _, grads = float64_copy(self.net).loss_and_layer_grads(x.astype(np.float64), y)
        return [g[k] for p, g in zip(self.net.layer_params(), grads) for k in p]


def build(cfg, rng: np.random.Generator):
    """(manual side, torch side) for a configuration, from identical weights: the manual net draws
    them from `rng` once and torch gets copies."""
    if cfg.model:
        return build_user_model(cfg, rng)
    manual = ManualMLP(cfg.sizes, cfg.activation, cfg.dtype, rng, cfg.lr, cfg.step, cfg.manual_arrays, cfg.device)
    return manual, TorchSide(manual.torch_module(cfg.device), cfg.lr)


def build_user_model(cfg, rng: np.random.Generator):
    """--model: the user's build() (``compare.train.model``); torch's parameters are copies of
    the manual ones, in the manual order."""
    import torch

    from compare.train import model

    dtype = np.dtype(cfg.dtype)
    entries = model.call_build(model.load_build(cfg.model), cfg.model, rng, dtype)
    layers, modules = model.split(entries, getattr(torch, cfg.dtype))
    model.check_params_dtype(layers, dtype)
    params = model.torch_params(layers, modules)
    manual = ManualStack(layers, dtype, cfg.lr)
    manual.model = list(zip(layers, modules))  # each layer with its counterpart, for check_model
    torch_side = TorchSide(torch.nn.Sequential(*modules), cfg.lr, params)
    torch_side.load(manual.params)
    manual.classes = model.check_shapes(manual.net.forward, torch_side.module, dtype)
    return manual, torch_side
