"""What the bench shows: the machine it ran on, the table, why figures are unreliable, the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compare import options
from compare.bench import reliability
from compare.bench.config import IMPLS

COLUMNS = {"manual": "manual µs", "manual_torch": "manual on torch µs", "yardstick": "20-line µs", "torch": "torch µs", "compiled": "compiled µs",
           "manual_compiled": "manual compiled µs", "jax_eager": "jax eager µs", "manual_jax_eager": "manual jax eager µs",
           "jax": "jax.jit µs", "manual_jax": "manual jax.jit µs",
           "floor_numpy": "floor µs (numpy)", "floor_torch": "floor µs (torch)"}
RATIOS = {"manual_over_torch": "manual/torch", "manual_over_jax": "manual/jax", "manual_over_floor": "manual/floor", "manual_torch_over_yardstick": "on torch/20-line",
          "autograd_cost": "autograd × torch", "autograd_cost_compiled": "× torch.compile",
          "autograd_cost_jax_eager": "× jax eager", "autograd_cost_jax": "× jax.jit"}
AUTOGRAD_LINE = ("autograd × torch = torch / manual on torch, × torch.compile = compiled / manual compiled, × jax eager "
                 "= jax eager / manual jax eager, × jax.jit = jax.jit / manual jax.jit: each autograd step over the same "
                 "hand-derived step in the same library and mode (eager or compiled), the same kernels: what autograd "
                 "itself costs")
SHOWN_VERSIONS = ("numpy", "scipy", "torch", "jax")
NAMES = {"compiled": "torch.compile", "manual_compiled": "torch.compile of the hand-derived step", "jax": "jax.jit",
         "manual_jax": "jax.jit of the hand-derived step", "jax_eager": "jax eager", "manual_jax_eager": "hand-derived jax eager"}


def _library(lib: dict) -> str:
    """'openblas 0.3.30 SkylakeX (manual, torch)': name, version, the kernel it chose, which
    implementations' workers loaded it (an OpenMP runtime by its file name, e.g. libgomp)."""
    name = lib.get("prefix") if lib.get("internal_api") == "openmp" else lib.get("internal_api")
    details = " ".join(str(lib[k]) for k in ("version", "architecture") if lib.get(k))
    return f"{name or '?'}{' ' + details if details else ''} ({', '.join(lib.get('loaded_by', []))})"


def head(machine: dict, config: dict) -> list[str]:
    """The lines above the table: CPU, cores, threads and processes, BLAS kernels, backends, versions,
    and which function the manual column times."""
    versions = machine["versions"]
    lines = [f"machine: {machine['cpu'] or 'unknown CPU'} ({machine['vendor'] or 'unknown vendor'}), "
             f"{machine['cores']} cores; {config['threads']} threads for every implementation, each timed in "
             f"{config['min_processes']} to {config['max_processes']} fresh processes per point (interleaved; "
             f"more while its figure's interval is wider than {100 * config['interval_max']:.0f} %)",
             "BLAS/OpenMP: " + ("; ".join(_library(lib) for lib in machine["blas"]) or "none found")]
    tb = machine.get("torch_backend")
    if tb:
        lines.append(f"torch backend: BLAS {tb['blas_info']}, MKL {'on' if tb['mkl'] else 'off'}, "
                     f"oneDNN {'on' if tb['onednn'] else 'off'}, CPU capability {tb['cpu_capability']}")
    lines.append("versions: " + ", ".join(f"{k} {versions.get(k) or '-'}" for k in SHOWN_VERSIONS))
    lines.append(device_line(config.get("device", "cpu"), machine.get("gpu")))
    if config.get("manual_step"):
        lines.extend(manual_lines(config["manual_step"]))
    if config.get("manual_torch_step"):
        lines.extend(manual_lines(config["manual_torch_step"], "manual on torch"))
    return lines


def device_line(device: str, gpu: dict | None) -> str:
    """'device: cpu', or the GPU the torch workers ran on: name, memory, CUDA version."""
    if device == "cpu" or not gpu:
        return f"device: {device}"
    return (f"device: {device}, {gpu['name']} ({gpu['memory_bytes'] / 2**30:.0f} GiB, compute capability "
            f"{gpu['capability']}, CUDA {gpu['cuda']}); timed with torch.cuda.synchronize around each block")


def memory_lines(points: list[dict]) -> list[str]:
    """On a GPU: each point's peak GPU memory per implementation (``gpu_peak_bytes``)."""
    lines = []
    for p in points:
        peaks = {name: r["gpu_peak_bytes"] for name, r in p["results"].items() if "gpu_peak_bytes" in r}
        if peaks:
            lines.append(f"peak GPU memory {p['arch']} b{p['batch']}: "
                         + ", ".join(f"{name} {v / 2**20:,.1f} MiB" for name, v in peaks.items()))
    if lines:
        lines.insert(0, "GPU memory: torch.cuda.max_memory_allocated over the timed steps (parameters, gradients, "
                        "one step's activations); jax: its GPU's peak_bytes_in_use, compiling step included")
    return lines


def manual_lines(step: dict, column: str = "manual") -> list[str]:
    """What a hand-derived column times: the function, who checks it, and from its ``how_it_ran()`` how
    the update ran, which library ran each product, and the thread rule."""
    checked = f", the step `{step['checked_by']}` checks" if step.get("checked_by") else ""
    lines = [f"{column} column: {step['function']}{checked}"]
    d = step.get("how_it_ran") or {}
    if d.get("update"):
        lines.append(f"  update: {d['update']}")
    lines.extend(f"  {what}: {lib}'s BLAS" for what, lib in (d.get("products") or {}).items())
    if d.get("threads"):
        lines.append(f"  threads: {d['threads']}")
    return lines


def half_width(figure: dict) -> float | None:
    """The wider side of a figure's interval, relative to its median (None: no interval)."""
    if not figure.get("interval_s"):
        return None
    low, high = figure["interval_s"]
    return max(high - figure["median_s"], figure["median_s"] - low) / figure["median_s"]


def _cell(results: dict, name: str) -> str:
    r = results.get(name)
    if not r:
        return "-"
    half = half_width(r)
    return f"{1e6 * r['median_s']:.0f} " + (f"±{100 * half:.0f}%" if half is not None else "±?")


def format_table(points: list[dict]) -> str:
    """One row per grid point: medians over processes in µs ± their intervals, ratios, manual images/s,
    and "!" on points whose figures do not stand. Columns nobody has (e.g. compiled when skipped) are left out."""
    shown = [name for name in IMPLS if any(name in p["results"] for p in points)]
    ratios = [key for key in RATIOS if any(key in p for p in points)]
    rows = [("config", *(COLUMNS[n] for n in shown), *(RATIOS[k] for k in ratios), "manual img/s", "!")]
    for p in points:
        rows.append((f"{p['arch']} b{p['batch']} {p['dtype']}", *(_cell(p["results"], n) for n in shown),
                     *(f"{p[k]:.2f}" if k in p else "-" for k in ratios),
                     f"{p['images_per_s_manual']:,.0f}" if "images_per_s_manual" in p else "-",
                     "" if p["reliability"]["reliable"] else "!"))
    return options.format_table(rows, "l" + "r" * (len(rows[0]) - 2) + "l")


def epoch_line(e: dict) -> str:
    flag = "" if e["reliability"]["reliable"] else "  !"

    def side(name):
        half = half_width(e[name])
        return (f"{name} {e[name]['seconds']:.2f} s {f'±{100 * half:.0f}% ' if half is not None else ''}"
                f"= {e[name]['images_per_s']:,.0f} images/s")

    return (f"epoch ({e['arch']} {e['dtype']}, batch {e['batch']}, {e['images']:,} images, each side in its own "
            f"processes): {side('manual')}, {side('torch')}{flag}")


def reason_lines(where: str, figures: dict) -> list[str]:
    """One line per figure that does not stand: "! 784-128-10 b32 torch: reason; reason"."""
    return [f"! {where} {name}: {'; '.join(f['reasons'])}" for name, f in figures.items() if f.get("reasons")]


def tail(points: list[dict], epoch: dict | None, threads: int) -> list[str]:
    """The lines below the table: compile times, skipped columns, the reasons for each "!", the
    epoch figure, and the closing line (``reliability.summary_line``)."""
    lines = [f"µs: the median over processes of each process's median step; ±: the wider side of its "
             f"{100 * reliability.CONFIDENCE:.0f} % interval (order statistics of the processes); "
             f"floor = the step's matrix products alone"]
    if any(key.startswith("autograd_cost") for p in points for key in p):
        lines.append(AUTOGRAD_LINE)
    for name in IMPLS:
        what = NAMES.get(name, name)
        times = [(f"{p['arch']} b{p['batch']}", p["results"][name]["compile_s"])
                 for p in points if "compile_s" in p["results"].get(name, {})]
        if times:
            lines.append(f"{what} compile time (first call; least to most over the processes): "
                         + "; ".join(f"{where} {min(t):.1f}-{max(t):.1f} s" for where, t in times))
        for reason in dict.fromkeys(p["skipped"][name] for p in points if name in p["skipped"]):
            lines.append(f"{what}: {reason}")
    lines.extend(memory_lines(points))
    for p in points:
        if not p["reliability"]["reliable"]:
            lines.extend(reason_lines(f"{p['arch']} b{p['batch']}", p["results"]))
    if epoch:
        lines.append(epoch_line(epoch))
        if not epoch["reliability"]["reliable"]:
            lines.extend(reason_lines("epoch", {side: epoch[side] for side in ("manual", "torch")}))
    lines.append(reliability.summary_line(points + ([epoch] if epoch else []), threads))
    return lines


STYLES = {"manual": ("C0", "-", "o"), "manual_torch": ("C4", "-", "v"), "yardstick": ("C5", ":", "x"), "torch": ("C1", "-", "s"), "compiled": ("C2", "-", "^"),
          "manual_compiled": ("C2", ":", "^"), "jax_eager": ("C8", "-", "d"), "manual_jax_eager": ("C8", ":", "d"),
          "jax": ("C3", "-", "D"), "manual_jax": ("C3", ":", "D"), "floor_numpy": ("k", "--", "."), "floor_torch": ("0.5", ":", ".")}


def _panel(ax, pts: list[dict]) -> None:
    """One architecture: each implementation's median against batch size, its interval as bars;
    points that do not stand hollow."""
    for name in IMPLS:
        have = [p for p in pts if name in p["results"]]
        if not have:
            continue
        us = {"median": 1e6 * np.array([p["results"][name]["median_s"] for p in have])}
        for side, end in (("low", 0), ("high", 1)):
            us[side] = np.array([1e6 * (p["results"][name]["interval_s"] or [p["results"][name]["median_s"]] * 2)[end]
                                 for p in have])
        color, ls, marker = STYLES[name]
        batches = [p["batch"] for p in have]
        ax.errorbar(batches, us["median"], [us["median"] - us["low"], us["high"] - us["median"]], color=color,
                    ls=ls, marker=marker, lw=1, ms=4, capsize=2, label=name)
        bad = [i for i, p in enumerate(have) if not p["reliability"]["reliable"]]
        ax.plot([batches[i] for i in bad], us["median"][bad], ls="", marker=marker, ms=7, mfc="white", mec=color)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([p["batch"] for p in pts], [str(p["batch"]) for p in pts])
    ax.set_xlabel("batch size")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)


def plot(points: list[dict], path: Path, title: str) -> None:
    """bench.png: step time against batch size, log–log, one panel per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compare.report import save_png

    archs = list(dict.fromkeys(p["arch"] for p in points))
    fig, axes = plt.subplots(1, len(archs), figsize=(4.3 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        _panel(ax, [p for p in points if p["arch"] == arch])
        ax.set_title(arch, fontsize=10)
    axes[0][0].set_ylabel("one SGD step (µs)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{title}; medians over processes with their {100 * reliability.CONFIDENCE:.0f} % intervals, "
                 f"hollow: marked !", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
