"""What the machine is, and how busy it is.

``counters()`` reads the kernel's CPU accounting (Linux ``/proc/stat``, per CPU this process may
run on; the cgroup's throttling) so that a worker can tell, over its timed region, how much CPU
time *others* used next to it and how much the hypervisor stole. ``host()`` names the CPU,
cores and library versions; the BLAS libraries come from the workers (``threadpoolctl`` in each),
the torch and JAX backends from their workers too: the bench records what ran, not what the
parent process happens to load.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# cgroup v2, then v1: CPU time the cgroup was refused by its quota (throttled_usec / throttled_time ns)
CGROUP_CPU_STAT = ((Path("/sys/fs/cgroup/cpu.stat"), "throttled_usec", 1e-6),
                   (Path("/sys/fs/cgroup/cpu/cpu.stat"), "throttled_time", 1e-9))
VERSIONED = ("numpy", "scipy", "torch", "torchvision", "jax", "jaxlib", "threadpoolctl")


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_lines(text: str, allowed: set[int] | None):
    """The per-CPU lines of /proc/stat ("cpu0 u n s idle iowait irq softirq steal ..."), those in
    `allowed` only (None: all)."""
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and (allowed is None or int(name[3:]) in allowed):
            yield [int(f) for f in fields]


def read_proc_stat(text: str, allowed: set[int] | None = None, hz: float = 100.0) -> dict:
    """/proc/stat's per-CPU counters summed over the CPUs in `allowed`, in seconds.

    Returns {"busy_s": user+nice+system+irq+softirq, "steal_s": steal, "cpus": how many CPUs}.
    Guest time is already inside user time; iowait is idle.
    """
    busy = steal = cpus = 0
    for f in _cpu_lines(text, allowed):
        f = f + [0] * (8 - len(f))
        busy += f[0] + f[1] + f[2] + f[5] + f[6]
        steal += f[7]
        cpus += 1
    return {"busy_s": busy / hz, "steal_s": steal / hz, "cpus": cpus}


def _throttled_s() -> float | None:
    for path, key, unit in CGROUP_CPU_STAT:
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) * unit
        except (OSError, ValueError):
            continue
    return None


def counters() -> dict | None:
    """The machine's CPU accounting now (None where /proc/stat cannot be read, e.g. not Linux):
    busy_s, steal_s, cpus (over the CPUs this process may use), throttled_s (cgroup, or None)."""
    try:
        text = PROC_STAT.read_text()
    except OSError:
        return None
    stat = read_proc_stat(text, _allowed_cpus(), float(os.sysconf("SC_CLK_TCK")))
    return {**stat, "throttled_s": _throttled_s()}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def parse_cpuinfo(text: str, allowed: set[int] | None = None) -> dict:
    """/proc/cpuinfo -> model name, vendor_id, and the physical cores among the CPUs in `allowed`
    (None: all): distinct (physical id, core id) pairs, so that SMT siblings count once."""
    fields, cores, cpu, physical = {}, set(), None, "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "vendor_id") and key not in fields:
            fields[key] = value
        elif key == "processor":
            cpu, physical = int(value), "0"
        elif key == "physical id":
            physical = value
        elif key == "core id" and (allowed is None or cpu in allowed):
            cores.add((physical, value))
    return {"model": fields.get("model name"), "vendor": fields.get("vendor_id"), "physical_cores": len(cores) or None}


def _cpuinfo() -> dict:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(), _allowed_cpus())
    except OSError:
        return {}


def default_threads() -> int:
    """The bench's default thread budget: the physical cores this process may use (what torch takes
    by default; a second hyperthread on a core adds little to matrix products), else the CPUs."""
    allowed = _allowed_cpus()
    return _cpuinfo().get("physical_cores") or (len(allowed) if allowed else None) or os.cpu_count() or 1


def versions() -> dict:
    """Python and the installed versions of the libraries the bench may load (None: not installed)."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def host(threads: int) -> dict:
    """The machine record's parent-side part: CPU model and vendor, cores, platform, versions."""
    info = _cpuinfo()
    allowed = _allowed_cpus()
    return {"cpu": info.get("model") or platform.processor() or None, "vendor": info.get("vendor"),
            "cores": os.cpu_count(), "physical_cores": info.get("physical_cores"),
            "usable_cpus": len(allowed) if allowed else None, "threads": threads,
            "platform": platform.platform(), "versions": versions()}


def blas_libraries(worker_pools: dict[str, list[dict]]) -> list[dict]:
    """The BLAS/OpenMP libraries the workers loaded, each once (by file path), with the workers
    that loaded it: threadpoolctl's user_api, internal_api, prefix, version, architecture (the kernel
    OpenBLAS chose for this CPU), threading_layer and filepath.

    Args:
        worker_pools: implementation -> threadpoolctl.threadpool_info() of one of its workers.
    """
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "filepath")
    seen: dict[str, dict] = {}
    for impl, pools in worker_pools.items():
        for pool in pools:
            lib = seen.setdefault(pool.get("filepath"), {k: pool.get(k) for k in keys if k in pool})
            lib.setdefault("loaded_by", []).append(impl)
    return list(seen.values())


def torch_backend() -> dict:
    """torch's CPU backend: MKL and oneDNN (mkldnn) availability and versions, the BLAS it was built
    with, the CPU capability its kernels dispatch to, its threads. Call in a process that imported torch."""
    import torch

    config = torch.__config__.show()
    build = next((line.split(":", 1)[1] for line in config.splitlines() if "Build settings:" in line), "")
    settings = dict(item.strip().split("=", 1) for item in build.split(",") if "=" in item)
    libraries = [line.strip(" -") for line in config.splitlines()
                 if "Math Kernel Library" in line or "MKL-DNN" in line or "oneDNN" in line]
    return {"mkl": torch.backends.mkl.is_available(), "onednn": torch.backends.mkldnn.is_available(),
            "blas_info": settings.get("BLAS_INFO"), "lapack_info": settings.get("LAPACK_INFO"),
            "libraries": libraries, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "version": torch.__version__}


def record(threads: int, workers: dict[str, dict]) -> dict:
    """The machine record of bench.json: ``host`` plus what the workers reported: each BLAS and
    OpenMP library with the kernel it chose, torch's backend, JAX's backend, the GPU (None on the CPU).

    Args:
        workers: implementation -> one of its worker results (threadpools, torch_backend, info).
    """
    found = host(threads)
    found["blas"] = blas_libraries({impl: r.get("threadpools", []) for impl, r in workers.items()})
    torch_worker = workers.get("torch") or workers.get("epoch_torch") or {}
    found["torch_backend"] = torch_worker.get("torch_backend")
    jax_info = (workers.get("jax") or {}).get("info") or {}
    found["jax_backend"] = {k: jax_info[k] for k in ("backend", "devices", "device") if k in jax_info} or None
    found["gpu"] = next((r["gpu"] for r in workers.values() if r.get("gpu")), None)
    return found
