"""Timing inside a worker process: warm up, then blocks of back-to-back steps.

A block is n calls of the step timed together (n chosen so that a block lasts about `block_s`,
which keeps the clock's own cost far below 0.1 % of it); its figure is the per-step mean. On a GPU
the step only queues its work: `sync` (``torch.cuda.synchronize``) waits for the queue before the
clock starts and before it stops, so a block's time is that of its n steps' work done. Over the
timed region the worker also measures its own CPU time (all threads, ``time.process_time``) and
the machine's CPU accounting (``machine.counters``), from which ``reliability`` tells whether
anything else ran. The garbage collector is off while timing, as in ``timeit``: a collection
triggered by one library's allocations would land on whichever step happens to run.
"""

from __future__ import annotations

import functools
import gc
import time

from compare.bench import machine


def _nothing() -> None:
    pass


def warm_up(run, seconds: float, least: int = 3, sync=_nothing) -> None:
    """Call `run` at least `least` times and for at least `seconds` (then wait for its queued work)."""
    t_end, n = time.perf_counter() + seconds, 0
    while n < least or time.perf_counter() < t_end:
        run()
        n += 1
    sync()


def timed(run, n: int, sync=_nothing) -> float:
    """Seconds for n calls of `run`, their queued work included."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        run()
    sync()
    return time.perf_counter() - t0


def calls_per_block(run, block_s: float, sync=_nothing) -> int:
    """How many calls of `run` last about `block_s`: calls are timed in doubling runs until a
    quarter of it has passed."""
    n = 1
    while (elapsed := timed(run, n, sync)) < block_s / 4:
        n *= 2
    return max(1, int(round(block_s * n / elapsed)))


# The machine's speed at the moment: a fixed float32 product, the size of a batch-256 forward of
# 784-128-10, in NumPy (every worker loads it) under the worker's thread budget.
REFERENCE_SHAPE = (256, 784, 128)


@functools.cache
def _reference_operands():
    import numpy as np

    m, k, n = REFERENCE_SHAPE
    rng = np.random.default_rng(0)
    return rng.random((m, k), np.float32), rng.random((k, n), np.float32)


def reference_s(repeats: int = 31) -> float:
    """The median seconds of ``REFERENCE_SHAPE``'s product over `repeats` runs: the same work in every
    worker process, so a process that finds it slower ran while the machine was slower
    (``reliability.SLOW_MAX``), whatever its own step does."""
    a, b = _reference_operands()
    a @ b  # the first call may load BLAS kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return sorted(times)[repeats // 2]


def counter_deltas(before: dict | None, after: dict | None) -> dict:
    """What the machine did between two ``machine.counters()`` readings (empty when unreadable)."""
    if before is None or after is None:
        return {}
    deltas = {k: after[k] - before[k] for k in ("busy_s", "steal_s")}
    deltas["cpus"] = after["cpus"]
    if before["throttled_s"] is not None and after["throttled_s"] is not None:
        deltas["throttled_s"] = after["throttled_s"] - before["throttled_s"]
    return deltas


class Region:
    """Wall time, this process's CPU time and the machine's counters over a `with` block."""

    def __enter__(self):
        self.gc_was_on = gc.isenabled()
        gc.disable()
        self.before = machine.counters()
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = time.process_time() - self.cpu0
        self.machine = counter_deltas(self.before, machine.counters())
        if self.gc_was_on:
            gc.enable()
        return False

    def record(self) -> dict:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "machine": self.machine}


def time_blocks(run, warmup_s: float, blocks: int, block_s: float, sync=None) -> dict:
    """Warm `run` up, then time `blocks` blocks of n calls each (`sync`: waits for queued GPU work,
    before the clock starts and before it stops; None on the CPU).

    Returns {"times_s": per-step seconds of each block, "steps": calls timed, "per_block": n,
    "wall_s", "cpu_s", "machine": counter deltas over the timed region}.
    """
    sync = sync or _nothing
    warm_up(run, warmup_s, sync=sync)
    n = calls_per_block(run, block_s, sync)
    with Region() as region:
        times = [timed(run, n, sync) / n for _ in range(blocks)]
    return {"times_s": times, "steps": n * blocks, "per_block": n, **region.record()}
