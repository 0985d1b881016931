"""The MLP's building blocks as layers: each forward beside its backward, as micrograd writes them.

The layer protocol (what ``MLP``, ``Stack`` and ``compare.check_layer`` rely on):

    layer.params: dict[str, Array]        name -> array, {} for parameter-free layers
    layer.grads:  dict[str, Array]        same names and shapes, filled by backward
    layer.forward(x) -> y                 keeps what backward needs (its base point)
    layer.backward(dy) -> dx              dy = ∂L/∂y (B, ...) -> ∂L/∂x; fills grads (summed over the batch)
    layer.torch_names: dict[str, str]     optional: manual name -> torch parameter name

Each layer names its PyTorch counterpart in ``torch_module`` (a string: this package never
imports torch). The arithmetic is ``manual.functional``'s, looked up when called, so a test can
swap a derivative there and see every layer use it; like it, the layers compute in the library of
the arrays they hold and are given (NumPy, torch tensors on any device, ...).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

from manual import functional as F
from manual.functional import Array


def init_linear(n_in: int, n_out: int, rng: np.random.Generator, dtype=np.float64):
    """W (n_out, n_in) and b (n_out,) drawn from ``nn.Linear``'s default U(−1/√in, 1/√in).

    Drawn in float64 (W, then b) and rounded once to `dtype`, so layers of either dtype drawn from
    the same generator state hold the same numbers. NumPy arrays: another library's layer gets
    them converted (``Linear(xp.asarray(W), xp.asarray(b))``, or ``Stack.to``).
    """
    bound = 1.0 / np.sqrt(n_in)
    W = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(dtype)
    b = rng.uniform(-bound, bound, size=n_out).astype(dtype)
    return W, b


class Linear:
    """ẑ = x Wᵀ + b (``torch.nn.Linear``), with its VJPs: dW = δᵀx, db = Σ_rows δ, dx = δW.

    Args:
        W: (out, in) weights, ``nn.Linear.weight``'s shape; the layer holds this array itself.
            Any array API library (NumPy, torch tensors with requires_grad off, ...); other
            sequences become NumPy arrays.
        b: (out,) bias, of W's library, dtype and device.
        need_dx: False when the input's gradient is never needed (the first layer of a net: its
            input is the data); backward then returns None and skips that product.
    Attributes:
        params: {"W": W, "b": b}.   grads: {"W": (out, in), "b": (out,)} after ``backward``.
        x: (B, in) the input of the last ``forward`` (the base point of D_W).
    """

    torch_module = "torch.nn.Linear"
    torch_names = {"W": "weight", "b": "bias"}

    def __init__(self, W: Array, b: Array, need_dx: bool = True):
        W, b = (a if is_array_api_obj(a) else np.asarray(a) for a in (W, b))
        if array_namespace(W) is not array_namespace(b):
            raise TypeError(f"Linear needs W and b of one array library, got {type(W).__module__}.{type(W).__name__} "
                            f"and {type(b).__module__}.{type(b).__name__}")
        if W.ndim != 2 or b.shape != W.shape[:1] or W.dtype != b.dtype:
            raise ValueError(f"Linear needs W (out, in) and b (out,) of one dtype, got W {W.dtype} {tuple(W.shape)}, "
                             f"b {b.dtype} {tuple(b.shape)}")
        xp = array_namespace(W)
        self.params = {"W": W, "b": b}
        self.grads = {"W": xp.zeros_like(W), "b": xp.zeros_like(b)}
        self.need_dx = need_dx
        self.x: Array | None = None

    @classmethod
    def init(cls, n_in: int, n_out: int, rng: np.random.Generator, dtype=np.float64, need_dx: bool = True):
        """A layer with ``nn.Linear``'s initial distribution (see ``init_linear``)."""
        return cls(*init_linear(n_in, n_out, rng, dtype), need_dx=need_dx)

    def forward(self, x: Array) -> Array:
        """(B, in) -> (B, out): ẑ = x Wᵀ + b; keeps x."""
        self.x = x
        return F.linear(x, self.params["W"], self.params["b"])

    def backward(self, delta: Array) -> Array | None:
        """δ = ∂L/∂ẑ (B, out) -> ∂L/∂x = δW (B, in); grads["W"] = δᵀx, grads["b"] = Σ_rows δ."""
        dW, db, dx = F.linear_backward(delta, self.x, self.params["W"], need_dx=self.need_dx)
        self.grads["W"], self.grads["b"] = dW, db
        return dx


class Elementwise:
    """z = f(ẑ) elementwise, and δ ↦ δ ⊙ f'(ẑ) with f' computed from the stored output z.

    The Jacobian is diag(f'(ẑ)), so its VJP is a product element by element. Subclasses name f
    (a key of ``functional.ACTIVATIONS``) and their torch counterpart.
    Attributes: z: the output of the last ``forward``, the base point of the backward pass.
    """

    name = ""
    torch_module = ""

    def __init__(self):
        self.fn = F.ACTIVATIONS[self.name]  # f beside f'; looked up here, so a test can swap one
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.z: Array | None = None

    def forward(self, x: Array) -> Array:
        """(B, n) -> (B, n): z = f(x); keeps z."""
        self.z = self.fn.f(x)
        return self.z

    def backward(self, delta: Array) -> Array:
        """δ = ∂L/∂z (B, n) -> ∂L/∂x = δ ⊙ f'(x) (B, n)."""
        return delta * self.fn.prime(self.z)


class Sigmoid(Elementwise):
    """σ(x) = 1/(1 + e^(−x)) (``torch.nn.Sigmoid``); backward δ ⊙ σ(1 − σ) from the stored σ."""

    name, torch_module = "sigmoid", "torch.nn.Sigmoid"


class Tanh(Elementwise):
    """tanh(x) (``torch.nn.Tanh``); backward δ ⊙ (1 − tanh²) from the stored tanh."""

    name, torch_module = "tanh", "torch.nn.Tanh"


class ReLU(Elementwise):
    """max(x, 0) (``torch.nn.ReLU``); backward δ ⊙ [x > 0] (0 at x = 0, as PyTorch)."""

    name, torch_module = "relu", "torch.nn.ReLU"


ACTIVATION_LAYERS = {cls.name: cls for cls in (Sigmoid, Tanh, ReLU)}


class SoftmaxCrossEntropy:
    """L = (1/B) Σ_rows −ln SM(ẑ)_y (``torch.nn.CrossEntropyLoss``, mean reduction).

    forward(logits, y) -> L;  backward() -> δ = ∂L/∂ẑ = (SM(ẑ) − onehot(y)) / B, shape (B, C).
    Both come from the same shifted exponentials (``functional.cross_entropy_backward``), so the
    forward pass forms δ along with the loss and backward hands it on.
    """

    torch_module = "torch.nn.CrossEntropyLoss"

    def __init__(self):
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.delta: Array | None = None

    def forward(self, logits: Array, y: Array) -> float:
        """logits (B, C), y (B,) integer labels in 0..C−1 -> the batch-mean loss (a float)."""
        loss, self.delta = F.cross_entropy_backward(logits, y)
        return loss

    def backward(self) -> Array:
        """δ = (SM(ẑ) − onehot(y)) / B of the last forward, (B, C)."""
        return self.delta
