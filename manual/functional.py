"""The notes' functions, each with its derivative right beside it.

Conventions: a batch is a 2-D array with one example per row, shape (B, n); every function keeps
the dtype of its input. Functions that take ``out=`` write their result there (an array of the
result's shape and dtype) and return it, so the training loop can reuse buffers; ``out=x`` is
allowed. Elementwise derivatives are computed from the stored *output* of the forward function
(the notes: σ' = σ(1−σ) reuses σ from the forward pass); the row-wise functions (softmax,
log_softmax, cross_entropy) come with their vector–Jacobian products.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from manual import blas

_CONSTANTS: dict[tuple, np.ndarray] = {}


def _constant(kind: str, n: int, dtype) -> np.ndarray:
    """A cached read-only vector: ones(n) or arange(n) (a fresh one per call costs as much as the
    small products it serves)."""
    key = (kind, n, np.dtype(dtype))
    v = _CONSTANTS.get(key)
    if v is None:
        if len(_CONSTANTS) > 64:
            _CONSTANTS.clear()
        v = np.ones(n, dtype) if kind == "ones" else np.arange(n, dtype=dtype)
        v.flags.writeable = False
        _CONSTANTS[key] = v
    return v


# ------------------------------------------------------------------------------ linear map


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ẑ = W z + b for every row z of `x`: ``x @ W.T + b``.

    Args:
        x: (B, in) inputs, one example per row.
        W: (out, in) weights, the layout of ``torch.nn.Linear.weight``.
        b: (out,) bias.
        out: optional (B, out) buffer.
    Returns:
        (B, out) pre-activations ẑ.
    """
    out = np.matmul(x, W.T, out=out)
    out += b
    return out


def column_sum(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Σ over the rows of a (B, n) array, shape (n,): 1ᵀx, one vector–matrix product, 2-4x faster
    than NumPy's ``x.sum(axis=0)`` here."""
    return np.matmul(_constant("ones", len(x), x.dtype), x, out=out)


def linear_backward(delta: np.ndarray, x: np.ndarray, W: np.ndarray, dW=None, db=None, dx=None, need_dx=True):
    """Vector–Jacobian products of ẑ = Wz + b, summed over the batch.

    The notes' Jacobians: D_z = W, D_W = blocks of zᵀ, D_b = I. Applied to the row vector δ = ∂L/∂ẑ
    of each example and summed over the B rows:

        dW = δᵀ x   (out, in)      db = Σ_rows δ   (out,)      dx = δ W   (B, in)

    Args:
        delta: (B, out) ∂L/∂ẑ for each example (already carrying the 1/B of the batch mean).
        x: (B, in) the layer's input, stored by the forward pass.
        W: (out, in) weights.
        dW, db, dx: optional output buffers.
        need_dx: False for the first layer, whose input gradient nobody needs.
    Returns:
        (dW, db, dx), dx None when not needed.
    """
    dW = np.matmul(delta.T, x, out=dW)  # NumPy computes xᵀδ instead when dW is the transpose of a C array
    db = column_sum(delta, out=db)
    dx = np.matmul(delta, W, out=dx) if need_dx else None
    return dW, db, dx


def linear_descend(delta: np.ndarray, x: np.ndarray, W: np.ndarray, b: np.ndarray, dx=None, need_dx=True, scratch=(None, None)):
    """``linear_backward`` applied as a gradient step, in place: W ← W − δᵀx, b ← b − Σ_rows δ.

    δ must already carry the step size (∂L/∂ẑ · lr): the VJPs are linear in δ. dx = δW is taken from
    W before the step. The weight step is one GEMM that accumulates into W (``blas.gemm_descend``)
    where NumPy's BLAS can be reached and W is large enough to gain from it, so dW is never written
    and read back; otherwise δᵀx goes to ``scratch[0]`` and is subtracted.

    Args:
        delta: (B, out) lr·∂L/∂ẑ. x: (B, in) the layer's input. W, b: the parameters, updated.
        dx: optional (B, in) buffer. need_dx: False for the first layer.
        scratch: optional (out, in) and (out,) buffers for δᵀx and Σ_rows δ.
    Returns:
        dx, or None when not needed.
    """
    dx = np.matmul(delta, W, out=dx) if need_dx else None
    dW, db = scratch
    if W.size < blas.DESCEND_MIN_SIZE or not blas.gemm_descend(delta.T, x, W):
        W -= np.matmul(delta.T, x, out=dW)
    b -= column_sum(delta, out=db)
    return dx


# ------------------------------------------------------------------------------ activations


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(x) = 1 / (1 + e^(−x)), elementwise, for any finite x.

    One exp per element. For x < about −709 (float64) or −88 (float32) e^(−x) overflows to +inf
    and 1/(1 + inf) = 0: the true σ(x) ≈ e^x is then at most a subnormal number (below 2.3e-308
    resp. 1.2e-38), so 0 is off by less than that. The overflow gives the right answer, so its
    warning is silenced here and only here. For large x, e^(−x) underflows to 0 and σ = 1.
    No NaN is possible.
    """
    with np.errstate(over="ignore"):
        out = np.negative(x, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def sigmoid_prime(s: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ'(x) = σ(x)(1 − σ(x)), from s = σ(x) as stored by the forward pass."""
    out = np.subtract(1, s, out=out)
    out *= s
    return out


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh(x), elementwise (beyond the notes; saturates to ±1 without overflow)."""
    return np.tanh(x, out=out)


def tanh_prime(t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh'(x) = 1 − tanh(x)², from t = tanh(x)."""
    out = np.multiply(t, t, out=out)
    np.subtract(1, out, out=out)
    return out


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(x, 0), elementwise (beyond the notes)."""
    return np.maximum(x, 0, out=out)


def relu_prime(r: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """relu'(x) = 1 where x > 0 else 0 (0 at x = 0, as PyTorch does), from r = relu(x) (r > 0 ⇔ x > 0)."""
    if out is None:
        out = np.empty_like(r)
    return np.greater(r, 0, out=out, casting="unsafe")


class Activation(NamedTuple):
    """A hidden-layer nonlinearity: f(x) and f' computed from the stored output f(x)."""

    name: str
    f: Callable[..., np.ndarray]
    prime: Callable[..., np.ndarray]


ACTIVATIONS = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_prime),
    "tanh": Activation("tanh", tanh, tanh_prime),
    "relu": Activation("relu", relu, relu_prime),
}


# ------------------------------------------------------------------------------ softmax & loss


def row_max(x: np.ndarray) -> np.ndarray:
    """max over each row of a (B, n) array, as a (B, 1) column.

    NumPy reduces short rows one at a time (53 µs for 1024 rows of 10); for a tall array the
    elementwise maximum of its n columns is the same number, eight times faster.
    """
    B, n = x.shape
    if n > 32 or B < 128:
        return x.max(axis=1, keepdims=True)
    c = x[:, :1].copy()
    for j in range(1, n):
        np.maximum(c, x[:, j:j + 1], out=c)
    return c


def row_sum(x: np.ndarray) -> np.ndarray:
    """Σ over each row of a (B, n) array, as a (B, 1) column: one matrix–vector product, which
    is several times faster than NumPy's row reduction for short rows."""
    return np.matmul(x, _constant("ones", x.shape[1], x.dtype)[:, None])


def logsumexp(x: np.ndarray) -> np.ndarray:
    """ln Σⱼ e^(xⱼ) over each row, as c + ln Σⱼ e^(xⱼ − c) with c = max x (no overflow).

    Args: x: (B, n). Returns: (B,).
    """
    c = row_max(x)
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


def cross_entropy_backward(logits: np.ndarray, y: np.ndarray, out: np.ndarray | None = None, scale: float = 1.0):
    """∂/∂ẑ of the batch-mean cross-entropy: δ = (SM(ẑ) − onehot(y)) / B, shape (B, C).

    The one-hot matrix is never built: subtract 1 at (row, y_row). Also returns the loss, since
    the forward quantities (the shift c, e^(ẑ−c) and its row sums) are the same:
    loss = mean(c + ln Σ e^(ẑ−c) − ẑ_y).

    Args:
        scale: δ is multiplied by it, in the same pass as the 1/B (``MLP.train_step`` folds the
            learning rate in here).
    Returns:
        (loss, delta): a float and the (B, C) array `out`.
    """
    _check_labels(logits, y)
    B = len(y)
    rows = _constant("arange", B, np.intp)
    c = row_max(logits)
    out = np.subtract(logits, c, out=out)  # ẑ − c: the largest exponent is 0
    picked = out[rows, y]  # ẑ_y − c
    np.exp(out, out=out)
    total = row_sum(out)  # Σ e^(ẑ−c) >= 1
    loss = (float(np.log(total).sum()) - float(picked.sum())) / B
    out /= total  # softmax
    out[rows, y] -= 1  # − onehot(y); p − 1 is exact for p in [1/2, 1], where it matters
    if scale == 1:
        out /= B  # the mean's 1/B, once, here
    else:
        out *= scale / B
    return loss, out
