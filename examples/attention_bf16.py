"""Scaled dot-product attention on torch tensors with its backward written by hand, checked in
bfloat16 (and any other precision) against ``torch.nn.functional.scaled_dot_product_attention``.

Forward, q, k, v of shape (B, T, d), any float dtype, computed like a fused kernel in float32
(float64 when handed float64, so that the referee can run it exactly), rounded to q's dtype:

    S = q kᵀ / √d,    P = softmax(S) (rows),    O = P v

Backward, dO the upstream gradient (FlashAttention's equations, with P recomputed from q, k):

    dv = Pᵀ dO
    dP = dO vᵀ
    dS = P ⊙ (dP − rowsum(dP ⊙ P))          (the softmax's VJP, row by row)
    dq = dS k / √d,    dk = dSᵀ q / √d

Wrong variants, each a slip seen in hand-written attention kernels: ``vjp_scaled`` (dq 1.05 times
too large), ``vjp_dropped_term`` (the −rowsum term of the softmax VJP left out),
``vjp_transposed`` (dk = dS q / √d: the transpose of dS forgotten).

    python examples/attention_bf16.py        # right and wrong, in bfloat16, printed
"""

from __future__ import annotations

import math

import torch


def accumulation(dtype: torch.dtype) -> torch.dtype:
    """float32 for the half types, float64 kept (see examples/softmax_ce_fused.py)."""
    return torch.promote_types(dtype, torch.float32)


def _probabilities(q, k):
    """P = softmax(q kᵀ/√d) in the accumulation precision."""
    acc = accumulation(q.dtype)
    return torch.softmax(q.to(acc) @ k.to(acc).transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ/√d) v, (B, T, d) in q's dtype."""
    return (_probabilities(q, k) @ v.to(accumulation(v.dtype))).to(q.dtype)


def _grads(g, q, k, v):
    """(P, dP, dS, scale) of the backward, in the accumulation precision."""
    acc = accumulation(q.dtype)
    p = _probabilities(q, k)
    dp = g.to(acc) @ v.to(acc).transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    return p, ds, 1 / math.sqrt(q.shape[-1])


def attention_vjp(g, q, k, v):
    """(dq, dk, dv) for the upstream gradient g (B, T, d), each in its input's dtype."""
    acc = accumulation(q.dtype)
    p, ds, scale = _grads(g, q, k, v)
    dv = p.transpose(-1, -2) @ g.to(acc)
    dq = ds @ k.to(acc) * scale
    dk = ds.transpose(-1, -2) @ q.to(acc) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def vjp_scaled(g, q, k, v):
    """Wrong: dq 1.05 times too large."""
    dq, dk, dv = attention_vjp(g, q, k, v)
    return (dq.to(accumulation(dq.dtype)) * 1.05).to(q.dtype), dk, dv


def vjp_dropped_term(g, q, k, v):
    """Wrong: dS = P ⊙ dP, the softmax VJP's −rowsum(dP ⊙ P) term dropped."""
    acc = accumulation(q.dtype)
    p = _probabilities(q, k)
    ds = p * (g.to(acc) @ v.to(acc).transpose(-1, -2))
    scale = 1 / math.sqrt(q.shape[-1])
    dq = ds @ k.to(acc) * scale
    dk = ds.transpose(-1, -2) @ q.to(acc) * scale
    return dq.to(q.dtype), dk.to(k.dtype), (p.transpose(-1, -2) @ g.to(acc)).to(v.dtype)


def vjp_transposed(g, q, k, v):
    """Wrong: dk = dS q/√d, the transpose of dS forgotten."""
    dq, _, dv = attention_vjp(g, q, k, v)
    _, ds, scale = _grads(g, q, k, v)
    return dq, (ds @ q.to(ds.dtype) * scale).to(k.dtype), dv


def reference(q, k, v):
    """The counterpart, differentiated by autograd."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def inputs(dtype=torch.bfloat16, batch: int = 2, length: int = 8, dim: int = 16, seed: int = 0):
    """q, k, v of shape (batch, length, dim) in `dtype`, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, length, dim, generator=gen).to(dtype) for _ in range(3))


def main() -> None:
    from compare import check_function

    print(check_function(attention, attention_vjp, reference, *inputs(torch.bfloat16)))
    print()
    print(check_function(attention, vjp_transposed, reference, *inputs(torch.bfloat16)))


if __name__ == "__main__":
    main()
