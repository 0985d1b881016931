"""The notes' explicit Jacobians, and the chain rule multiplied out literally, one example at a time.

Slow on purpose: it builds every Jacobian as a matrix and multiplies them in reverse order,
exactly as written in the notes, to show that the fast backward pass (``manual.mlp``) computes
the same thing. Parameters are flattened row by row: vec(W)[j·in + k] = W[j, k]. Like the rest of
``manual``, it computes in the library of the arrays it is given.

For one example x with label y and layers ẑᵢ = Wⁱzᵢ + bⁱ, zᵢ₊₁ = σ(ẑᵢ), h = SM(ẑₖ₋₁):

    ∂CE/∂h      = −e_yᵀ / h_y                      (row vector, 1 × C)
    ∂CE/∂ẑₖ₋₁   = ∂CE/∂h · D SM(ẑₖ₋₁)
    ∂CE/∂vec Wⁱ = ∂CE/∂ẑᵢ · D_W(zᵢ)                 D_W = blocks of zᵢᵀ on the diagonal
    ∂CE/∂bⁱ     = ∂CE/∂ẑᵢ · I
    ∂CE/∂ẑᵢ₋₁   = ∂CE/∂ẑᵢ · Wⁱ · Dσ(ẑᵢ₋₁)            D_z = W, Dσ = diag(σ'(ẑ))
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from manual import functional as F
from manual.functional import Array

# D_W of a layer has out × (out·in) entries for every example; above this the literal chain
# would need gigabytes and minutes, which is not what it is for.
MAX_JACOBIAN_ENTRIES = 1 << 24


def eye(n: int, like: Array) -> Array:
    """The (n, n) identity, of `like`'s library, dtype and device."""
    return array_namespace(like).eye(n, dtype=like.dtype, device=device(like))


def diag(v: Array) -> Array:
    """diag(v), (n, n), for v of shape (n,): I with column j scaled by vⱼ."""
    return eye(v.shape[0], v) * v


def d_activation(z_next: Array, prime=F.sigmoid_prime) -> Array:
    """Dσ = diag(σ'(ẑ)), (n, n), from z_next = σ(ẑ) of one example, shape (n,)."""
    return diag(prime(z_next))


def d_softmax(s: Array) -> Array:
    """D SM = diag(s) − s sᵀ, (C, C), from s = SM(ẑ) of one example, shape (C,)."""
    return diag(s) - s[:, None] * s[None, :]


def d_cross_entropy(h: Array, y: int) -> Array:
    """∂CE(h, y)/∂h = −e_yᵀ / h_y, a (1, C) row vector, for CE(h, y) = −ln h_y."""
    g = array_namespace(h).zeros((1, h.shape[0]), dtype=h.dtype, device=device(h))
    g[0, y] = -1.0 / h[y]
    return g


def d_linear_x(W: Array) -> Array:
    """D_z (Wz + b) = W, (out, in)."""
    return W


def d_linear_W(z: Array, n_out: int) -> Array:
    """D_W (Wz + b) = I ⊗ zᵀ: the (out, out·in) block matrix with zᵀ in each diagonal block."""
    blocks = eye(n_out, z)[:, :, None] * z  # (out, out, in): zᵀ where the two first indices agree
    return array_namespace(z).reshape(blocks, (n_out, n_out * z.shape[0]))


def d_linear_b(b: Array) -> Array:
    """D_b (Wz + b) = I, (out, out), for a bias b of shape (out,)."""
    return eye(b.shape[0], b)


def check_size(sizes) -> None:
    """Refuse sizes whose D_W matrices would be impractically large (ValueError says which)."""
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        entries = n_out * n_out * n_in
        if entries > MAX_JACOBIAN_ENTRIES:
            raise ValueError(
                f"the literal Jacobian chain would build a {n_out} x {n_out * n_in} matrix D_W for layer {i} "
                f"({entries:,} entries, limit {MAX_JACOBIAN_ENTRIES:,}); use narrower layers (out²·in <= limit)"
            )


def example_grads(weights, biases, x: Array, y: int, activation=F.ACTIVATIONS["sigmoid"]):
    """∂CE/∂Θ for one example (x of shape (in,), label y) by the literal chain of Jacobians.

    Returns:
        [(dW, db), ...] with the shapes of (W, b).
    """
    xp = array_namespace(x)
    zs, z = [x], x
    for i, (W, b) in enumerate(zip(weights, biases)):
        zhat = W @ z + b
        z = activation.f(zhat) if i < len(weights) - 1 else F.softmax(zhat[None, :])[0, :]
        zs.append(z)
    h = zs[-1]

    g = d_cross_entropy(h, y) @ d_softmax(h)  # ∂CE/∂ẑₖ₋₁, (1, C)
    grads = []
    for i in reversed(range(len(weights))):
        n_out = biases[i].shape[0]
        dW = xp.reshape(g @ d_linear_W(zs[i], n_out), weights[i].shape)
        db = (g @ d_linear_b(biases[i]))[0, :]
        grads.append((dW, db))
        if i > 0:
            g = g @ d_linear_x(weights[i]) @ d_activation(zs[i], activation.prime)
    return grads[::-1]


def batch_grads(weights, biases, x: Array, y: Array, activation=F.ACTIVATIONS["sigmoid"]):
    """Gradient of the batch-mean loss: the per-example literal chains, averaged.

    Args:
        weights, biases: lists of (out, in) and (out,) arrays.
        x: (B, in) inputs; y: (B,) labels.
        activation: a ``functional.Activation``.
    Returns:
        [(dW, db), ...]. Raises ValueError for sizes beyond ``MAX_JACOBIAN_ENTRIES``.
    """
    check_size([weights[0].shape[1]] + [b.shape[0] for b in biases])
    B, total = x.shape[0], None
    for i in range(B):
        g = example_grads(weights, biases, x[i, :], int(y[i]), activation)
        total = g if total is None else [(a + c, b + d) for (a, b), (c, d) in zip(total, g)]
    return [(dW / B, db / B) for dW, db in total]
