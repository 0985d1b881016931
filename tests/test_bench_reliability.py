"""compare/bench/reliability.py and the rounds of compare/bench/grid.py, on synthetic per-process
figures: the interval of the median, when a figure stands, when "machine busy" may be said, and
how many processes the bench adds while a figure is not pinned down."""

import itertools

import numpy as np
import pytest

from compare.bench import config, grid, reliability, worker
from compare.bench.config import Settings


def result(median_s=1e-3, wall_s=0.5, cpu_s=1.0, others_s=0.01, steal_s=0.0, cpus=2, throttled_s=0.0,
           reference_s=500e-6):
    """A synthetic worker result: 2 threads busy for 0.5 s on 2 CPUs, other programs using `others_s`
    CPU seconds meanwhile (default: a daemon's tick), the reference product taking `reference_s`."""
    return {"times_s": [median_s] * 3, "steps": 30, "wall_s": wall_s, "cpu_s": cpu_s, "reference_s": reference_s,
            "machine": {"busy_s": cpu_s + others_s, "steal_s": steal_s, "cpus": cpus, "throttled_s": throttled_s}}


def judge(results, threads=2, reference=None):
    return reliability.judge([grid.process_record(r) for r in results], threads, reference)


def point(results_by_impl, threads=2):
    judged = {impl: judge(rs, threads) for impl, rs in results_by_impl.items()}
    return {"reliability": reliability.classify_point(judged)}


QUIET = [result(m) for m in (1.00e-3, 1.02e-3, 0.99e-3, 1.03e-3, 1.01e-3)]
# processes of one step on a quiet VM, in two modes (as a torch eager step was seen: 444 to 958 µs)
TWO_MODES = [result(m) for m in (455e-6, 752e-6, 444e-6, 958e-6, 751e-6, 460e-6, 749e-6)]


# ------------------------------------------------------------------------------ the interval


def test_the_interval_of_the_median_comes_from_order_statistics():
    assert reliability.MIN_PROCESSES == 5  # [min, max] of 5 holds the median with 1 − 2/2⁵ = 0.9375
    assert reliability.coverage(5, 1) == 1 - 2 / 32 and reliability.interval_rank(4) is None
    assert [reliability.interval_rank(n) for n in (5, 7, 8, 10, 11, 15)] == [1, 1, 2, 2, 3, 4]
    assert all(reliability.coverage(n, reliability.interval_rank(n)) >= 0.90 for n in range(5, 40))
    assert reliability.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0, 0.9375)
    assert reliability.median_interval([1.0, 2.0, 3.0, 4.0]) is None
    low, high, cover = reliability.median_interval(list(range(1, 12)))  # n = 11: k = 3
    assert (low, high) == (3, 9) and cover == pytest.approx(1 - 2 * (1 + 11 + 55) / 2**11)


def test_the_interval_holds_the_median_at_least_as_often_as_it_promises_even_for_two_modes():
    rng = np.random.default_rng(0)

    def draw(n):  # 45 % of processes near 455 µs, 55 % near 752 µs
        return np.where(rng.random(n) < 0.45, rng.normal(455e-6, 8e-6, n), rng.normal(752e-6, 8e-6, n))

    true_median = float(np.median(draw(400_000)))
    for n in (5, 9, 15):
        inside = [low <= true_median <= high
                  for low, high, _ in (reliability.median_interval(list(draw(n))) for _ in range(2000))]
        assert np.mean(inside) >= 0.90, n


# ------------------------------------------------------------------------------ judging a figure


def test_processes_that_agree_make_a_figure_that_stands():
    figure = judge(QUIET)
    assert figure["pinned"] and figure["reasons"] == [] and figure["busy"] == []
    assert figure["median_s"] == pytest.approx(1.01e-3) and figure["interval_s"] == [0.99e-3, 1.03e-3]
    assert figure["interval_rel"] == pytest.approx(0.04 / 0.99) and figure["used"] == 5 and figure["set_aside"] == 0
    p = point({"manual": QUIET, "torch": QUIET})
    assert p["reliability"] == {"reliable": True, "reasons": [], "busy": False, "widest": figure["interval_rel"]}
    assert reliability.summary_line([p, p], threads=2).startswith("every figure stood: each one's 90 % interval")


def test_an_idle_machine_with_processes_far_apart_is_never_called_busy():
    figure = judge(TWO_MODES)
    assert not figure["pinned"] and figure["busy"] == []
    [reason] = figure["reasons"]
    assert reason.startswith("its processes vary: 444 µs to 958 µs over 7 processes, the median's 98 % interval "
                             "444 µs to 958 µs is 116 % wide (> 10 %)")
    p = point({"manual": QUIET, "torch": TWO_MODES})
    assert p["reliability"]["reasons"] == [f"torch: {reason}"] and not p["reliability"]["busy"]
    line = reliability.summary_line([p, point({"manual": QUIET})], threads=2)
    assert "machine busy" not in line and "busy" not in line
    assert line.startswith("1 of 2 points marked ! because their processes vary, intervals up to 116 % wide, "
                           "with no other program's CPU use seen")


def test_other_programs_cpu_use_steal_and_throttling_are_called_busy():
    busy = [result(m, others_s=0.5) for m in (1e-3, 1.5e-3, 2e-3, 1.1e-3, 3e-3)]  # one core taken: 0.5 s / 0.5 s
    figure = judge(busy)
    assert not figure["pinned"]
    assert figure["busy"] == ["other programs used up to 1.0 of 2 CPUs (0 left free) in 5 of 5 processes"]
    assert figure["reasons"][0] == figure["busy"][0] and figure["reasons"][1].startswith("its processes vary")
    assert judge([result(steal_s=0.05)] * 5)["busy"] == [  # 5 % of 2 × 0.5 CPU seconds
        "up to 5 % of the CPU time stolen by the hypervisor in 5 of 5 processes"]
    assert judge([result(throttled_s=0.05)] * 5)["busy"] == [
        "CPU quota throttled up to 10 % of the time in 5 of 5 processes"]
    p = point({"manual": QUIET, "torch": busy})
    line = reliability.summary_line([p, point({"manual": QUIET})], threads=2)
    assert line.startswith("machine busy: other programs' CPU use or a slower machine seen at 1 of 2 points, marked !; "
                           "on a machine that stays busy, --threads 1 leaves the other CPUs to them")
    assert "rerun when the machine is quieter" in reliability.summary_line([p], threads=1)


def test_a_core_the_bench_leaves_free_may_be_used_by_others():
    one_thread = [result(m, cpu_s=0.5, others_s=0.5) for m in (1.00e-3, 1.02e-3, 0.99e-3, 1.03e-3, 1.01e-3)]
    assert judge(one_thread, threads=1)["pinned"]  # the second CPU is left free: no disturbance
    assert not judge([result(cpu_s=0.5, others_s=0.7)] * 5, threads=1)["pinned"]  # 1.4 cores: above 1 + 0.25


def test_disturbed_processes_are_set_aside_when_enough_quiet_ones_remain():
    mixed = QUIET + [result(5e-3, others_s=0.5), result(9e-3, others_s=0.6)]
    figure = judge(mixed)
    assert figure["pinned"] and figure["busy"] == [] and figure["used"] == 5 and figure["set_aside"] == 2
    assert figure["median_s"] == pytest.approx(1.01e-3)
    too_few = judge(QUIET[:4] + [result(5e-3, others_s=0.5)])
    assert not too_few["pinned"] and too_few["busy"][0].endswith("in 1 of 5 processes")


def test_processes_in_a_slower_stretch_of_the_machine_are_set_aside():
    """A shared host slows the machine down for tens of seconds with no trace in the CPU accounting;
    the reference product, the same work in every process, shows it."""
    slowed = [result(1.4e-3, reference_s=550e-6), result(1.5e-3, reference_s=540e-6)]  # 10 % and 8 % slower
    figure = judge(QUIET + slowed)
    assert figure["pinned"] and figure["set_aside"] == 2 and figure["median_s"] == pytest.approx(1.01e-3)
    assert judge(QUIET + slowed[:1] + [result(1.4e-3, reference_s=520e-6)])["set_aside"] == 1  # 4 %: within SLOW_MAX
    too_few = judge(QUIET[:4] + slowed)
    assert not too_few["pinned"]
    assert too_few["busy"] == ["the machine up to 10 % slower (a reference product timed in each process) in 2 of 6 "
                               "processes"]
    # the fastest reference of the whole point, not of one implementation's processes, is the machine's speed
    all_slow = [result(1.4e-3, reference_s=550e-6)] * 5
    assert judge(all_slow)["pinned"] and not judge(all_slow, reference=500e-6)["pinned"]


def test_the_slower_machine_is_judged_against_every_implementation_at_the_point():
    runs = {"manual": QUIET, "torch": [result(1.4e-3, reference_s=550e-6)] * 5}
    figures = grid.summarize_runs(runs, threads=2)
    assert figures["manual"]["pinned"] and not figures["torch"]["pinned"]
    assert all(p["set_aside"] for p in figures["torch"]["processes"])
    assert figures["torch"]["busy"][0].startswith("the machine up to 10 % slower")


def test_a_figure_from_too_few_processes_does_not_stand():
    assert judge(QUIET[:3])["reasons"] == ["timed in 3 processes: 5 give a 90 % interval"]
    unread = [{**r, "machine": {}} for r in TWO_MODES]  # no /proc/stat: the spread is still judged
    assert judge(unread)["reasons"][0].startswith("its processes vary")


# ------------------------------------------------------------------------------ adding processes


def settings(max_processes=9, budget=3.0, threads=2):
    timing = config.Timing(warmup_s=0, blocks=1, block_s=0, layout_s=0, max_processes=max_processes, budget=budget)
    return Settings([(784, 10)], [32], "float32", threads, {}, 0, timing, None)


def spawn_from(figures: dict, clock=None, seconds_per_process=0.0):
    """A fake ``worker.spawn``: impl -> an endless iterator of synthetic results; each spawn advances `clock`."""
    sources = {impl: iter(rs) for impl, rs in figures.items()}
    calls = []

    def spawn(spec):
        calls.append(spec["impl"])
        if clock is not None:
            clock.now += seconds_per_process
        return next(sources[spec["impl"]])

    return spawn, calls


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_more_processes_are_added_while_the_interval_is_wide_up_to_the_maximum(monkeypatch):
    clock = Clock()
    spawn, calls = spawn_from({"manual": itertools.cycle(QUIET), "torch": itertools.cycle(TWO_MODES)}, clock, 1.0)
    monkeypatch.setattr(worker, "spawn", spawn)
    runs = grid.spawn_rounds(["manual", "torch"], lambda impl: {"impl": impl}, settings(max_processes=9), "here", {},
                           clock=clock)
    assert len(runs["manual"]) == 5  # pinned after the first rounds
    assert len(runs["torch"]) == 9  # still wide: processes added up to the maximum
    assert calls[:10] == ["manual", "torch", "torch", "manual"] * 2 + ["manual", "torch"]  # rotated rounds


def test_processes_are_added_only_within_the_time_budget(monkeypatch):
    clock = Clock()
    spawn, calls = spawn_from({"manual": itertools.cycle(QUIET), "torch": itertools.cycle(TWO_MODES)}, clock, 1.0)
    monkeypatch.setattr(worker, "spawn", spawn)
    runs = grid.spawn_rounds(["manual", "torch"], lambda impl: {"impl": impl}, settings(max_processes=50, budget=1.5),
                           "here", {}, clock=clock)
    # the first 5 rounds took 10 s; the point may take 15 s: 5 more torch processes, then the budget is spent
    assert len(runs["manual"]) == 5 and len(runs["torch"]) == 10 and clock.now == 15.0


def test_processes_disturbed_by_other_programs_are_replaced_by_more(monkeypatch):
    disturbed = [result(5e-3, others_s=0.5)] * 2
    clock = Clock()
    spawn, _ = spawn_from({"manual": iter(disturbed + QUIET + QUIET)}, clock, 1.0)
    monkeypatch.setattr(worker, "spawn", spawn)
    runs = grid.spawn_rounds(["manual"], lambda impl: {"impl": impl}, settings(), "here", {}, clock=clock)
    assert len(runs["manual"]) == 7  # 2 set aside, then 5 quiet ones
    figure = grid.summarize_runs(runs, threads=2)["manual"]
    assert figure["pinned"] and figure["set_aside"] == 2
    assert [p["set_aside"] for p in figure["processes"]] == [True, True] + [False] * 5
