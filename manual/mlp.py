"""The multilayer perceptron of the notes, with a hand-written reverse-mode backward pass.

Layers i = 1..k−1:  ẑᵢ = Wⁱ zᵢ + bⁱ,  z₁ = x,  zᵢ₊₁ = σ(ẑᵢ) for hidden layers,
output h(x, Θ) = SM(ẑₖ₋₁), loss = mean over the batch of CE(h, y) = −ln h_y.

The forward pass keeps the base points (zᵢ and ẑᵢ); the backward pass walks the layers in reverse,
one line per equation of the chain rule:

    δ = (SM(ẑₖ₋₁) − onehot(y)) / B                      ∂L/∂ẑ of the output layer
    dWⁱ = δᵀ zᵢ,   dbⁱ = Σ_rows δ                        the linear map's VJPs w.r.t. W and b
    δ ← (δ Wⁱ) ⊙ σ'(ẑᵢ₋₁),  σ' = zᵢ(1 − zᵢ)             through W (D_z = W), then through σ

Arrays are reused between calls (buffers per batch size, gradients in ``self.grads``), as
PyTorch keeps ``.grad``: what ``forward`` and ``loss_and_grads`` return is overwritten by the next
call; copy it to keep it.

``train_step`` is the fast path (the benchmark times it): it propagates lr·δ and takes each
layer's SGD step as soon as that layer's gradient is known, inside the weight-gradient product
(``backward(descend=True)``, ``F.linear_descend``).

Memory layout, for speed only: ``weights[i]`` always has ``nn.Linear``'s shape (out, in); with
``layout="transposed"`` each Wⁱ (and dWⁱ) is the transpose of a C-contiguous (in, out) array, so
that the forward product z·Wᵀ and the weight gradient (computed as zᵀδ into dWᵀ) are plain
row-major products, which OpenBLAS runs 20-40 % faster at small batches (the benchmark uses it).
The default ``layout="linear"`` stores W row-major like ``nn.Linear``, so its gradients can be
compared with PyTorch's element by element in memory order (the harness does).
"""

from __future__ import annotations

import numpy as np

from manual import blas
from manual import functional as F

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def init_parameters(sizes, rng: np.random.Generator, dtype=np.float64):
    """Weights and biases with ``nn.Linear``'s default distribution U(−1/√in, 1/√in).

    Drawn in float64 from `rng` (layer by layer: W then b) and rounded once to `dtype`, so nets
    of either dtype from the same generator state start from the same numbers.

    Returns:
        (weights, biases): lists of (out, in) and (out,) arrays of `dtype`.
    """
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        weights.append(rng.uniform(-bound, bound, size=(n_out, n_in)).astype(dtype))
        biases.append(rng.uniform(-bound, bound, size=n_out).astype(dtype))
    return weights, biases


def _check_sizes(sizes) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes must be a sequence of positive integers, got {sizes!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must hold at least 2 positive integers (input, ..., classes), got {list(sizes)}")
    return sizes


LAYOUTS = ("linear", "transposed")


def _allocate(sizes, dtype, layout: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Zeroed arrays per layer: W (out, in), row-major ("linear") or the transpose of a row-major
    (in, out) array ("transposed"), and b (out,)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    weights = [np.zeros((n_in, n_out), dtype).T if layout == "transposed" else np.zeros((n_out, n_in), dtype)
               for n_in, n_out in pairs]
    return weights, [np.zeros(n_out, dtype) for _, n_out in pairs]


class MLP:
    """A fully connected network with `activation` between layers and softmax/cross-entropy on top.

    Args:
        sizes: layer widths (input, hidden..., classes), e.g. (784, 256, 10); (784, 10) has no
            hidden layer.
        activation: "sigmoid" (the notes), "tanh" or "relu".
        dtype: np.float32 or np.float64 (weights, inputs and gradients all share it).
        seed: an int or a ``numpy.random.Generator`` from which the initial parameters are drawn.
        layout: "linear" (W row-major, as ``nn.Linear.weight``) or "transposed" (W the transpose of
            a row-major (in, out) array: faster products at small batches); see the module docstring.

    Attributes:
        weights: list of (sizes[i+1], sizes[i]) arrays Wⁱ, the layout of ``nn.Linear.weight``.
        biases: list of (sizes[i+1],) arrays bⁱ.
        grads: list of (dW, db) with the shapes of (W, b), filled by ``loss_and_grads``.
        zs: after ``forward``: the layer inputs [z₁ = x, z₂, ...], each (B, sizes[i]).
        zhats: after ``forward``: the pre-activations [ẑ₁, ..., ẑₖ₋₁]; the last one is the logits.
    """

    def __init__(self, sizes, activation: str = "sigmoid", dtype=np.float64, seed=0, layout: str = "linear"):
        self.sizes = _check_sizes(sizes)
        if activation not in F.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(F.ACTIVATIONS)}")
        self.activation = F.ACTIVATIONS[activation]
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPES.values():
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.weights, self.biases = _allocate(self.sizes, self.dtype, layout)
        self.set_parameters(*init_parameters(self.sizes, np.random.default_rng(seed), self.dtype))
        self.grads = list(zip(*_allocate(self.sizes, self.dtype, layout)))
        self._flop_per_example = blas.step_flop(self.sizes, 1)
        self.zs: list[np.ndarray] = []
        self.zhats: list[np.ndarray] = []
        self._buffers: dict[int, dict] = {}

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(Wⁱ, bⁱ), ...], the arrays themselves (updating them updates the net)."""
        return list(zip(self.weights, self.biases))

    def set_parameters(self, weights, biases) -> None:
        """Copy `weights` and `biases` (lists of arrays with this net's shapes) into the net."""
        for name, new, old in (("weights", weights, self.weights), ("biases", biases, self.biases)):
            if len(new) != len(old):
                raise ValueError(f"{name}: expected {len(old)} arrays for sizes {list(self.sizes)}, got {len(new)}")
            for i, (a, b) in enumerate(zip(new, old), start=1):
                a = np.asarray(a)
                if a.shape != b.shape:
                    raise ValueError(f"{name}[layer {i}]: expected shape {b.shape}, got {a.shape}")
        for new, old in zip([*weights, *biases], [*self.weights, *self.biases]):
            np.copyto(old, new, casting="same_kind")

    # ------------------------------------------------------------------ checks at the boundary

    def _check_input(self, x) -> np.ndarray:
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

    @staticmethod
    def _check_finite(x: np.ndarray, zhat: np.ndarray) -> None:
        """NaN or inf in x shows in ẑ₁ = x W₁ᵀ + b₁ (inf·w is ±inf, inf·0 and inf − inf are NaN), and
        summing ẑ₁, which is hot in cache and usually smaller, is much cheaper than scanning x.
        A non-finite sum is confirmed on x itself: finite inputs with non-finite weights, or a
        sum that overflows, are not the input's fault."""
        with np.errstate(over="ignore", invalid="ignore"):
            total = zhat.sum()
        if not np.isfinite(total) and not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"x contains NaN or inf (first at index {tuple(int(i) for i in bad)})")

    def _check_labels(self, y, batch: int) -> np.ndarray:
        classes = self.sizes[-1]
        y = np.asarray(y)
        if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must be {batch} integer labels, shape ({batch},), got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(f"labels must lie in 0..{classes - 1}, got values from {y.min()} to {y.max()}")
        return y

    # ------------------------------------------------------------------ forward / backward

    def _buffers_for(self, batch: int) -> dict:
        if batch not in self._buffers:
            if len(self._buffers) >= 4:  # a few sizes: the batch, the last short batch, eval
                self._buffers.pop(next(iter(self._buffers)))
            empty = lambda *shape: np.empty(shape, self.dtype)  # noqa: E731
            outs = self.sizes[1:]
            self._buffers[batch] = {
                "zhat": [empty(batch, n) for n in outs],
                "z": [empty(batch, n) for n in outs[:-1]],  # z₂ .. zₖ₋₁ (hidden outputs)
                "dz": [empty(batch, n) for n in outs[:-1]],
                "prime": [empty(batch, n) for n in outs[:-1]],
                "delta": empty(batch, outs[-1]),
            }
        return self._buffers[batch]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits ẑₖ₋₁ for a batch, keeping the base points ``zs`` and ``zhats`` for ``backward``.

        Args:
            x: (B, sizes[0]) or (B, 28, 28) array of this net's dtype, finite.
        Returns:
            (B, sizes[-1]) logits (a buffer owned by the net).
        """
        x = self._check_input(x)
        buf = self._buffers_for(len(x))
        f, last = self.activation.f, len(self.weights) - 1
        self.zs, self.zhats = [x], []
        for i, (W, b) in enumerate(self.parameters()):
            zhat = F.linear(self.zs[-1], W, b, out=buf["zhat"][i])  # ẑᵢ = Wⁱ zᵢ + bⁱ
            if i == 0:
                self._check_finite(x, zhat)
            self.zhats.append(zhat)
            if i < last:
                self.zs.append(f(zhat, out=buf["z"][i]))  # zᵢ₊₁ = σ(ẑᵢ)
        return self.zhats[-1]

    def backward(self, delta: np.ndarray, descend: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """∂L/∂Θ by reverse mode, from δ = ∂L/∂ẑ of the output layer and the stored base points.

        Args:
            delta: (B, sizes[-1]) gradient of the loss w.r.t. the logits of the last ``forward``.
                It is used as scratch space.
            descend: instead of storing ∂L/∂Θ, apply it as it is found, layer by layer:
                Θ ← Θ − ∂L/∂Θ (pass δ·lr for an SGD step; see ``F.linear_descend``). Each layer's δ
                for the next is computed from its W before the step.
        Returns:
            ``self.grads``: [(dW, db), ...] per layer, shapes of (W, b) (scratch when descending).
        """
        buf = self._buffers_for(len(delta))
        prime = self.activation.prime
        for i in reversed(range(len(self.weights))):
            dz = buf["dz"][i - 1] if i > 0 else None
            if descend:
                dz = F.linear_descend(delta, self.zs[i], self.weights[i], self.biases[i], dz, i > 0, self.grads[i])
            else:
                dW, db, dz = F.linear_backward(delta, self.zs[i], self.weights[i], *self.grads[i], dz, need_dx=i > 0)
                self.grads[i] = (dW, db)
            if i > 0:
                delta = dz
                delta *= prime(self.zs[i], out=buf["prime"][i - 1])  # δ ← (δ Wⁱ) ⊙ σ'(ẑᵢ₋₁)
        return self.grads

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """Batch-mean cross-entropy and its gradient w.r.t. every Wⁱ and bⁱ.

        Args:
            x: (B, sizes[0]) inputs of this net's dtype.
            y: (B,) integer labels in 0..sizes[-1]−1.
        Returns:
            (loss, grads): a float, and ``self.grads`` = [(dW, db), ...] (overwritten next call).
        """
        return self._backprop(x, y, 1.0, descend=False)

    def _backprop(self, x: np.ndarray, y: np.ndarray, scale: float, descend: bool):
        """The loss, and backward from δ = scale·∂L/∂ẑ (the backward pass is linear in δ)."""
        with blas.threads_for(self._flop_per_example * len(x)):
            logits = self.forward(x)
            y = self._check_labels(y, len(logits))
            loss, delta = F.cross_entropy_backward(logits, y, out=self._buffers_for(len(y))["delta"], scale=scale)
            return loss, self.backward(delta, descend)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One SGD step on a batch: forward, loss, backward, θ ← θ − lr·∂L/∂θ. Returns the loss.

        The backward pass is linear in δ, so propagating lr·δ yields lr·∂L/∂θ directly, and each
        layer's step is taken as soon as its gradient is known (``backward(descend=True)``): the
        weight step is one GEMM that accumulates into W, so no gradient array is written and then
        read back (``SGD.step`` needs both: it keeps the plain gradient). ``self.grads`` is scratch
        afterwards; ``loss_and_grads`` is the call that fills it.
        """
        return self._backprop(x, y, lr, descend=True)[0]

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Batch-mean cross-entropy (forward only)."""
        logits = self.forward(x)
        return F.cross_entropy(logits, self._check_labels(y, len(logits)))

    def predict(self, x: np.ndarray, batch: int = 2000) -> np.ndarray:
        """Predicted classes, (B,) int64: argmax of the logits, in chunks of `batch` rows."""
        x = self._check_input(x)
        return np.concatenate([self.forward(x[i : i + batch]).argmax(axis=1) for i in range(0, len(x), batch)])
