"""Where the time of a step goes: forward, loss, backward, update (``crosscheck bench --breakdown``).

Two ways to measure, each used where it is fair:

- parts timed inside whole steps (``steps.Step.parts``): the step runs as it always does, and a
  clock (``parts.PartClock``) reads the time as each part ends; on a GPU it waits for the queued work
  first. Each part is thus the code the step runs, in its order, with the caches and allocator
  state the previous part leaves: nothing runs that the step does not run. The clock costs about
  0.1 µs a mark on the CPU (4-6 marks a step); each worker also times whole steps (``run``), and the
  sum of the parts is printed beside the whole step. Where two parts are one piece of code (the
  hand-derived step's weight step fused into its weight-gradient product, torch.compile's forward
  and loss in one graph) they are timed together, under one name.
- prefixes, for jax.jit, whose whole step is one compiled program with no parts to time apart: the
  programs "forward", "forward + loss", "+ backward" (``value_and_grad``) and the whole step are each
  compiled and timed, and a part is the difference between two prefixes: what it adds to the
  program. XLA fuses across parts, so a difference can be small or even negative.

Each implementation at each point runs in fresh processes as in the bench (``grid``: the same
rounds and the same reliability rule, judged on the whole step); a part's figure is the median over
those processes of each process's median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compare import options
from compare.bench import grid, output, reliability
from compare.bench.config import Settings

IMPLS = ("manual", "manual_torch", "torch", "compiled", "jax")
PARTS = ("forward", "loss", "backward", "update", "other")
# a part of one implementation -> the columns it spans in the table (fused parts span two)
SPANS = {"forward + loss": ("forward", "loss"), "backward + update": ("backward", "update")}
JSON_NAME, PLOT_NAME = "breakdown.json", "breakdown.png"


# ------------------------------------------------------------------------------ the parent side


def summarize(runs: dict[str, list[dict]], threads: int) -> dict:
    """impl -> {"whole": the whole step's figure (``reliability.judge``), "parts_s": part -> median over
    processes of each process's median, "sum_s", "method"}."""
    figures = grid.summarize_runs(runs, threads)
    out = {}
    for impl, results in runs.items():
        names = sorted({p for r in results for p in r["parts_s"]}, key=lambda p: PARTS.index(SPANS.get(p, (p,))[0]))
        parts = {p: reliability.median([float(np.median(r["parts_s"][p])) for r in results]) for p in names}
        out[impl] = {"whole": {k: v for k, v in figures[impl].items() if k != "processes"},
                     "parts_s": parts, "sum_s": sum(parts.values()), "method": results[0]["method"],
                     "processes": len(results)}
    return out


def run(x_train: np.ndarray, y_train: np.ndarray, s: Settings, tmp: Path, log=print) -> tuple[list[dict], dict]:
    """Every point of `s` (the batches ``grid.run_grid`` takes), each implementation of ``IMPLS`` not
    skipped, in worker processes -> ([{"arch", "batch", "dtype", "impls": ``summarize``, "skipped"}],
    impl -> one worker result, for the machine record)."""
    perm = np.random.default_rng(0).permutation(len(x_train))
    points, seen = [], {}
    for sizes in s.archs:
        for batch in s.batches:
            arch, idx = "-".join(map(str, sizes)), perm[:batch]
            batch_file = tmp / f"{arch}-b{batch}.npz"
            np.savez(batch_file, x=np.ascontiguousarray(x_train[idx], dtype=s.dtype), y=y_train[idx])
            skipped = dict(s.skipped)
            runs = grid.spawn_rounds(list(IMPLS), lambda impl: {**grid.worker_spec(impl, sizes, batch_file, s),
                                                                "breakdown": True}, s, f"{arch} batch {batch}", skipped)
            point = {"arch": arch, "batch": batch, "dtype": s.dtype, "impls": summarize(runs, s.threads),
                     "skipped": skipped}
            seen.update({impl: results[0] for impl, results in runs.items()})
            log(f"  {arch} batch {batch}: " + ", ".join(f"{impl} {1e6 * r['sum_s']:.0f} µs"
                                                        for impl, r in point["impls"].items()))
            points.append(point)
    return points, seen


def _cells(r: dict) -> list[str]:
    """The part columns of one implementation: µs, "(with loss)" where a fused part spans two."""
    cells = dict.fromkeys(PARTS, "-")
    for part, seconds in r["parts_s"].items():
        span = SPANS.get(part, (part,))
        cells[span[0]] = f"{1e6 * seconds:.0f}"
        for other in span[1:]:
            cells[other] = f"(in {span[0]})"
    return [cells[p] for p in PARTS]


def format_table(points: list[dict]) -> str:
    """One row per point and implementation: each part in µs, their sum, the whole step timed in the
    same processes (median ±: the wider side of its interval), and how the parts were measured."""
    rows = [("config", "impl", *(f"{p} µs" for p in PARTS), "sum µs", "whole step µs", "measured", "!")]
    for pt in points:
        for impl, r in pt["impls"].items():
            whole = r["whole"]
            half = output.half_width(whole)
            rows.append((f"{pt['arch']} b{pt['batch']}", impl, *_cells(r), f"{1e6 * r['sum_s']:.0f}",
                         f"{1e6 * whole['median_s']:.0f} " + (f"±{100 * half:.0f}%" if half is not None else "±?"),
                         "in the step" if r["method"] == "parts" else "prefixes", "" if whole["pinned"] else "!"))
    return options.format_table(rows, "ll" + "r" * 8 + "ll")


EXPLAINED = ("µs per step, the median over processes of each one's median; 'in the step': parts timed inside whole "
             "steps, 'prefixes': differences between compiled programs doing the step up to each part; sum = the "
             "parts added, whole step = whole steps timed in the same processes (! where that figure does not stand)")


COLORS = {"forward": "C0", "loss": "C1", "backward": "C2", "update": "C3", "other": "0.6",
          "forward + loss": "C0", "backward + update": "C2"}


def plot(points: list[dict], path: Path, title: str) -> None:
    """breakdown.png: per point, one horizontal bar per implementation, its parts stacked (µs);
    fused parts hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compare.report import save_png

    cols = min(len(points), 4)
    rows = -(-len(points) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 4.2 * cols), 1.2 + (0.45 * len(IMPLS) + 0.8) * rows),
                             squeeze=False)
    seen = {}
    for ax, pt in zip(axes.flat, points):
        impls = list(pt["impls"])
        for y, impl in enumerate(impls):
            left = 0.0
            for part, seconds in pt["impls"][impl]["parts_s"].items():
                width = max(1e6 * seconds, 0.0)
                bar = ax.barh(y, width, left=left, color=COLORS.get(part, "0.8"), hatch="//" if part in SPANS else "",
                              edgecolor="white", lw=0.5)
                seen.setdefault(part, bar)
                left += width
            ax.plot([1e6 * pt["impls"][impl]["whole"]["median_s"]] * 2, [y - 0.4, y + 0.4], color="k", lw=1)
        ax.set_yticks(range(len(impls)), impls, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{pt['arch']} batch {pt['batch']}", fontsize=9)
        ax.set_xlabel("µs per step", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    order = sorted(seen, key=lambda p: PARTS.index(SPANS.get(p, (p,))[0]) + 0.5 * (p in SPANS))
    fig.legend([seen[p] for p in order], order, loc="lower center", ncol=min(len(order), 4), fontsize=8, frameon=False)
    fig.suptitle(f"{title}\nparts stacked (hatched: two parts in one piece of code); black tick: the whole step timed "
                 f"in the same processes", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_png(fig, path)
    plt.close(fig)
