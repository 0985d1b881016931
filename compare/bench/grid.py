"""The bench's run: every grid point's implementations in worker processes, interleaved.

Per grid point each implementation is timed in ``timing.processes`` fresh processes; the
processes run one at a time, the implementations in a rotated order per repetition (manual,
torch, ..., then torch, ..., manual), so that slow drifts of the machine hit all alike. Per
implementation the per-step times of all blocks of all its processes are pooled into a median and
quartiles; ``reliability`` judges each point from the workers' own figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compare.bench import machine, reliability, timing, worker
from compare.bench.config import EPOCH_BATCH, EPOCH_SIZES, IMPLS, LR, OPTIONAL, Settings
from compare.errors import CrosscheckError


def rotated(names: list[str], r: int) -> list[str]:
    """`names` starting at position r (mod len): repetition r's order."""
    k = r % len(names)
    return names[k:] + names[:k]


def _spec(impl: str, sizes, batch_file: Path, s: Settings) -> dict:
    t = s.timing
    return {"impl": impl, "sizes": list(sizes), "batch_file": str(batch_file), "threads": s.threads, "lr": LR,
            "warmup_s": t.warmup_s, "blocks": t.blocks, "block_s": t.block_s, "layout_s": t.layout_s}


def _spawn_all(impls: list[str], spec_of, processes: int, where: str, skipped: dict) -> dict[str, list[dict]]:
    """Every implementation in `processes` workers, interleaved -> impl -> worker results.

    A failed optional implementation (torch.compile, JAX) is skipped with its reason in `skipped`;
    any other failure stops the bench (CrosscheckError naming the implementation and the point).
    """
    runs = {impl: [] for impl in impls}
    for r in range(processes):
        for impl in rotated(impls, r):
            if impl in skipped:
                continue
            result = worker.spawn(spec_of(impl))
            if "error" not in result:
                runs[impl].append(result)
            elif impl in OPTIONAL:
                skipped[impl] = f"failed: {result['error']}"
                runs.pop(impl)
            else:
                raise CrosscheckError(f"the {impl} worker failed at {where}: {result['error']}")
    return runs


def _process_record(result: dict) -> dict:
    """What bench.json keeps of one worker process."""
    keep = ("pid", "steps", "per_block", "wall_s", "cpu_s", "machine", "compile_s", "budget", "env")
    return {"median_s": float(np.median(result["times_s"])), **{k: result[k] for k in keep if k in result},
            **reliability.process_figures(result)}


def summarize_runs(runs: dict[str, list[dict]]) -> dict:
    """impl -> pooled summary (median, quartiles, steps), the processes' records and compile times."""
    results = {}
    for impl, results_of in runs.items():
        pooled = [t for r in results_of for t in r["times_s"]]
        compile_s = [r["compile_s"] for r in results_of if r.get("compile_s") is not None]
        results[impl] = {**timing.summarize(pooled), "steps": sum(r["steps"] for r in results_of),
                         "processes": [_process_record(r) for r in results_of],
                         **({"compile_s": compile_s} if compile_s else {})}
    return results


def _ratios(results: dict) -> dict:
    m = results["manual"]["median_s"]
    pairs = {"manual_over_torch": "torch", "manual_over_compiled": "compiled", "manual_over_jax": "jax",
             "manual_over_floor": "floor_numpy"}
    return {key: m / results[impl]["median_s"] for key, impl in pairs.items() if impl in results}


def run_point(sizes, x: np.ndarray, y: np.ndarray, s: Settings, tmp: Path) -> tuple[dict, dict]:
    """Every implementation on one batch (x, y) of architecture `sizes` -> (the point's record,
    impl -> one worker result of it, for the machine record: thread pools, backends, step info)."""
    arch, batch = "-".join(map(str, sizes)), len(x)
    batch_file = tmp / f"{arch}-b{batch}.npz"
    np.savez(batch_file, x=x, y=y)
    skipped = dict(s.skipped)
    load_before = machine.load_average()
    runs = _spawn_all([i for i in IMPLS if i not in skipped], lambda impl: _spec(impl, sizes, batch_file, s),
                      s.timing.processes, f"{arch} batch {batch}", skipped)
    results = summarize_runs(runs)
    floor = next((r[0]["products"] for impl, r in runs.items() if impl.startswith("floor_")), [])
    point = {"arch": arch, "sizes": list(sizes), "batch": batch, "dtype": str(x.dtype), "results": results,
             "skipped": skipped, "floor": {"flops": sum(p["flops"] for p in floor),
                                           "layouts": {i: [p["layout"] for p in r[0]["products"]]
                                                       for i, r in runs.items() if i.startswith("floor_")},
                                           "products": [{k: p[k] for k in ("layer", "kind", "shape", "flops")}
                                                        for p in floor]},
             **_ratios(results), "images_per_s_manual": batch / results["manual"]["median_s"],
             "loadavg_before": load_before, "loadavg_after": machine.load_average(),
             "reliability": reliability.classify_point({i: r["processes"] for i, r in results.items()}, s.threads)}
    return point, {impl: r[0] for impl, r in runs.items()}


def run_grid(x_train: np.ndarray, y_train: np.ndarray, s: Settings, tmp: Path, log=print):
    """Every (architecture, batch size) of `s`, each on the first B images of one seeded permutation
    of the training set, cast to `s.dtype` -> (points, impl -> a worker result)."""
    perm = np.random.default_rng(0).permutation(len(x_train))
    points, seen = [], {}
    for sizes in s.archs:
        for batch in s.batches:
            idx = perm[:batch]
            x = np.ascontiguousarray(x_train[idx], dtype=s.dtype)
            point, workers = run_point(sizes, x, np.ascontiguousarray(y_train[idx]), s, tmp)
            seen.update(workers)
            r = point["results"]
            flag = "" if point["reliability"]["reliable"] else "  ! unreliable (reasons below the table)"
            log(f"  {point['arch']} batch {batch}: "
                + ", ".join(f"{name} {1e6 * r[name]['median_s']:.0f} µs" for name in IMPLS if name in r) + flag)
            points.append(point)
    return points, seen


def run_epoch(x_train: np.ndarray, y_train: np.ndarray, s: Settings, tmp: Path) -> dict:
    """Whole passes of 784-256-10 float32, batch 32, SGD, through the first `s.epoch_images` of one
    shuffled order, for manual and torch, each side in processes of its own (manual, torch, torch,
    manual, ...; each process one pass, or as many as fill ``reliability.MIN_REGION_S``)
    -> mean seconds per pass and images/s per side, with the reliability of the figures."""
    n = min(s.epoch_images, len(x_train)) // EPOCH_BATCH * EPOCH_BATCH
    order = np.random.default_rng(1).permutation(len(x_train))[:n].reshape(-1, EPOCH_BATCH)
    data_file = tmp / "epoch.npz"
    np.savez(data_file, x=np.ascontiguousarray(x_train, dtype=np.float32), y=y_train, order=order)
    spec = {"sizes": list(EPOCH_SIZES), "batch_file": str(data_file), "threads": s.threads, "lr": LR}
    runs = _spawn_all(["epoch_manual", "epoch_torch"], lambda impl: {**spec, "impl": impl},
                      s.timing.processes, "the epoch figure", {})
    record = {"arch": "-".join(map(str, EPOCH_SIZES)), "dtype": "float32", "batch": EPOCH_BATCH, "images": n, "lr": LR}
    for impl, results_of in runs.items():
        seconds = [t for r in results_of for t in r["times_s"]]
        mean = float(np.mean(seconds))
        record[impl[len("epoch_"):]] = {"seconds": mean, "pass_seconds": seconds, "images_per_s": n / mean,
                                        "processes": [_process_record(r) for r in results_of]}
    record["reliability"] = reliability.classify_point(
        {impl: record[impl[len("epoch_"):]]["processes"] for impl in runs}, s.threads)
    return record
