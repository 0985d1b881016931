"""The harness: MNIST data, agreement checks, side-by-side training, benchmark and the CLI.

This is the only package that sees both the NumPy side (`manual`) and the PyTorch side
(`torch_ref`).
"""

import os

# OpenBLAS (NumPy's BLAS) lets its idle threads spin for 2^28 cycles (~0.1 s) by default. Side by
# side with PyTorch's own thread pool on a small machine, the spinning threads starve torch: on 2
# cores a step of both sides took 15 ms instead of 2 ms. 2^18 cycles (~0.1 ms) still keeps the
# threads awake between the matrix products of one NumPy step (2^4 would cost the NumPy step 40%)
# but lets them sleep before torch's turn. PyTorch's OpenMP threads spin too and starve OpenBLAS
# the same way (the NumPy step at batch 256 took 5.1 ms instead of 2.6 ms); GOMP_SPINCOUNT bounds
# that. Both settings only take effect when made before NumPy and PyTorch are first imported, as
# they are for the CLI; a user's own environment wins.
# What the user's own environment held before these defaults: the bench's worker processes run with
# it (CROSSCHECK_BENCH_WORKER set), each library with its own default spin (compare/bench/worker.py).
USER_SPIN_ENV = {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
if not os.environ.get("CROSSCHECK_BENCH_WORKER"):
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__all__ = ["check_function", "check_layer", "check_model"]


def __getattr__(name: str):
    """``from compare import check_function, check_layer, check_model`` (``compare/check/``), loaded on first
    use: it brings NumPy and the compiled agreement kernel, which ``import compare`` alone (the
    CLI's start, the bench's workers) should not pay for."""
    if name in __all__:
        from compare import check

        return getattr(check, name)
    raise AttributeError(f"module 'compare' has no attribute {name!r}")
