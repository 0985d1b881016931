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
  to matmul + subtraction from then on (``how_it_ran()`` says so). The call costs about as much as
  a matmul's, so every layer is fused, down to the 10 x 128 output layer;
- from ``SMALL_STEP_FLOP`` on, every matrix product in ONE BLAS library, SciPy's (``Products``):
  NumPy's and SciPy's wheels each ship an OpenBLAS with its own thread pool, and two pools whose
  idle threads spin against each other on the same cores cost up to 10x at default settings. The
  forward and backward products and the sums with a vector of ones are then ?gemm/?gemv calls
  writing into the step's buffers (the Fortran-ordered transpose of each C-ordered buffer), and
  NumPy's BLAS is held to one thread for the step, so its pool is never woken. Without SciPy
  everything runs in NumPy;
- one BLAS thread, in NumPy's and SciPy's OpenBLAS alike, for steps below ``SMALL_STEP_FLOP``:
  waking and joining threads around small products costs more than the second core gives. With
  no pool awake, these steps keep their products in NumPy's OpenBLAS, which ran them faster;
- short-row reductions: the row max as an elementwise max of columns, row and column sums as
  products with cached vectors of ones (the bias step b − 1ᵀ(lr·δ) one ?gemv with β = 1 on b);
- the input checks accept the common case (a (B, in) ndarray of the net's dtype, int64 labels in
  range) with a few attribute reads; anything else goes through the reference's own checks
  (``MLP.check_input``, ``check_labels``), which say what is wrong. ``check(x, y)`` and
  ``run(x, y, lr)`` split the call as ``FastTorchStep``'s do: ``run`` skips the scan of ẑ₁ for
  NaN and inf (a batch checked once, as the bench's); it still checks the labels' range.

This path keeps its own base points: after a step, ``mlp.zs``, ``mlp.zhats`` and the layers'
stored inputs are those of the last reference forward, not of this step.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from functools import partial

import numpy as np

from manual.mlp import check_finite_input, check_labels

SMALL_STEP_FLOP = 4e7  # below this, one BLAS thread (docs/performance.md: crossover measured)

try:
    from scipy.linalg import blas as _scipy_blas

    _GEMMS = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}
    _GEMVS = {np.dtype(np.float32): _scipy_blas.sgemv, np.dtype(np.float64): _scipy_blas.dgemv}
    _NO_SCIPY = ""
except ImportError as err:  # scipy missing: every product runs in NumPy, every layer unfused
    _GEMMS, _GEMVS, _NO_SCIPY = {}, {}, f"scipy.linalg.blas not importable ({err})"

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
    _owners: list = []

    def __init__(self):
        if BlasThreads._controllers is None:
            try:
                from threadpoolctl import ThreadpoolController

                BlasThreads._controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
            except Exception:  # no threadpoolctl, or a BLAS it cannot read: leave the threads alone
                BlasThreads._controllers = []
            BlasThreads._owners = [_owner(lib.filepath) for lib in BlasThreads._controllers]
        self.libs, self.owners = BlasThreads._controllers, BlasThreads._owners

    @contextmanager
    def limit(self, n: int | None, owner: str | None = None):
        """At most `n` threads inside the block (None: leave them), restored after: in every
        library, or only in those inside package `owner` ("numpy": NumPy's own BLAS; a BLAS shared
        with other packages outside NumPy's install is then left alone)."""
        lowered = []
        for lib, package in zip(self.libs, self.owners) if n is not None else ():
            if owner is not None and package != owner:
                continue
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
        for lib, owner in zip(self.libs, self.owners):
            info = {"filepath": lib.filepath, "version": lib.version, "internal_api": lib.internal_api,
                    "num_threads": lib.get_num_threads()}
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


# ------------------------------------------------------------------ the input checks' common case


def plain_batch(x, dtype, n_in: int) -> bool:
    """x is what ``MLP.check_input`` passes unchanged: a (B, n_in) ndarray of `dtype`, B >= 1."""
    return type(x) is np.ndarray and x.dtype == dtype and x.ndim == 2 and x.shape[1] == n_in and len(x) > 0


def plain_labels(y, batch: int, classes: int) -> bool:
    """y is what ``check_labels`` passes unchanged: `batch` integer labels in 0..classes−1, an ndarray."""
    return (type(y) is np.ndarray and y.shape == (batch,) and y.dtype.kind in "iu"
            and y.min() >= 0 and y.max() < classes)


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


def numpy_row_sums(a: np.ndarray) -> np.ndarray:
    """a·1, (B,) for a (B, n): a product with cached ones in NumPy's BLAS."""
    return np.matmul(a, _ones(a.shape[1], a.dtype))


def output_delta(logits: np.ndarray, y: np.ndarray, rows: np.ndarray, scale: float, out: np.ndarray,
                 row_sums=numpy_row_sums):
    """(loss, δ·scale) for δ = (SM(ẑ) − onehot(y))/B: ``functional.cross_entropy_backward`` with
    the learning rate folded in (`scale`) and `out` (B, C) as δ's buffer; `rows` is arange(B),
    `row_sums` (B, C) -> (B,) the product a·1 (``Products.row_sums`` in the step)."""
    B = len(y)
    np.subtract(logits, _row_max(logits), out=out)  # ẑ − c
    picked = out[rows, y]
    np.exp(out, out=out)
    total = row_sums(out)  # Σ e^(ẑ−c), (B,)
    loss = (float(np.log(total).sum()) - float(picked.sum())) / B
    out /= total[:, None]
    out[rows, y] -= 1
    out *= scale / B
    return loss, out


def bias_step(b: np.ndarray, delta: np.ndarray, products: "Products", scratch: np.ndarray) -> None:
    """b ← b − 1ᵀ(lr·δ): (out,) bias, (B, out) δ carrying lr, (out,) scratch for NumPy's route."""
    products.subtract_column_sums(b, delta, scratch)


# ------------------------------------------------------------------ the products, in one library

SMALL_ROUTE = ("a step below SMALL_STEP_FLOP: every BLAS on one thread, so no pool to wake, and NumPy's "
               "OpenBLAS ran these small products faster")
PRODUCTS = {  # kind -> what it computes, as how_it_ran() names it
    "forward": "forward ẑ = z·Wᵀ (?gemm: ẑᵀ = W·zᵀ into ẑ's buffer)",
    "backward": "backward δ·W (?gemm: (δW)ᵀ = Wᵀ·δᵀ into its buffer)",
    "row sums": "softmax row sums e·1 (?gemv)",
    "bias step": "bias step b − (lr·δ)ᵀ1 (?gemv, beta=1 on b)",
    "weight gradient": "unfused weight gradient (lr·δ)ᵀz (?gemm into a buffer)",
}


class Products:
    """The step's matrix products other than the fused weight step, each written into the step's
    own buffer by ``scipy.linalg.blas`` (the library of the fused update, so one thread pool) or by
    NumPy where SciPy is missing. A C-ordered (m, n) buffer is a Fortran-ordered (n, m) array on
    the same memory: ?gemm writes a product's transpose into it with ``overwrite_c``. The returned
    array is checked to *be* the buffer; if a copy comes back, that product runs in NumPy from then
    on and ``why`` says so. Shapes: z (B, in), W (out, in) column-major, δ (B, out)."""

    def __init__(self, dtype, why_not: str = ""):
        self.gemm, self.gemv = _GEMMS.get(dtype), _GEMVS.get(dtype)
        why = _NO_SCIPY or ("" if self.gemm and self.gemv else f"no ?gemm/?gemv for {dtype}") or why_not
        self.why = dict.fromkeys(PRODUCTS, why)  # kind -> "" (SciPy runs it) or why NumPy does

    def library(self, kind: str) -> str:
        return "numpy" if self.why[kind] else "scipy"

    def _took(self, kind: str, returned, buffer) -> bool:
        if returned is buffer:
            return True
        self.why[kind] = "scipy.linalg.blas returned a copy, not the step's buffer: NumPy runs it from then on"
        return False

    def forward(self, z, W, out):
        """out (B, out) ← z·Wᵀ."""
        if self.why["forward"]:
            return np.matmul(z, W.T, out=out)
        c = out.T
        return out if self._took("forward", self.gemm(1.0, W, z.T, c=c, overwrite_c=1), c) else np.matmul(z, W.T, out=out)

    def backward(self, delta, W, out):
        """out (B, in) ← δ·W."""
        if self.why["backward"]:
            return np.matmul(delta, W, out=out)
        c = out.T
        if self._took("backward", self.gemm(1.0, W, delta.T, trans_a=1, c=c, overwrite_c=1), c):
            return out
        return np.matmul(delta, W, out=out)

    def weight_gradient(self, delta, z, out):
        """out (out, in), column-major like W, ← δᵀz."""
        if not self.why["weight gradient"] and self._took(
                "weight gradient", self.gemm(1.0, delta.T, z.T, trans_b=1, c=out, overwrite_c=1), out):
            return out
        return np.matmul(delta.T, z, out=out)

    def row_sums(self, a, out):
        """out (B,) ← a·1 for a (B, n)."""
        if not self.why["row sums"] and self._took(
                "row sums", self.gemv(1.0, a.T, _ones(a.shape[1], a.dtype), trans=1, y=out, overwrite_y=1), out):
            return out
        return np.matmul(a, _ones(a.shape[1], a.dtype), out=out)

    def subtract_column_sums(self, b, delta, scratch) -> None:
        """b (out,) ← b − δᵀ1: one ?gemv, alpha = −1, beta = 1, writing into b."""
        ones = _ones(len(delta), delta.dtype)
        if not self.why["bias step"] and self._took(
                "bias step", self.gemv(-1.0, delta.T, ones, beta=1.0, y=b, overwrite_y=1), b):
            return
        b -= np.matmul(ones, delta, out=scratch)


# ------------------------------------------------------------------ the step


class FastStep:
    """One SGD step on an ``MLP``, in place, the fast way (contract: the module docstring).

    Args:
        mlp: a ``manual.mlp.MLP``; its weights are moved to column-major memory here (same
            values, same (out, in) shapes, still ``mlp.weights``).
        fuse: False takes every weight step as a product into a buffer + subtraction (to compare).
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
        self._gemm = _GEMMS.get(mlp.dtype)  # the fused weight step's
        why = "" if not fuse else _NO_SCIPY or (f"no ?gemm for {mlp.dtype}" if self._gemm is None else "")
        self._updates = [_update(fuse and not why, why or ("W column-major" if fuse else "fuse=False"))
                         for _ in mlp.linears]
        self._routes = {False: Products(mlp.dtype), True: Products(mlp.dtype, SMALL_ROUTE)}  # by "small step"
        self._small = False  # the last step's regime, for how_it_ran()
        self._threads = BlasThreads()
        self._buffers: dict[int, dict] = {}

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        return self._step(x, y, lr, finite=True)

    def check(self, x, y):
        """The reference's checks of a batch -> (x, y) as ``run`` takes them: x as ``MLP.check_input``
        passes it and finite, y its labels in range. One clear error otherwise."""
        x = self.mlp.check_input(x)
        check_finite_input(x, x)
        return x, check_labels(y, len(x), self.mlp.sizes[-1])

    def run(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """The step on a batch that ``check`` has passed (the bench's, checked once outside the timed
        region): as the call, but x is not scanned for NaN and inf (the labels' range, a few µs,
        is still checked: a label −1 would index silently)."""
        return self._step(x, y, lr, finite=False)

    def _step(self, x, y, lr: float, finite: bool) -> float:
        mlp = self.mlp
        if not plain_batch(x, mlp.dtype, mlp.sizes[0]):
            x = mlp.check_input(x)
        lr = float(lr)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        self._small = step_flop(mlp.sizes, len(x)) < SMALL_STEP_FLOP
        products = self._routes[self._small]
        with self._threads.limit(*self._thread_rule(self._small)):
            buf = self._buffers_for(len(x))
            zs, logits = self._forward(x, buf, products, finite)
            if not plain_labels(y, len(x), mlp.sizes[-1]):
                y = check_labels(y, len(x), mlp.sizes[-1])
            row_sums = partial(products.row_sums, out=buf["total"])
            loss, delta = output_delta(logits, y, buf["rows"], lr, buf["delta"], row_sums)
            self._descend(zs, delta, buf, products)
        return loss

    def _thread_rule(self, small: bool) -> tuple:
        """(n, owner) for ``BlasThreads.limit``: every library on one thread for a small step;
        else, while SciPy's BLAS runs any product, NumPy's on one thread (its pool never woken)."""
        if small:
            return 1, None
        return (1, "numpy") if self._libraries_used(False) != {"numpy"} else (None, None)

    def _libraries_used(self, small: bool) -> set:
        fused = {"scipy"} if any(u["fused"] for u in self._updates) else set()
        return fused | {self._routes[small].library(kind) for kind in self._kinds()}

    def _kinds(self) -> list:
        every = [k for k in PRODUCTS if k != "weight gradient"]
        return every + (["weight gradient"] if not all(u["fused"] for u in self._updates) else [])

    def _forward(self, x: np.ndarray, buf: dict, products: Products, finite: bool = True):
        """ẑᵢ = zᵢWⁱᵀ + bⁱ and zᵢ₊₁ = σ(ẑᵢ) into the buffers (ẑ₁ checked finite where `finite`);
        returns ([z₁, ...], logits)."""
        f = ACTIVATIONS[self.mlp.activation.name][0]
        zs = [x]
        for i, (W, b) in enumerate(self.mlp.parameters()):
            zhat = products.forward(zs[-1], W, buf["zhat"][i])
            zhat += b
            if i == 0 and finite:
                check_finite_input(x, zhat)
            if i < len(buf["z"]):
                zs.append(f(zhat, out=buf["z"][i]))
        return zs, zhat

    def _descend(self, zs: list, delta: np.ndarray, buf: dict, products: Products) -> None:
        """Backward from δ·lr, each layer's step taken as soon as its gradient is known:
        δWⁱ (from W before its step), W ← W − δᵀzᵢ, b ← b − 1ᵀδ, δ ← δWⁱ ⊙ σ'."""
        prime = ACTIVATIONS[self.mlp.activation.name][1]
        for i in reversed(range(len(zs))):
            W, b = self.mlp.linears[i].params["W"], self.mlp.linears[i].params["b"]
            dz = products.backward(delta, W, buf["dz"][i - 1]) if i > 0 else None
            self._step_W(i, delta, zs[i], W, buf["dW"][i], products)
            bias_step(b, delta, products, buf["db"][i])
            if i > 0:
                delta = dz
                delta *= prime(zs[i], out=buf["prime"][i - 1])

    def _step_W(self, i: int, delta, z, W, scratch, products: Products) -> None:
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
        W -= products.weight_gradient(delta, z, scratch)

    def _buffers_for(self, batch: int) -> dict:
        if batch not in self._buffers:
            if len(self._buffers) >= 4:  # a few sizes: the batch, the last short batch
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[batch] = _allocate(self.mlp.sizes, batch, self.mlp.dtype)
        return self._buffers[batch]

    def how_it_ran(self) -> dict:
        """How the last step ran (before any step: a large one): the update per layer, the library
        of each product, the thread rule."""
        fused = [u["fused"] for u in self._updates]
        used, products = self._libraries_used(self._small), self._routes[self._small]
        return {
            "step": "manual.fast.FastStep",
            "contract": "the arithmetic of MLP.loss_and_grads + SGD(lr).step, up to rounding",
            "update": FUSED if all(fused) else UNFUSED if not any(fused) else "mixed (see layers)",
            "layers": [{"layer": i, "W": list(lin.params["W"].shape), **{k: u[k] for k in ("update", "why")}}
                       for i, (lin, u) in enumerate(zip(self.mlp.linears, self._updates), start=1)],
            "products": {  # which package's BLAS runs it; its file and version under "libraries"
                **{PRODUCTS[k]: products.library(k) for k in self._kinds()},
                "fused weight step W − (lr·δ)ᵀz": "scipy" if any(fused) else "(none fused)",
            },
            "one_library": next(iter(used)) if len(used) == 1 else "",
            "numpy_instead": {PRODUCTS[k]: products.why[k] for k in self._kinds() if products.why[k]},
            "regime": f"last step {'below' if self._small else 'at or above'} {SMALL_STEP_FLOP:.0e} FLOP",
            "libraries": self._threads.libraries(),
            "threads": f"one BLAS thread in every BLAS library loaded (numpy's and scipy's) for steps below "
                       f"{SMALL_STEP_FLOP:.0e} FLOP (this net: batches below "
                       f"{int(np.ceil(SMALL_STEP_FLOP / step_flop(self.mlp.sizes, 1)))}); above, the caller's "
                       f"setting in the library running the products"
                       + (", numpy's held to one thread for the step (its pool never woken)"
                          if self._libraries_used(False) != {"numpy"} else ""),
            "layout": "W column-major: the transpose of a row-major (in, out) array, shape (out, in)",
            "learning_rate": "folded into δ: δ = lr·(SM(ẑ) − onehot(y))/B",
        }


def _update(fused: bool, why: str) -> dict:
    return {"fused": fused, "update": FUSED if fused else UNFUSED, "why": why}


def _allocate(sizes, batch: int, dtype) -> dict:
    """Per-batch buffers: ẑ and z per layer, δW, σ', δ, arange(B), row sums, and dW/db scratch."""
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
        "total": empty(batch),  # the softmax's row sums
    }
