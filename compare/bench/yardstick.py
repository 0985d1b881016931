"""The yardstick: the hand-derived step on torch tensors as a user writes it in twenty lines.

No buffers, no checks, no autograd: forward with ``addmm``, the loss from ``log_softmax`` returned
as a float, δ = (softmax − onehot)·lr/B, σ' from the stored z, each weight step one ``addmm_`` with
β = 1. ``FastTorchStep.run`` must be at or below its time (the bench times both in the same run);
``tests/test_bench.py`` holds it to the float64 reference like every other timed step.
"""

from __future__ import annotations


def twenty_line_step(params, x, y, lr: float) -> float:
    """One SGD step of the sigmoid MLP in place -> the loss before it.

    Args:
        params: [(W (out, in), b (out,)), ...] torch tensors; x (B, in); y (B,) int64 labels.
    """
    import torch

    zs = [x]
    for W, b in params[:-1]:
        zs.append(torch.addmm(b, zs[-1], W.T).sigmoid_())
    W, b = params[-1]
    logp = torch.log_softmax(torch.addmm(b, zs[-1], W.T), dim=1)
    loss = torch.nn.functional.nll_loss(logp, y).item()
    delta = logp.exp_()
    delta[torch.arange(len(y)), y] -= 1
    delta.mul_(lr / len(y))
    for i in reversed(range(len(params))):
        W, b = params[i]
        dz = delta @ W if i > 0 else None
        W.addmm_(delta.T, zs[i], alpha=-1)
        b.sub_(delta.sum(0))
        if i > 0:
            delta = dz.mul_(zs[i] * (1 - zs[i]))
    return loss
