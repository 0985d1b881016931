"""Side-by-side training: the manual NumPy MLP and the PyTorch reference, from identical weights,
on identical shuffled mini-batches, checked step by step and layer by layer.

One seeded ``numpy.random.Generator`` draws the initial weights (once; torch gets a copy) and one
permutation of the training set per epoch (the notes: shuffle D, then step through it). Each
batch is one array, indexed out of the preloaded data and handed to both sides.

Modes:
- free (default in float64): two independent trajectories, each updating its own weights; the
  run asserts that they stay together (loss, gradients; the weight drift is recorded).
- lockstep (default in float32): after every step torch's weights are set to the manual ones, so
  each step compares gradients at identical weights and float32 rounding cannot accumulate into
  a difference that hides (or fakes) a real gradient error.

float32 runs get a float64 referee: at sampled steps (every step with ``referee=True``) the
gradient is recomputed in float64 on the same weights and batch, and the report says how far each
float32 side is from it and which one is closer.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import signal
import time
from pathlib import Path

import numpy as np

from compare import checkpoint, report, tolerances
from compare.agreement import AgreementError, compare_grads, rel_distance, sum_of_squares
from compare.errors import CrosscheckError
from manual.mlp import MLP
from manual.optim import SGD

REFEREE_EVERY = 200  # float32: the float64 referee runs at every 200th checked step unless --referee
POSTFIX_EVERY = 25  # progress-bar refresh, in steps


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run's numbers (resume refuses a checkpoint that differs)."""

    sizes: tuple = (784, 256, 10)
    activation: str = "sigmoid"
    # Defaults measured on MNIST (784-256-10 sigmoid float64): test accuracy 98.26 % (seed 0) and
    # 98.25 % (seed 1) after 60 epochs, 98.2-98.3 % from epoch 45 on; larger learning rates did
    # worse (batch 512, lr 1.0: 98.04 % for seed 1; lr 1.4: 97.8 % for seed 0). Batch 512 rather
    # than 128 because the per-step check costs about the same at any batch size (~0.7-0.8 ms,
    # reading the 256 x 784 gradients), while the two sides' step grows with the batch: 7.5 % of
    # their time at batch 512, ~11 % at 256, ~16 % at 128.
    epochs: int = 60
    batch_size: int = 512
    lr: float = 0.7
    dtype: str = "float64"
    seed: int = 0
    mode: str = ""  # "" = free for float64, lockstep for float32
    check_every: int = 1
    referee: bool = False
    limit_train: int = 0  # 0 = all 60,000

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if not self.mode:
            self.mode = "free" if self.dtype == "float64" else "lockstep"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        return d


class TrainingFailure(CrosscheckError):
    """The two sides disagreed, or the training diverged (exit code 1)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stopped after a whole step and saved everything."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def free_tolerances(dtype: str) -> dict:
    if dtype == "float64":
        return {"grad": tolerances.FREE_GRAD_REL, "loss": tolerances.FREE_LOSS_REL}
    return {"grad": tolerances.FREE32_GRAD_REL, "loss": tolerances.FREE32_LOSS_REL}


def _num(x: float):
    """A float for JSON: NaN and inf (a diverged run) become null, as strict JSON has no such numbers."""
    return x if math.isfinite(x) else None


def _finite_or_nan(x) -> float:
    """x, or NaN for a non-finite x or None (how metrics.jsonl writes non-finite numbers)."""
    return x if x is not None and math.isfinite(x) else math.nan


def _js(x: float) -> str:
    """A float as JSON text, as json.dumps writes it (repr), with NaN and inf as null (see _num)."""
    return repr(float(x)) if math.isfinite(x) else "null"


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), tolerances.TINY)


# The mean cross-entropy of a uniform guess is ln C (2.3 for 10 classes). A mean above 1000 says
# the correct class gets probability below e^-1000: the run has diverged (a learning rate far too
# large). Sigmoid nets then stay finite (saturated units, logits ~1e7), so waiting for NaN/inf
# alone would let such a run go on to the end; ReLU nets reach 1e243 before they overflow.
DIVERGED_LOSS = 1e3

DRIFT_ROWS = 8  # rows (units) per weight matrix in the per-step drift estimate


def _drift(manual_params, torch_params) -> float:
    """max over parameters of ‖θ_manual − θ_torch‖ / ‖θ_manual‖ (free mode)."""
    return max(rel_distance(a, b) for a, b in zip(manual_params, torch_params))


def _drift_sample(manual_params, torch_params) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Views for the per-step estimate of `_drift`: each weight matrix contributes only every k-th
    row (DRIFT_ROWS evenly spaced units), which reads a few percent of the memory. Units are
    interchangeable, so evenly spaced rows are as good a sample as random ones. The views follow
    the parameters, which both sides update in place."""
    sample_m, sample_t = [], []
    for a, b in zip(manual_params, torch_params):
        if a.ndim == 2 and len(a) > DRIFT_ROWS:
            k = len(a) // DRIFT_ROWS
            a, b = a[::k], b[::k]
        sample_m.append(a)
        sample_t.append(b)
    return sample_m, sample_t


class SideBySide:
    """One run: both nets, their optimisers, the generator, and everything recorded so far."""

    def __init__(self, config: TrainConfig, mnist, out: Path, log=print, progress: bool | None = None):
        import torch

        from torch_ref.convert import from_manual

        self.cfg, self.out, self.log, self.progress = config, Path(out), log, progress
        self.dtype = np.dtype(config.dtype)
        n = config.limit_train or len(mnist.x_train)
        self.x, self.y = mnist.x_train[:n], mnist.y_train[:n]
        self.x_test, self.y_test = mnist.x_test, mnist.y_test
        self.tx_test = torch.from_numpy(mnist.x_test)
        self.data_source = mnist.prepared.description

        self.rng = np.random.default_rng(config.seed)
        self.manual = MLP(config.sizes, config.activation, self.dtype, seed=self.rng)
        self.torch_net = from_manual(self.manual)
        self.opt_manual = SGD(config.lr)
        self.opt_torch = torch.optim.SGD(self.torch_net.parameters(), lr=config.lr)
        self.torch_params = [p.detach().numpy() for p in self.torch_net.parameters()]  # views, in step
        self.lockstep = config.mode == "lockstep"
        self._drift_views = _drift_sample(self._manual_flat(), self.torch_params)
        self.tol = ({"grad": tolerances.gradient_rel(self.dtype), "loss": tolerances.gradient_rel(self.dtype)}
                    if self.lockstep else free_tolerances(config.dtype))
        self.steps_per_epoch = math.ceil(n / config.batch_size)

        # Position and records (all restored by resume).
        self.epoch, self.step_in_epoch, self.global_step, self.n_checks = 1, 0, 0, 0
        self.epoch_rng_state = None
        self.acc = self._fresh_accumulators()
        self.history: list[dict] = []
        self.metrics: list[str] = []
        self.series = {"step": [], "loss_manual": [], "loss_torch": [], "allowed_grad": [], "allowed_loss": [],
                       "rel": {}}
        self.worst: dict[str, dict] = {}
        self.referee_stats = {"checks": 0, "manual_closer": 0, "torch_closer": 0, "ties": 0,
                              "manual_max_rel": 0.0, "torch_max_rel": 0.0}
        self.max_drift = 0.0
        self.failure: str | None = None
        self.status = "running"
        self._signal: int | None = None

    # ------------------------------------------------------------------ bookkeeping

    @staticmethod
    def _fresh_accumulators() -> dict:
        return {"loss_manual": 0.0, "loss_torch": 0.0, "steps": 0, "t_manual": 0.0, "t_torch": 0.0,
                "t_checks": 0.0, "t_data": 0.0, "worst_grad_rel": 0.0}

    def _record(self, epoch: int, step: int, loss_m: float, loss_t: float, agreements, drift, referee,
                allowed_loss: float) -> None:
        # One metrics line per step, written out directly: json.dumps of the nested record cost
        # more than the rest of the bookkeeping together. The text is the JSON that json.dumps
        # writes with separators (",", ":") (floats by repr, non-finite as null); a test holds that.
        grads = ",".join(
            f'{{"layer":{g.layer},"param":"{g.param}","rel_err":{_js(g.rel_err)},"max_abs":{_js(g.max_abs)},'
            f'"cosine":{_js(g.cosine)},"worst_index":[{",".join(map(str, g.worst_index))}]}}' for g in agreements)
        line = (f'{{"step":{self.global_step},"epoch":{epoch},"batch":{step + 1},"loss_manual":{_js(loss_m)},'
                f'"loss_torch":{_js(loss_t)},"loss_rel":{_js(_rel(loss_m, loss_t))},'
                f'"allowed_grad":{_js(agreements[0].allowed)},"allowed_loss":{_js(allowed_loss)},"grads":[{grads}]')
        if drift is not None:
            line += f',"weight_drift_est":{_js(drift)}'
        if referee is not None:
            line += ',"referee":' + json.dumps(referee, separators=(",", ":"))
        self.metrics.append(line + "}")
        self._series_add(self.global_step, agreements[0].allowed, allowed_loss, loss_m, loss_t,
                         ((f"layer {g.layer} {g.param}", g.rel_err) for g in agreements))

    def _series_add(self, step: int, allowed_grad: float, allowed_loss: float, loss_m, loss_t, rels) -> None:
        """One checked step in the plotted series (`rels`: (key, relative error) per parameter).
        Non-finite values, null in metrics.jsonl, become NaN, so a resumed run plots the same."""
        s = self.series
        s["step"].append(step)
        s["allowed_grad"].append(allowed_grad)
        s["allowed_loss"].append(allowed_loss)
        s["loss_manual"].append(_finite_or_nan(loss_m))
        s["loss_torch"].append(_finite_or_nan(loss_t))
        for key, rel in rels:
            s["rel"].setdefault(key, []).append(_finite_or_nan(rel))

    def _update_worst(self, agreements, epoch: int, step: int) -> float:
        worst_here = 0.0
        for g in agreements:
            key = f"layer {g.layer} {g.param}"
            worst_here = max(worst_here, g.rel_err)
            w = self.worst.get(key)
            if w is None or w["rel_err"] is not None and not g.rel_err <= w["rel_err"]:  # null: non-finite
                self.worst[key] = {"rel_err": _num(g.rel_err), "epoch": epoch, "step": self.global_step,
                                   "cosine": _num(g.cosine), "max_abs": _num(g.max_abs), "allowed": g.allowed}
        return worst_here

    def _manual_flat(self) -> list[np.ndarray]:
        return [a for pair in self.manual.parameters() for a in pair]

    # ------------------------------------------------------------------ the checks

    def _where(self, epoch: int, step: int) -> str:
        return f"epoch {epoch}, step {self.global_step} (batch {step + 1} of {self.steps_per_epoch})"

    def _check_divergence(self, epoch: int, step: int, side: str, loss: float, norms: dict) -> None:
        """Stop at the first step whose loss or gradient is non-finite or whose loss has exploded,
        naming the step, and the layer and parameter (the non-finite one, else the largest)."""
        bad = [key for key, n in norms.items() if not math.isfinite(n)]
        if bad:
            what = f"the {side} gradient of {bad[0]} is not finite"
        elif not math.isfinite(loss) or loss > DIVERGED_LOSS:
            key = max(norms, key=norms.get)
            what = (f"the {side} loss is {loss:.6g} (a uniform guess gives {math.log(self.cfg.sizes[-1]):.2f}; "
                    f"above {DIVERGED_LOSS:g} counts as diverged); largest gradient: {key}, norm {norms[key]:.3g}")
        else:
            return
        raise TrainingFailure(f"training diverged at {self._where(epoch, step)}: {what}; "
                              f"lower --lr (now {self.cfg.lr:g})")

    @staticmethod
    def _norms(grads) -> dict:
        return {f"layer {i} {p}": math.sqrt(sum_of_squares(g)) for i, pair in enumerate(grads, start=1)
                for p, g in zip("Wb", pair)}

    def _check(self, epoch: int, step: int, loss_m: float, loss_t: float, grads_m, grads_t, xb, yb) -> None:
        """Compare the two sides at this step (before either updates its weights)."""
        # A confident batch (tiny loss) computes its loss and gradients as small differences of
        # large numbers; the bounds widen to that rounding noise (see compare/tolerances.py).
        logits = self.manual.zhats[-1]
        loss, scale = min(loss_m, loss_t), max(float(logits.max()), -float(logits.min()))
        allowed = tolerances.gradient_rel(self.dtype, loss, base=self.tol["grad"], logit_scale=scale)
        allowed_loss = tolerances.gradient_rel(self.dtype, loss, base=self.tol["loss"], logit_scale=scale)
        agreements = compare_grads(grads_m, grads_t, allowed)
        drift = None if self.lockstep else _drift(*self._drift_views)
        referee = None
        if self.dtype == np.float32 and (self.cfg.referee or self.n_checks % REFEREE_EVERY == 0):
            referee = self._referee(grads_m, grads_t, xb, yb)
        self.n_checks += 1
        self._record(epoch, step, loss_m, loss_t, agreements, drift, referee, allowed_loss)
        self.acc["worst_grad_rel"] = max(self.acc["worst_grad_rel"], self._update_worst(agreements, epoch, step))
        # Divergence first: once the numbers explode, any disagreement is a consequence.
        calm = loss_m <= DIVERGED_LOSS and loss_t <= DIVERGED_LOSS  # False for a NaN loss
        if not (calm and all(math.isfinite(x) for g in agreements for x in (g.norm_a, g.norm_b))):
            self._check_divergence(epoch, step, "manual", loss_m, {f"layer {g.layer} {g.param}": g.norm_a for g in agreements})
            self._check_divergence(epoch, step, "torch", loss_t, {f"layer {g.layer} {g.param}": g.norm_b for g in agreements})
        failures = [g for g in agreements if not g.ok]
        if failures:
            raise TrainingFailure(str(AgreementError(failures, ("manual", "torch"), self._where(epoch, step),
                                                     grads=(grads_m, grads_t))))
        if _rel(loss_m, loss_t) > allowed_loss:
            raise TrainingFailure(f"losses disagree at {self._where(epoch, step)}: manual {loss_m!r}, torch {loss_t!r}, "
                                  f"relative difference {_rel(loss_m, loss_t):.3g} > allowed {allowed_loss:.1e}")

    def _referee(self, grads_m, grads_t, xb, yb) -> dict:
        """Both float32 gradients against a float64 one on the same (manual) weights and batch.

        In lockstep both sides hold exactly those weights; in free mode torch's differ by the
        recorded drift, which then counts in torch's distance.
        """
        ref = MLP(self.cfg.sizes, self.cfg.activation, np.float64)
        ref.set_parameters(self.manual.weights, self.manual.biases)
        _, g64 = ref.loss_and_grads(xb.astype(np.float64), yb)
        layers = [{"layer": a.layer, "param": a.param, "manual_rel": a.rel_err, "torch_rel": b.rel_err}
                  for a, b in zip(compare_grads(grads_m, g64, 1.0), compare_grads(grads_t, g64, 1.0))]
        m_max = max(q["manual_rel"] for q in layers)
        t_max = max(q["torch_rel"] for q in layers)
        closer = "manual" if m_max < t_max else "torch" if t_max < m_max else "tie"
        st = self.referee_stats
        st["checks"] += 1
        st[{"manual": "manual_closer", "torch": "torch_closer", "tie": "ties"}[closer]] += 1
        st["manual_max_rel"], st["torch_max_rel"] = max(st["manual_max_rel"], m_max), max(st["torch_max_rel"], t_max)
        return {"manual_max_rel": m_max, "torch_max_rel": t_max, "closer": closer, "layers": layers}

    # ------------------------------------------------------------------ training

    def _step(self, epoch: int, step: int, idx: np.ndarray) -> None:
        import torch

        from torch_ref.convert import load_manual, loss_and_grads

        clock = time.perf_counter
        t0 = clock()
        xb, yb = self.x[idx], self.y[idx]  # one batch array, handed to both sides
        t1 = clock()
        loss_m, grads_m = self.manual.loss_and_grads(xb, yb)
        t2 = clock()
        loss_t, grads_t = loss_and_grads(self.torch_net, torch.from_numpy(xb), torch.from_numpy(yb))
        t3 = clock()
        self.global_step += 1
        if self.global_step % self.cfg.check_every == 0:
            self._check(epoch, step, loss_m, loss_t, grads_m, grads_t, xb, yb)
        else:
            self._check_divergence(epoch, step, "manual", loss_m, self._norms(grads_m))
            self._check_divergence(epoch, step, "torch", loss_t, self._norms(grads_t))
        t4 = clock()
        self.opt_manual.step(self.manual.parameters(), grads_m)
        t5 = clock()
        if not self.lockstep:
            self.opt_torch.step()
        t6 = clock()
        if self.lockstep:  # instead of its own update, torch takes the manual weights
            load_manual(self.torch_net, self.manual.weights, self.manual.biases)
        t7 = clock()
        a = self.acc
        a["loss_manual"] += loss_m
        a["loss_torch"] += loss_t
        a["steps"] += 1
        a["t_data"] += t1 - t0
        a["t_manual"] += (t2 - t1) + (t5 - t4)
        a["t_torch"] += (t3 - t2) + (t6 - t5)
        a["t_checks"] += (t4 - t3) + (t7 - t6)
        self.step_in_epoch = step + 1

    def _evaluate(self, epoch: int) -> dict:
        import torch

        pred_m = self.manual.predict(self.x_test)
        with torch.no_grad():
            pred_t = self.torch_net(self.tx_test).argmax(dim=1).numpy()
        a = self.acc
        steps = max(a["steps"], 1)
        row = {
            "epoch": epoch,
            "train_loss_manual": a["loss_manual"] / steps, "train_loss_torch": a["loss_torch"] / steps,
            "test_acc_manual": float((pred_m == self.y_test).mean()),
            "test_acc_torch": float((pred_t == self.y_test).mean()),
            "test_pred_diff": int((pred_m != pred_t).sum()),
            "ms_per_step_manual": 1e3 * a["t_manual"] / steps, "ms_per_step_torch": 1e3 * a["t_torch"] / steps,
            "ms_per_step_checks": 1e3 * a["t_checks"] / steps, "ms_per_step_data": 1e3 * a["t_data"] / steps,
            "checks_overhead": a["t_checks"] / max(a["t_manual"] + a["t_torch"], 1e-12),
            "worst_grad_rel": a["worst_grad_rel"], "steps": a["steps"],
            "weight_drift": None if self.lockstep else _drift(self._manual_flat(), self.torch_params),
        }
        if row["weight_drift"] is not None:
            self.max_drift = max(self.max_drift, row["weight_drift"])
        self.history.append(row)
        return row

    def _epoch(self, epoch: int) -> None:
        from tqdm import tqdm

        if self.step_in_epoch == 0:
            self.epoch_rng_state = self.rng.bit_generator.state  # to redraw this permutation on resume
        else:
            self.rng.bit_generator.state = self.epoch_rng_state
        perm = self.rng.permutation(len(self.x))
        B = self.cfg.batch_size
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}",
                   unit="step", disable=self.progress is False or None, leave=False, dynamic_ncols=True)
        try:
            for step in range(self.step_in_epoch, self.steps_per_epoch):
                self._step(epoch, step, perm[step * B:(step + 1) * B])
                if step % POSTFIX_EVERY == 0 or step == self.steps_per_epoch - 1:
                    bar.update(step + 1 - bar.n)
                    a = self.acc
                    bar.set_postfix_str(f"loss manual {a['loss_manual'] / a['steps']:.4f} torch "
                                        f"{a['loss_torch'] / a['steps']:.4f} worst rel {a['worst_grad_rel']:.1e}",
                                        refresh=False)
                if self._signal is not None:
                    raise Interrupted(self._signal)
        finally:
            bar.close()

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict:
        return {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "n_checks": self.n_checks,
            "epoch_rng_state": self.epoch_rng_state, "rng_state": self.rng.bit_generator.state,
            "accumulators": self.acc, "history": self.history, "worst": self.worst,
            "referee_stats": self.referee_stats, "max_drift": self.max_drift, "n_metrics": len(self.metrics),
        }

    def restore(self, folder: Path) -> None:
        """Continue from a checkpoint of this configuration (weights, position, generator, records)."""
        from torch_ref.convert import load_manual

        state = checkpoint.read_state(folder)
        if state["config"] != self.cfg.to_dict():
            differ = [f"{k} {state['config'].get(k)!r} vs {v!r}" for k, v in self.cfg.to_dict().items()
                      if state["config"].get(k) != v]
            raise checkpoint.CheckpointError(
                f"the checkpoint in {folder} was made with a different configuration ({'; '.join(differ)}); "
                f"resume with the original options or start a new run")
        weights, biases, state_dict = checkpoint.load_arrays(folder, self.cfg.sizes, self.cfg.dtype)
        self.manual.set_parameters(weights, biases)
        self.torch_net.load_state_dict(state_dict)
        if self.lockstep:
            load_manual(self.torch_net, self.manual.weights, self.manual.biases)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.n_checks = state["global_step"], state["n_checks"]
        self.epoch_rng_state = state["epoch_rng_state"]
        self.rng.bit_generator.state = state["rng_state"]
        self.acc, self.history, self.worst = state["accumulators"], state["history"], state["worst"]
        self.referee_stats, self.max_drift = state["referee_stats"], state["max_drift"]
        lines = report.read_metrics(self.out)
        if len(lines) < state["n_metrics"]:
            raise checkpoint.CheckpointError(
                f"{self.out / report.METRICS} has {len(lines)} lines but the checkpoint expects "
                f"{state['n_metrics']}; it was changed after the run stopped")
        self.metrics = lines[: state["n_metrics"]]
        for line in self.metrics:
            rec = json.loads(line)
            self._series_add(rec["step"], rec["allowed_grad"], rec["allowed_loss"], rec["loss_manual"],
                             rec["loss_torch"], ((f"layer {g['layer']} {g['param']}", g["rel_err"]) for g in rec["grads"]))

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        total = {k: sum(h[k] * h["steps"] for h in self.history) for k in
                 ("ms_per_step_manual", "ms_per_step_torch", "ms_per_step_checks")}
        return {
            "status": self.status, "failure": self.failure,
            "config": self.cfg.to_dict(), "versions": report.versions(), "data": self.data_source,
            "tolerances": self.tol, "epochs": self.history,
            "final": {"test_acc_manual": last.get("test_acc_manual"), "test_acc_torch": last.get("test_acc_torch"),
                      "test_pred_diff": last.get("test_pred_diff")},
            "best": {side: max(((h[f"test_acc_{side}"], h["epoch"]) for h in self.history), default=(None, None))
                     for side in ("manual", "torch")},
            "steps": self.global_step, "checked_steps": self.n_checks,
            "worst_agreement": self.worst, "max_weight_drift": None if self.lockstep else self.max_drift,
            "referee": self.referee_stats if self.dtype == np.float32 else None,
            "checks_overhead": total["ms_per_step_checks"] / max(total["ms_per_step_manual"] + total["ms_per_step_torch"], 1e-12),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def write_report(self, plots: bool = True) -> None:
        report.write_metrics(self.out, self.metrics)
        report.write_summary(self.out, self.summary())
        if not plots:
            return
        title = (f"{'-'.join(map(str, self.cfg.sizes))} {self.cfg.activation} {self.cfg.dtype} {self.cfg.mode}, "
                 f"batch {self.cfg.batch_size}, lr {self.cfg.lr:g}, seed {self.cfg.seed}")
        report.plot(self.out, self.series, self.tol, title)

    # ------------------------------------------------------------------ the run

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now (the last checkpoint stays)
            raise KeyboardInterrupt
        self._signal = signum
        self.log(f"{signal.Signals(signum).name} received: finishing this step, then saving checkpoint and report")

    def run(self) -> dict:
        """Train, check, and write everything. Returns the summary; raises TrainingFailure or
        Interrupted (after writing the report and, where the state is good, the checkpoint)."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.epoch <= self.cfg.epochs:
                self._epoch(self.epoch)
                self._evaluate(self.epoch)
                self.epoch, self.step_in_epoch, self.acc = self.epoch + 1, 0, self._fresh_accumulators()
                checkpoint.save(self.out, self.manual, self.torch_net, self.state())
                self.write_report(plots=False)  # the plots, slow to draw, come at the end
            last = self.history[-1]
            if self.dtype == np.float64 and last["test_pred_diff"]:  # float32 sides may differ on a few
                raise TrainingFailure(f"the two sides predict differently on {last['test_pred_diff']} test images "
                                      f"after epoch {last['epoch']}; float64 runs must agree on every prediction")
            self.status = "passed"
            return self.summary()
        except Interrupted:
            self.status = "interrupted"
            checkpoint.save(self.out, self.manual, self.torch_net, self.state())
            raise
        except TrainingFailure as e:
            self.status, self.failure = "failed", str(e)
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.write_report()
