"""What a run records: one metrics line per checked step, the plotted series, the worst agreement
per parameter, the float32 referee's tally, per-epoch totals and rows.

Everything here is restored on resume (from the checkpoint's state and metrics.jsonl), so an
interrupted and resumed run writes the same files as one that ran straight through.
"""

from __future__ import annotations

import dataclasses
import json
import math


def num(x: float):
    """A float for JSON: NaN and inf (a diverged run) become null, as strict JSON has no such numbers."""
    return x if math.isfinite(x) else None


def finite_or_nan(x) -> float:
    """x, or NaN for a non-finite x or None (how metrics.jsonl writes non-finite numbers)."""
    return x if x is not None and math.isfinite(x) else math.nan


def js(x: float) -> str:
    """A float as JSON text, as json.dumps writes it (repr), with NaN and inf as null (see `num`)."""
    return repr(float(x)) if math.isfinite(x) else "null"


@dataclasses.dataclass
class Position:
    """Where the run is: `epoch` (from 1), `step` (the batch within the epoch, from 0) and
    `global_step` (steps taken, counting this one)."""

    epoch: int
    step: int
    global_step: int
    steps_per_epoch: int

    def __str__(self) -> str:
        return f"epoch {self.epoch}, step {self.global_step} (batch {self.step + 1} of {self.steps_per_epoch})"


@dataclasses.dataclass
class EpochTotals:
    """Sums over the steps of the current epoch (seconds for the t_ fields)."""

    loss_manual: float = 0.0
    loss_torch: float = 0.0
    steps: int = 0
    t_manual: float = 0.0
    t_torch: float = 0.0
    t_checks: float = 0.0
    t_data: float = 0.0
    worst_grad_rel: float = 0.0


@dataclasses.dataclass
class Series:
    """The plotted series, one entry per checked step; `rel` maps "layer i W" to its relative errors.
    Non-finite values (null in metrics.jsonl) are NaN, so a resumed run plots the same."""

    step: list = dataclasses.field(default_factory=list)
    loss_manual: list = dataclasses.field(default_factory=list)
    loss_torch: list = dataclasses.field(default_factory=list)
    allowed_grad: list = dataclasses.field(default_factory=list)
    allowed_loss: list = dataclasses.field(default_factory=list)
    rel: dict = dataclasses.field(default_factory=dict)

    def add(self, step: int, allowed_grad: float, allowed_loss: float, loss_m, loss_t, rels) -> None:
        """One checked step (`rels`: (key, relative error) per parameter)."""
        self.step.append(step)
        self.allowed_grad.append(allowed_grad)
        self.allowed_loss.append(allowed_loss)
        self.loss_manual.append(finite_or_nan(loss_m))
        self.loss_torch.append(finite_or_nan(loss_t))
        for key, rel in rels:
            self.rel.setdefault(key, []).append(finite_or_nan(rel))


@dataclasses.dataclass
class RefereeTally:
    """float32 runs: how often each side was closer to the float64 gradient, and its worst distance."""

    checks: int = 0
    manual_closer: int = 0
    torch_closer: int = 0
    ties: int = 0
    manual_max_rel: float = 0.0
    torch_max_rel: float = 0.0

    def add(self, m_max: float, t_max: float) -> str:
        """Count one referee check; returns "manual", "torch" or "tie" (the closer side)."""
        closer = "manual" if m_max < t_max else "torch" if t_max < m_max else "tie"
        self.checks += 1
        if closer == "manual":
            self.manual_closer += 1
        elif closer == "torch":
            self.torch_closer += 1
        else:
            self.ties += 1
        self.manual_max_rel, self.torch_max_rel = max(self.manual_max_rel, m_max), max(self.torch_max_rel, t_max)
        return closer


def metrics_line(pos, loss_m: float, loss_t: float, loss_rel: float, agreements, allowed_grad: float,
                 allowed_loss: float, drift, referee, key: str = "grads") -> str:
    """One metrics.jsonl record, written out directly: json.dumps of the nested record cost more
    than the rest of the bookkeeping together. The text is what json.dumps writes with separators
    (",", ":") (floats by repr, non-finite as null); a test holds that. `key` names the compared
    arrays ("grads"; with the fast step "weights" or "updates", the latter with bounds of its own
    per parameter, "allowed" and "allowed_elem"). "allowed_elem" bounds the elementwise errors
    "elem_rel"."""
    each = ',"allowed":{},"allowed_elem":{}' if key == "updates" else ""  # updates: bounds per parameter
    arrays = ",".join(
        f'{{"layer":{agr.layer},"param":"{agr.param}","rel_err":{js(agr.rel_err)},"elem_rel":{js(agr.elem_rel)},'
        f'"max_abs":{js(agr.max_abs)},'
        f'"cosine":{js(agr.cosine)},"worst_index":[{",".join(map(str, agr.worst_index))}]'
        f'{each.format(js(agr.allowed), js(agr.elem_allowed)) if each else ""}}}' for agr in agreements)
    line = (f'{{"step":{pos.global_step},"epoch":{pos.epoch},"batch":{pos.step + 1},"loss_manual":{js(loss_m)},'
            f'"loss_torch":{js(loss_t)},"loss_rel":{js(loss_rel)},"allowed_grad":{js(allowed_grad)},'
            f'"allowed_loss":{js(allowed_loss)},"allowed_elem":{js(agreements[0].elem_allowed)},"{key}":[{arrays}]')
    if drift is not None:
        line += f',"weight_drift_est":{js(drift)}'
    if referee is not None:
        line += ',"referee":' + json.dumps(referee, separators=(",", ":"))
    return line + "}"


class Records:
    """Everything recorded so far. `key` is the metrics field of the compared arrays."""

    def __init__(self, key: str = "grads"):
        self.key = key
        self.metrics: list[str] = []
        self.series = Series()
        self.worst: dict[str, dict] = {}
        self.referee = RefereeTally()
        self.totals = EpochTotals()
        self.history: list[dict] = []
        self.max_drift = 0.0

    def add_check(self, pos, loss_m: float, loss_t: float, loss_rel: float, agreements, allowed_grad: float,
                  allowed_loss: float, drift, referee) -> None:
        """One checked step: its metrics line, the plotted series, the worst agreement so far."""
        self.metrics.append(metrics_line(pos, loss_m, loss_t, loss_rel, agreements, allowed_grad, allowed_loss, drift,
                                         referee, self.key))
        rels = [(f"layer {agr.layer} {agr.param}", agr.rel_err) for agr in agreements]
        self.series.add(pos.global_step, allowed_grad, allowed_loss, loss_m, loss_t, rels)
        worst_here = 0.0
        for (key, rel), agr in zip(rels, agreements):
            worst_here = max(worst_here, rel)
            w = self.worst.get(key)
            if w is None or w["rel_err"] is not None and not rel <= w["rel_err"]:  # null: non-finite
                self.worst[key] = {"rel_err": num(rel), "epoch": pos.epoch, "step": pos.global_step,
                                   "cosine": num(agr.cosine), "max_abs": num(agr.max_abs), "allowed": agr.allowed,
                                   "elem_rel": num(agr.elem_rel), "allowed_elem": agr.elem_allowed}
        self.totals.worst_grad_rel = max(self.totals.worst_grad_rel, worst_here)

    def add_epoch(self, row: dict) -> None:
        """An epoch's row (``step.BothSides.evaluate``); the largest exact drift is kept."""
        if row["weight_drift"] is not None:
            self.max_drift = max(self.max_drift, row["weight_drift"])
        self.history.append(row)

    def new_epoch(self) -> None:
        self.totals = EpochTotals()

    def state(self) -> dict:
        """The part of the checkpoint's state.json these records need (the metrics lines themselves
        stay in metrics.jsonl; only their count is kept)."""
        return {"accumulators": dataclasses.asdict(self.totals), "history": self.history, "worst": self.worst,
                "referee_stats": dataclasses.asdict(self.referee), "max_drift": self.max_drift,
                "n_metrics": len(self.metrics)}

    def restore(self, state: dict, lines: list[str]) -> None:
        """Back to a checkpoint's `state`; `lines` are its first n_metrics metrics.jsonl lines."""
        self.totals, self.history, self.worst = EpochTotals(**state["accumulators"]), state["history"], state["worst"]
        self.referee, self.max_drift = RefereeTally(**state["referee_stats"]), state["max_drift"]
        self.metrics, self.series = lines, Series()
        for line in lines:
            rec = json.loads(line)
            rels = ((f"layer {entry['layer']} {entry['param']}", entry["rel_err"]) for entry in rec[self.key])
            self.series.add(rec["step"], rec["allowed_grad"], rec["allowed_loss"], rec["loss_manual"],
                            rec["loss_torch"], rels)
