"""The multilayer perceptron of the notes: a stack of layers with a hand-written backward pass.

Layers i = 1..k−1:  ẑᵢ = Wⁱ zᵢ + bⁱ,  z₁ = x,  zᵢ₊₁ = σ(ẑᵢ) for hidden layers,
output h(x, Θ) = SM(ẑₖ₋₁), loss = mean over the batch of CE(h, y) = −ln h_y.

The forward pass keeps the base points (zᵢ and ẑᵢ); the backward pass walks the stack in
reverse, each layer's backward one equation of the chain rule (``manual/layers.py``):

    δ = (SM(ẑₖ₋₁) − onehot(y)) / B                      SoftmaxCrossEntropy.backward
    dWⁱ = δᵀ zᵢ,  dbⁱ = Σ_rows δ,  δ ← δ Wⁱ              Linear.backward
    δ ← δ ⊙ σ'(ẑᵢ₋₁),  σ' = zᵢ(1 − zᵢ)                  Sigmoid.backward (Tanh, ReLU alike)

``Stack`` is the same walk over any list of layers with the layer protocol (a user's own layers
among them); ``MLP`` is the stack the notes describe, with the API the harness uses. Plain NumPy
throughout: the tuned training step is ``manual.fast.FastStep``, held to this one.
"""

from __future__ import annotations

import numpy as np

from manual import functional as F
from manual.layers import ACTIVATION_LAYERS, Linear, SoftmaxCrossEntropy, init_linear

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def init_parameters(sizes, rng: np.random.Generator, dtype=np.float64):
    """Weights and biases with ``nn.Linear``'s default distribution U(−1/√in, 1/√in), layer by
    layer (W then b) from `rng` (see ``layers.init_linear``).

    Returns:
        (weights, biases): lists of (out, in) and (out,) arrays of `dtype`.
    """
    pairs = [init_linear(n_in, n_out, rng, dtype) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    return [W for W, _ in pairs], [b for _, b in pairs]


def check_labels(y, batch: int, classes: int) -> np.ndarray:
    """`y` as an array of `batch` integer labels in 0..classes−1 (ValueError saying what is wrong)."""
    y = np.asarray(y)
    if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be {batch} integer labels, shape ({batch},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}, got values from {y.min()} to {y.max()}")
    return y


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in DTYPES.values():
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class Stack:
    """A network as a list of layers, softmax cross-entropy on top.

    Args:
        layers: objects with the layer protocol (``manual/layers.py``): ``params``, ``grads``,
            ``forward(x)``, ``backward(dy)``; the last one outputs the logits (B, classes).
        dtype: float32 or float64, the dtype of inputs and parameters (default: the first
            parameter's).
    Attributes:
        layers: the stack, first layer first.   loss_layer: the ``SoftmaxCrossEntropy``.
    """

    def __init__(self, layers, dtype=None):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a stack needs at least one layer")
        first = next((a for layer in self.layers for a in layer.params.values()), None)
        self.dtype = _check_dtype(dtype if dtype is not None else first.dtype if first is not None else np.float64)
        self.loss_layer = SoftmaxCrossEntropy()

    def layer_params(self) -> list[dict[str, np.ndarray]]:
        """The ``params`` dict of every layer that has parameters, first layer first (the arrays
        themselves: updating them updates the net)."""
        return [layer.params for layer in self.layers if layer.params]

    def layer_grads(self) -> list[dict[str, np.ndarray]]:
        """The ``grads`` dicts matching ``layer_params()``, filled by ``backward``."""
        return [layer.grads for layer in self.layers if layer.params]

    def set_layer_params(self, params) -> None:
        """Copy a list of dicts shaped like ``layer_params()`` into the net (ValueError on a mismatch)."""
        own = self.layer_params()
        if len(params) != len(own):
            raise ValueError(f"expected parameters for {len(own)} layers, got {len(params)}")
        for i, (new, old) in enumerate(zip(params, own), start=1):
            if set(new) != set(old):
                raise ValueError(f"layer {i}: expected parameters {sorted(old)}, got {sorted(new)}")
            for name in old:
                if np.shape(new[name]) != old[name].shape:
                    raise ValueError(f"layer {i} {name}: expected shape {old[name].shape}, got {np.shape(new[name])}")
        for new, old in zip(params, own):
            for name in old:
                np.copyto(old[name], new[name], casting="same_kind")

    def check_input(self, x) -> np.ndarray:
        """`x` if it is a finite (B, ...) array of the net's dtype with B >= 1 (else one clear error)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"x must have shape (B, ...) with B >= 1, got {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the weights are {self.dtype}; convert one of them")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"x contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The logits (B, classes): every layer's forward in turn, each keeping its base point."""
        out = self.check_input(x)
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def backward(self, delta: np.ndarray) -> None:
        """From δ = ∂L/∂logits of the last forward, every layer's backward in reverse order (the
        chain rule, right to left); each fills its ``grads``."""
        for layer in reversed(self.layers):
            delta = layer.backward(delta)

    def loss_and_layer_grads(self, x: np.ndarray, y: np.ndarray):
        """(batch-mean loss, ``layer_grads()``) for inputs x (B, ...) and labels y (B,)."""
        logits = self.forward(x)
        y = check_labels(y, len(logits), logits.shape[1])
        loss = self.loss_layer.forward(logits, y)
        self.backward(self.loss_layer.backward())
        return loss, self.layer_grads()

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Batch-mean cross-entropy (forward only)."""
        logits = self.forward(x)
        return F.cross_entropy(logits, check_labels(y, len(logits), logits.shape[1]))

    def predict(self, x: np.ndarray, batch: int = 2000) -> np.ndarray:
        """Predicted classes, (B,) int64: argmax of the logits, in chunks of `batch` rows."""
        return np.concatenate([self.forward(x[i : i + batch]).argmax(axis=1) for i in range(0, len(x), batch)])


class _ParamList(list):
    """One parameter of every Linear layer, as a list; ``mlp.weights[i] = A`` puts A in layer i+1
    (as it would in a plain list attribute), rather than changing a copy of the list."""

    def __init__(self, linears, name: str):
        super().__init__(linear.params[name] for linear in linears)
        self._linears, self._name = linears, name

    def __setitem__(self, i, value):
        if not isinstance(i, (int, np.integer)):
            raise TypeError("replace one layer's array at a time: mlp.weights[i] = array")
        super().__setitem__(i, value)
        self._linears[i].params[self._name] = value


def _check_sizes(sizes) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be a sequence of positive integers, got {sizes!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must hold at least 2 positive integers (input, ..., classes), got {list(sizes)}")
    return sizes


class MLP(Stack):
    """A fully connected network with `activation` between layers and softmax/cross-entropy on top:
    the stack [Linear, σ, Linear, σ, ..., Linear].

    Args:
        sizes: layer widths (input, hidden..., classes), e.g. (784, 256, 10); (784, 10) has no
            hidden layer.
        activation: "sigmoid" (the notes), "tanh" or "relu".
        dtype: np.float32 or np.float64 (weights, inputs and gradients all share it).
        seed: an int or a ``numpy.random.Generator`` from which the initial parameters are drawn.

    Attributes:
        layers: the stack.   linears: its ``Linear`` layers.   activation: the ``F.Activation``.
        weights / biases: lists of the (sizes[i+1], sizes[i]) arrays Wⁱ and (sizes[i+1],) arrays bⁱ.
        grads: [(dW, db), ...] with the shapes of (W, b), filled by ``loss_and_grads``.
        zs: after ``forward``: the layer inputs [z₁ = x, z₂, ...], each (B, sizes[i]).
        zhats: after ``forward``: the pre-activations [ẑ₁, ..., ẑₖ₋₁]; the last one is the logits.
    """

    def __init__(self, sizes, activation: str = "sigmoid", dtype=np.float64, seed=0):
        self.sizes = _check_sizes(sizes)
        if activation not in F.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(F.ACTIVATIONS)}")
        self.activation = F.ACTIVATIONS[activation]
        dtype = _check_dtype(dtype)
        weights, biases = init_parameters(self.sizes, np.random.default_rng(seed), dtype)
        self.linears = [Linear(W, b, need_dx=i > 0) for i, (W, b) in enumerate(zip(weights, biases))]
        self.hidden = [ACTIVATION_LAYERS[activation]() for _ in self.linears[1:]]
        layers = [layer for pair in zip(self.linears, self.hidden) for layer in pair] + [self.linears[-1]]
        super().__init__(layers, dtype)
        self.zs: list[np.ndarray] = []
        self.zhats: list[np.ndarray] = []

    @property
    def weights(self) -> list[np.ndarray]:
        return _ParamList(self.linears, "W")

    @property
    def biases(self) -> list[np.ndarray]:
        return _ParamList(self.linears, "b")

    @property
    def grads(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(linear.grads["W"], linear.grads["b"]) for linear in self.linears]

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(Wⁱ, bⁱ), ...], the arrays themselves (updating them updates the net)."""
        return list(zip(self.weights, self.biases))

    def set_parameters(self, weights, biases) -> None:
        """Copy `weights` and `biases` (lists of arrays with this net's shapes) into the net."""
        for name, new, old in (("weights", weights, self.weights), ("biases", biases, self.biases)):
            if len(new) != len(old):
                raise ValueError(f"{name}: expected {len(old)} arrays for sizes {list(self.sizes)}, got {len(new)}")
            for i, (a, b) in enumerate(zip(new, old), start=1):
                if np.shape(a) != b.shape:
                    raise ValueError(f"{name}[layer {i}]: expected shape {b.shape}, got {np.shape(a)}")
        self.set_layer_params([{"W": W, "b": b} for W, b in zip(weights, biases)])

    def check_input(self, x) -> np.ndarray:
        """`x` as (B, sizes[0]) (images (B, 28, 28) are flattened), of the net's dtype, B >= 1.
        Finiteness is checked in ``forward``, on ẑ₁ (see ``_check_finite``)."""
        n_in = self.sizes[0]
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array of shape (B, {n_in}), got {type(x).__name__}")
        if x.ndim == 3 and x.shape[1] * x.shape[2] == n_in:
            x = x.reshape(len(x), n_in)  # (B, 28, 28) images
        if x.ndim != 2 or x.shape[1] != n_in or len(x) == 0:
            side = int(np.sqrt(n_in))
            also = f" or (B, {side}, {side})" if side * side == n_in else ""
            raise ValueError(f"x must have shape (B, {n_in}){also} with B >= 1, got {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the weights are {self.dtype}; convert one of them")
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits ẑₖ₋₁ (B, sizes[-1]) for a batch x (B, sizes[0]) or (B, 28, 28), keeping the base
        points ``zs`` and ``zhats`` (and each layer its own) for ``backward``."""
        z = self.check_input(x)
        self.zs, self.zhats = [z], []
        for i, linear in enumerate(self.linears):
            zhat = linear.forward(z)  # ẑᵢ = Wⁱ zᵢ + bⁱ
            if i == 0:
                check_finite_input(z, zhat)
            self.zhats.append(zhat)
            if i < len(self.hidden):
                z = self.hidden[i].forward(zhat)  # zᵢ₊₁ = σ(ẑᵢ)
                self.zs.append(z)
        return zhat

    def backward(self, delta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``Stack.backward`` from δ = ∂L/∂ẑₖ₋₁ (B, sizes[-1]); returns ``grads`` [(dW, db), ...]."""
        super().backward(delta)
        return self.grads

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """Batch-mean cross-entropy and its gradient w.r.t. every Wⁱ and bⁱ.

        Args:
            x: (B, sizes[0]) inputs of this net's dtype.
            y: (B,) integer labels in 0..sizes[-1]−1.
        Returns:
            (loss, grads): a float, and [(dW, db), ...] per layer (new arrays each call).
        """
        loss, _ = self.loss_and_layer_grads(x, y)
        return loss, self.grads

    def predict(self, x: np.ndarray, batch: int = 2000) -> np.ndarray:
        """Predicted classes, (B,) int64: argmax of the logits, in chunks of `batch` rows."""
        return super().predict(self.check_input(x), batch)


def check_finite_input(x: np.ndarray, zhat: np.ndarray) -> None:
    """NaN or inf in x shows in ẑ₁ = x W₁ᵀ + b₁ (inf·w is ±inf, inf·0 and inf − inf are NaN), and
    summing ẑ₁, which is hot in cache and usually smaller, is much cheaper than scanning x.
    A non-finite sum is confirmed on x itself: finite inputs with non-finite weights, or a
    sum that overflows, are not the input's fault."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = zhat.sum()
    if not np.isfinite(total) and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"x contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
