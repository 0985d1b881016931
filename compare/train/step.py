"""What both sides do with one batch (a step, checked or watched for divergence) and at the end
of an epoch (test predictions and the epoch's row)."""

from __future__ import annotations

import time

import numpy as np

from compare.train.checks import Checks, drift, norms

clock = time.perf_counter


class BothSides:
    """The manual and torch sides of one run and their checks (``compare.train.sides``,
    ``compare.train.checks.Checks``). ``take(pos, xb, yb, checked)`` runs one step the way the
    configuration says (reference or fast) and returns (loss_manual, loss_torch, seconds manual,
    seconds torch); whatever else the call takes is the checks' time."""

    def __init__(self, cfg, manual, torch_side, checks: Checks):
        self.cfg, self.manual, self.torch, self.checks = cfg, manual, torch_side, checks
        self.take = self.fast_step if cfg.step == "fast" else self.reference_step

    def reference_step(self, pos, xb: np.ndarray, yb: np.ndarray, checked: bool):
        """Gradients of both sides, compared before either updates its weights; then both SGD steps
        (lockstep: torch takes the manual weights instead)."""
        t1 = clock()
        loss_m, grads_m = self.manual.loss_and_grads(xb, yb)
        t2 = clock()
        loss_t, grads_t = self.torch.loss_and_grads(xb, yb)
        t3 = clock()
        if checked:
            self.checks.check(pos, loss_m, loss_t, grads_m, grads_t, xb, yb)
        else:
            self.checks.diverged(pos, "manual", loss_m, norms(self.manual.keys, grads_m))
            self.checks.diverged(pos, "torch", loss_t, norms(self.manual.keys, grads_t))
        t4 = clock()
        self.manual.sgd_step()
        t5 = clock()
        if not self.cfg.lockstep:
            self.torch.sgd_step()
        t6 = clock()
        if self.cfg.lockstep:  # instead of its own update, torch takes the manual weights
            self.torch.load(self.manual.params)
        return loss_m, loss_t, (t2 - t1) + (t5 - t4), (t3 - t2) + (t6 - t5)

    def fast_step(self, pos, xb: np.ndarray, yb: np.ndarray, checked: bool):
        """The manual side's fast step (forward, backward, update in one call); torch's gradient and
        (free mode) its SGD step; then the check of what the fast step did to the weights
        (``Checks.check_fast``; lockstep: before torch takes the manual weights)."""
        t1 = clock()
        loss_m = self.manual.fast_step(xb, yb)
        t2 = clock()
        loss_t, grads_t = self.torch.loss_and_grads(xb, yb)
        if not self.cfg.lockstep:
            self.torch.sgd_step()
        t3 = clock()
        if checked:
            self.checks.check_fast(pos, loss_m, loss_t, grads_t, xb, yb)
        else:  # the fast step hands back no gradient: its loss says whether it diverged
            self.checks.diverged(pos, "manual", loss_m, {})
            self.checks.diverged(pos, "torch", loss_t, norms(self.manual.keys, grads_t), kind="grads")
        if self.cfg.lockstep:
            self.torch.load(self.manual.params)
        return loss_m, loss_t, t2 - t1, t3 - t2

    def evaluate(self, epoch: int, x_test: np.ndarray, tx_test, y_test: np.ndarray, t) -> dict:
        """The epoch's row: mean training losses, test accuracy of both sides, how many test
        predictions differ, ms per step of each side and of the checks, drift (free mode).
        `t`: the epoch's ``records.EpochTotals``; tx_test: x_test as a tensor (shared memory)."""
        pred_m, pred_t = self.manual.predict(x_test), self.torch.predict(tx_test)
        steps = max(t.steps, 1)
        return {
            "epoch": epoch,
            "train_loss_manual": t.loss_manual / steps, "train_loss_torch": t.loss_torch / steps,
            "test_acc_manual": float((pred_m == y_test).mean()),
            "test_acc_torch": float((pred_t == y_test).mean()),
            "test_pred_diff": int((pred_m != pred_t).sum()),
            "ms_per_step_manual": 1e3 * t.t_manual / steps, "ms_per_step_torch": 1e3 * t.t_torch / steps,
            "ms_per_step_checks": 1e3 * t.t_checks / steps, "ms_per_step_data": 1e3 * t.t_data / steps,
            "checks_overhead": t.t_checks / max(t.t_manual + t.t_torch, 1e-12),
            "worst_grad_rel": t.worst_grad_rel, "steps": t.steps,
            "weight_drift": None if self.cfg.lockstep else drift(self.manual.params, self.torch.views),
        }
