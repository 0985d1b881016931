"""The notes' functions, each with its derivative right beside it.

Conventions: a batch is a 2-D array with one example per row, shape (B, n); every function keeps
the dtype of its input and returns a new array. Elementwise derivatives are computed from the
stored *output* of the forward function (the notes: σ' = σ(1−σ) reuses σ from the forward pass);
the row-wise functions (softmax, log_softmax, cross_entropy) come with their vector–Jacobian
products.

Any array library: each function computes with the namespace of its inputs (the Python array API
standard, ``xp = array_namespace(x)``): NumPy arrays give NumPy arrays, torch tensors give torch
tensors on their device, array-api-strict arrays give theirs. The arrays of one call share one
library and device. The tuned training step lives apart, in ``manual/fast.py``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from array_api_compat import array_namespace, device

Array = Any  # an array of any array API library (numpy.ndarray, torch.Tensor, ...)

# ------------------------------------------------------------------------------ linear map


def linear(x: Array, W: Array, b: Array) -> Array:
    """ẑ = W z + b for every row z of `x`: ``x @ W.T + b``.

    Args:
        x: (B, in) inputs, one example per row.
        W: (out, in) weights, the layout of ``torch.nn.Linear.weight``.
        b: (out,) bias.
    Returns:
        (B, out) pre-activations ẑ.
    """
    return x @ W.T + b


def ones(x: Array, shape) -> Array:
    """An array of ones of `shape`, of x's library, dtype and device."""
    return array_namespace(x).ones(shape, dtype=x.dtype, device=device(x))


def column_sum(x: Array) -> Array:
    """Σ over the rows of a (B, n) array, shape (n,), written as the product 1ᵀx.

    The sum is the math; the product is how the harness's reference has always rounded it
    (the training runs it is held to were made with it)."""
    return ones(x, x.shape[0]) @ x


def linear_backward(delta: Array, x: Array, W: Array, need_dx: bool = True):
    """Vector–Jacobian products of ẑ = Wz + b, summed over the batch.

    The notes' Jacobians: D_z = W, D_W = blocks of zᵀ, D_b = I. Applied to the row vector δ = ∂L/∂ẑ
    of each example and summed over the B rows:

        dW = δᵀ x   (out, in)      db = Σ_rows δ   (out,)      dx = δ W   (B, in)

    Args:
        delta: (B, out) ∂L/∂ẑ for each example (already carrying the 1/B of the batch mean).
        x: (B, in) the layer's input, stored by the forward pass.
        W: (out, in) weights.
        need_dx: False when nobody needs the input's gradient (the first layer: x is the data),
            as autograd skips inputs that do not require a gradient.
    Returns:
        (dW, db, dx), dx None when not needed.
    """
    dW = delta.T @ x
    db = column_sum(delta)
    dx = delta @ W if need_dx else None
    return dW, db, dx


# ------------------------------------------------------------------------------ activations


def sigmoid(x: Array) -> Array:
    """σ(x) = 1 / (1 + e^(−x)), elementwise, for any finite x.

    One exp per element. e^(−x) would overflow for x below −ln(largest float) (−709.8 in float64,
    −88.7 in float32), so x is first clipped at −c, c = ⌊ln(largest float)⌋ (709 resp. 88): below
    −c the true σ(x) < e^(−c) lies under the dtype's smallest normal number (2.2e-308 resp.
    1.2e-38), and so does the clipped result 1/(1 + e^c); it is off by less than that. Above −c
    the clip changes nothing. For large x, e^(−x) underflows to 0 and σ = 1. No NaN is possible.
    """
    xp = array_namespace(x)
    c = math.floor(math.log(xp.finfo(x.dtype).max))
    return 1 / (1 + xp.exp(-xp.clip(x, min=-c)))


def sigmoid_prime(s: Array) -> Array:
    """σ'(x) = σ(x)(1 − σ(x)), from s = σ(x) as stored by the forward pass."""
    return (1 - s) * s


def tanh(x: Array) -> Array:
    """tanh(x), elementwise (beyond the notes; saturates to ±1 without overflow)."""
    return array_namespace(x).tanh(x)


def tanh_prime(t: Array) -> Array:
    """tanh'(x) = 1 − tanh(x)², from t = tanh(x)."""
    return 1 - t * t


def relu(x: Array) -> Array:
    """max(x, 0), elementwise (beyond the notes)."""
    return array_namespace(x).maximum(x, 0)


def relu_prime(r: Array) -> Array:
    """relu'(x) = 1 where x > 0 else 0 (0 at x = 0, as PyTorch does), from r = relu(x) (r > 0 ⇔ x > 0)."""
    return array_namespace(r).astype(r > 0, r.dtype)


class Activation(NamedTuple):
    """A hidden-layer nonlinearity: f(x) and f' computed from the stored output f(x)."""

    name: str
    f: Callable[[Array], Array]
    prime: Callable[[Array], Array]


ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_prime),
    "tanh": Activation("tanh", tanh, tanh_prime),
    "relu": Activation("relu", relu, relu_prime),
}


# ------------------------------------------------------------------------------ softmax & loss


def row_sum(x: Array) -> Array:
    """Σ over each row of a (B, n) array, as a (B, 1) column, written as the product x·1 (as
    ``column_sum``: the rounding the reference has always had)."""
    return x @ ones(x, (x.shape[1], 1))


def logsumexp(x: Array) -> Array:
    """ln Σⱼ e^(xⱼ) over each row, as c + ln Σⱼ e^(xⱼ − c) with c = max x (no overflow).

    Args: x: (B, n). Returns: (B,).
    """
    xp = array_namespace(x)
    c = xp.max(x, axis=1, keepdims=True)
    return (c + xp.log(row_sum(xp.exp(x - c))))[:, 0]


def log_softmax(x: Array) -> Array:
    """ln SM(x)ᵢ = xᵢ − logsumexp(x), row-wise. (B, n) -> (B, n)."""
    return x - logsumexp(x)[:, None]


def log_softmax_vjp(g: Array, s: Array) -> Array:
    """gᵀ D(log SM) = g − s Σⱼ gⱼ, row-wise, from s = SM(x) (D log SM = I − 1sᵀ)."""
    return g - s * array_namespace(g).sum(g, axis=-1, keepdims=True)


def softmax(x: Array) -> Array:
    """SM(x)ᵢ = exp(xᵢ − c − ln Σⱼ e^(xⱼ − c)), c = max x (the notes' appendix), row-wise."""
    return array_namespace(x).exp(log_softmax(x))


def softmax_vjp(g: Array, s: Array) -> Array:
    """gᵀ D SM = gᵀ (diag(s) − s sᵀ) = s ⊙ (g − g·s), row-wise, from s = SM(x)."""
    return s * (g - array_namespace(g).sum(g * s, axis=-1, keepdims=True))


def _check_labels(logits: Array, y: Array) -> None:
    if y.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), one per row of logits; got {tuple(y.shape)}")


def pick(x: Array, y: Array) -> Array:
    """x[i, yᵢ] for every row i: the entry of each row's label. x (B, C), y (B,) -> (B,)."""
    return array_namespace(x).take_along_axis(x, y[:, None], axis=1)[:, 0]


def one_hot(y: Array, like: Array) -> Array:
    """onehot(y): (B, C) with 1 at (i, yᵢ) and 0 elsewhere, of `like`'s shape, dtype and device."""
    xp = array_namespace(like)
    classes = xp.arange(like.shape[1], device=device(like))
    return xp.astype(y[:, None] == classes, like.dtype)


def cross_entropy(logits: Array, y: Array) -> float:
    """Mean over the batch of CE(h, y) = −ln h_y with h = SM(logits), computed as
    logsumexp(ẑ) − ẑ_y (from log_softmax, never the log of a softmax).

    Args:
        logits: (B, C) output pre-activations ẑ.
        y: (B,) integer labels in 0..C−1.
    Returns:
        the batch-mean loss, a Python float.
    """
    _check_labels(logits, y)
    return float(array_namespace(logits).mean(logsumexp(logits) - pick(logits, y)))


def cross_entropy_backward(logits: Array, y: Array) -> tuple[float, Array]:
    """∂/∂ẑ of the batch-mean cross-entropy: δ = (SM(ẑ) − onehot(y)) / B, shape (B, C).

    Also returns the loss, since the forward quantities (the shift c, e^(ẑ−c) and its row sums)
    are the same: loss = mean(c + ln Σ e^(ẑ−c) − ẑ_y) = (Σ_rows ln Σ e^(ẑ−c) − Σ_rows (ẑ_y − c)) / B.

    Args:
        logits: (B, C) output pre-activations ẑ (not modified).
        y: (B,) integer labels in 0..C−1.
    Returns:
        (loss, delta): a float and a new (B, C) array.
    """
    _check_labels(logits, y)
    xp = array_namespace(logits)
    B = y.shape[0]
    shifted = logits - xp.max(logits, axis=1, keepdims=True)  # ẑ − c: the largest exponent is 0
    e = xp.exp(shifted)
    total = row_sum(e)  # Σ e^(ẑ−c) >= 1
    loss = (float(xp.sum(xp.log(total))) - float(xp.sum(pick(shifted, y)))) / B
    delta = e / total - one_hot(y, logits)  # SM − onehot(y): p − 1 is exact for p in [1/2, 1], where it matters
    return loss, delta / B  # the mean's 1/B, once, here
