"""One implementation, timed in a process of its own (the way pyperf runs benchmarks).

Why processes: in one process, one library's threads starve another's. Two-thread OpenMP
(torch) and OpenBLAS (NumPy) pools side by side spin while the other works, and as soon as
another program takes a core the step of one library takes many times its time alone. A fresh
interpreter per (implementation, grid point, repetition) loads only the library it times, with
that library's default settings, so its figure is what a user of that library gets.

Parent side: ``spawn(spec)`` runs ``python -m compare.bench.worker`` with the user's own
environment (the spin settings that ``crosscheck``'s entry point adds for the side-by-side harness,
``compare.spin``, are the harness's business: they are removed unless the user set them, and the
worker mark keeps them from being added again), hands the spec over on stdin and reads the result
from the file the spec names. Child side: ``main`` applies the thread budget, builds the
step (``steps``, ``floor``), times it (``timing``) and writes the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from compare import spin

WORKER_MARK = spin.WORKER_MARK
REPORTED_ENV = ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "XLA_FLAGS")
TORCH_IMPLS = ("manual_torch", "yardstick", "torch", "compiled", "manual_compiled", "floor_torch", "epoch_torch")  # the workers that load torch
TIMEOUT_S = 1800  # a cold torch.compile of the largest net takes ~1 min; anything past this is hung


def worker_env(environ: dict, user_spin: dict) -> dict:
    """The environment a worker runs with: `environ` with each spin variable as the user had it
    (removed where the user had not set it), and the mark that keeps ``compare.spin`` from setting it.

    Args:
        environ: this process's environment (with ``compare.spin``'s defaults in it).
        user_spin: name -> the value the user had set before ``compare.spin`` ran (None: unset).
    """
    env = dict(environ)
    for k, v in user_spin.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    env[WORKER_MARK] = "1"
    return env


def spawn(spec: dict) -> dict:
    """Run one worker on `spec` (see ``main``) -> its result, or {"error": "..."} if it failed."""
    env = worker_env(dict(os.environ), spin.USER_SPIN_ENV)
    with tempfile.TemporaryDirectory(prefix="crosscheck-worker-") as tmp:
        result_file = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-m", "compare.bench.worker"], capture_output=True, text=True,
                              input=json.dumps({**spec, "result_file": str(result_file)}), env=env, timeout=TIMEOUT_S)
        if result_file.exists():
            return json.loads(result_file.read_text())
    last = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:] or ["no output"]
    return {"error": f"worker exited with code {proc.returncode}: {last[0].strip()[:300]}"}


# ------------------------------------------------------------------------------ child side


def _apply_budget(threads: int) -> dict:
    """Every BLAS/OpenMP pool loaded so far limited to `threads` (threadpoolctl), and torch's intra-op
    pool (torch.set_num_threads) if torch is loaded. Returns how, for the record."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # kept for the life of the process
    applied = {"threadpoolctl": threads}
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
        applied["torch.set_num_threads"] = threads
    return applied


def _jax_affinity(threads: int) -> list[int] | None:
    """JAX (XLA) has no thread-count setting for 1 < threads < cores; its pools size themselves to the
    CPUs the process may run on. So a smaller budget pins the JAX worker to `threads` CPUs."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if threads >= len(allowed):
        return None
    os.sched_setaffinity(0, allowed[:threads])
    return allowed[:threads]


def _load_library(impl: str, threads: int) -> dict:
    """Import the library `impl` times before the budget is applied (threadpoolctl sees only loaded
    pools). Returns the record of how the budget was applied."""
    import numpy  # noqa: F401  (every worker's: the reference product runs in its BLAS, under the budget)

    from compare.bench.config import JAX_IMPLS

    applied = {}
    if impl in JAX_IMPLS:
        pinned = _jax_affinity(threads)
        if pinned is not None:
            applied["affinity"] = pinned
        import jax  # noqa: F401
    elif impl in TORCH_IMPLS:
        import torch  # noqa: F401
    return {**applied, **_apply_budget(threads)}


def _build(spec: dict):
    """-> (run, sync, extra record) for the spec's implementation on its batch and device."""
    import numpy as np

    from compare.bench import floor, steps

    impl, device = spec["impl"], spec.get("device", "cpu")
    with np.load(spec["batch_file"]) as f:
        x, y = f["x"], f["y"]
    if impl.startswith("floor_"):
        run, products, sync = floor.floor_bench_step(spec["sizes"], x, impl[len("floor_"):], spec["layout_s"], device)
        return run, sync, {"products": products}
    step = steps.BUILDERS[impl](tuple(spec["sizes"]), x, y, spec["lr"], device)
    return step.run, step.sync, {"compile_s": step.compile_s, "step": step}


def gpu_memory(impl: str, device: str):
    """(reset, read) of the peak GPU memory allocated, for a torch implementation on a GPU
    (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the peak of the steps
    timed in between: parameters, gradients and one step's activations); JAX's own peak where
    its GPU reports one (not resettable: it includes the compiling step); else None."""
    if device == "cpu":
        return None
    if impl.endswith("jax") or impl.endswith("jax_eager"):
        import jax

        gpu = jax.devices("gpu")[0]
        return (lambda: None), lambda: {"jax_peak_bytes_in_use": (gpu.memory_stats() or {}).get("peak_bytes_in_use")}
    import torch

    return (lambda: torch.cuda.reset_peak_memory_stats(device),
            lambda: {"max_memory_allocated": torch.cuda.max_memory_allocated(device)})


def gpu_record(device: str) -> dict:
    """The GPU a torch worker ran on: name, memory, CUDA version."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return {"name": props.name, "memory_bytes": props.total_memory, "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}"}


def _epoch(spec: dict) -> dict:
    """Whole passes over the spec's batch order with `train` of the manual or torch step (the gather
    x[idx] of each batch is part of the time), as many as fill ``MIN_REGION_S`` (a quick run's few
    thousand images take a few tens of ms: too short for the machine's CPU accounting).
    -> timing record with times_s = [seconds of each pass]."""
    import time

    import numpy as np

    from compare.bench import reliability, steps, timing

    with np.load(spec["batch_file"]) as f:
        x, y, order = f["x"], f["y"], f["order"]
    step = steps.BUILDERS[spec["impl"][len("epoch_"):]](tuple(spec["sizes"]), x[order[0]], y[order[0]], spec["lr"])
    for idx in order[:20]:
        step.train(x[idx], y[idx])  # warm-up
    passes = []
    with timing.Region() as region:
        while sum(passes) < reliability.MIN_REGION_S:
            t0 = time.perf_counter()
            for idx in order:
                step.train(x[idx], y[idx])
            passes.append(time.perf_counter() - t0)
    return {"times_s": passes, "steps": len(order) * len(passes), **region.record(), "info": step.record()}


def _run(spec: dict) -> dict:
    from threadpoolctl import threadpool_info

    from compare.bench import timing

    impl, device = spec["impl"], spec.get("device", "cpu")
    applied = _load_library(impl, spec["threads"])
    reference_before = timing.reference_s()
    if impl.startswith("epoch_"):
        record = _epoch(spec)
    else:
        run, sync, record = _build(spec)
        _apply_budget(spec["threads"])  # again: building may have loaded another BLAS (SciPy's)
        memory = gpu_memory(impl, device)
        if memory:
            memory[0]()
        if spec.get("breakdown"):
            from compare.bench import parts

            record.update(parts.time_parts(record["step"], spec["warmup_s"], spec["blocks"], spec["block_s"]))
        else:
            record.update(timing.time_blocks(run, spec["warmup_s"], spec["blocks"], spec["block_s"], sync))
        if memory:
            record["gpu_memory"] = memory[1]()
        if "step" in record:
            record["info"] = record.pop("step").record()  # after timing: how the timed calls ran
    # the faster of the two: an implementation's own threads still winding down after its region
    # may slow the second, never the first; a slower machine slows both
    record["reference_s"] = min(reference_before, timing.reference_s())
    record.update(impl=impl, device=device, pid=os.getpid(), budget=applied, threadpools=threadpool_info(),
                  env={k: os.environ.get(k) for k in REPORTED_ENV if k in os.environ})
    if device != "cpu" and "torch" in sys.modules:
        record["gpu"] = gpu_record(device)
    if impl in TORCH_IMPLS and impl != "floor_torch":
        from compare.bench import machine

        record["torch_backend"] = machine.torch_backend()
    return record


def main() -> None:
    """Worker entry (``python -m compare.bench.worker``): read the spec (JSON) from stdin, write the result (JSON) to
    spec["result_file"]: the timing record, or {"error": one line, "traceback": ...}."""
    spec = json.loads(sys.stdin.read())
    try:
        result = _run(spec)
    except Exception as e:  # reported to the parent, which decides whether the bench can go on
        first = (str(e).strip().splitlines() or [""])[0]
        result = {"impl": spec.get("impl"), "error": f"{type(e).__name__}: {first[:300]}",
                  "traceback": traceback.format_exc()}
    Path(spec["result_file"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
