"""The worker's side of ``crosscheck bench --breakdown`` (``compare.bench.breakdown``): the parts
of one step timed inside whole steps, or as differences of compiled prefixes. Apart from the
parent side so that the worker imports no module that imports it."""

from __future__ import annotations

import time

from compare.bench import timing


class PartClock:
    """Seconds per named part, summed over the steps timed: ``start()`` before a step, ``mark(part)``
    as each part ends (the time since the last mark goes to `part`). `sync` waits for a GPU's
    queued work before each reading (None on the CPU)."""

    def __init__(self, sync=None):
        self.sync = sync
        self.seconds: dict[str, float] = {}
        self.last = 0.0

    def start(self) -> None:
        if self.sync:
            self.sync()
        self.last = time.perf_counter()

    def mark(self, part: str) -> None:
        if self.sync:
            self.sync()
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - self.last
        self.last = now


def _parts_block(parts, n: int, sync) -> dict[str, float]:
    """Per-step seconds of each part over n steps run by `parts` (``steps.Step.parts``)."""
    clock = PartClock(sync)
    for _ in range(n):
        clock.start()
        parts(clock)
    return {part: s / n for part, s in clock.seconds.items()}


def time_parts(step, warmup_s: float, blocks: int, block_s: float) -> dict:
    """In a worker: the parts of `step` (``steps.Step``), in blocks alternating with blocks of whole
    steps. Returns the ``timing.time_blocks`` record of the whole steps ("times_s" etc.) with
    "parts_s": part -> per-step seconds per block, and "method": "parts" or "prefixes"."""
    sync = step.sync or (lambda: None)
    if step.parts is not None:
        timing.warm_up(lambda: step.parts(PartClock()), warmup_s, sync=sync)
        n = timing.calls_per_block(step.run, block_s, sync)
        parts_s: dict[str, list[float]] = {}
        whole = []
        with timing.Region() as region:
            for _ in range(blocks):
                whole.append(timing.timed(step.run, n, sync) / n)
                for part, s in _parts_block(step.parts, n, step.sync).items():
                    parts_s.setdefault(part, []).append(s)
        return {"times_s": whole, "steps": 2 * n * blocks, "per_block": n, **region.record(), "parts_s": parts_s,
                "method": "parts"}
    programs = step.prefixes
    for prefix in programs.values():
        timing.warm_up(prefix, warmup_s / len(programs), sync=sync)
    ns = {name: timing.calls_per_block(prefix, block_s / len(programs), sync) for name, prefix in programs.items()}
    cumulative: dict[str, list[float]] = {name: [] for name in programs}
    with timing.Region() as region:
        for _ in range(blocks):
            for name, prefix in programs.items():
                cumulative[name].append(timing.timed(prefix, ns[name], sync) / ns[name])
    names = list(programs)
    parts_s = {name: [c - p for c, p in zip(cumulative[name], cumulative[prev])] if prev else cumulative[name]
               for name, prev in zip(names, [None, *names[:-1]])}
    return {"times_s": cumulative[names[-1]], "steps": sum(ns.values()) * blocks, "per_block": ns[names[-1]],
            **region.record(), "parts_s": parts_s, "prefixes_s": cumulative, "method": "prefixes"}
