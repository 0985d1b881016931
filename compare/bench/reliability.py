"""Whether a figure can be trusted, and when to time one more process.

Each implementation at each grid point runs in several fresh processes (``grid``); each process
gives one figure, the median of its timed blocks. Processes of the same step differ far more than
blocks within a process do (where the allocator, the thread pools and the hypervisor place a
process stays with it; figures in docs/performance.md, "Enough processes to pin each figure
down"), so the process is the unit of repetition and the published figure is the median of the
per-process figures, with its confidence interval.

The interval is distribution-free (order statistics of the per-process medians): for n values
sorted x₁ ≤ ... ≤ xₙ, [x_k, x_{n+1−k}] holds the median of the distribution they are drawn from
with probability 1 − 2·P(Bin(n, ½) ≤ k − 1), for any continuous distribution (two modes
included). k is the largest with a probability of at least ``CONFIDENCE``; below
``MIN_PROCESSES`` no k qualifies. A bootstrap needs more values than a bench can afford to be
right about its own coverage, and a t-interval assumes a normal spread that two-mode processes
do not have.

Each worker also reports, over its timed region, its wall time, its own CPU time (all its
threads) and the machine's CPU accounting for the CPUs it may run on (``machine.counters``):

- others' CPU use: (machine busy time − the worker's own CPU time) / wall time, in cores. Another
  program on a core the bench's threads need makes multi-threaded BLAS/OpenMP steps collapse
  (a two-thread step waits at every barrier for the thread that lost its core);
- steal: time the hypervisor gave our virtual CPUs to someone else;
- cgroup throttling: time a CPU quota kept the container's threads off the CPUs.
- a slower machine: every worker also times one fixed product (``timing.reference_s``) just
  before and after its work. On a shared host the machine slows down for tens of seconds at a
  time, with no trace in the accounting above (another tenant on the same physical core, or
  contending for its caches); a process whose reference product ran ``SLOW_MAX`` slower than the
  fastest at its grid point ran in such a stretch.

A process that saw any of these is set aside: the figure comes from the undisturbed processes
when there are enough of them. Only then is "machine busy" said, and only about a figure that
could not do without disturbed processes; a figure that is not pinned down on a quiet machine is
reported as processes that vary, with by how much. The load average is recorded before and after
each point but decides nothing: it is a one-minute damped average that counts the bench's own
workers and lags behind the machine.
"""

from __future__ import annotations

import math

# A core taken by another program shows as ~1.0 here; the kernel accounts CPU time in ticks
# (10 ms), up to two ticks per CPU off over a region, so over a timed region of at least
# MIN_REGION_S on 2 CPUs the estimate errs by up to ~0.1 core, and an idle machine's daemons add
# ~0.01-0.05. 0.25 core above the CPUs the bench leaves free separates the two.
OTHERS_MARGIN_CORES = 0.25
MIN_REGION_S = 0.4  # every worker's timed region lasts at least this long (see config.QUICK, FULL)
# Stolen time lengthens a step by about its share of the CPU time; 3 % keeps that well inside the
# interval the bench stands behind (INTERVAL_MAX).
STEAL_MAX = 0.03
# Throttled time stalls the threads outright (often for a whole quota period, 100 ms); 1 % of the
# wall time is already several stalls in a one-second region.
THROTTLE_MAX = 0.01
# The reference product (the faster of its two timings) in fresh processes on a quiet 2-core AMD
# EPYC VM ranged 497-510 µs (2.6 %) over 30 processes; in stretches when the machine ran slow it
# took 7-17 % longer, while a torch step timed in the same processes took 20-70 % longer. 5 %
# is twice the quiet spread. In a bench run of 606 processes on that VM (784-128-10, four
# batches), it flagged 4 of the 202 processes within 5 % of their column's fastest, and 75 of the
# 215 more than 15 % slower: it sets aside processes the machine slowed down, seldom quiet ones,
# and misses most of the slowdowns, which the interval still has to absorb.
SLOW_MAX = 0.05
# The probability that a figure's interval holds the median of its processes' distribution.
CONFIDENCE = 0.90
# The widest interval the bench stands behind: its high end at most 10 % above its low end. The
# published median lies inside it, so it is then within 10 % of the median a rerun would find
# (at CONFIDENCE), and a ratio of two such figures within about ±10 %: finer than the questions
# the bench answers (which implementation is fastest where; within 1.2x of the floor), coarse
# enough that a quiet machine reaches it in a handful of processes.
INTERVAL_MAX = 0.10


def coverage(n: int, k: int) -> float:
    """P(x_k ≤ median ≤ x_{n+1−k}) for n values from a continuous distribution: 1 − 2·P(Bin(n, ½) < k)."""
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n


def interval_rank(n: int, confidence: float = CONFIDENCE) -> int | None:
    """The largest k with coverage(n, k) ≥ confidence (None: n values cannot give that confidence)."""
    ks = [k for k in range(1, n // 2 + 1) if coverage(n, k) >= confidence]
    return max(ks) if ks else None


MIN_PROCESSES = next(n for n in range(1, 100) if interval_rank(n) is not None)  # 5 at 90 %


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """(low, high, coverage): the distribution-free interval of the median of `values` (module
    docstring); None for fewer than ``MIN_PROCESSES`` values."""
    k = interval_rank(len(values), confidence)
    if k is None:
        return None
    x = sorted(values)
    return x[k - 1], x[len(x) - k], coverage(len(x), k)


def median(values: list[float]) -> float:
    x, n = sorted(values), len(values)
    return x[n // 2] if n % 2 else 0.5 * (x[n // 2 - 1] + x[n // 2])


def process_figures(result: dict) -> dict:
    """One worker's figures for the checks: others' cores, steal share, throttled share, CPU use,
    the reference product's time."""
    wall, cpu, m = result["wall_s"], result["cpu_s"], result.get("machine") or {}
    figures = {"utilisation": cpu / wall if wall > 0 else None}
    if "reference_s" in result:
        figures["reference_s"] = result["reference_s"]
    if m:
        figures["others_cores"] = max(0.0, m["busy_s"] - cpu) / wall
        figures["steal"] = m["steal_s"] / (wall * m["cpus"])
        figures["cpus"] = m["cpus"]
        if "throttled_s" in m:
            figures["throttled"] = m["throttled_s"] / wall
    return figures


def fastest_reference(processes) -> float | None:
    """The fastest reference product among `processes` (worker results or their records)."""
    return min((p["reference_s"] for p in processes if "reference_s" in p), default=None)


def disturbances(process: dict, threads: int, reference: float | None = None) -> dict[str, float]:
    """What disturbed one process (empty: nothing seen): "others" (cores other programs used beyond
    those the bench leaves free), "steal" and "throttled" (shares), "slow" (how much slower its
    reference product ran than `reference`), each only above its threshold.

    Args:
        process: a worker's record with ``process_figures``' keys (others_cores, steal, cpus,
            throttled, reference_s).
        threads: the thread budget (CPUs beyond it are left free for others).
        reference: the fastest reference product at the process's grid point (None: not judged).
    """
    seen = {}
    if reference and "reference_s" in process and process["reference_s"] > (1 + SLOW_MAX) * reference:
        seen["slow"] = process["reference_s"] / reference - 1
    if "others_cores" in process:
        free = max(0, process["cpus"] - threads)
        if process["others_cores"] > free + OTHERS_MARGIN_CORES:
            seen["others"] = process["others_cores"]
        if process["steal"] > STEAL_MAX:
            seen["steal"] = process["steal"]
    if process.get("throttled", 0.0) > THROTTLE_MAX:
        seen["throttled"] = process["throttled"]
    return seen


def _busy_reasons(disturbed: list[dict], n: int, cpus, threads: int) -> list[str]:
    """What other programs did, in words, over the `disturbed` processes of `n`."""
    reasons = []
    for key, words in (("others", "other programs used up to {:.1f} of {} CPUs ({} left free)"),
                       ("steal", "up to {:.0f} % of the CPU time stolen by the hypervisor"),
                       ("throttled", "CPU quota throttled up to {:.0f} % of the time"),
                       ("slow", "the machine up to {:.0f} % slower (a reference product timed in each process)")):
        values = [d[key] for d in disturbed if key in d]
        if values:
            worst = max(values) if key == "others" else 100 * max(values)
            text = words.format(worst, cpus, max(0, (cpus or 0) - threads))
            reasons.append(f"{text} in {len(values)} of {n} processes")
    return reasons


def duration(seconds: float) -> str:
    """444 µs, 20.96 ms, 1.23 s: three or four significant digits in the unit that reads best."""
    if seconds < 1e-3:
        return f"{1e6 * seconds:.0f} µs"
    return f"{1e3 * seconds:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def judge(processes: list[dict], threads: int, reference: float | None = None) -> dict:
    """One implementation's figure at one point, and whether the bench stands behind it.

    Args:
        processes: per worker process: {"median_s", and ``process_figures``' keys where the machine
            could be read}.
        threads: the thread budget.
        reference: the fastest reference product at the grid point (``fastest_reference`` of all its
            implementations' processes; None: the processes' own).
    Returns:
        {"median_s", "interval_s": [low, high] or None, "interval_rel": high/low − 1 or None,
        "coverage", "used": processes the figure comes from, "set_aside": disturbed processes left
        out, "pinned": True when the figure stands, "busy": [what other programs did, where the
        figure needed disturbed processes], "reasons": [why it does not stand]}.
    """
    reference = reference or fastest_reference(processes)
    seen = [disturbances(p, threads, reference) for p in processes]
    quiet = [p for p, d in zip(processes, seen) if not d]
    enough = len(quiet) >= MIN_PROCESSES
    used = quiet if enough else processes
    values = [p["median_s"] for p in used]
    found = median_interval(values)
    low, high, cover = found if found else (None, None, None)
    rel = high / low - 1.0 if found and low > 0 else None
    cpus = next((p["cpus"] for p in processes if "cpus" in p), None)
    busy = [] if enough else _busy_reasons([d for d in seen if d], len(processes), cpus, threads)
    reasons = list(busy)
    if found is None:
        reasons.append(f"timed in {len(used)} process{'es' * (len(used) != 1)}: "
                       f"{MIN_PROCESSES} give a {100 * CONFIDENCE:.0f} % interval")
    elif rel > INTERVAL_MAX:
        reasons.append(f"its processes vary: {duration(min(values))} to {duration(max(values))} over {len(values)} "
                       f"processes, the median's {100 * cover:.0f} % interval {duration(low)} to {duration(high)} is "
                       f"{100 * rel:.0f} % wide (> {100 * INTERVAL_MAX:.0f} %)")
    return {"median_s": median(values) if values else None, "interval_s": [low, high] if found else None,
            "interval_rel": rel, "coverage": cover, "used": len(used), "set_aside": len(processes) - len(used),
            "pinned": not reasons, "busy": busy, "reasons": reasons}


def classify_point(judged: dict[str, dict]) -> dict:
    """impl -> ``judge`` result -> {"reliable", "reasons": ["impl: reason", ...], "busy": whether other
    programs' CPU use (steal, throttling) is among them, "widest": the widest interval, relative}."""
    reasons = [f"{impl}: {r}" for impl, j in judged.items() for r in j["reasons"]]
    widths = [j["interval_rel"] for j in judged.values() if j["interval_rel"] is not None]
    return {"reliable": not reasons, "reasons": reasons, "busy": any(j["busy"] for j in judged.values()),
            "widest": max(widths, default=None)}


def summary_line(points: list[dict], threads: int) -> str:
    """The closing line: every figure stood, or which points are marked and what was seen there.
    "machine busy" only where other programs' CPU use (steal, throttling) or a slower machine was seen."""
    marked = [p for p in points if not p["reliability"]["reliable"]]
    if not marked:
        return (f"every figure stood: each one's {100 * CONFIDENCE:.0f} % interval within "
                f"{100 * INTERVAL_MAX:.0f} % ({len(points)} of {len(points)} points)")
    busy = [p for p in marked if p["reliability"]["busy"]]
    varied = [p for p in marked if not p["reliability"]["busy"]]
    parts = []
    if busy:
        advice = ("on a machine that stays busy, --threads 1 leaves the other CPUs to them, and its figures hold up "
                  "while they need no more" if threads > 1 else "rerun when the machine is quieter")
        parts.append(f"machine busy: other programs' CPU use or a slower machine seen at {len(busy)} of {len(points)} "
                     f"points, marked !; "
                     f"{advice}")
    if varied:
        widths = [p["reliability"]["widest"] for p in varied if p["reliability"]["widest"] is not None]
        spread = f", intervals up to {100 * max(widths):.0f} % wide" if widths else ""
        parts.append(f"{len(varied)} of {len(points)} points marked ! because their processes vary{spread}, with no "
                     f"other program's CPU use seen (this machine's own variation); --max-processes lets the "
                     f"bench time more processes to pin them down")
    return "; ".join(parts)
