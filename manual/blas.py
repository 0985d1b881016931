"""How many threads NumPy's BLAS may use for one training step.

OpenBLAS splits every matrix product over all its threads. For the small products of a small
net on a small batch that costs more than it saves: the threads must be woken and joined around
each product, and whatever the other core wrote (half of each output) is then read across cores
by the single-threaded elementwise work in between (the SGD update after a two-thread weight
gradient took 110 µs instead of 15 µs). Measured on a 2-core machine, float32, one thread against
two: 784-128-10 at batch 32 216 against 339 µs, at batch 128 (5.2e7 FLOP) 543 against 615 µs;
784-256-10 at batch 64 (5.2e7 FLOP) 611 against 698 µs; from 7.7e7 FLOP on (784-512-256-10 at
batch 32: 1229 against 1061 µs; 784-128-10 at batch 256: 973 against 814 µs) two threads win.
``SMALL_STEP_FLOP`` sits between those points. Where the step is larger, the caller's setting
(all cores by default, or whatever ``threadpoolctl.threadpool_limits`` set) stays as it is: this
module only ever lowers the thread count, and only for the duration of one step.

The threads are controlled through threadpoolctl; where it finds no BLAS it can control, this
does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager

SMALL_STEP_FLOP = 6.5e7  # multiply-adds × 2 of one step's matrix products (forward and backward)

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
