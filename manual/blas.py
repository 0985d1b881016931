"""NumPy's BLAS, as the training step uses it: how many threads, and one GEMM NumPy cannot express.

OpenBLAS splits every matrix product over all its threads. For the small products of a small
net on a small batch that costs more than it saves: the threads must be woken and joined around
each product, and whatever the other core wrote (half of each output) is then read across cores
by the single-threaded elementwise work in between. Measured on a 2-core machine, float32, whole
``train_step``, one thread against two: 784-128-10 at batch 32 (1.3e7 FLOP) 211 against 252 µs;
at 2.6e7 FLOP a draw (784-128-10 at batch 64: 311 against 306 µs) or one thread ahead
(784-256-10 at batch 32: 356 against 411 µs); from 5.2e7 FLOP on two threads win (784-128-10 at
batch 128: 541 against 489 µs, 784-256-10 at batch 64: 548 against 524 µs, 784-512-256-10 at
batch 32: 998 against 841 µs). ``SMALL_STEP_FLOP`` sits between those points. (Before the SGD
step moved into the weight-gradient product, the crossover lay near 7e7: the separate update then
read the other core's half of dW, 110 µs instead of 15 µs.) Where the step is larger, the
caller's setting (all cores by default, or whatever ``threadpoolctl.threadpool_limits`` set) stays
as it is: this module only ever lowers the thread count, and only for the duration of one step.

The threads are controlled through threadpoolctl; where it finds no BLAS it can control, this
does nothing.

``gemm_descend`` is the SGD step W ← W − δᵀz as one GEMM with α = −1 and β = 1, which NumPy's
``matmul`` cannot do (it always overwrites its output). Computing dW and then subtracting it writes
dW and reads it back: at 784-1024-10 that pass took 250 µs, and after a product split over two
cores it reads across caches (110 µs instead of 15 µs for 784-128-10). The routine is the one
``matmul`` itself calls, found through threadpoolctl in NumPy's own OpenBLAS and reached with
ctypes; a tiny product checked against ``matmul`` on first use decides whether it is trusted.
Where there is no such library (another BLAS, another NumPy build), the caller falls back to
``matmul`` and a subtraction.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager

import numpy as np

SMALL_STEP_FLOP = 4e7  # multiply-adds × 2 of one step's matrix products (forward and backward)

_controllers = None


def _blas_controllers() -> list:
    global _controllers
    if _controllers is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # no threadpoolctl, or a BLAS it cannot read: leave the threads alone
            _controllers = []
    return _controllers


def step_flop(sizes, batch: int) -> float:
    """FLOP of one step's matrix products: forward z·Wᵀ and dW = δᵀz per layer, δ·W for all but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2.0 * batch * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))


@contextmanager
def threads_for(flop: float):
    """One BLAS thread inside the block when `flop` < SMALL_STEP_FLOP, else the current setting."""
    lowered = []
    if flop < SMALL_STEP_FLOP:
        for c in _blas_controllers():
            n = c.get_num_threads()
            if n is not None and n > 1:
                c.set_num_threads(1)
                lowered.append((c, n))
    try:
        yield
    finally:
        for c, n in lowered:
            c.set_num_threads(n)


# ---------------------------------------------------------------------------- W ← W − A·B in one GEMM

# Reaching the GEMM through ctypes costs ~10 µs per call (converting 14 arguments, three data
# pointers), where matmul and a subtraction of a 128 x 10 W take ~4 µs; the pass over dW that the
# fused call saves is worth more from about 16k elements of W on (784 x 128: 14 µs, plus the reads
# across cores after a two-thread product).
DESCEND_MIN_SIZE = 16384
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enum values
_GEMMS: dict[np.dtype, object] = {}


def _find_gemm(dtype: np.dtype):
    """cblas_sgemm / cblas_dgemm of the OpenBLAS NumPy uses, as a ctypes function, or None."""
    real = {np.dtype(np.float32): ("s", ctypes.c_float), np.dtype(np.float64): ("d", ctypes.c_double)}
    if dtype not in real:
        return None
    letter, c_real = real[dtype]
    for lib in _blas_controllers():
        if getattr(lib, "internal_api", None) != "openblas":
            continue
        try:
            dll = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        # NumPy's wheels ship OpenBLAS with 64-bit integers and renamed symbols (scipy_…64_)
        for prefix in ("scipy_", ""):
            for suffix in ("64_", ""):
                gemm = getattr(dll, f"{prefix}cblas_{letter}gemm{suffix}", None)
                config = getattr(dll, f"{prefix}openblas_get_config{suffix}", None)
                if gemm is None or config is None:
                    continue
                config.restype = ctypes.c_char_p
                c_int = ctypes.c_int64 if b"USE64BITINT" in (config() or b"") else ctypes.c_int
                e = ctypes.c_int
                gemm.argtypes = [e, e, e, c_int, c_int, c_int, c_real, ctypes.c_void_p, c_int,
                                 ctypes.c_void_p, c_int, c_real, ctypes.c_void_p, c_int]
                gemm.restype = None
                if _agrees_with_matmul(gemm, dtype):
                    return gemm
    return None


def _agrees_with_matmul(gemm, dtype) -> bool:
    """One small product in both operand orders, against NumPy's own (a wrong symbol or argument
    convention shows here before it touches a parameter)."""
    a = np.arange(1.0, 16.0, dtype=dtype).reshape(3, 5) / 8
    b = np.arange(1.0, 21.0, dtype=dtype).reshape(5, 4) / 16
    for a_, b_ in ((a, b), (np.asfortranarray(a), np.asfortranarray(b))):
        c = np.ones((3, 4), dtype)
        if not _call(gemm, a_, b_, c) or not np.allclose(c, 1 - a @ b, rtol=1e-5, atol=0):
            return False
    return True


def _operand(a: np.ndarray):
    """(CBLAS transpose flag, leading dimension) of a 2-D array in row-major terms, or None."""
    item = a.itemsize
    rows, cols = a.shape
    s0, s1 = a.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 >= max(cols, 1) * item:
        return _NO_TRANS, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 >= max(rows, 1) * item:
        return _TRANS, s1 // item
    return None


def _call(gemm, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    op_c = _operand(c)
    if op_c is not None and op_c[0] == _TRANS:
        a, b, c = b.T, a.T, c.T  # cᵀ ← cᵀ − bᵀaᵀ: BLAS writes row-major outputs
        op_c = _operand(c)
    op_a, op_b = _operand(a), _operand(b)
    if op_a is None or op_b is None or op_c is None or not c.flags.writeable:
        return False
    (m, k), n = a.shape, c.shape[1]
    gemm(_ROW_MAJOR, op_a[0], op_b[0], m, n, k, -1.0, a.ctypes.data, op_a[1], b.ctypes.data, op_b[1],
         1.0, c.ctypes.data, op_c[1])
    return True


def gemm_descend(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    """c ← c − a·b in place, in one GEMM (α = −1, β = 1) of NumPy's own BLAS.

    Args:
        a, b, c: 2-D arrays of one dtype (float32 or float64), shapes (m, k), (k, n), (m, n), each
            row- or column-major (transposed views are fine); c must not overlap a or b.
    Returns:
        True when done; False, with c untouched, when the routine is not reachable or an operand's
        layout is not one BLAS takes: then compute ``c -= a @ b`` another way.
    """
    if not (a.dtype == b.dtype == c.dtype) or a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        return False
    if a.shape[1] != b.shape[0] or c.shape != (a.shape[0], b.shape[1]) or 0 in c.shape or a.shape[1] == 0:
        return False
    gemm = _gemm_for(c.dtype)
    return gemm is not None and _call(gemm, a, b, c)


def _gemm_for(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _GEMMS:
        _GEMMS[dtype] = _find_gemm(dtype)
    return _GEMMS[dtype]


def descend_available(dtype) -> bool:
    """Whether ``gemm_descend`` runs for (suitably laid out) arrays of `dtype` on this install."""
    return _gemm_for(dtype) is not None
