"""The first wrong layer of a model: every layer's backward checked at the input it receives in the
stack, walking from the loss backwards.

A wrong backward corrupts the gradient of every parameter below it, so a comparison of the whole
model's gradients blames the parameters that received the error, not the layer that made it. Here
each layer is checked on its own (``check_layer``, every witness), at the very input the forward
pass hands it, and the first layer from the loss whose backward disagrees is the culprit.

A model is what ``crosscheck train --model`` takes: a list whose entries are the project's layers
(each names its torch counterpart in ``torch_module``, as ``manual/layers.py``'s do), pairs
``(layer, counterpart)``, or triples ``(layer, counterpart, options)`` with ``check_layer``'s
keyword options (``torch_params``, ``torch_inputs``, ...); or an object with ``layers`` (and
``loss_layer``), such as ``manual.Stack`` / ``MLP``. With labels ``y`` the loss on top is checked
too: ``loss=`` (a loss layer naming its ``torch_module``, or a pair (loss layer, counterpart)), or
the model's ``loss_layer``. A loss layer: forward(logits, y) -> the batch-mean loss, backward() ->
∂L/∂logits. The referee imports no layer of the project: everything it checks is handed in.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from compare.check import tensor_layers, tensors, text, tolerances
from compare.check.engine import FD_BUDGET, FD_SAMPLES, check
from compare.check.findings import Diagnosis, Suspect
from compare.check.report import NOTHING, DerivationError, Report
from compare.check.subjects import LayerSubject


def counterpart(layer, dtype=None):
    """The torch module a project layer names in ``torch_module`` ("torch.nn.Linear" sized from
    its W, parameter-free modules as they are), or None when it names none it can be built from."""
    import torch

    name = getattr(layer, "torch_module", "") or ""
    if name == "torch.nn.Linear" and "W" in layer.params:
        W = layer.params["W"]
        return torch.nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
    cls = getattr(torch.nn, name.removeprefix("torch.nn."), None) if name.startswith("torch.nn.") else None
    return cls() if cls is not None and not layer.params else None


def entries(model) -> list[tuple]:
    """(layer, counterpart, options) for every entry of `model` (the module docstring)."""
    layers = getattr(model, "layers", None)
    items = list(layers) if layers is not None and not isinstance(model, (list, tuple)) else list(model)
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, tuple) and len(item) in (2, 3):
            layer, other, options = (*item, {})[:3]
        else:
            layer, other, options = item, counterpart(item), {}
            if other is None:
                raise TypeError(f"entry {i} ({type(item).__name__}) names no torch module it can be paired with; "
                                "give it as a pair (layer, torch counterpart)")
        out.append((layer, other, dict(options)))
    if not out:
        raise ValueError("check_model needs a model of at least one layer")
    return out


class _LossLayer:
    """Softmax cross-entropy with the layer protocol: forward(logits, y) -> the batch-mean loss (a
    0-d array), backward(dL) -> (dL·δ, None), δ = (SM(ẑ) − onehot(y))/B."""

    def __init__(self, loss_layer):
        self.loss_layer, self.params, self.grads = loss_layer, {}, {}

    def forward(self, logits, y):
        loss = self.loss_layer.forward(logits, y)
        if not tensors.is_tensor(logits):
            return np.asarray(loss, dtype=logits.dtype)
        if hasattr(loss, "dtype") and hasattr(loss, "shape"):
            return loss
        if hasattr(logits, "new_tensor"):  # a Python float from a loss on torch tensors: back on their device
            return logits.new_tensor(loss)
        if isinstance(logits, np.ndarray):  # NumPy float16
            return np.asarray(loss, dtype=logits.dtype)
        import jax.numpy as jnp

        return jnp.asarray(loss, logits.dtype)

    def backward(self, dL):
        return dL * self.loss_layer.backward(), None


def _loss_entry(model, loss) -> tuple:
    """(loss layer, torch counterpart) of `loss` (a layer or a pair) or of the model's ``loss_layer``."""
    loss = getattr(model, "loss_layer", None) if loss is None else loss
    if loss is None:
        raise ValueError("check_model with labels y checks the loss on top: give it as loss=(your loss layer, its "
                         "torch counterpart), e.g. loss=(SoftmaxCrossEntropy(), torch.nn.CrossEntropyLoss())")
    layer, other = loss if isinstance(loss, tuple) else (loss, counterpart(loss))
    if other is None:
        raise TypeError(f"the loss {type(layer).__name__} names no torch module it can be paired with; give "
                        "loss=(loss layer, torch counterpart)")
    return layer, other


@dataclasses.dataclass
class LayerVerdict:
    """One entry's check: its position in the model (from 1; the loss is one past the last layer),
    its class name and its report."""

    position: int
    name: str
    report: Report

    @property
    def ok(self) -> bool:
        return self.report.ok


class ModelReport:
    """What ``check_model`` found: ``verdicts`` from the loss backwards, ``culprit`` (the first wrong
    one in that order, or None), ``ok``, ``str()`` and ``assert_ok()``."""

    def __init__(self, size: int, verdicts: list[LayerVerdict]):
        self.size, self.verdicts = size, verdicts
        self.culprit = next((v for v in verdicts if not v.ok), None)

    @property
    def ok(self) -> bool:
        return self.culprit is None

    def where(self, v: LayerVerdict) -> str:
        return "the loss" if v.position > self.size else f"entry {v.position} of {self.size}"

    def headline(self) -> str:
        """One line: the culprit and what is wrong with it, or that every layer agrees."""
        if self.ok:
            unjudged = [self.where(v) for v in self.verdicts if any(n.kind == "not judged" for n in v.report.notes)]
            left = f"; at kinks, some elements of {', '.join(unjudged)} were not judged (their notes)" if unjudged else ""
            return f"every layer's backward agrees with autograd at this input ({len(self.verdicts)} checked){left}"
        v, report = self.culprit, self.culprit.report
        if all(u.report.refusal.startswith(NOTHING) for u in self.verdicts):
            return f"no layer had anything to compare: {self.where(v)} ({v.name}): {report.refusal}"
        if report.refusal:
            return f"the first layer from the loss that cannot be judged: {self.where(v)} ({v.name}): {report.refusal}"
        tensors = list(dict.fromkeys(c.tensor for c in report.failures))
        line = (f"the first wrong layer from the loss is {self.where(v)} ({v.name}): its {', '.join(tensors)} "
                f"disagree{'s' * (len(tensors) == 1)} with autograd")
        kinds = [text.line(f) for f in report.findings
                 if isinstance(f, Diagnosis) or isinstance(f, Suspect) and f.side != "neither"]
        return line + (f"; {'; '.join(kinds)}" if kinds else "")

    def __str__(self) -> str:
        marks = ", ".join(f"{self.where(v)} {v.name} {'ok' if v.ok else 'WRONG'}" for v in self.verdicts)
        lines = [f"check_model: from the loss backwards: {marks}", self.headline()]
        tested = [v for v in self.verdicts if v.report.self_test is not None]
        if tested:
            caught = sum(len(v.report.self_test.caught) for v in tested)
            total = caught + sum(len(v.report.self_test.missed) for v in tested)
            lines.append(f"self-test: {caught} of {total} injected mistakes caught over {len(tested)} layers")
        if self.culprit is not None:
            lines += ["", str(self.culprit.report)]
        return "\n".join(lines)

    def assert_ok(self) -> ModelReport:
        """Raise DerivationError with the culprit's report (pytest hides this frame)."""
        __tracebackhide__ = True
        if not self.ok:
            v = self.culprit
            raise DerivationError(v.report, f"the first wrong layer from the loss is {self.where(v)} ({v.name})")
        return self


def check_model(model, x, y=None, seed: int = 0, h: float = tolerances.FD_STEP, fd_samples: int = FD_SAMPLES,
                fd_budget: int = FD_BUDGET, self_test: bool = False, loss=None) -> ModelReport:
    """Check every layer of `model` at the input it receives, from the loss backwards.

    Args:
        model: a list of entries (layers naming their torch module, (layer, counterpart) pairs,
            (layer, counterpart, options) triples), or a ``manual.Stack`` / ``MLP``.
        x: the model's input batch, a NumPy array (the first layer's input: not differentiated).
        y: integer labels (B,): the softmax cross-entropy on top is checked too (None: not).
        seed, h, fd_samples, fd_budget: as for ``check_layer`` (each layer gets seed + position).
        self_test: each layer's check also injects the standard mistakes (``check_layer``'s option).
        loss: the loss on top, checked when `y` is given: a loss layer that names its
            ``torch_module`` (``manual.layers.SoftmaxCrossEntropy``), or (loss layer, counterpart);
            default: the model's ``loss_layer``.
    Returns:
        a ModelReport; its ``culprit`` names the first wrong layer from the loss with its report.
        The model's layers are never changed (each check runs on copies).
    """
    items = entries(model)
    loss_entry = _loss_entry(model, loss) if y is not None else None
    # a model on tensors (torch, JAX, NumPy float16) is checked layer by layer on tensors
    foreign = tensors.is_tensor(x) or any(tensor_layers.holds_tensors(layer) for layer, _, _ in items)
    subject_of, fresh = (tensor_layers.TensorLayerSubject, tensor_layers.fresh) if foreign else \
        (LayerSubject, np.array)
    inputs, current = [], fresh(x)
    for layer, _, _ in items:  # the forward pass, on copies, to learn what each layer receives
        inputs.append(current)
        out = copy.deepcopy(layer).forward(fresh(current))
        current = fresh(out[0] if isinstance(out, (tuple, list)) else out)
    checks = [(i, layer, other, options, inp) for i, ((layer, other, options), inp)
              in enumerate(zip(items, inputs), start=1)]
    verdicts = []
    if loss_entry is not None:
        loss, other = loss_entry
        subject = subject_of(_LossLayer(copy.deepcopy(loss)), other, (current, y if foreign else np.asarray(y)),
                               name=f"check_model: the loss ({type(loss).__name__})")
        verdicts.append(LayerVerdict(len(items) + 1, type(loss).__name__,
                                     check(subject, seed + len(items) + 1, h, fd_samples, fd_budget, self_test)))
    for i, layer, other, options, inp in reversed(checks):
        name = options.pop("name", None) or f"check_model: entry {i} of {len(items)} ({type(layer).__name__})"
        subject = subject_of(layer, other, inp, **options, input_grads=i > 1, name=name)
        report = check(subject, seed + i, h, fd_samples, fd_budget, self_test)
        verdicts.append(LayerVerdict(i, type(layer).__name__, report))
    return ModelReport(len(items), verdicts)
