"""The hand-derived step written for a compiler: ``torch.compile`` of it on torch tensors, ``jax.jit``
of it in ``jax.numpy``; the same arithmetic as ``FastTorchStep``, held to the same reference.

Contract (``FastStep``'s): ``step(x, y, lr)`` does what

    loss, grads = mlp.loss_and_grads(x, y)
    SGD(lr).step(mlp.parameters(), grads)

does, up to rounding, for a sigmoid ``MLP`` whose parameters are torch tensors
(``CompiledTorchStep``: ``mlp.to(torch)``) or JAX arrays (``JaxStep``: ``mlp.to(jax.numpy)``), and
returns the same loss. ``check(x, y)`` and ``run(x, y, lr)`` are the call's two halves, as in
``FastTorchStep``. ``compile=False`` runs the very same function op by op (eager), which is what
the bench's "hand-derived eager" JAX column times and what the tests inject mistakes into (one
compile per test module is enough to hold the compiled program to the reference).

The arithmetic, one line per equation (the notes' backward pass; s = lr/B carried by δ):

    zᵢ₊₁ = σ(zᵢWⁱᵀ + bⁱ),  ẑ = z_k Wᵏᵀ + bᵏ
    L = −mean_b log SM(ẑ)_b,y_b,  δ = s·(SM(ẑ) − onehot(y))
    for each layer from the last: δWⁱ (from W before its step), Wⁱ ← Wⁱ − δᵀzᵢ, bⁱ ← bⁱ − δᵀ1,
        δ ← δWⁱ ⊙ zᵢ(1 − zᵢ)

Written for the compiler: no transpose is materialised (the products name their contracted axes,
``einsum`` in JAX; a transposed view into ``mm`` in torch), the scaling by s and the σ' product are
elementwise work the compiler fuses into its neighbours, and the update is θ − Δθ on a donated (JAX)
or mutated (torch) parameter, which the compiler writes in place. This module never imports torch
or JAX at module level: the library comes in with the arrays.
"""

from __future__ import annotations

import math

from manual.mlp import check_finite_input, check_labels


def torch_update(params, x, y, scale):
    """One step on torch tensors, the parameters updated in place -> the loss (a 0-d tensor).

    Args:
        params: [(W (out, in), b (out,)), ...]; x (B, in); y (B,) int64; scale: lr/B, a 0-d tensor.
    """
    import torch

    zs = [x]
    for W, b in params[:-1]:
        zs.append(torch.sigmoid(torch.addmm(b, zs[-1], W.T)))
    W, b = params[-1]
    logp = torch.log_softmax(torch.addmm(b, zs[-1], W.T), dim=1)
    loss = -logp.gather(1, y[:, None]).mean()
    delta = (logp.exp() - torch.nn.functional.one_hot(y, logp.shape[1]).to(logp.dtype)) * scale
    for i in reversed(range(len(params))):
        W, b = params[i]
        dz = delta @ W if i > 0 else None
        W.sub_(delta.T @ zs[i])
        b.sub_(delta.sum(0))
        if i > 0:
            delta = dz * zs[i] * (1 - zs[i])
    return loss


def jax_update(params, x, y, scale):
    """One step in ``jax.numpy`` -> (loss, new params), the params [(W (out, in), b (out,)), ...]
    donated by the jitted caller (x (B, in), y (B,) int32, scale = lr/B)."""
    import jax
    import jax.numpy as jnp

    zs = [x]
    for W, b in params[:-1]:
        zs.append(jax.nn.sigmoid(jnp.einsum("bi,oi->bo", zs[-1], W) + b))
    W, b = params[-1]
    logp = jax.nn.log_softmax(jnp.einsum("bi,oi->bo", zs[-1], W) + b, axis=1)
    loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    delta = (jnp.exp(logp) - jax.nn.one_hot(y, logp.shape[1], dtype=logp.dtype)) * scale
    new = [None] * len(params)
    for i in reversed(range(len(params))):
        W, b = params[i]
        dz = jnp.einsum("bo,oi->bi", delta, W) if i > 0 else None
        new[i] = (W - jnp.einsum("bo,bi->oi", delta, zs[i]), b - jnp.sum(delta, axis=0))
        if i > 0:
            delta = dz * zs[i] * (1 - zs[i])
    return loss, new


class _CompiledStep:
    """What both steps share: the checks, the learning rate, the call."""

    library = ""

    def __init__(self, mlp):
        W = mlp.weights[0] if hasattr(mlp, "linears") else None
        if W is None or type(W).__module__.split(".")[0] not in self.library.split("/") or mlp.activation.name != "sigmoid":
            raise TypeError(f"{type(self).__name__} takes a sigmoid MLP of {self.library} arrays (mlp.to(...))")
        self.mlp = mlp
        self._scale = {}

    def __call__(self, x, y, lr: float) -> float:
        x, y = self.check(x, y)
        return self.run(x, y, lr)

    def check(self, x, y):
        """The reference's checks of a batch -> (x, y) as ``run`` takes them (one clear error otherwise)."""
        x = self.mlp.check_input(x)
        check_finite_input(x, x)
        y = check_labels(y, x.shape[0], self.mlp.sizes[-1])
        self.mlp.check_library(y, "y")
        return x, y

    def run(self, x, y, lr: float) -> float:
        """The step on a batch that ``check`` has passed -> the loss before it, a float."""
        return float(self.launch(x, y, lr))

    def launch(self, x, y, lr: float):
        """``run`` without waiting: the loss as the library's 0-d array (JAX dispatches asynchronously)."""
        lr = float(lr)
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        scale = lr / x.shape[0]
        if scale not in self._scale:  # a 0-d array of the net's: a new lr does not recompile, nor is sent each call
            self._scale = {scale: self._scalar(scale, x)}
        return self._launch(x, y, self._scale[scale])


class CompiledTorchStep(_CompiledStep):
    """``torch.compile(torch_update, dynamic=False)`` on an MLP of torch tensors (the first call of
    each batch shape compiles); ``compile=False``: ``torch_update`` op by op."""

    library = "torch"

    def __init__(self, mlp, compile: bool = True):
        import torch

        super().__init__(mlp)
        self.fn = torch.compile(torch_update, dynamic=False) if compile else torch_update

    def check(self, x, y):
        x, y = super().check(x, y)
        return x, y.long()

    @staticmethod
    def _scalar(scale: float, x):
        import torch

        return torch.tensor(scale, dtype=x.dtype, device=x.device)

    def _launch(self, x, y, scale):
        import torch

        with torch.no_grad():
            return self.fn(self.mlp.parameters(), x, y, scale)


class JaxStep(_CompiledStep):
    """``jax.jit(jax_update, donate_argnums=0)`` on an MLP of JAX arrays (each batch shape compiles
    once); ``compile=False``: ``jax_update`` op by op. The new parameters replace the donated ones."""

    library = "jax/jaxlib"

    def __init__(self, mlp, compile: bool = True):
        import jax

        super().__init__(mlp)
        self.fn = jax.jit(jax_update, donate_argnums=0) if compile else jax_update

    def check(self, x, y):
        x, y = super().check(x, y)
        return x, y.astype("int32")

    @staticmethod
    def _scalar(scale: float, x):
        import jax

        return jax.device_put(x.dtype.type(scale), x.device)

    def _launch(self, x, y, scale):
        linears = self.mlp.linears
        loss, new = self.fn([(linear.params["W"], linear.params["b"]) for linear in linears], x, y, scale)
        for linear, (W, b) in zip(linears, new):
            linear.params["W"], linear.params["b"] = W, b
        return loss
