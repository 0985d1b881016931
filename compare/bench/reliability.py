"""Whether a figure can be trusted: the machine was quiet and the repeated processes agree.

Each worker reports, over its timed region, its wall time, its own CPU time (all its threads) and
the machine's CPU accounting for the CPUs it may run on (``machine.counters``). From these:

- others' CPU use: (machine busy time − the worker's own CPU time) / wall time, in cores. Another
  program on a core the bench's threads need makes multi-threaded BLAS/OpenMP steps collapse
  (a two-thread step waits at every barrier for the thread that lost its core), so its figure
  says nothing about the implementation;
- steal: time the hypervisor gave our virtual CPUs to someone else;
- cgroup throttling: time a CPU quota kept the container's threads off the CPUs;
- the spread between the repeated processes of one implementation, of their medians and of
  their CPU use per wall second (the same step in two processes on a quiet machine keeps its
  threads equally busy; a thread descheduled in one of them changes it).

The load average is recorded before and after each point but decides nothing: it is a
one-minute damped average that counts the bench's own workers and lags behind the machine.
"""

from __future__ import annotations

# A core taken by another program shows as ~1.0 here; the kernel accounts CPU time in ticks
# (10 ms), up to two ticks per CPU off over a region, so over a timed region of at least
# MIN_REGION_S on 2 CPUs the estimate errs by up to ~0.1 core, and an idle machine's daemons add
# ~0.01-0.05. 0.25 core above the CPUs the bench leaves free separates the two.
OTHERS_MARGIN_CORES = 0.25
MIN_REGION_S = 0.4  # every worker's timed region lasts at least this long (see config.QUICK, FULL)
# Stolen time lengthens a step by about its share of the CPU time; 3 % keeps that well inside the
# 10 % by which the bench promises each figure matches the same step timed alone.
STEAL_MAX = 0.03
# Throttled time stalls the threads outright (often for a whole quota period, 100 ms); 1 % of the
# wall time is already several stalls in a one-second region.
THROTTLE_MAX = 0.01
# The bench promises each figure within 10 % of the step timed alone; two processes of the same
# step further apart than that leave the figure's error unknown at that scale.
SPREAD_MAX = 0.10
# CPU use per wall second of the same step in two processes on a quiet machine differs by a few %
# (spin-waits and sleeps fall alike); a thread that lost its core for part of the region moves it
# by much more (a two-thread step with one core taken: 2.0 -> ~1.0).
UTILISATION_SPREAD_MAX = 0.25


def process_figures(result: dict) -> dict:
    """One worker's figures for the checks: others' cores, steal share, throttled share, CPU use."""
    wall, cpu, m = result["wall_s"], result["cpu_s"], result.get("machine") or {}
    figures = {"utilisation": cpu / wall if wall > 0 else None}
    if m:
        figures["others_cores"] = max(0.0, m["busy_s"] - cpu) / wall
        figures["steal"] = m["steal_s"] / (wall * m["cpus"])
        figures["cpus"] = m["cpus"]
        if "throttled_s" in m:
            figures["throttled"] = m["throttled_s"] / wall
    return figures


def _spread(values: list[float]) -> float:
    """max/min − 1 (0 for fewer than two values)."""
    return max(values) / min(values) - 1.0 if len(values) > 1 and min(values) > 0 else 0.0


def _machine_reasons(figures: list[dict], threads: int) -> list[str]:
    """Others' CPU use, steal and throttling, each judged on the worst of the processes."""
    reasons = []
    measured = [f for f in figures if "others_cores" in f]
    if measured:
        cpus, others = measured[0]["cpus"], max(f["others_cores"] for f in measured)
        free = max(0, cpus - threads)
        if others > free + OTHERS_MARGIN_CORES:
            reasons.append(f"other programs used {others:.1f} of {cpus} CPUs ({free} left free)")
        steal = max(f["steal"] for f in measured)
        if steal > STEAL_MAX:
            reasons.append(f"{100 * steal:.0f} % of the CPU time stolen by the hypervisor")
    throttled = max((f.get("throttled", 0.0) for f in figures), default=0.0)
    if throttled > THROTTLE_MAX:
        reasons.append(f"CPU quota throttled {100 * throttled:.0f} % of the time")
    return reasons


def classify(processes: list[dict], threads: int) -> list[str]:
    """Reasons why one implementation's figure at one point is unreliable ([] when it is stable).

    Args:
        processes: per worker process: {"median_s", "wall_s", "cpu_s", "machine": counter deltas
            (``timing.counter_deltas``; empty where the machine cannot be read)}.
        threads: the thread budget (CPUs beyond it are left free for others).
    """
    figures = [process_figures(p) for p in processes]
    reasons = _machine_reasons(figures, threads)
    if len(processes) < 2:
        reasons.append("timed in one process only")
    spread = _spread([p["median_s"] for p in processes])
    if spread > SPREAD_MAX:
        reasons.append(f"its processes {100 * spread:.0f} % apart")
    use = [f["utilisation"] for f in figures if f["utilisation"]]
    if _spread(use) > UTILISATION_SPREAD_MAX:
        reasons.append(f"its processes kept {min(use):.2f} to {max(use):.2f} CPUs busy")
    return reasons


def classify_point(per_impl: dict[str, list[dict]], threads: int) -> dict:
    """-> {"reliable": bool, "reasons": ["impl: reason", ...]} over every implementation timed."""
    reasons = [f"{impl}: {r}" for impl, processes in per_impl.items() for r in classify(processes, threads)]
    return {"reliable": not reasons, "reasons": reasons}


def summary_line(points: list[dict]) -> str | None:
    """The closing line when some points are unreliable (None when all are stable)."""
    bad = sum(not p["reliability"]["reliable"] for p in points)
    return f"machine busy: {bad} of {len(points)} points unreliable; rerun on an idle machine" if bad else None
