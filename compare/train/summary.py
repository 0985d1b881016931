"""A run's report: summary.json, metrics.jsonl and the plots (``compare.report`` writes the files),
and the final PASS line."""

from __future__ import annotations

import dataclasses
import datetime

from compare import report

CHECKED = {
    "grads": "the gradients of every parameter at every checked step, before either side's update",
    "weights": "the weights after every checked step (manual fast step against torch's SGD step)",
    "updates": "the update the fast step applied at every checked step against lr·(torch's gradient)",
}


def tolerances(run) -> dict:
    """The base bounds of the run: {"grad", "loss"} (and for the fast step what its check uses)."""
    from compare import tolerances as tol

    bounds = dict(run.checks.base)
    if run.checks.kind == "weights":
        bounds["weights"] = tol.FREE_WEIGHT_REL if run.cfg.dtype == "float64" else tol.FREE32_WEIGHT_REL
    elif run.checks.kind == "updates":
        k = tol.UPDATE_ROUNDINGS
        bounds["updates"] = (f"per parameter: relative grad + {k}·u·‖θ'‖/‖lr·g‖, elementwise elem + "
                             f"{k}·u·max|θ'|/max|lr·g| (θ' the weights after the step)")
    return bounds


def summary(run) -> dict:
    """summary.json: status, configuration, versions, data, bounds, what the manual side computed on,
    epochs, best and final accuracy, worst agreement, drift, referee, checks' share of the step time."""
    history, lockstep = run.history, run.cfg.lockstep
    last = history[-1] if history else {}
    total = {k: sum(h[k] * h["steps"] for h in history) for k in
             ("ms_per_step_manual", "ms_per_step_torch", "ms_per_step_checks")}
    rec = run.records
    return {
        "status": run.status, "failure": run.failure,
        "config": run.cfg.to_dict(), "versions": report.versions(), "data": run.data_source,
        "tolerances": tolerances(run), "step": run.cfg.step, "manual_side": run.cfg.manual_side,
        "checked": CHECKED[run.checks.kind],
        "epochs": history,
        "final": {"test_acc_manual": last.get("test_acc_manual"), "test_acc_torch": last.get("test_acc_torch"),
                  "test_pred_diff": last.get("test_pred_diff")},
        "best": {side: max(((h[f"test_acc_{side}"], h["epoch"]) for h in history), default=(None, None))
                 for side in ("manual", "torch")},
        "steps": run.global_step, "checked_steps": run.checks.n_checks,
        "worst_agreement": rec.worst, "max_weight_drift": None if lockstep else rec.max_drift,
        "referee": dataclasses.asdict(rec.referee) if run.cfg.dtype == "float32" and run.checks.kind == "grads" else None,
        "checks_overhead": total["ms_per_step_checks"] / max(total["ms_per_step_manual"] + total["ms_per_step_torch"], 1e-12),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write_report(run, plots: bool = True) -> None:
    """metrics.jsonl and summary.json; the plots too unless `plots` is False (they are slow)."""
    report.write_metrics(run.out, run.records.metrics)
    report.write_summary(run.out, summary(run))
    if plots:
        report.plot(run.out, run.records.series, run.checks.base, run.cfg.title())


def pass_line(s: dict, out) -> str:
    """The last line of a passing run."""
    final, best, tol = s["final"], s["best"], s["tolerances"]
    bounds = f"gradients {tol['grad']:.0e}, elementwise {tol['elem']:.0e}, loss {tol['loss']:.0e}"
    if "weights" in tol:
        bounds = f"weights {tol['weights']:.0e}, loss {tol['loss']:.0e}"
    elif "updates" in tol:
        bounds = (f"updates: gradients {tol['grad']:.0e}, elementwise {tol['elem']:.0e}, each + rounding of the "
                  f"weights; loss {tol['loss']:.0e}")
    return (f"PASS: {s['checked_steps']} checked steps of the {s['step']} step on {s['manual_side']} within "
            f"tolerance ({bounds}); "
            f"final test accuracy manual {final['test_acc_manual']:.2%}, torch {final['test_acc_torch']:.2%} "
            f"(best {best['manual'][0]:.2%} / {best['torch'][0]:.2%} at epochs {best['manual'][1]} / "
            f"{best['torch'][1]}), {final['test_pred_diff']} test predictions differ; checks cost "
            f"{s['checks_overhead']:.1%} of the two sides' step time; report in {out}")
