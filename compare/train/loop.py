"""The training loop of a side-by-side run: epochs, steps, evaluation, signals.

One seeded ``numpy.random.Generator`` draws the initial weights (once; torch gets a copy) and one
permutation of the training set per epoch (the notes: shuffle D, then step through it). Each
batch is one array, indexed out of the preloaded data and handed to both sides.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np

from compare.train import checkpoint, sides, summary
from compare.train.checks import Checks, TrainingFailure
from compare.train.step import BothSides
from compare.train.config import TrainConfig
from compare.train.records import Position, Records

POSTFIX_EVERY = 25  # progress-bar refresh, in steps
clock = time.perf_counter


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the run stopped after a whole step and saved everything."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class SideBySide:
    """One run: both sides, the generator, the checks and everything recorded so far.

    Args:
        config: the run's configuration. mnist: ``compare.data.MNIST`` (x_train, y_train, x_test,
            y_test, prepared). out: the run directory. log: where messages go. progress: the
            progress bar (None: only on a terminal, False: never).
    """

    def __init__(self, config: TrainConfig, mnist, out: Path, log=print, progress: bool | None = None):
        import torch

        self.cfg, self.out, self.log, self.progress = config, Path(out), log, progress
        n = config.limit_train or len(mnist.x_train)
        self.x, self.y = mnist.x_train[:n], mnist.y_train[:n]
        self.x_test, self.y_test = mnist.x_test, mnist.y_test
        self.tx_test = torch.from_numpy(mnist.x_test).to(config.device)  # on the CPU: the same memory
        self.data_source = mnist.prepared.description
        self.rng = np.random.default_rng(config.seed)
        self.manual, self.torch = sides.build(config, self.rng)
        self.records = Records(key=Checks.kind_for(config))
        self.checks = Checks(config, self.manual, self.torch, self.records)
        self.sides = BothSides(config, self.manual, self.torch, self.checks)
        self.steps_per_epoch = math.ceil(n / config.batch_size)
        self.epoch, self.step_in_epoch, self.global_step = 1, 0, 0  # position (restored by resume)
        self.epoch_rng_state = None
        self.status, self.failure = "running", None
        self._signal: int | None = None

    @property
    def history(self) -> list[dict]:
        return self.records.history

    # ------------------------------------------------------------------ one step

    def _step(self, epoch: int, step: int, idx: np.ndarray) -> None:
        """One step of both sides on the batch `idx`, checked (or watched for divergence)."""
        t0 = clock()
        xb, yb = self.x[idx], self.y[idx]  # one batch array, handed to both sides
        t1 = clock()
        self.global_step += 1
        pos = Position(epoch, step, self.global_step, self.steps_per_epoch)
        checked = self.global_step % self.cfg.check_every == 0
        loss_m, loss_t, t_manual, t_torch = self.sides.take(pos, xb, yb, checked)
        t = self.records.totals
        t.loss_manual += loss_m
        t.loss_torch += loss_t
        t.steps += 1
        t.t_data += t1 - t0
        t.t_manual += t_manual
        t.t_torch += t_torch
        t.t_checks += clock() - t1 - t_manual - t_torch
        self.step_in_epoch = step + 1

    def _epoch(self, epoch: int) -> None:
        from tqdm import tqdm

        if self.step_in_epoch == 0:
            self.epoch_rng_state = self.rng.bit_generator.state  # to redraw this permutation on resume
        else:
            self.rng.bit_generator.state = self.epoch_rng_state
        perm = self.rng.permutation(len(self.x))
        B, last = self.cfg.batch_size, self.steps_per_epoch - 1
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {epoch}/{self.cfg.epochs}",
                   unit="step", disable=self.progress is False or None, leave=False, dynamic_ncols=True)
        try:
            for step in range(self.step_in_epoch, self.steps_per_epoch):
                self._step(epoch, step, perm[step * B:(step + 1) * B])
                if step % POSTFIX_EVERY == 0 or step == last:
                    bar.update(step + 1 - bar.n)
                    t = self.records.totals
                    bar.set_postfix_str(f"loss manual {t.loss_manual / t.steps:.4f} torch {t.loss_torch / t.steps:.4f} "
                                        f"worst rel {t.worst_grad_rel:.1e}", refresh=False)
                if self._signal is not None:
                    raise Interrupted(self._signal)
        finally:
            bar.close()

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
                row = self.sides.evaluate(self.epoch, self.x_test, self.tx_test, self.y_test, self.records.totals)
                self.records.add_epoch(row)
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.records.new_epoch()
                checkpoint.save_run(self)
                summary.write_report(self, plots=False)  # the plots, slow to draw, come at the end
            last = self.history[-1]
            if self.cfg.dtype == "float64" and last["test_pred_diff"]:  # float32 sides may differ on a few
                raise TrainingFailure(f"the two sides predict differently on {last['test_pred_diff']} test images "
                                      f"after epoch {last['epoch']}; float64 runs must agree on every prediction")
            self.status = "passed"
            return summary.summary(self)
        except Interrupted:
            self.status = "interrupted"
            checkpoint.save_run(self)
            raise
        except TrainingFailure as e:
            self.status, self.failure = "failed", str(e)
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            summary.write_report(self)
