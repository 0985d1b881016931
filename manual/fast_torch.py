"""The tuned training step on torch tensors, apart from the reference and held to it.

Contract (``FastStep``'s): ``FastTorchStep(mlp)(x, y, lr)`` does what

    loss, grads = mlp.loss_and_grads(x, y)
    SGD(lr).step(mlp.parameters(), grads)

does, up to rounding, for an ``MLP`` whose parameters are torch tensors (``mlp.to(torch,
device)``), and returns the same loss. No autograd: the tensors' own methods, in place, so this
module never imports torch (like the rest of ``manual``).

Use (the bench's "hand-derived step on torch tensors")::

    import numpy as np, torch
    from manual import MLP
    from manual.fast_torch import FastTorchStep

    mlp = MLP((784, 256, 10), dtype=np.float32, seed=0).to(torch, device="cuda")  # or "cpu"
    step = FastTorchStep(mlp)
    loss = step(x, y, 0.7)  # x (B, 784) float32, y (B,) int64: tensors on the net's device

Each call returns the loss as a Python float, which waits for the device: a timer around the call
measures the whole step (on a GPU, synchronise before starting the timer too). This path keeps its
own base points: after a step, ``mlp.zs``, ``mlp.zhats`` and the layers' stored inputs are those of
the last reference forward, not of this step.

Checked and unchecked: ``step(x, y, lr)`` runs the reference's input checks (``MLP.check_input``,
finite x, labels in range: a device synchronisation each) and then the step; ``step.check(x, y)``
runs the checks alone and ``step.run(x, y, lr)`` the step alone, for a batch that has passed them
(e.g. the bench's, checked once outside the timed region). ``run`` reads only the batch's type,
dtype, device and shape (anything else goes through ``check``) and never synchronises but for the
loss, so it is as lean as a twenty-line hand-derived step; it does not look at the values.

What makes it fast (measurements: docs/performance.md, "Manual step on torch tensors", and
docs/bench.md, "The twenty-line yardstick"):

- buffers per batch size, so a step allocates (almost) no tensors;
- the forward product with its bias in one kernel: ẑ = b + z·Wᵀ (``torch.addmm(b, z, Wᵀ, out=ẑ)``);
- the activation in place (ẑ becomes z = σ(ẑ): the backward pass needs only z);
- the loss and δ from one log-softmax kernel: L = −mean log SM(ẑ)_y, B·δ = exp(log SM(ẑ)) − onehot(y);
- lr/B folded into each update's α (the backward pass is linear in δ): no pass scales δ;
- each layer's step taken as soon as its gradient is known, fused: W ← W − (lr/B)·(Bδ)ᵀz is one
  ``W.addmm_(Bδᵀ, z, alpha=-lr/B)`` with β = 1 (dW is never written), b ← b − (lr/B)·(Bδ)ᵀ1 one
  ``b.addmv_``; δW is taken from W before its step.
"""

from __future__ import annotations

import math

from manual.mlp import check_finite_input, check_labels


def _sigmoid_delta(delta, s, tmp, one):
    """δ ⊙ σ' = δ ⊙ (1 − s) ⊙ s in δ's memory, 1 − s into `tmp` (exact for s ≥ 1/2: no
    cancellation near saturation); `one` a 0-d tensor of 1 (torch.rsub has no out=)."""
    import torch

    return delta.mul_(torch.sub(one, s, out=tmp)).mul_(s)


def _tanh_delta(delta, t, tmp, one):
    """δ ⊙ tanh' = δ ⊙ (1 − t·t), 1 − t·t into `tmp` in one pass."""
    import torch

    return delta.mul_(torch.addcmul(one, t, t, value=-1, out=tmp))


def _relu_delta(delta, r, tmp, one):
    """δ ⊙ relu' = δ where r > 0, else 0 (0 at 0, as PyTorch)."""
    return delta.masked_fill_(r <= 0, 0)


ACTIVATIONS = {  # name -> (f in place, (δ, f(x), tmp, 1) -> δ ⊙ f'(x)): the arithmetic of manual.functional
    "sigmoid": (lambda x: x.sigmoid_(), _sigmoid_delta),
    "tanh": (lambda x: x.tanh_(), _tanh_delta),
    "relu": (lambda x: x.relu_(), _relu_delta),
}


def plain_batch(x, W) -> bool:
    """x is what ``MLP.check_input`` passes unchanged for a net whose first weight is W: a
    (B, in) tensor of W's type, dtype and device, B >= 1 (attribute reads only)."""
    return (type(x) is type(W) and x.dtype == W.dtype and x.device == W.device and x.ndim == 2
            and x.shape[1] == W.shape[1] and x.shape[0] > 0)


def plain_labels(y, batch: int, like) -> bool:
    """y is what the gathers take: `batch` labels, a tensor of `like`'s (an int64 tensor's) type,
    dtype and device (attribute reads only: the range is ``check``'s)."""
    return type(y) is type(like) and y.dtype == like.dtype and y.device == like.device and tuple(y.shape) == (batch,)


def output_delta(logits, y, minus_one):
    """(loss, B·δ) with B·δ = SM(ẑ) − onehot(y) in a new (B, C) tensor, from one log-softmax:
    loss = −mean_b log SM(ẑ)_b,y_b (``functional.cross_entropy``), SM = exp(log SM) (the arithmetic
    of ``functional.cross_entropy_backward`` but for the 1/B, which the updates' α carry);
    y (B,) int64, `minus_one` a (B, 1) tensor of −1."""
    import torch

    logp = logits.log_softmax(1)
    loss = torch.nn.functional.nll_loss(logp, y).item()
    return loss, logp.exp_().scatter_add_(1, y[:, None], minus_one)


def weight_step(W, delta, z, scale: float) -> None:
    """W ← W − scale·δᵀz: one GEMM with β = 1 writing into W, dW never formed."""
    W.addmm_(delta.T, z, alpha=-scale)


def bias_step(b, delta, ones, scale: float) -> None:
    """b ← b − scale·δᵀ1: one GEMV with β = 1 writing into b."""
    b.addmv_(delta.T, ones, alpha=-scale)


class FastTorchStep:
    """One SGD step on an ``MLP`` of torch tensors, in place (contract: the module docstring).

    Args:
        mlp: a ``manual.mlp.MLP`` moved to torch tensors (``mlp.to(torch, device)``).
    Call: ``loss = step(x, y, lr)`` with x (B, sizes[0]) a tensor of the net's dtype and device,
    y (B,) integer labels there, lr > 0; returns the batch-mean loss before the step (a float).
    ``check(x, y)`` and ``run(x, y, lr)``: the same call's two halves (module docstring).
    """

    def __init__(self, mlp):
        W = mlp.weights[0] if hasattr(mlp, "linears") else None
        if W is None or type(W).__module__.split(".")[0] != "torch" or mlp.activation.name not in ACTIVATIONS:
            raise TypeError(f"FastTorchStep takes an MLP of torch tensors (mlp.to(torch, device)) with activation "
                            f"in {', '.join(ACTIVATIONS)}")
        self.mlp = mlp
        self._buffers: dict[int, dict] = {}

    def how_it_ran(self) -> dict:
        """What the step is and how it updates (for reports, like ``FastStep.how_it_ran``)."""
        W = self.mlp.weights[0]
        return {
            "step": "manual.fast_torch.FastTorchStep",
            "contract": "the arithmetic of MLP.loss_and_grads + SGD(lr).step, up to rounding",
            "arrays": f"torch tensors on {W.device}, no autograd",
            "update": "fused: W.addmm_(Bδᵀ, z, alpha=-lr/B) and b.addmv_(Bδᵀ, 1, alpha=-lr/B), β = 1",
            "forward": "ẑ = b + z·Wᵀ as one torch.addmm into a buffer, the activation in place",
            "loss": "one log_softmax: loss from its gathered labels, B·δ = its exp − onehot(y)",
        }

    def __call__(self, x, y, lr: float) -> float:
        x, y = self.check(x, y)
        return self.run(x, y, lr)

    def check(self, x, y):
        """The reference's checks of a batch -> (x, y) as ``run`` takes them: x as ``MLP.check_input``
        passes it and finite, y its int64 labels in range. One clear error otherwise."""
        mlp = self.mlp
        x = mlp.check_input(x)
        check_finite_input(x, x)
        y = check_labels(y, x.shape[0], mlp.sizes[-1])
        mlp.check_library(y, "y")
        return x, y.long()  # gather and scatter index with int64

    def run(self, x, y, lr: float) -> float:
        """The step on a batch that ``check`` has passed; a batch of another type, dtype, device or
        shape goes through ``check`` first."""
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        mlp = self.mlp
        if not plain_batch(x, mlp.weights[0]):
            x, y = self.check(x, y)
        buf = self._buffers_for(x.shape[0])
        if not plain_labels(y, x.shape[0], buf["int64"]):
            x, y = self.check(x, y)
        zs, logits = self._forward(x, buf)
        try:
            loss, delta = output_delta(logits, y, buf["minus_one"])
        except (RuntimeError, IndexError):  # a label out of range (torch's gather on the CPU): say so as check does
            self.check(x, y)
            raise
        self._descend(zs, delta, lr / x.shape[0], buf)
        return loss

    def _forward(self, x, buf):
        """ẑᵢ = bⁱ + zᵢWⁱᵀ into the buffers, then zᵢ₊₁ = σ(ẑᵢ) in place; returns ([z₁, ...], logits)."""
        import torch

        f = ACTIVATIONS[self.mlp.activation.name][0]
        zs, last = [x], len(self.mlp.linears) - 1
        for i, (W, b) in enumerate(self.mlp.parameters()):
            zhat = torch.addmm(b, zs[-1], W.T, out=buf["zhat"][i])
            if i < last:
                zs.append(f(zhat))
        return zs, zhat

    def _descend(self, zs, delta, scale: float, buf) -> None:
        """Backward from B·δ, each layer's step taken as soon as its gradient is known:
        δWⁱ (from W before its step), W ← W − scale·δᵀzᵢ, b ← b − scale·δᵀ1, δ ← δWⁱ ⊙ σ'."""
        import torch

        backprop = ACTIVATIONS[self.mlp.activation.name][1]
        for i in reversed(range(len(zs))):
            W, b = self.mlp.linears[i].params["W"], self.mlp.linears[i].params["b"]
            dz = torch.mm(delta, W, out=buf["dz"][i - 1]) if i > 0 else None
            weight_step(W, delta, zs[i], scale)
            bias_step(b, delta, buf["ones"], scale)
            if i > 0:
                delta = backprop(dz, zs[i], buf["tmp"][i - 1], buf["one"])

    def _buffers_for(self, batch: int) -> dict:
        if batch not in self._buffers:
            if len(self._buffers) >= 4:  # a few sizes: the batch, the last short batch
                self._buffers.pop(next(iter(self._buffers)))
            W = self.mlp.weights[0]
            outs = self.mlp.sizes[1:]

            def empty(*shape):
                return W.new_empty(shape)

            self._buffers[batch] = {
                "zhat": [empty(batch, n) for n in outs],
                "dz": [empty(batch, n) for n in outs[:-1]],
                "tmp": [empty(batch, n) for n in outs[:-1]],
                "ones": W.new_ones(batch),
                "minus_one": W.new_full((batch, 1), -1.0),
                "one": W.new_ones(()),
                "int64": W.new_zeros(0).long(),  # what labels are: an int64 tensor on W's device
            }
        return self._buffers[batch]
