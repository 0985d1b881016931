"""The tuned training step, apart from the reference and held to it.

Contract: ``FastStep(mlp)(x, y, lr)`` does what

    loss, grads = mlp.loss_and_grads(x, y)
    SGD(lr).step(mlp.parameters(), grads)

does, up to rounding: the same forward pass, the same δ = (SM(ẑ) − onehot(y))/B, the same
vector–Jacobian products and the same update θ ← θ − lr·∂L/∂θ, and it returns the same loss.
``tests/test_fast.py`` holds it to that with bounds derived from the magnitudes, and
``crosscheck train --step fast`` checks it against PyTorch at every step.

What makes it fast (measurements and their history: docs/performance.md, "Manual step"):

- buffers per batch size, so a step allocates no arrays;
- W held column-major (the transpose of a row-major (in, out) array, same shape and values):
  z·Wᵀ and the weight step are then row-major products, which OpenBLAS runs faster here;
- the learning rate folded into δ: the backward pass is linear in δ, so lr·δ yields lr·∂L/∂θ;
- the weight step fused into the weight-gradient product: W ← W − (lr·δ)ᵀz is one ?gemm with
  α = −1 and β = 1 from ``scipy.linalg.blas`` writing into W itself (``overwrite_c`` on W's
  Fortran-ordered memory), so dW is never written and read back. The returned array is checked
  to *be* W; if a copy comes back the update did not happen in place, and that layer falls back
  to matmul + subtraction from then on (``describe()`` says so). The call costs about as much as
  a matmul's, so every layer is fused, down to the 10 x 128 output layer;
- one BLAS thread, in NumPy's and SciPy's OpenBLAS alike, for steps below ``SMALL_STEP_FLOP``:
  waking and joining threads around small products costs more than the second core gives;
- short-row reductions: the row max as an elementwise max of columns, row and column sums as
  products with cached vectors of ones.

This path keeps its own base points: after a step, ``mlp.zs``, ``mlp.zhats`` and the layers'
stored inputs are those of the last reference forward, not of this step.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

from manual.mlp import check_finite_input, check_labels

SMALL_STEP_FLOP = 4e7  # below this, one BLAS thread (docs/performance.md: crossover measured)

try:
    from scipy.linalg import blas as _scipy_blas

    _GEMMS = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}
    _NO_GEMM = ""
except ImportError as err:  # scipy missing: every layer takes matmul + subtraction
    _GEMMS, _NO_GEMM = {}, f"scipy.linalg.blas not importable ({err})"

FUSED = "fused: W ← W − (lr·δ)ᵀz in one ?gemm (alpha=-1, beta=1, overwrite_c on W) of scipy.linalg.blas"
UNFUSED = "matmul + subtraction: lr·δᵀz into a buffer, then W −= it"


def step_flop(sizes, batch: int) -> float:
    """FLOP of one step's matrix products: z·Wᵀ and δᵀz per layer, δ·W for all but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2.0 * batch * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))


# ------------------------------------------------------------------ the BLAS libraries and their threads


class BlasThreads:
    """The BLAS libraries loaded in this process (NumPy's and SciPy's OpenBLAS in the wheels: two
    libraries, two thread pools), read and set through threadpoolctl. Where threadpoolctl finds
    none it can control, ``limit`` does nothing."""

    _controllers = None

    def __init__(self):
        if BlasThreads._controllers is None:
            try:
                from threadpoolctl import ThreadpoolController

                BlasThreads._controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
            except Exception:  # no threadpoolctl, or a BLAS it cannot read: leave the threads alone
                BlasThreads._controllers = []
        self.libs = BlasThreads._controllers

    @contextmanager
    def limit(self, n: int | None):
        """At most `n` threads in every library inside the block (None: leave them), restored after."""
        lowered = []
        for lib in self.libs if n is not None else ():
            current = lib.get_num_threads()
            if current is not None and current > n:
                lib.set_num_threads(n)
                lowered.append((lib, current))
        try:
            yield
        finally:
            for lib, current in lowered:
                lib.set_num_threads(current)

    def libraries(self) -> dict:
        """{"numpy": {...}, "scipy": {...}} (filepath, version, internal_api, num_threads) for the
        libraries found inside each package's install; others under "other"."""
        found: dict = {}
        for lib in self.libs:
            info = {"filepath": lib.filepath, "version": lib.version, "internal_api": lib.internal_api,
                    "num_threads": lib.get_num_threads()}
            owner = _owner(lib.filepath)
            if owner:
                found[owner] = info
            else:
                found.setdefault("other", []).append(info)
        return found


def one_thread_if_small(sizes, batch: int):
    """The thread rule as a context manager: one BLAS thread (every library) inside the block when
    a step of `sizes` at `batch` has fewer than ``SMALL_STEP_FLOP``, else the caller's setting.
    A caller timing or running the reference step can use it too (the reference itself never
    touches threads)."""
    return BlasThreads().limit(1 if step_flop(sizes, batch) < SMALL_STEP_FLOP else None)


def _owner(path: str) -> str:
    """"numpy" or "scipy" when `path` lies in that package or its wheel's ``<package>.libs``, else ""."""
    for name in ("numpy", "scipy"):
        module = sys.modules.get(name)
        if module is None:
            continue
        package = os.path.dirname(os.path.realpath(module.__file__))
        if os.path.realpath(path).startswith((package + os.sep, package + ".libs" + os.sep)):
            return name
    return ""


# ------------------------------------------------------------------ elementwise work, in place


def _sigmoid(x, out):
    with np.errstate(over="ignore"):  # e^(−x) = inf gives σ = 0, the right answer (functional.sigmoid)
        np.negative(x, out=out)
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _sigmoid_prime(s, out):
    np.subtract(1, s, out=out)
    out *= s
    return out


def _tanh_prime(t, out):
    np.multiply(t, t, out=out)
    return np.subtract(1, out, out=out)


def _relu_prime(r, out):
    return np.greater(r, 0, out=out, casting="unsafe")


ACTIVATIONS = {  # name -> (f(x, out), f'(f(x), out)), the arithmetic of manual.functional
    "sigmoid": (_sigmoid, _sigmoid_prime),
    "tanh": (lambda x, out: np.tanh(x, out=out), _tanh_prime),
    "relu": (lambda x, out: np.maximum(x, 0, out=out), _relu_prime),
}

_CONSTANTS: dict[tuple, np.ndarray] = {}


def _ones(n: int, dtype) -> np.ndarray:
    """A cached read-only ones(n): a fresh one per call costs as much as the small products it serves."""
    key = (n, np.dtype(dtype))
    if key not in _CONSTANTS:
        if len(_CONSTANTS) > 64:
            _CONSTANTS.clear()
        _CONSTANTS[key] = np.ones(n, dtype)
        _CONSTANTS[key].flags.writeable = False
    return _CONSTANTS[key]


def _row_max(x: np.ndarray) -> np.ndarray:
    """max of each row, (B, 1). NumPy reduces short rows one at a time; for a tall array of short
    rows the elementwise maximum of its columns is the same number, several times faster."""
    B, n = x.shape
    if n > 32 or B < 128:
        return x.max(axis=1, keepdims=True)
    c = x[:, :1].copy()
    for j in range(1, n):
        np.maximum(c, x[:, j : j + 1], out=c)
    return c


def output_delta(logits: np.ndarray, y: np.ndarray, rows: np.ndarray, scale: float, out: np.ndarray):
    """(loss, δ·scale) for δ = (SM(ẑ) − onehot(y))/B: ``functional.cross_entropy_backward`` with
    the learning rate folded in (`scale`) and `out` (B, C) as δ's buffer; `rows` is arange(B)."""
    B = len(y)
    np.subtract(logits, _row_max(logits), out=out)  # ẑ − c
    picked = out[rows, y]
    np.exp(out, out=out)
    total = np.matmul(out, _ones(out.shape[1], out.dtype)[:, None])  # Σ e^(ẑ−c), (B, 1)
    loss = (float(np.log(total).sum()) - float(picked.sum())) / B
    out /= total
    out[rows, y] -= 1
    out *= scale / B
    return loss, out


def bias_step(b: np.ndarray, delta: np.ndarray, scratch: np.ndarray) -> None:
    """b ← b − 1ᵀ(lr·δ): (out,) bias, (B, out) δ carrying lr, (out,) scratch."""
    b -= np.matmul(_ones(len(delta), delta.dtype), delta, out=scratch)


# ------------------------------------------------------------------ the step


class FastStep:
    """One SGD step on an ``MLP``, in place, the fast way (contract: the module docstring).

    Args:
        mlp: a ``manual.mlp.MLP``; its weights are moved to column-major memory here (same
            values, same (out, in) shapes, still ``mlp.weights``).
        fuse: False takes every weight step as matmul + subtraction (to compare the two).
    Call: ``loss = step(x, y, lr)`` with x (B, sizes[0]) of the net's dtype, y (B,) integer
    labels, lr > 0; returns the batch-mean loss before the step.
    """

    def __init__(self, mlp, fuse: bool = True):
        if mlp.activation.name not in ACTIVATIONS or not hasattr(mlp, "linears"):
            raise TypeError(f"FastStep takes an MLP with activation in {', '.join(ACTIVATIONS)}")
        self.mlp = mlp
        for linear in mlp.linears:
            W = linear.params["W"]
            if not W.flags.f_contiguous:
                linear.params["W"] = np.ascontiguousarray(W.T).T  # (out, in), memory (in, out) row-major
        self._gemm = _GEMMS.get(mlp.dtype)
        why = "" if not fuse else _NO_GEMM or (f"no ?gemm for {mlp.dtype}" if self._gemm is None else "")
        self._updates = [_update(fuse and not why, why or ("W column-major" if fuse else "fuse=False"))
                         for _ in mlp.linears]
        self._threads = BlasThreads()
        self._buffers: dict[int, dict] = {}

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        mlp = self.mlp
        x = mlp.check_input(x)
        lr = float(lr)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        with one_thread_if_small(mlp.sizes, len(x)):
            buf = self._buffers_for(len(x))
            zs, logits = self._forward(x, buf)
            y = check_labels(y, len(x), mlp.sizes[-1])
            loss, delta = output_delta(logits, y, buf["rows"], lr, buf["delta"])
            self._descend(zs, delta, buf)
        return loss

    def _forward(self, x: np.ndarray, buf: dict):
        """ẑᵢ = zᵢWⁱᵀ + bⁱ and zᵢ₊₁ = σ(ẑᵢ) into the buffers; returns ([z₁, ...], logits)."""
        f = ACTIVATIONS[self.mlp.activation.name][0]
        zs = [x]
        for i, (W, b) in enumerate(self.mlp.parameters()):
            zhat = np.matmul(zs[-1], W.T, out=buf["zhat"][i])
            zhat += b
            if i == 0:
                check_finite_input(x, zhat)
            if i < len(buf["z"]):
                zs.append(f(zhat, out=buf["z"][i]))
        return zs, zhat

    def _descend(self, zs: list, delta: np.ndarray, buf: dict) -> None:
        """Backward from δ·lr, each layer's step taken as soon as its gradient is known:
        δWⁱ (from W before its step), W ← W − δᵀzᵢ, b ← b − 1ᵀδ, δ ← δWⁱ ⊙ σ'."""
        prime = ACTIVATIONS[self.mlp.activation.name][1]
        for i in reversed(range(len(zs))):
            W, b = self.mlp.linears[i].params["W"], self.mlp.linears[i].params["b"]
            dz = np.matmul(delta, W, out=buf["dz"][i - 1]) if i > 0 else None
            self._step_W(i, delta, zs[i], W, buf["dW"][i])
            bias_step(b, delta, buf["db"][i])
            if i > 0:
                delta = dz
                delta *= prime(zs[i], out=buf["prime"][i - 1])

    def _step_W(self, i: int, delta: np.ndarray, z: np.ndarray, W: np.ndarray, scratch: np.ndarray) -> None:
        """W ← W − δᵀz, fused into one ?gemm where planned; falls back (and records why) when the
        ?gemm hands back a copy instead of W."""
        update = self._updates[i]
        if update["fused"] and W.flags.f_contiguous:
            out = self._gemm(-1.0, delta.T, z.T, beta=1.0, c=W, trans_a=0, trans_b=1, overwrite_c=1)
            if out is W:
                return
            self._updates[i] = _update(False, "the ?gemm returned a copy, not W: the update did not happen in place")
        elif update["fused"]:
            self._updates[i] = _update(False, "W was replaced by an array that is not column-major")
        W -= np.matmul(delta.T, z, out=scratch)

    def _buffers_for(self, batch: int) -> dict:
        if batch not in self._buffers:
            if len(self._buffers) >= 4:  # a few sizes: the batch, the last short batch
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[batch] = _allocate(self.mlp.sizes, batch, self.mlp.dtype)
        return self._buffers[batch]

    def describe(self) -> dict:
        """How this step runs: the update per layer, the library of each product, the thread rule."""
        libs = self._threads.libraries()
        fused = [u["fused"] for u in self._updates]
        return {
            "step": "manual.fast.FastStep",
            "contract": "the arithmetic of MLP.loss_and_grads + SGD(lr).step, up to rounding",
            "update": FUSED if all(fused) else UNFUSED if not any(fused) else "mixed (see layers)",
            "layers": [{"layer": i, "W": list(lin.params["W"].shape), **{k: u[k] for k in ("update", "why")}}
                       for i, (lin, u) in enumerate(zip(self.mlp.linears, self._updates), start=1)],
            "products": {  # which package's BLAS runs it; its file and version under "libraries"
                "forward z·Wᵀ, backward δ·W, bias step 1ᵀδ, unfused δᵀz": "numpy",
                "fused weight step W − (lr·δ)ᵀz": "scipy" if any(fused) else "(none fused)",
            },
            "libraries": libs,
            "threads": f"one BLAS thread in every BLAS library loaded (numpy's and scipy's) for steps below "
                       f"{SMALL_STEP_FLOP:.0e} FLOP (this net: batches below "
                       f"{int(np.ceil(SMALL_STEP_FLOP / step_flop(self.mlp.sizes, 1)))}); else the caller's setting",
            "layout": "W column-major: the transpose of a row-major (in, out) array, shape (out, in)",
            "learning_rate": "folded into δ: δ = lr·(SM(ẑ) − onehot(y))/B",
        }


def _update(fused: bool, why: str) -> dict:
    return {"fused": fused, "update": FUSED if fused else UNFUSED, "why": why}


def _allocate(sizes, batch: int, dtype) -> dict:
    """Per-batch buffers: ẑ and z per layer, δW, σ', δ, arange(B), and dW/db scratch."""
    def empty(*shape, order="C"):
        return np.empty(shape, dtype, order=order)

    outs = sizes[1:]
    return {
        "zhat": [empty(batch, n) for n in outs],
        "z": [empty(batch, n) for n in outs[:-1]],
        "dz": [empty(batch, n) for n in outs[:-1]],
        "prime": [empty(batch, n) for n in outs[:-1]],
        "delta": empty(batch, outs[-1]),
        "rows": np.arange(batch),
        "dW": [empty(o, i, order="F") for i, o in zip(sizes[:-1], outs)],  # W's memory order
        "db": [empty(o) for o in outs],
    }
