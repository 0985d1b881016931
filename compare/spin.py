"""The side-by-side harness's thread-spin settings, applied by the command line's entry point.

OpenBLAS (NumPy's BLAS) lets its idle threads spin for 2^28 cycles (~0.1 s) by default, and
PyTorch's OpenMP threads spin too: side by side on a small machine each pool starves the other
(docs/performance.md, "Threads"). OPENBLAS_THREAD_TIMEOUT=18 (2^18 cycles, ~0.1 ms) keeps
OpenBLAS's threads awake between the matrix products of one NumPy step but lets them sleep before
torch's turn; GOMP_SPINCOUNT bounds OpenMP's spin the same way. They take effect only when set
before NumPy and PyTorch first load, so ``apply_defaults`` runs first thing in ``crosscheck``'s
entry point, never on ``import compare``: a library must not change its importer's environment.
A user's own settings win.
"""

from __future__ import annotations

import os

DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "18", "GOMP_SPINCOUNT": "10000"}
# Set in the bench's worker processes, which time each library with the user's own settings.
WORKER_MARK = "CROSSCHECK_BENCH_WORKER"
# What the user's environment held before any default was applied (None: unset).
USER_SPIN_ENV = {k: os.environ.get(k) for k in DEFAULTS}


def apply_defaults() -> None:
    """Set each spin variable the user left unset (not in a bench worker)."""
    if not os.environ.get(WORKER_MARK):
        for k, v in DEFAULTS.items():
            os.environ.setdefault(k, v)
