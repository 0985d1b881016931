"""Softmax and cross-entropy fused in one ``torch.autograd.Function``, its backward written by hand,
checked in float32, bfloat16 and float16 against ``torch.nn.functional.cross_entropy``.

Forward, logits z (B, C) of any float dtype, labels y (B,) int64:

    L = (1/B) Σ_b [logsumexp(z_b) − z_b,y_b]

computed like a fused kernel: in float32 (or float64 when handed float64, so that the referee can
run it exactly), the loss rounded to z's dtype at the end.

Backward, the whole chain in one step (the softmax's Jacobian and the log's cancel):

    ∂L/∂z = g · (softmax(z) − onehot(y)) / B          (g: the upstream gradient of the scalar L)

with softmax(z) kept from the forward. ``Wrong`` variants, each a classic slip of a fused kernel:
``ScaledBackward`` (a factor 1.05: a stale temperature or a 1/(B−1)), ``DroppedOnehot`` (the
−onehot term left out), ``NoMean`` (the 1/B forgotten). The check names input z and the kind.

    python examples/softmax_ce_fused.py      # right and wrong, in bfloat16, printed
"""

from __future__ import annotations

import torch


def accumulation(dtype: torch.dtype) -> torch.dtype:
    """The precision a fused kernel computes in: float32 for the half types, float64 kept (never
    ``.float()``, which would make the referee's float64 run a float32 one)."""
    return torch.promote_types(dtype, torch.float32)


class SoftmaxCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of logits z (B, C) at labels y (B,); returns a scalar of z's dtype."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        za = z.to(accumulation(z.dtype))
        lse = torch.logsumexp(za, dim=1)
        ctx.save_for_backward(torch.exp(za - lse[:, None]), y)
        return (lse - za.gather(1, y[:, None])[:, 0]).mean().to(z.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, y = ctx.saved_tensors
        d = p.clone()
        d[torch.arange(len(y), device=y.device), y] -= 1
        return (d * (g.to(p.dtype) / len(y))).to(g.dtype), None


class ScaledBackward(SoftmaxCrossEntropy):
    """Wrong: the gradient 1.05 times too large."""

    @staticmethod
    def backward(ctx, g):
        dz, _ = SoftmaxCrossEntropy.backward(ctx, g)
        return (dz.to(accumulation(dz.dtype)) * 1.05).to(g.dtype), None


class DroppedOnehot(SoftmaxCrossEntropy):
    """Wrong: softmax(z)·g/B, the −onehot(y) term dropped."""

    @staticmethod
    def backward(ctx, g):
        p, y = ctx.saved_tensors
        return (p * (g.to(p.dtype) / len(y))).to(g.dtype), None


class NoMean(SoftmaxCrossEntropy):
    """Wrong: the 1/B of the mean forgotten."""

    @staticmethod
    def backward(ctx, g):
        dz, _ = SoftmaxCrossEntropy.backward(ctx, g)
        return (dz.to(accumulation(dz.dtype)) * ctx.saved_tensors[1].numel()).to(g.dtype), None


def reference(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The counterpart, differentiated by autograd."""
    return torch.nn.functional.cross_entropy(z, y)


def inputs(dtype=torch.bfloat16, batch: int = 16, classes: int = 10, seed: int = 0):
    """Logits of scale 3 in `dtype` and labels, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    z = (3 * torch.randn(batch, classes, generator=gen)).to(dtype)
    return z, torch.randint(0, classes, (batch,), generator=gen)


def main() -> None:
    from compare import check_function

    print(check_function(SoftmaxCrossEntropy, None, reference, *inputs(torch.bfloat16)))
    print()
    print(check_function(ScaledBackward, None, reference, *inputs(torch.bfloat16)))


if __name__ == "__main__":
    main()
