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

bench.json is written after every point (marked incomplete until the end), and ``--resume DIR``
goes on with a run, keeping its points whose figures stood (``resume``).

``--device cuda`` times the torch steps, the torch floor and jax.jit on the GPU, synchronised
(``timing``), with their peak GPU memory; ``--breakdown`` shows instead where each step's time
goes (``breakdown``: forward, loss, backward, update).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from compare import options
from compare.bench import breakdown, grid, machine, output, reliability, resume
from compare.bench.config import (  # noqa: F401  (the names a caller of the bench may need)
    DEFAULT_ARCHS, DEFAULT_BATCHES, IMPLS, JAX_HINT, LR, QUICK_ARCHS, QUICK_BATCHES, QUICK_EPOCH_IMAGES,
    Settings, add_arguments, parse_arch, settings)
from compare.bench.steps import ACTIVATION

JSON_NAME, PLOT_NAME = "bench.json", "bench.png"


def _config(s: Settings, workers: dict, previous: dict | None) -> dict:
    """bench.json's config: the grid, the settings, the rule for figures, what the hand-derived
    columns time (from this run's workers, else from the `previous` run's config)."""
    earlier = (previous or {}).get("config", {})
    info = {impl: (workers.get(impl) or {}).get("info") or earlier.get(key, {})
            for impl, key in (("manual", "manual_step"), ("manual_torch", "manual_torch_step"))}
    return {"archs": ["-".join(map(str, a)) for a in s.archs], "batches": s.batches, "dtype": s.dtype,
            "threads": s.threads, "activation": ACTIVATION, "lr": LR, "min_processes": reliability.MIN_PROCESSES,
            "max_processes": s.timing.max_processes, "confidence": reliability.CONFIDENCE,
            "interval_max": reliability.INTERVAL_MAX,
            "timing": dataclasses.asdict(s.timing), "epoch_images": s.epoch_images,
            "skipped": s.skipped, "manual_step": info["manual"], "manual_torch_step": info["manual_torch"],
            "device": s.device}


def _measure(s: Settings, mnist, log, kept: dict, kept_epoch: dict | None, save) -> tuple[list[dict], dict | None, dict]:
    """The grid and the epoch figure (the `kept` points and epoch as they are), in worker processes
    -> (points, epoch, impl -> a worker result); `save(points, workers)` after each measured point."""
    with tempfile.TemporaryDirectory(prefix="crosscheck-bench-") as tmp:
        points, workers = grid.run_grid(mnist.x_train, mnist.y_train, s, Path(tmp), log, kept, save)
        epoch = kept_epoch
        if s.epoch_images and not kept_epoch:
            epoch = grid.run_epoch(mnist.x_train, mnist.y_train, s, Path(tmp))
    return points, epoch, workers


def _grid_order(s: Settings, points: list[dict]) -> list[dict]:
    order = {("-".join(map(str, a)), b): i for i, (a, b) in enumerate((a, b) for a in s.archs for b in s.batches)}
    return sorted(points, key=lambda p: order[p["arch"], p["batch"]])


def _settings_and_earlier(args) -> tuple[Settings, dict | None]:
    """The run's settings: from the options, or with --resume from the earlier run's bench.json."""
    if getattr(args, "resume", None) is None:
        return settings(args), None
    resume.check_options(args)
    previous = resume.load(args.resume)
    return resume.settings(previous, args.resume, args.out), previous


def main(args) -> int:
    """Run ``crosscheck bench`` with the options of `add_arguments`: print the table, write bench.json
    and bench.png to the output directory (with --breakdown: the parts' table, breakdown.json and
    breakdown.png). bench.json is also written after every grid point, marked incomplete, so that a
    Ctrl-C keeps what was measured (``--resume`` goes on from it). Returns 0; UsageError on a bad
    option value."""
    log = options.logger(args.json)
    s, previous = _settings_and_earlier(args)
    code = resume.code_fingerprint()
    kept = resume.standing(previous, code) if previous else {}
    kept_epoch = resume.standing_epoch(previous, code) if previous else None
    if previous and len(kept) == len(s.archs) * len(s.batches) and (kept_epoch or not s.epoch_images):
        log(f"every figure of the run in {args.resume} stood: nothing to measure again")
        return 0
    out = options.new_run_dir(s.out, prefix="bench-")
    from compare import data
    from compare.files import atomic_write_json

    started = time.perf_counter()
    mnist = data.load_mnist(args.data_dir, dtype=np.float32, offline=args.offline, log=log)
    log(f"bench{' --breakdown' * s.breakdown}: {', '.join('-'.join(map(str, a)) for a in s.archs)} × batches "
        f"{' '.join(map(str, s.batches))}, {s.dtype}, {s.device}, {s.threads} thread{'s' * (s.threads > 1)}, each "
        f"implementation in {reliability.MIN_PROCESSES} to {s.timing.max_processes} processes of its own per point; "
        f"writing to {out}")
    if previous:
        log(f"going on with the run in {args.resume} ({previous['date']}): {len(kept)} of "
            f"{len(s.archs) * len(s.batches)} points kept (every figure stood), the epoch figure "
            f"{'kept' if kept_epoch else 'measured' if s.epoch_images else 'skipped'}")
        changed = resume.other_code(previous, code)
        if changed:
            log(f"  not kept: {changed} that stood there but were timed by other code than this (a change since in "
                f"{', '.join(resume.TIMED)} or a library's version): measured again")
    for name in ("compiled", "jax"):
        if name in s.skipped:
            log(f"{output.NAMES[name]}: {s.skipped[name]}")
    load_start = machine.load_average()

    def report_of(points, epoch, workers, complete: bool) -> dict:
        record = {**machine.record(s.threads, workers), "loadavg_start": load_start,
                  "loadavg_end": machine.load_average()}
        report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": record,
                  "data": mnist.prepared.description, "config": _config(s, workers, previous),
                  "complete": complete, "points": points, "epoch": epoch}
        if previous:
            report["resumed_from"] = {"path": str(args.resume), "date": previous["date"],
                                      "machine": previous["machine"],
                                      "kept": [f"{a} b{b}" for a, b in kept] + ["epoch"] * bool(kept_epoch)}
        return report

    measured = []

    def save(points, workers) -> None:
        """The points so far, and the kept ones not yet reached, as an incomplete bench.json."""
        reached = {(p["arch"], p["batch"]) for p in points}
        measured[:] = [p for p in points if (p["arch"], p["batch"]) not in kept]
        waiting = [p for key, p in kept.items() if key not in reached]
        report = report_of(_grid_order(s, points + waiting), kept_epoch, workers, complete=False)
        report["summary"] = (f"incomplete: {len(measured)} point{'s' * (len(measured) != 1)} measured so far; "
                             f"go on with: crosscheck bench --resume {out}")
        atomic_write_json(out / JSON_NAME, report)

    try:
        if s.breakdown:
            with tempfile.TemporaryDirectory(prefix="crosscheck-bench-") as tmp:
                points, workers = breakdown.run(mnist.x_train, mnist.y_train, s, Path(tmp), log)
            epoch, names = None, (breakdown.JSON_NAME, breakdown.PLOT_NAME)
        else:
            points, epoch, workers = _measure(s, mnist, log, kept, kept_epoch, save)
            names = (JSON_NAME, PLOT_NAME)
    except KeyboardInterrupt:
        if measured:
            log(f"interrupted: {out / JSON_NAME} keeps the {len(measured)} point{'s' * (len(measured) != 1)} "
                f"measured; go on with: crosscheck bench --resume {out}")
        raise
    report = report_of(points, epoch, workers, complete=True)
    record = report["machine"]
    where = (record["gpu"] or {}).get("name") if s.device != "cpu" else record["cpu"]
    title = f"one SGD step, {s.dtype}, {s.device}, {s.threads} thread{'s' * (s.threads > 1)}, {where or ''}"
    if s.breakdown:
        del report["epoch"]
        lines = [breakdown.format_table(points), breakdown.EXPLAINED]
        breakdown.plot(points, out / names[1], title)
    else:
        lines = [output.format_table(points), *output.tail(points, epoch, s.threads)]
        report["summary"] = lines[-1]
        output.plot(points, out / names[1], title)
    report["elapsed_s"] = time.perf_counter() - started
    atomic_write_json(out / names[0], report)
    for line in ["", *output.head(record, report["config"]), *lines]:
        log(line)
    log(f"wrote {out / names[0]} and {out / names[1]} ({report['elapsed_s']:.0f} s)")
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
