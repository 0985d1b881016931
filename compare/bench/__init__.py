"""``crosscheck bench``: the hand-derived NumPy step next to its peers and its GEMM floor.

Timed per grid point (architecture × batch size, one dtype): one whole training step (forward,
batch-mean cross-entropy, backward, SGD update) of the same net from the same weights on the same
batch of real MNIST images, by
- manual: the hand-derived step (``steps.manual_step``; bench.json and the table head name the
  function);
- torch: eager autograd as a torch user writes it (``nn.Sequential``, ``cross_entropy``, ``backward``,
  ``torch.optim.SGD``; nothing validated inside the step);
- compiled: that step with forward + loss through ``torch.compile`` (compile time apart);
- jax: the whole step under ``jax.jit`` (compile time apart; skipped with a line saying how to
  install JAX when it is missing);
- floor_numpy / floor_torch: only the step's matrix products, each in its fastest memory layout
  (``floor``): no implementation with that library can be faster.

Fair because each implementation runs in fresh worker processes of its own (``worker``), with its
library's default settings and the same thread budget, interleaved; nothing of one library is
loaded, let alone spinning, while another is timed. Honest because each figure is the median over
enough processes to pin it down (``grid``: more while its interval is wide, within a budget), every
worker also measures what else the machine did meanwhile, and a point whose figures do not stand
is marked ``!`` with its reasons (``reliability``: other programs' CPU use seen, or processes that
vary, and by how much), in the table, in bench.json and in a closing line. The whole-epoch figure
trains 784-256-10 float32, batch 32, through the training images in one shuffled order, each side
in its own processes.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from compare import options
from compare.bench import grid, machine, output, reliability
from compare.bench.config import (  # noqa: F401  (the names a caller of the bench may need)
    DEFAULT_ARCHS, DEFAULT_BATCHES, IMPLS, JAX_HINT, LR, QUICK_ARCHS, QUICK_BATCHES, QUICK_EPOCH_IMAGES,
    Settings, add_arguments, parse_arch, settings)
from compare.bench.steps import ACTIVATION

JSON_NAME, PLOT_NAME = "bench.json", "bench.png"


def _config(s: Settings, manual_step: dict) -> dict:
    return {"archs": ["-".join(map(str, a)) for a in s.archs], "batches": s.batches, "dtype": s.dtype,
            "threads": s.threads, "activation": ACTIVATION, "lr": LR, "min_processes": reliability.MIN_PROCESSES,
            "max_processes": s.timing.max_processes, "confidence": reliability.CONFIDENCE,
            "interval_max": reliability.INTERVAL_MAX,
            "timing": dataclasses.asdict(s.timing),
            "skipped": s.skipped, "manual_step": manual_step, "device": s.device}


def _measure(s: Settings, mnist, log) -> tuple[list[dict], dict | None, dict]:
    """The grid and the epoch figure, in worker processes -> (points, epoch, impl -> a worker result)."""
    with tempfile.TemporaryDirectory(prefix="crosscheck-bench-") as tmp:
        points, workers = grid.run_grid(mnist.x_train, mnist.y_train, s, Path(tmp), log)
        epoch = grid.run_epoch(mnist.x_train, mnist.y_train, s, Path(tmp)) if s.epoch_images else None
    return points, epoch, workers


def main(args) -> int:
    """Run ``crosscheck bench`` with the options of `add_arguments`: print the table, write bench.json
    and bench.png to the output directory. Returns 0; UsageError on a bad option value."""
    s = settings(args)
    out = options.new_run_dir(s.out, prefix="bench-")
    log = options.logger(args.json)
    from compare import data

    started = time.perf_counter()
    mnist = data.load_mnist(args.data_dir, dtype=np.float32, offline=args.offline, log=log)
    log(f"bench: {', '.join('-'.join(map(str, a)) for a in s.archs)} × batches {' '.join(map(str, s.batches))}, "
        f"{s.dtype}, {s.device}, {s.threads} thread{'s' * (s.threads > 1)}, each implementation in {reliability.MIN_PROCESSES} "
        f"to {s.timing.max_processes} processes of its own per point; writing to {out}")
    if "jax" in s.skipped:
        log(f"jax.jit: {s.skipped['jax']}")
    load_start = machine.load_average()
    points, epoch, workers = _measure(s, mnist, log)
    record = {**machine.record(s.threads, workers), "loadavg_start": load_start, "loadavg_end": machine.load_average()}
    bench = {"machine": record, "data": mnist.prepared.description,
             "config": _config(s, (workers.get("manual") or {}).get("info", {})), "points": points, "epoch": epoch,
             "summary": output.tail(points, epoch, s.threads)[-1], "elapsed_s": time.perf_counter() - started}
    from compare.files import atomic_write_json

    atomic_write_json(out / JSON_NAME, bench)
    where = (record["gpu"] or {}).get("name") if s.device != "cpu" else record["cpu"]
    output.plot(points, out / PLOT_NAME, f"one SGD step, {s.dtype}, {s.device}, {s.threads} threads, {where or ''}")
    table = [output.format_table(points), *output.tail(points, epoch, s.threads)]
    for line in ["", *output.head(record, bench["config"]), *table]:
        log(line)
    log(f"wrote {out / JSON_NAME} and {out / PLOT_NAME} ({bench['elapsed_s']:.0f} s)")
    if args.json:
        print(json.dumps(bench, indent=1))
    return 0
