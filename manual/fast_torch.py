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
measures the whole step (on a GPU, synchronise before starting the timer too). The input checks
of the reference (``MLP.check_input``, finite ẑ₁, labels in range) run inside the call, as in
``FastStep``. This path keeps its own base points: after a step, ``mlp.zs``, ``mlp.zhats`` and the
layers' stored inputs are those of the last reference forward, not of this step.

What makes it fast (measurements: docs/performance.md, "Manual step on torch tensors"):

- buffers per batch size, so a step allocates (almost) no tensors;
- the bias folded into the forward product: ẑ ← b, then ẑ ← ẑ + z·Wᵀ (``addmm_`` with β = 1);
- the activation in place (ẑ becomes z = σ(ẑ): the backward pass needs only z);
- the learning rate folded into δ: the backward pass is linear in δ, so lr·δ yields lr·∂L/∂θ;
- each layer's step taken as soon as its gradient is known, fused: W ← W − (lr·δ)ᵀz is one
  ``W.addmm_(δᵀ, z, alpha=-1)`` with β = 1 (dW is never written), b ← b − (lr·δ)ᵀ1 one
  ``b.addmv_(δᵀ, 1, alpha=-1)``; δW is taken from W before its step;
- the input checks accept the common case (a (B, in) tensor of the net's dtype and device, int64
  labels in range: one device sync) with a few attribute reads; anything else goes through the
  reference's own checks (``MLP.check_input``, ``MLP.check_labels``), which say what is wrong.
"""

from __future__ import annotations

import math

from manual.mlp import check_finite_input, check_labels


def _sigmoid_(x):
    """σ(x) in place (torch's one-pass kernel; saturates to 0 and 1 without overflow)."""
    return x.sigmoid_()


def _sigmoid_prime(s, out):
    """σ' = (1 − s)·s into `out` (1 − s exact for s ≥ 1/2: no cancellation near saturation)."""
    return out.copy_(s).neg_().add_(1).mul_(s)


def _tanh_prime(t, out):
    """tanh' = 1 − t·t into `out`, one pass."""
    return out.fill_(1).addcmul_(t, t, value=-1)


def _relu_prime(r, out):
    """relu' = [r > 0] into `out` (0 at 0, as PyTorch)."""
    return out.copy_(r.gt(0))


ACTIVATIONS = {  # name -> (f in place, f'(f(x), out)): the arithmetic of manual.functional
    "sigmoid": (_sigmoid_, _sigmoid_prime),
    "tanh": (lambda x: x.tanh_(), _tanh_prime),
    "relu": (lambda x: x.relu_(), _relu_prime),
}


def plain_batch(x, W) -> bool:
    """x is what ``MLP.check_input`` passes unchanged for a net whose first weight is W: a
    (B, in) tensor of W's type, dtype and device, B >= 1."""
    return (type(x) is type(W) and x.dtype == W.dtype and x.device == W.device and x.ndim == 2
            and x.shape[1] == W.shape[1] and x.shape[0] > 0)


def plain_labels(y, batch: int, classes: int, like) -> bool:
    """y is what ``check_labels`` passes unchanged and the gathers take: `batch` int64 labels in
    0..classes−1, a tensor of `like`'s (an int64 tensor's) type and device."""
    return (type(y) is type(like) and y.dtype == like.dtype and y.device == like.device
            and tuple(y.shape) == (batch,) and bool(((y >= 0) & (y < classes)).all()))


def output_delta(logits, y, scale: float, minus_one):
    """(loss, δ·scale) for δ = (SM(ẑ) − onehot(y))/B, in the logits' own memory: the arithmetic of
    ``functional.cross_entropy_backward`` with the learning rate folded in (`scale`); y (B,) int64,
    `minus_one` a (B, 1) tensor of −1."""
    B = logits.shape[0]
    shifted = logits.sub_(logits.amax(dim=1, keepdim=True))  # ẑ − c
    picked = shifted.gather(1, y[:, None])  # ẑ_y − c
    e = shifted.exp_()
    total = e.sum(dim=1, keepdim=True)  # Σ e^(ẑ−c) >= 1
    loss = (total.log().sum() - picked.sum()).item() / B
    delta = e.div_(total).scatter_add_(1, y[:, None], minus_one)  # SM(ẑ) − onehot(y)
    return loss, delta.mul_(scale / B)


def weight_step(W, delta, z) -> None:
    """W ← W − δᵀz (δ carrying lr): one GEMM with β = 1 writing into W, dW never formed."""
    W.addmm_(delta.T, z, alpha=-1)


def bias_step(b, delta, ones) -> None:
    """b ← b − δᵀ1 (δ carrying lr): one GEMV with β = 1 writing into b."""
    b.addmv_(delta.T, ones, alpha=-1)


class FastTorchStep:
    """One SGD step on an ``MLP`` of torch tensors, in place (contract: the module docstring).

    Args:
        mlp: a ``manual.mlp.MLP`` moved to torch tensors (``mlp.to(torch, device)``).
    Call: ``loss = step(x, y, lr)`` with x (B, sizes[0]) a tensor of the net's dtype and device,
    y (B,) integer labels there, lr > 0; returns the batch-mean loss before the step (a float).
    """

    def __init__(self, mlp):
        W = mlp.weights[0] if hasattr(mlp, "linears") else None
        if W is None or type(W).__module__.split(".")[0] != "torch" or mlp.activation.name not in ACTIVATIONS:
            raise TypeError(f"FastTorchStep takes an MLP of torch tensors (mlp.to(torch, device)) with activation "
                            f"in {', '.join(ACTIVATIONS)}")
        self.mlp = mlp
        self._buffers: dict[int, dict] = {}

    def describe(self) -> dict:
        """What the step is and how it updates (for reports, like ``FastStep.describe``)."""
        W = self.mlp.weights[0]
        return {
            "step": "manual.fast_torch.FastTorchStep",
            "contract": "the arithmetic of MLP.loss_and_grads + SGD(lr).step, up to rounding",
            "arrays": f"torch tensors on {W.device}, no autograd",
            "update": "fused: W.addmm_(δᵀ, z, alpha=-1) and b.addmv_(δᵀ, 1, alpha=-1), β = 1, δ carrying lr",
            "forward": "ẑ = b + z·Wᵀ as one addmm_ into a buffer (β = 1), the activation in place",
            "learning_rate": "folded into δ: δ = lr·(SM(ẑ) − onehot(y))/B",
        }

    def __call__(self, x, y, lr: float) -> float:
        mlp = self.mlp
        if not plain_batch(x, mlp.weights[0]):
            x = mlp.check_input(x)
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        B = x.shape[0]
        buf = self._buffers_for(B)
        zs, logits = self._forward(x, buf)
        if not plain_labels(y, B, mlp.sizes[-1], buf["int64"]):
            y = mlp.check_labels(y, logits).long()  # gather and scatter index with int64
        loss, delta = output_delta(logits, y, lr, buf["minus_one"])
        self._descend(zs, delta, buf)
        return loss

    def _forward(self, x, buf):
        """ẑᵢ = bⁱ + zᵢWⁱᵀ into the buffers, then zᵢ₊₁ = σ(ẑᵢ) in place; returns ([z₁, ...], logits)."""
        f = ACTIVATIONS[self.mlp.activation.name][0]
        zs = [x]
        last = len(self.mlp.linears) - 1
        for i, (W, b) in enumerate(self.mlp.parameters()):
            zhat = buf["zhat"][i].copy_(b).addmm_(zs[-1], W.T)
            if i == 0:
                check_finite_input(x, zhat)
            if i < last:
                zs.append(f(zhat))
        return zs, zhat

    def _descend(self, zs, delta, buf) -> None:
        """Backward from lr·δ, each layer's step taken as soon as its gradient is known:
        δWⁱ (from W before its step), W ← W − δᵀzᵢ, b ← b − δᵀ1, δ ← δWⁱ ⊙ σ'."""
        prime = ACTIVATIONS[self.mlp.activation.name][1]
        for i in reversed(range(len(zs))):
            W, b = self.mlp.linears[i].params["W"], self.mlp.linears[i].params["b"]
            dz = buf["dz"][i - 1].addmm_(delta, W, beta=0) if i > 0 else None  # δW, β = 0: the buffer is not read
            weight_step(W, delta, zs[i])
            bias_step(b, delta, buf["ones"])
            if i > 0:
                delta = dz.mul_(prime(zs[i], buf["prime"][i - 1]))

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
                "prime": [empty(batch, n) for n in outs[:-1]],
                "ones": W.new_ones(batch),
                "minus_one": W.new_full((batch, 1), -1.0),
                "int64": W.new_zeros(0).long(),  # what labels are: an int64 tensor on W's device
            }
        return self._buffers[batch]
