"""The checker's blind spots, each shut by a test that fails if it opens again.

- Every bound of compare/tolerances.py that a run or gradcheck passes or fails on: a manual-side
  error 3x the bound (read from the run's own record) fails, naming the measure, and 1/3 of it
  passes; and an error of fixed size (what each check promises to catch) fails, so that loosening
  a bound (FREE_GRAD_REL from 1e-9 to 1e-3, say) fails a test.
- The last, partial batch of an epoch: its step is checked, and a manual side that skips its
  update there is caught.
- gradcheck compares the witnesses' loss values: a manual loss 24 % off fails it.
- One wrong element in a 200,704-element gradient fails a run through the elementwise measure.

Errors are injected into the manual side (``MLP.loss_and_grads``, ``SGD.step``,
``functional.cross_entropy_backward``) and the run goes through the CLI entry point, in process.
"""

import json
import math
import re

import numpy as np
import pytest

from compare import cli, gradcheck, report, tolerances
from manual import functional as mf
from manual.mlp import MLP
from manual.optim import SGD

pytestmark = pytest.mark.slow  # trains on the real MNIST

# ------------------------------------------------------------------ injected errors


def spread_error(g: np.ndarray, eps: float) -> None:
    """g += eps·‖g‖/√n·s, s = +1, −1, +1, ... in flat order: a relative error eps of the whole array
    whose elementwise share, eps·rms(g)/max|g|, is below eps (so the relative error decides)."""
    flat = g.reshape(-1)
    signs = np.where(np.arange(flat.size) % 2 == 0, 1.0, -1.0)
    flat += (eps * math.sqrt(float(np.dot(flat, flat)) / flat.size) * signs).astype(g.dtype)


def one_element_error(g: np.ndarray, eps: float) -> tuple:
    """The element of least magnitude += eps·max|g|: an elementwise error eps whose share of the
    2-norm, eps·max|g|/‖g‖, is small for a large array. Returns its index."""
    k = np.unravel_index(np.abs(g).argmin(), g.shape)
    g[k] += g.dtype.type(eps * np.abs(g).max())
    return k


def inject(monkeypatch, what: str, eps: float, layer: int = 1, param: str = "W") -> None:
    """Every manual loss_and_grads from now on returns a wrong value: what = "relative error"
    (spread over layer `layer` `param`), "elementwise error" (one element of it) or "loss"
    (the loss times 1 + eps)."""
    right = MLP.loss_and_grads

    def wrong(self, x, y):
        loss, grads = right(self, x, y)
        g = grads[layer - 1]["Wb".index(param)]
        if what == "relative error":
            spread_error(g, eps)
        elif what == "elementwise error":
            one_element_error(g, eps)
        else:
            loss *= 1 + eps
        return loss, grads

    monkeypatch.setattr(MLP, "loss_and_grads", wrong)


def train(mnist_dir, out, *options) -> tuple[int, dict, list[dict]]:
    """`crosscheck train` in process; returns (exit code, summary.json, metrics.jsonl records)."""
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--offline", "--out", str(out), *map(str, options)])
    summary = json.loads((out / report.SUMMARY).read_text())
    records = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    return code, summary, records


ONE_STEP = ("--limit-train", "100", "--batch-size", "100", "--epochs", "1")  # one checked step

# How each measure reads in a failure: the relative and elementwise errors of a parameter
# (compare.agreement.message) and the losses (compare.train.checks).
FAILED = {"relative error": r"relative error \S+ > allowed",
          "elementwise error": r"elementwise error \([^)]*\) \S+ > allowed", "loss": r"losses disagree"}
PASSED = {"relative error": r"relative error \S+ <= allowed",
          "elementwise error": r"elementwise error \([^)]*\) \S+ <= allowed"}
BOUND_FIELD = {"relative error": "allowed_grad", "elementwise error": "allowed_elem", "loss": "allowed_loss"}

# What each run promises to catch at its first step: an injected error of this size fails it,
# through this measure. Ten times the bound in float64 (rounding there is ~1e-15, so any bound up
# to a tenth of the promise is honest), the size of the smallest real bug in float32 (1e-2,
# compare/tolerances.py), 1e-3 for the lockstep float32 relative error and loss (at identical
# weights float32 rounding stays near 1e-6). Loosening a bound past its promise fails here.
PROMISES = {
    ("float64", "free"): {"relative error": 1e-8, "elementwise error": 1e-8, "loss": 1e-9},
    ("float64", "lockstep"): {"relative error": 1e-9, "elementwise error": 1e-9, "loss": 1e-9},
    ("float32", "lockstep"): {"relative error": 1e-3, "elementwise error": 1e-2, "loss": 1e-3},
    ("float32", "free"): {"relative error": 1e-2, "elementwise error": 1e-2, "loss": 1e-2},
}
MEASURES = ("relative error", "elementwise error", "loss")


# ------------------------------------------------------------------ (a) every bound decides


@pytest.mark.parametrize("dtype, mode", list(PROMISES))
def test_every_train_bound_fails_an_error_just_above_it_and_keeps_its_promise(tmp_path, mnist_dir, monkeypatch,
                                                                              dtype, mode):
    """For each measure (the gradients' relative and elementwise errors, the loss): an error of the
    promised size fails step 1 naming that measure (and layer 1 W); 3x the bound the run records
    fails the same way, 1/3 of it (all three measures at once) passes."""
    options = (*ONE_STEP, "--dtype", dtype, "--mode", mode)
    bounds = {}
    for what in MEASURES:
        with monkeypatch.context() as m:
            inject(m, what, PROMISES[dtype, mode][what])
            code, summary, (record,) = train(mnist_dir, tmp_path / f"promise {what}", *options)
        assert code == 1 and summary["status"] == "failed", (what, summary["failure"])
        assert re.search(FAILED[what], summary["failure"]), (what, summary["failure"])
        assert "at epoch 1, step 1 (batch 1 of 1)" in summary["failure"]
        if what != "loss":
            assert ": layer 1 W" in summary["failure"].splitlines()[0]
        bounds[what] = record[BOUND_FIELD[what]]
    for what in MEASURES:
        with monkeypatch.context() as m:
            inject(m, what, 3 * bounds[what])
            code, summary, _ = train(mnist_dir, tmp_path / f"above {what}", *options)
        assert code == 1 and re.search(FAILED[what], summary["failure"]), (what, summary["failure"])
        other = {"relative error": "elementwise error", "elementwise error": "relative error"}.get(what)
        if other:  # the injected error is out of this measure's bound only
            assert re.search(PASSED[other], summary["failure"]), summary["failure"]
    with monkeypatch.context() as m:
        inject(m, "relative error", bounds["relative error"] / 3, layer=2)
        inject(m, "elementwise error", bounds["elementwise error"] / 3)
        inject(m, "loss", bounds["loss"] / 3)
        code, summary, _ = train(mnist_dir, tmp_path / "below", *options)
    assert code == 0, summary["failure"]


def test_a_relative_error_of_1e_7_in_one_layer_fails_the_default_run_at_step_1(tmp_path, mnist_dir, monkeypatch):
    """The default float64 free run with layer 2's dW 1e-7 off (relative): a hundred times the
    free-mode bound, seen at the first step."""
    inject(monkeypatch, "relative error", 1e-7, layer=2)
    code, summary, _ = train(mnist_dir, tmp_path / "run", *ONE_STEP)
    assert code == 1
    assert summary["failure"].splitlines()[0].endswith("at epoch 1, step 1 (batch 1 of 1): layer 2 W")
    assert re.search(r"relative error 1e-07 > allowed 1e-09", summary["failure"])


@pytest.fixture(scope="module")
def batch(mnist64):
    """8 MNIST images for a 784-16-10 net, whose every coordinate gradcheck differences."""
    return mnist64.x_train[:8], mnist64.y_train[:8]


def with_manual_error(batch, what: str, eps: float) -> dict:
    """gradcheck's report (the referee's) after `what` ("relative error" or "elementwise error") of
    size eps in the manual witness's layer 1 W; returns {(a, b): the parameter W1 Agreement}."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        inject(monkeypatch, what, eps)
        found, skipped = gradcheck.check_net(MLP((784, 16, 10), "sigmoid", np.float64, seed=0), *batch)
    assert not skipped and "parameter W1 12544/12544" in str(found)
    return {(c.a, c.b): c.agreement for c in found.comparisons if c.tensor == "parameter W1"}


@pytest.mark.parametrize("what, promise", [("relative error", 1e-5), ("elementwise error", 1e-5)])
def test_every_gradcheck_bound_fails_an_error_just_above_it(batch, what, promise):
    """Against finite differences and between analytic witnesses (torch, the chain): the manual
    witness off by 3x the pair's bound fails that pair through that measure, 1/3 of it passes; and
    against fd a 1e-5 error (ten times the bound, the fd noise being ~1e-8) fails."""
    exact = with_manual_error(batch, what, 0.0)
    assert all(agr.ok for agr in exact.values())
    assert what in with_manual_error(batch, what, promise)[("manual", "fd")].failed
    bounds = {pair: exact[pair].allowed if what == "relative error" else exact[pair].elem_allowed
              for pair in (("manual", "fd"), ("manual", "torch"), ("manual", "chain"))}
    for bound in sorted(set(bounds.values())):
        above, below = with_manual_error(batch, what, 3 * bound), with_manual_error(batch, what, bound / 3)
        for pair in (p for p, b in bounds.items() if b == bound):
            assert what in above[pair].failed and below[pair].ok, pair
    assert all(agr.ok for pair, agr in with_manual_error(batch, what, 1.0).items() if "manual" not in pair)


# ------------------------------------------------------------------ (b) the partial last batch


def test_the_partial_last_batch_is_checked_and_a_skipped_update_there_is_caught(tmp_path, mnist_dir, monkeypatch):
    """1000 images in batches of 300: 300, 300, 300, 100 per epoch, 8 checked steps in 2 epochs.
    A manual SGD that skips the update after the partial batch leaves the two trajectories apart:
    the next step (epoch 2, batch 1) fails."""
    options = ("--limit-train", "1000", "--batch-size", "300", "--epochs", "2")
    code, summary, records = train(mnist_dir, tmp_path / "right", *options)
    assert code == 0 and summary["steps"] == summary["checked_steps"] == 8
    assert [(r["epoch"], r["batch"]) for r in records] == [(e, b) for e in (1, 2) for b in (1, 2, 3, 4)]

    right_grads, right_step = MLP.loss_and_grads, SGD.step
    batch = []

    def remember_batch(self, x, y):
        batch.append(len(x))
        return right_grads(self, x, y)

    def skip_partial(self, params, grads):
        if batch[-1] < 300:  # the bug: no update after the last, partial batch
            return None
        return right_step(self, params, grads)

    monkeypatch.setattr(MLP, "loss_and_grads", remember_batch)
    monkeypatch.setattr(SGD, "step", skip_partial)
    code, summary, records = train(mnist_dir, tmp_path / "skipped", *options)
    assert code == 1 and len(records) == 5 and batch[3] == 100
    assert "gradients disagree (manual vs torch) at epoch 2, step 5 (batch 1 of 4)" in summary["failure"]


# ------------------------------------------------------------------ (c) gradcheck compares losses


def test_gradcheck_fails_a_manual_loss_that_dropped_the_shift_from_the_label_term(mnist_dir, monkeypatch, capsys):
    """The bug: loss = mean(ln Σ e^(ẑ−c) − ẑ_y) with c = max ẑ dropped from the label term (so off
    by the mean of c), δ right. Every gradient agrees, and so does the forward's loss (MLP.loss,
    which finite differences differentiate); the loss the backward pass returns, the one training
    reports, fails against torch's, 21 % off, and the culprit search names the loss layer."""
    right = mf.cross_entropy_backward

    def label_term_without_the_shift(logits, y):
        loss, delta = right(logits, y)
        return loss - float(logits.max(axis=1).mean()), delta

    monkeypatch.setattr(mf, "cross_entropy_backward", label_term_without_the_shift)
    assert cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    rows = {(c["tensor"], p["a"], p["b"]): c for p in result["pairs"] for c in p["comparisons"]}
    failing = [key for key, c in rows.items() if not c["ok"]]
    assert failing == [("loss (backward pass)", "manual", "torch")]
    assert 0.2 < rows[failing[0]]["rel_err"] < 0.25
    assert rows[("output", "manual", "torch")]["ok"] and any(key[0].startswith("parameter W") for key in rows)
    loss_row = result["table"].splitlines()[-1].split()
    assert loss_row[:3] == ["loss", "(backward", "pass)"] and loss_row.count("FAIL") == 1
    assert "  loss (backward pass): manual vs torch" in result["failures"]
    assert result["culprit"].startswith("the first wrong layer from the loss is the loss (SoftmaxCrossEntropy)")


# ------------------------------------------------------------------ (d) one wrong element


def test_one_wrong_element_of_a_200k_gradient_fails_a_4_step_run(tmp_path, mnist_dir, monkeypatch):
    """Layer 1 dW (256 x 784 = 200,704 elements), one element off by 1e-8 of the greatest: the
    relative error (2-norm) stays below FREE_GRAD_REL; the elementwise measure fails step 1."""
    inject(monkeypatch, "elementwise error", 1e-8)
    code, summary, (record,) = train(mnist_dir, tmp_path / "run", "--limit-train", "400", "--batch-size", "100",
                                     "--epochs", "1")
    assert code == 1 and summary["config"]["sizes"] == [784, 256, 10]
    assert "at epoch 1, step 1 (batch 1 of 4): layer 1 W" in summary["failure"].splitlines()[0]
    assert re.search(FAILED["elementwise error"], summary["failure"])
    assert re.search(PASSED["relative error"], summary["failure"])
    w1 = record["grads"][0]
    assert (w1["layer"], w1["param"]) == (1, "W")
    assert w1["rel_err"] < record["allowed_grad"] < 1e-8 <= w1["elem_rel"] * (1 + 1e-6)
