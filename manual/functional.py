"""The notes' functions, each with its derivative right beside it.

Conventions: a batch is a 2-D array with one example per row, shape (B, n); every function keeps
the dtype of its input and returns a new array. Elementwise derivatives are computed from the
stored *output* of the forward function (the notes: σ' = σ(1−σ) reuses σ from the forward pass);
the row-wise functions (softmax, log_softmax, cross_entropy) come with their vector–Jacobian
products. Plain NumPy: the tuned training step lives apart, in ``manual/fast.py``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

# ------------------------------------------------------------------------------ linear map


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ẑ = W z + b for every row z of `x`: ``x @ W.T + b``.

    Args:
        x: (B, in) inputs, one example per row.
        W: (out, in) weights, the layout of ``torch.nn.Linear.weight``.
        b: (out,) bias.
    Returns:
        (B, out) pre-activations ẑ.
    """
    return np.matmul(x, W.T) + b


def column_sum(x: np.ndarray) -> np.ndarray:
    """Σ over the rows of a (B, n) array, shape (n,), written as the product 1ᵀx.

    The sum is the math; the product is how the harness's reference has always rounded it
    (the training runs it is held to were made with it)."""
    return np.matmul(np.ones(len(x), x.dtype), x)


def linear_backward(delta: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True):
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
    dW = np.matmul(delta.T, x)
    db = column_sum(delta)
    dx = np.matmul(delta, W) if need_dx else None
    return dW, db, dx


# ------------------------------------------------------------------------------ activations


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e^(−x)), elementwise, for any finite x.

    One exp per element. For x < about −709 (float64) or −88 (float32) e^(−x) overflows to +inf
    and 1/(1 + inf) = 0: the true σ(x) ≈ e^x is then at most a subnormal number (below 2.3e-308
    resp. 1.2e-38), so 0 is off by less than that. The overflow gives the right answer, so its
    warning is silenced here and only here. For large x, e^(−x) underflows to 0 and σ = 1.
    No NaN is possible.
    """
    with np.errstate(over="ignore"):
        e = np.exp(-x)
    return 1 / (1 + e)


def sigmoid_prime(s: np.ndarray) -> np.ndarray:
    """σ'(x) = σ(x)(1 − σ(x)), from s = σ(x) as stored by the forward pass."""
    return (1 - s) * s


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x), elementwise (beyond the notes; saturates to ±1 without overflow)."""
    return np.tanh(x)


def tanh_prime(t: np.ndarray) -> np.ndarray:
    """tanh'(x) = 1 − tanh(x)², from t = tanh(x)."""
    return 1 - t * t


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0), elementwise (beyond the notes)."""
    return np.maximum(x, 0)


def relu_prime(r: np.ndarray) -> np.ndarray:
    """relu'(x) = 1 where x > 0 else 0 (0 at x = 0, as PyTorch does), from r = relu(x) (r > 0 ⇔ x > 0)."""
    return (r > 0).astype(r.dtype)


class Activation(NamedTuple):
    """A hidden-layer nonlinearity: f(x) and f' computed from the stored output f(x)."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    prime: Callable[[np.ndarray], np.ndarray]


ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_prime),
    "tanh": Activation("tanh", tanh, tanh_prime),
    "relu": Activation("relu", relu, relu_prime),
}


# ------------------------------------------------------------------------------ softmax & loss


def row_sum(x: np.ndarray) -> np.ndarray:
    """Σ over each row of a (B, n) array, as a (B, 1) column, written as the product x·1 (as
    ``column_sum``: the rounding the reference has always had)."""
    return np.matmul(x, np.ones((x.shape[1], 1), x.dtype))


def logsumexp(x: np.ndarray) -> np.ndarray:
    """ln Σⱼ e^(xⱼ) over each row, as c + ln Σⱼ e^(xⱼ − c) with c = max x (no overflow).

    Args: x: (B, n). Returns: (B,).
    """
    c = x.max(axis=1, keepdims=True)
    return (c + np.log(row_sum(np.exp(x - c))))[:, 0]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """ln SM(x)ᵢ = xᵢ − logsumexp(x), row-wise. (B, n) -> (B, n)."""
    return x - logsumexp(x)[:, None]


def log_softmax_vjp(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """gᵀ D(log SM) = g − s Σⱼ gⱼ, row-wise, from s = SM(x) (D log SM = I − 1sᵀ)."""
    return g - s * g.sum(axis=-1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    """SM(x)ᵢ = exp(xᵢ − c − ln Σⱼ e^(xⱼ − c)), c = max x (the notes' appendix), row-wise."""
    return np.exp(log_softmax(x))


def softmax_vjp(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """gᵀ D SM = gᵀ (diag(s) − s sᵀ) = s ⊙ (g − g·s), row-wise, from s = SM(x)."""
    return s * (g - (g * s).sum(axis=-1, keepdims=True))


def _check_labels(logits: np.ndarray, y: np.ndarray) -> None:
    if y.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), one per row of logits; got {y.shape}")


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean over the batch of CE(h, y) = −ln h_y with h = SM(logits), computed as
    logsumexp(ẑ) − ẑ_y (from log_softmax, never the log of a softmax).

    Args:
        logits: (B, C) output pre-activations ẑ.
        y: (B,) integer labels in 0..C−1.
    Returns:
        the batch-mean loss, a Python float.
    """
    _check_labels(logits, y)
    rows = np.arange(len(y))
    return float(np.mean(logsumexp(logits) - logits[rows, y]))


def cross_entropy_backward(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """∂/∂ẑ of the batch-mean cross-entropy: δ = (SM(ẑ) − onehot(y)) / B, shape (B, C).

    The one-hot matrix is never built: subtract 1 at (row, y_row). Also returns the loss, since
    the forward quantities (the shift c, e^(ẑ−c) and its row sums) are the same:
    loss = mean(c + ln Σ e^(ẑ−c) − ẑ_y) = (Σ_rows ln Σ e^(ẑ−c) − Σ_rows (ẑ_y − c)) / B.

    Args:
        logits: (B, C) output pre-activations ẑ (not modified).
        y: (B,) integer labels in 0..C−1.
    Returns:
        (loss, delta): a float and a new (B, C) array.
    """
    _check_labels(logits, y)
    B = len(y)
    rows = np.arange(B)
    shifted = logits - logits.max(axis=1, keepdims=True)  # ẑ − c: the largest exponent is 0
    picked = shifted[rows, y]  # ẑ_y − c
    e = np.exp(shifted)
    total = row_sum(e)  # Σ e^(ẑ−c) >= 1
    loss = (float(np.log(total).sum()) - float(picked.sum())) / B
    delta = e / total  # softmax
    delta[rows, y] -= 1  # − onehot(y); p − 1 is exact for p in [1/2, 1], where it matters
    delta /= B  # the mean's 1/B, once, here
    return loss, delta
