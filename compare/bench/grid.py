"""The bench's run: every grid point's implementations in worker processes, interleaved.

Per grid point each implementation is timed in fresh processes, one at a time, in rounds: every
implementation once per round, in a rotated order (manual, torch, ..., then torch, ..., manual),
so that slow drifts of the machine hit all alike. The first ``reliability.MIN_PROCESSES`` rounds
time every implementation; later rounds only those whose figure is not yet pinned down
(``reliability.judge``: too few undisturbed processes, or an interval too wide), until each is
pinned, has ``timing.max_processes`` processes, or the point has taken ``timing.budget`` times as
long as its first rounds. Each figure is the median of its processes' medians, with its interval.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np

from compare.bench import machine, reliability, resume, timing, worker
from compare.bench.config import EPOCH_BATCH, EPOCH_SIZES, IMPLS, LR, OPTIONAL, Settings
from compare.errors import CrosscheckError


def rotated(names: list[str], r: int) -> list[str]:
    """`names` starting at position r (mod len): repetition r's order."""
    k = r % len(names)
    return names[k:] + names[:k]


def worker_spec(impl: str, sizes, batch_file: Path, s: Settings) -> dict:
    t = s.timing
    return {"impl": impl, "sizes": list(sizes), "batch_file": str(batch_file), "threads": s.threads, "lr": LR,
            "device": s.device,
            "warmup_s": t.warmup_s, "blocks": t.blocks, "block_s": t.block_s, "layout_s": t.layout_s}


def spawn_rounds(impls: list[str], spec_of, s: Settings, where: str, skipped: dict, clock=time.monotonic
               ) -> dict[str, list[dict]]:
    """Every implementation in worker processes, in rounds (module docstring) -> impl -> worker results.

    A failed optional implementation (torch.compile, JAX) is skipped with its reason in `skipped`;
    any other failure stops the bench (CrosscheckError naming the implementation and the point).
    """
    runs = {impl: [] for impl in impls if impl not in skipped}
    started, first_rounds_s, r = clock(), None, 0
    while runs:
        if r < reliability.MIN_PROCESSES:
            due = list(runs)
        else:
            first_rounds_s = first_rounds_s if first_rounds_s is not None else clock() - started
            if clock() - started >= s.timing.budget * first_rounds_s:
                break
            reference = reliability.fastest_reference(x for results in runs.values() for x in results)
            due = [impl for impl, results in runs.items() if len(results) < s.timing.max_processes
                   and not reliability.judge([process_record(x) for x in results], s.threads, reference)["pinned"]]
            if not due:
                break
        for impl in rotated(due, r):
            result = worker.spawn(spec_of(impl))
            if "error" not in result:
                runs[impl].append(result)
            elif impl in OPTIONAL:
                skipped[impl] = f"failed: {result['error']}"
                runs.pop(impl)
            else:
                raise CrosscheckError(f"the {impl} worker failed at {where}: {result['error']}")
        r += 1
    return runs


def process_record(result: dict) -> dict:
    """What bench.json keeps of one worker process, with the figures ``reliability`` judges it by."""
    keep = ("pid", "steps", "per_block", "wall_s", "cpu_s", "machine", "compile_s", "budget", "env", "gpu_memory",
            "parts_s", "prefixes_s", "method")
    return {"median_s": float(np.median(result["times_s"])), **{k: result[k] for k in keep if k in result},
            **reliability.process_figures(result)}


def summarize_runs(runs: dict[str, list[dict]], threads: int) -> dict:
    """impl -> its figure (``reliability.judge``: median over processes, interval, whether it stands,
    each process's reference product against the fastest of all implementations' at the point),
    steps timed, the processes' records (``set_aside`` where the machine disturbed them), compile
    times and, on a GPU, the largest peak of GPU memory a process saw (``worker.gpu_memory``)."""
    results = {}
    reference = reliability.fastest_reference(r for rs in runs.values() for r in rs)
    for impl, results_of in runs.items():
        records = [process_record(r) for r in results_of]
        for record in records:
            record["set_aside"] = bool(reliability.disturbances(record, threads, reference))
        compile_s = [r["compile_s"] for r in results_of if r.get("compile_s") is not None]
        peaks = [v for r in results_of for v in (r.get("gpu_memory") or {}).values() if v is not None]
        results[impl] = {**reliability.judge(records, threads, reference), "steps": sum(r["steps"] for r in results_of),
                         "processes": records, **({"compile_s": compile_s} if compile_s else {}),
                         **({"gpu_peak_bytes": max(peaks)} if peaks else {})}
    return results


RATIOS = {"manual_over_torch": ("manual", "torch"), "manual_over_compiled": ("manual", "compiled"),
          "manual_over_jax": ("manual", "jax"), "manual_over_floor": ("manual", "floor_numpy"),
          "manual_torch_over_yardstick": ("manual_torch", "yardstick"),
          # autograd's own cost per library and mode: the autograd step over the same derivation by hand
          "autograd_cost": ("torch", "manual_torch"), "autograd_cost_compiled": ("compiled", "manual_compiled"),
          "autograd_cost_jax_eager": ("jax_eager", "manual_jax_eager"), "autograd_cost_jax": ("jax", "manual_jax")}


def _ratios(results: dict) -> dict:
    """Each ratio of ``RATIOS`` whose two figures were timed."""
    return {key: results[a]["median_s"] / results[b]["median_s"] for key, (a, b) in RATIOS.items()
            if a in results and b in results}


def run_point(sizes, x: np.ndarray, y: np.ndarray, s: Settings, tmp: Path) -> tuple[dict, dict]:
    """Every implementation on one batch (x, y) of architecture `sizes` -> (the point's record,
    impl -> one worker result of it, for the machine record: thread pools, backends, step info)."""
    arch, batch = "-".join(map(str, sizes)), len(x)
    batch_file = tmp / f"{arch}-b{batch}.npz"
    np.savez(batch_file, x=x, y=y)
    skipped = dict(s.skipped)
    # the fingerprint of the code these workers import now, read per point: an edit during a long run
    # shows in the points timed after it
    load_before, started, code = machine.load_average(), _now(), resume.code_fingerprint()
    runs = spawn_rounds(list(IMPLS), lambda impl: worker_spec(impl, sizes, batch_file, s), s, f"{arch} batch {batch}",
                      skipped)
    results = summarize_runs(runs, s.threads)
    floor = next((r[0]["products"] for impl, r in runs.items() if impl.startswith("floor_")), [])
    point = {"arch": arch, "sizes": list(sizes), "batch": batch, "dtype": str(x.dtype), "results": results,
             "skipped": skipped, "floor": {"flops": sum(p["flops"] for p in floor),
                                           "layouts": {i: [p["layout"] for p in r[0]["products"]]
                                                       for i, r in runs.items() if i.startswith("floor_")},
                                           "products": [{k: p[k] for k in ("layer", "kind", "shape", "flops")}
                                                        for p in floor]},
             **_ratios(results),
             **({"images_per_s_manual": batch / results["manual"]["median_s"]} if "manual" in results else {}),
             "loadavg_before": load_before, "loadavg_after": machine.load_average(), "measured": [started, _now()],
             "code": code, "reliability": reliability.classify_point(results)}
    return point, {impl: r[0] for impl, r in runs.items()}


def run_grid(x_train: np.ndarray, y_train: np.ndarray, s: Settings, tmp: Path, log=print, kept=None,
             done=lambda points, workers: None):
    """Every (architecture, batch size) of `s`, each on the first B images of one seeded permutation
    of the training set, cast to `s.dtype` -> (points, impl -> a worker result).

    Args:
        kept: (arch, batch) -> a point of an earlier run, taken as it is instead of measured (``resume``).
        done: called with the points so far and the worker results after each point, so that a
            caller can save them before the next one.
    """
    perm = np.random.default_rng(0).permutation(len(x_train))
    points, seen = [], {}
    for sizes in s.archs:
        for batch in s.batches:
            arch = "-".join(map(str, sizes))
            if (arch, batch) in (kept or {}):
                points.append(kept[arch, batch])
                log(f"  {arch} batch {batch}: kept, every figure stood (measured {_when(points[-1])})")
                continue
            idx = perm[:batch]
            x = np.ascontiguousarray(x_train[idx], dtype=s.dtype)
            point, workers = run_point(sizes, x, np.ascontiguousarray(y_train[idx]), s, tmp)
            seen.update(workers)
            r = point["results"]
            flag = "" if point["reliability"]["reliable"] else "  ! unreliable (reasons below the table)"
            log(f"  {point['arch']} batch {batch}: "
                + ", ".join(f"{name} {1e6 * r[name]['median_s']:.0f} µs ({len(r[name]['processes'])})"
                            for name in IMPLS if name in r) + flag)
            points.append(point)
            done(points, seen)
    return points, seen


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _when(point: dict) -> str:
    """When a point was measured, for the log: 'from to', or 'in the earlier run' when not recorded."""
    return " to ".join(point["measured"]) if point.get("measured") else "in the earlier run"


def run_epoch(x_train: np.ndarray, y_train: np.ndarray, s: Settings, tmp: Path) -> dict:
    """Whole passes of 784-256-10 float32, batch 32, SGD, through the first `s.epoch_images` of one
    shuffled order, for manual and torch, each side in processes of its own (manual, torch, torch,
    manual, ...; each process one pass, or as many as fill ``reliability.MIN_REGION_S``)
    -> per side the median over processes of each one's median pass, images/s, and the reliability."""
    n = min(s.epoch_images, len(x_train)) // EPOCH_BATCH * EPOCH_BATCH
    order = np.random.default_rng(1).permutation(len(x_train))[:n].reshape(-1, EPOCH_BATCH)
    data_file = tmp / "epoch.npz"
    np.savez(data_file, x=np.ascontiguousarray(x_train, dtype=np.float32), y=y_train, order=order)
    spec = {"sizes": list(EPOCH_SIZES), "batch_file": str(data_file), "threads": s.threads, "lr": LR}
    code = resume.code_fingerprint()
    runs = spawn_rounds(["epoch_manual", "epoch_torch"], lambda impl: {**spec, "impl": impl}, s, "the epoch figure", {})
    record = {"arch": "-".join(map(str, EPOCH_SIZES)), "dtype": "float32", "batch": EPOCH_BATCH, "images": n, "lr": LR}
    judged = summarize_runs(runs, s.threads)
    for impl, figure in judged.items():
        side = impl[len("epoch_"):]
        record[side] = {**figure, "seconds": figure["median_s"], "images_per_s": n / figure["median_s"],
                        "pass_seconds": [t for r in runs[impl] for t in r["times_s"]]}
    record["reliability"] = reliability.classify_point(judged)
    record["code"] = code
    return record
