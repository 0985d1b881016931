"""The multilayer perceptron of the notes: a stack of layers with a hand-written backward pass.

Layers i = 1..k−1:  ẑᵢ = Wⁱ zᵢ + bⁱ,  z₁ = x,  zᵢ₊₁ = σ(ẑᵢ) for hidden layers,
output h(x, Θ) = SM(ẑₖ₋₁), loss = mean over the batch of CE(h, y) = −ln h_y.

The forward pass keeps the base points (zᵢ and ẑᵢ); the backward pass walks the stack in
reverse, each layer's backward one equation of the chain rule (``manual/layers.py``):

    δ = (SM(ẑₖ₋₁) − onehot(y)) / B                      SoftmaxCrossEntropy.backward
    dWⁱ = δᵀ zᵢ,  dbⁱ = Σ_rows δ,  δ ← δ Wⁱ              Linear.backward
    δ ← δ ⊙ σ'(ẑᵢ₋₁),  σ' = zᵢ(1 − zᵢ)                  Sigmoid.backward (Tanh, ReLU alike)

``Stack`` is the same walk over any list of layers with the layer protocol (a user's own layers
among them); ``MLP`` is the stack the notes describe, with the API the harness uses. The tuned
training step is ``manual.fast.FastStep``, held to this one.

Any array library. The net computes in the library of its parameters, NumPy as drawn; ``to(xp,
device)`` moves them to another (any Python array API namespace: ``torch``, ``array_api_strict``,
...), and inputs and labels then come from that library and device. A training step on torch
tensors, no autograd involved (``manual`` itself never imports torch)::

    import numpy as np, torch
    from manual import MLP, SGD

    mlp = MLP((784, 256, 10), dtype=np.float32, seed=0).to(torch, device="cuda")  # or "cpu"
    x = torch.asarray(x_batch, device="cuda")   # (B, 784) float32
    y = torch.asarray(y_batch, device="cuda")   # (B,) int64
    loss, grads = mlp.loss_and_grads(x, y)      # a float; [(dW, db), ...] as tensors on the GPU
    SGD(lr=0.7).step(mlp.parameters(), grads)   # θ ← θ − lr·∂L/∂θ, in place

The same weights on every library: the initial draw is NumPy's generator's, then copied.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj, is_numpy_namespace

from manual import functional as F
from manual.functional import Array
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


def check_labels(y, batch: int, classes: int) -> Array:
    """`y` as an array of `batch` integer labels in 0..classes−1 (ValueError saying what is wrong):
    an array of any library as it is, anything else as a NumPy array."""
    y = y if is_array_api_obj(y) else np.asarray(y)
    xp = array_namespace(y)
    if tuple(y.shape) != (batch,) or not xp.isdtype(y.dtype, "integral"):
        raise ValueError(f"y must be {batch} integer labels, shape ({batch},), got {y.dtype} {tuple(y.shape)}")
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or high >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}, got values from {low} to {high}")
    return y


def _check_dtype(dtype, xp=None):
    """float32 or float64 (TypeError otherwise), as a ``numpy.dtype`` or, for another library's
    arrays (namespace `xp`), as that library's dtype object."""
    if xp is None or is_numpy_namespace(xp):
        dtype = np.dtype(dtype)
        if dtype not in DTYPES.values():
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    elif dtype not in (xp.float32, xp.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _kind(a: Array) -> str:
    """The array's type by its library's name: "numpy.ndarray", "torch.Tensor", ..."""
    return f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"


def first_index(mask: Array) -> tuple[int, ...]:
    """The index of the first True element of a boolean array (row-major order)."""
    return tuple(int(i[0]) for i in array_namespace(mask).nonzero(mask))


class Stack:
    """A network as a list of layers, softmax cross-entropy on top.

    Args:
        layers: objects with the layer protocol (``manual/layers.py``): ``params``, ``grads``,
            ``forward(x)``, ``backward(dy)``; the last one outputs the logits (B, classes).
        dtype: float32 or float64, the dtype of inputs and parameters (default: the first
            parameter's), as the parameters' library names it.
    Attributes:
        layers: the stack, first layer first.   loss_layer: the ``SoftmaxCrossEntropy``.
        dtype: the parameters' dtype (``numpy.dtype`` for NumPy arrays).

    The stack computes in its parameters' library and device (see the module docstring); inputs
    and labels must come from the same.
    """

    def __init__(self, layers, dtype=None):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("a stack needs at least one layer")
        first = self._first_param()
        xp = array_namespace(first) if first is not None else None
        self.dtype = _check_dtype(dtype if dtype is not None else first.dtype if first is not None else np.float64, xp)
        self.loss_layer = SoftmaxCrossEntropy()

    def _first_param(self) -> Array | None:
        return next((a for layer in self.layers for a in layer.params.values()), None)

    def to(self, xp, device=None):
        """Move the net to array library `xp` on `device`: every parameter (and gradient buffer)
        becomes a copy, ``xp.asarray(θ, device=device, copy=True)``. Returns the net.

        Args:
            xp: an array API namespace: ``torch``, ``numpy`` (2.x), ``array_api_strict``, one of
                ``array_api_compat``'s, ...
            device: that library's device ("cuda", "cpu", ...); None: its default for the arrays.
        """
        for layer in self.layers:
            for arrays in (layer.params, layer.grads):
                for name, a in arrays.items():
                    arrays[name] = xp.asarray(a, device=device, copy=True)
        first = self._first_param()
        if first is not None:
            self.dtype = _check_dtype(first.dtype, array_namespace(first))
        return self

    def check_library(self, a: Array, what: str) -> None:
        """TypeError unless `a` is an array of the parameters' library, on their device."""
        first = self._first_param()
        kind = "an array" if first is None else f"a {_kind(first)} like the net's parameters"
        if not is_array_api_obj(a):
            raise TypeError(f"{what} must be {kind}, got {type(a).__name__}")
        if first is None:
            return
        if array_namespace(a) is not array_namespace(first):
            raise TypeError(f"{what} must be {kind}, got a {_kind(a)}; convert it (or the net: .to(xp))")
        if device(a) != device(first):
            raise TypeError(f"{what} is on device {device(a)} but the net's parameters on {device(first)}; move one of them")

    def layer_params(self) -> list[dict[str, Array]]:
        """The ``params`` dict of every layer that has parameters, first layer first (the arrays
        themselves: updating them updates the net)."""
        return [layer.params for layer in self.layers if layer.params]

    def layer_grads(self) -> list[dict[str, Array]]:
        """The ``grads`` dicts matching ``layer_params()``, filled by ``backward``."""
        return [layer.grads for layer in self.layers if layer.params]

    def set_layer_params(self, params) -> None:
        """Copy a list of dicts shaped like ``layer_params()`` into the net (ValueError on a mismatch),
        converted to the net's library, dtype and device."""
        own = self.layer_params()
        if len(params) != len(own):
            raise ValueError(f"expected parameters for {len(own)} layers, got {len(params)}")
        for i, (new, old) in enumerate(zip(params, own), start=1):
            if set(new) != set(old):
                raise ValueError(f"layer {i}: expected parameters {sorted(old)}, got {sorted(new)}")
            for name in old:
                if tuple(np.shape(new[name])) != tuple(old[name].shape):
                    raise ValueError(f"layer {i} {name}: expected shape {tuple(old[name].shape)}, "
                                     f"got {tuple(np.shape(new[name]))}")
        for new, old in zip(params, own):
            for name, a in old.items():
                a[...] = array_namespace(a).asarray(new[name], dtype=a.dtype, device=device(a))

    def check_input(self, x) -> Array:
        """`x` if it is a finite (B, ...) array of the net's library, device and dtype with B >= 1
        (else one clear error)."""
        self.check_library(x, "x")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"x must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the weights are {self.dtype}; convert one of them")
        xp = array_namespace(x)
        finite = xp.isfinite(x)
        if not xp.all(finite):
            raise ValueError(f"x contains NaN or inf (first at index {first_index(~finite)})")
        return x

    def forward(self, x: Array) -> Array:
        """The logits (B, classes): every layer's forward in turn, each keeping its base point."""
        out = self.check_input(x)
        for layer in self.layers:
            out = layer.forward(out)
        return out

    def backward(self, delta: Array) -> None:
        """From δ = ∂L/∂logits of the last forward, every layer's backward in reverse order (the
        chain rule, right to left); each fills its ``grads``."""
        for layer in reversed(self.layers):
            delta = layer.backward(delta)

    def check_labels(self, y, logits: Array) -> Array:
        """`y`: one integer label in 0..C−1 per row of the (B, C) `logits`, of the net's library."""
        y = check_labels(y, logits.shape[0], logits.shape[1])
        self.check_library(y, "y")
        return y

    def loss_and_layer_grads(self, x: Array, y: Array):
        """(batch-mean loss, ``layer_grads()``) for inputs x (B, ...) and labels y (B,)."""
        logits = self.forward(x)
        y = self.check_labels(y, logits)
        loss = self.loss_layer.forward(logits, y)
        self.backward(self.loss_layer.backward())
        return loss, self.layer_grads()

    def loss(self, x: Array, y: Array) -> float:
        """Batch-mean cross-entropy (forward only)."""
        logits = self.forward(x)
        return F.cross_entropy(logits, self.check_labels(y, logits))

    def predict(self, x: Array, batch: int = 2000) -> Array:
        """Predicted classes, (B,) int64: argmax of the logits, in chunks of `batch` rows."""
        xp, n = array_namespace(x), x.shape[0]
        chunks = [x[i : min(i + batch, n), ...] for i in range(0, n, batch)]
        return xp.concat([xp.argmax(self.forward(chunk), axis=1) for chunk in chunks])


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

    The parameters are NumPy arrays; ``to(xp, device)`` moves the net to another array library
    (see the module docstring).

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
        self.zs: list[Array] = []
        self.zhats: list[Array] = []

    @property
    def weights(self) -> list[Array]:
        return _ParamList(self.linears, "W")

    @property
    def biases(self) -> list[Array]:
        return _ParamList(self.linears, "b")

    @property
    def grads(self) -> list[tuple[Array, Array]]:
        return [(linear.grads["W"], linear.grads["b"]) for linear in self.linears]

    def parameters(self) -> list[tuple[Array, Array]]:
        """[(Wⁱ, bⁱ), ...], the arrays themselves (updating them updates the net)."""
        return list(zip(self.weights, self.biases))

    def set_parameters(self, weights, biases) -> None:
        """Copy `weights` and `biases` (lists of arrays with this net's shapes, of any library
        that can be converted to the net's) into the net."""
        for name, new, old in (("weights", weights, self.weights), ("biases", biases, self.biases)):
            if len(new) != len(old):
                raise ValueError(f"{name}: expected {len(old)} arrays for sizes {list(self.sizes)}, got {len(new)}")
            for i, (a, b) in enumerate(zip(new, old), start=1):
                if tuple(np.shape(a)) != tuple(b.shape):
                    raise ValueError(f"{name}[layer {i}]: expected shape {tuple(b.shape)}, got {tuple(np.shape(a))}")
        self.set_layer_params([{"W": W, "b": b} for W, b in zip(weights, biases)])

    def check_input(self, x) -> Array:
        """`x` as (B, sizes[0]) (images (B, 28, 28) are flattened), of the net's library, device
        and dtype, B >= 1. Finiteness is checked in ``forward``, on ẑ₁ (see ``check_finite_input``)."""
        n_in = self.sizes[0]
        self.check_library(x, "x")
        if x.ndim == 3 and x.shape[1] * x.shape[2] == n_in:
            x = array_namespace(x).reshape(x, (x.shape[0], n_in))  # (B, 28, 28) images
        if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] == 0:
            side = math.isqrt(n_in)
            also = f" or (B, {side}, {side})" if side * side == n_in else ""
            raise ValueError(f"x must have shape (B, {n_in}){also} with B >= 1, got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the weights are {self.dtype}; convert one of them")
        return x

    def forward(self, x: Array) -> Array:
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

    def backward(self, delta: Array) -> list[tuple[Array, Array]]:
        """``Stack.backward`` from δ = ∂L/∂ẑₖ₋₁ (B, sizes[-1]); returns ``grads`` [(dW, db), ...]."""
        super().backward(delta)
        return self.grads

    def loss_and_grads(self, x: Array, y: Array):
        """Batch-mean cross-entropy and its gradient w.r.t. every Wⁱ and bⁱ.

        Args:
            x: (B, sizes[0]) inputs of this net's library, device and dtype.
            y: (B,) integer labels in 0..sizes[-1]−1, of the same library and device.
        Returns:
            (loss, grads): a float, and [(dW, db), ...] per layer (new arrays each call).
        """
        loss, _ = self.loss_and_layer_grads(x, y)
        return loss, self.grads

    def predict(self, x: Array, batch: int = 2000) -> Array:
        """Predicted classes, (B,) int64: argmax of the logits, in chunks of `batch` rows."""
        return super().predict(self.check_input(x), batch)


def check_finite_input(x: Array, zhat: Array) -> None:
    """ValueError if the input x holds NaN or inf. They show in ẑ₁ = x W₁ᵀ + b₁ (inf·w is ±inf,
    inf·0 and inf − inf are NaN), which is usually smaller than x and hot in cache, so ẑ₁ is
    scanned; a non-finite ẑ₁ is confirmed on x itself: finite inputs with non-finite weights, or
    a product that overflows, are not the input's fault."""
    xp = array_namespace(zhat)
    if not xp.all(xp.isfinite(zhat)):
        finite = xp.isfinite(x)
        if not xp.all(finite):
            raise ValueError(f"x contains NaN or inf (first at index {first_index(~finite)})")
