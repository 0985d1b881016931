"""What a training run leaves behind: metrics.jsonl, summary.json, the two plots, and the
terminal table. Every file is written to a temporary name and renamed."""

from __future__ import annotations

import io
import math
import platform
from pathlib import Path

from compare.files import atomic_write, atomic_write_bytes, atomic_write_json
from compare.options import format_table

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOSS_PLOT = "loss_curves.png"
AGREEMENT_PLOT = "grad_agreement.png"


def versions() -> dict:
    import numpy
    import torch
    import torchvision

    return {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def write_metrics(out: Path, lines: list[str]) -> None:
    """`lines` are already-serialised JSON records, one per checked step."""
    atomic_write_bytes(out / METRICS, "".join(line + "\n" for line in lines).encode())


def read_metrics(out: Path) -> list[str]:
    path = out / METRICS
    return path.read_text().splitlines() if path.exists() else []


def write_summary(out: Path, summary: dict) -> None:
    atomic_write_json(out / SUMMARY, summary)


def save_png(fig, path: Path) -> None:
    """A matplotlib figure as PNG, written to a temporary name and renamed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot(out: Path, series, tolerances: dict, title: str) -> None:
    """loss_curves.png (both training losses, |Δloss| below, log axis) and grad_agreement.png
    (relative error per layer and parameter over the steps, log axis, tolerance drawn).

    `series`: ``compare.train.records.Series``, lists over the checked steps: step, loss_manual,
    loss_torch, allowed_grad, allowed_loss, and rel {"layer 1 W": [...], ...} (the allowed relative
    errors vary: they widen for confident batches); `tolerances`: the base bounds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.asarray(series.step)
    if len(steps) == 0:
        return
    lm, lt = np.asarray(series.loss_manual), np.asarray(series.loss_torch)
    floor = 1e-18  # exact agreement cannot be drawn on a log axis; show it at the floor

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=(2, 1))
    top.plot(steps, lm, lw=0.8, label="manual (NumPy)")
    top.plot(steps, lt, lw=0.8, ls="--", label="torch (autograd)")
    top.set_ylabel("training loss (batch mean CE)")
    top.set_yscale("log")
    top.legend()
    top.set_title(title, fontsize=9)
    diff = np.maximum(np.abs(lm - lt), floor)
    bottom.semilogy(steps, diff, lw=0.6, color="C3", label=f"|manual − torch| (exactly 0 drawn at {floor:g})")
    bottom.semilogy(steps, np.asarray(series.allowed_loss) * np.abs(lt), color="k", ls=":", lw=1,
                    label=f"allowed ({tolerances['loss']:.0e} relative, wider for tiny losses)")
    bottom.set_ylabel("|Δloss|")
    bottom.set_xlabel("step")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, out / LOSS_PLOT)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in series.rel.items():
        ax.semilogy(steps, np.maximum(np.asarray(values), floor), lw=0.6, label=name)
    ax.semilogy(steps, series.allowed_grad, color="k", ls=":", lw=1.2,
                label=f"allowed ({tolerances['grad']:.0e}, wider for tiny losses)")
    ax.set_xlabel("step")
    ax.set_ylabel("relative error manual vs torch")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_png(fig, out / AGREEMENT_PLOT)
    plt.close(fig)


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def epoch_table(epochs: list[dict]) -> str:
    """The final table on the terminal: one row per epoch."""
    header = ("epoch", "loss manual", "loss torch", "acc manual", "acc torch", "pred diff",
              "manual ms/step", "torch ms/step", "checks ms/step", "worst rel err")
    rows = [header]
    for e in epochs:
        rows.append((str(e["epoch"]), _fmt(e["train_loss_manual"], ".6f"), _fmt(e["train_loss_torch"], ".6f"),
                     _fmt(e["test_acc_manual"], ".2%"), _fmt(e["test_acc_torch"], ".2%"),
                     str(e["test_pred_diff"]), _fmt(e["ms_per_step_manual"], ".3f"),
                     _fmt(e["ms_per_step_torch"], ".3f"), _fmt(e["ms_per_step_checks"], ".3f"),
                     _fmt(e["worst_grad_rel"], ".1e")))
    return format_table(rows)
