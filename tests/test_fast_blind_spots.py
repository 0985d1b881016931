"""Side-by-side training on random data in MNIST's shape: what a training bug breaks, seen in
seconds (the slow tests in test_blind_spots.py and test_harness.py see it on the real MNIST).

- The two losses of a float64 run agree to float64 precision (a side computing its loss in
  float32 is off by float32's rounding, 1e-8 and more).
- Every bound a run passes or fails on decides, and keeps what the run promises to catch
  (``test_blind_spots.PROMISES``): a bound loosened past its promise fails here.
- Every batch of an epoch, the last, partial one too, updates both sides: the weights after an
  epoch are those of a plain SGD loop over the same batches.
- The float32 referee's gradient is a float64 one: each float32 side is at least the rounding of
  storing it in float32 away from it, and a referee at distance 0 fails the run.

The runs call ``SideBySide`` directly on a stand-in for ``compare.data.MNIST`` (random pixels and
labels); the plots, slow to draw and checked elsewhere, are left out.
"""

import copy
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from compare import report, tolerances
from compare.agreement import rel_distance
from compare.train import SideBySide, TrainConfig, TrainingFailure
from compare.train.sides import ManualMLP
from test_blind_spots import BOUND_FIELD, FAILED, MEASURES, PASSED, PROMISES, inject

SIZES = (784, 64, 10)  # MNIST's input and classes, a small hidden layer
TEST_IMAGES = 50


def random_mnist(n: int, dtype: str, seed: int = 0):
    """A stand-in for ``compare.data.MNIST``: n training and TEST_IMAGES test images of 784
    standard-normal pixels, uniform random labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n + TEST_IMAGES, SIZES[0])).astype(dtype)
    labels = rng.integers(0, SIZES[-1], n + TEST_IMAGES)
    return types.SimpleNamespace(x_train=images[:n], y_train=labels[:n], x_test=images[n:], y_test=labels[n:],
                                 prepared=types.SimpleNamespace(description=f"{n} random images"))


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    monkeypatch.setattr(report, "plot", lambda *args, **kwargs: None)


def side_by_side(out, n: int = 100, **config) -> SideBySide:
    """A run of the 784-64-10 sigmoid net on n random images (one epoch of one batch unless told)."""
    cfg = TrainConfig(**{"sizes": SIZES, "epochs": 1, "batch_size": n, **config})
    out.mkdir(parents=True, exist_ok=True)
    return SideBySide(cfg, random_mnist(n, cfg.dtype), out, log=lambda line: None, progress=False)


def train(out, n: int = 100, **config) -> tuple[str | None, list[dict], SideBySide]:
    """Run it to the end: (the failure, None if it passed; its metrics records; the run)."""
    run = side_by_side(out, n, **config)
    try:
        run.run()
    except TrainingFailure:
        pass
    return run.failure, [json.loads(line) for line in run.records.metrics], run


# ------------------------------------------------------------------ the losses of a float64 run


def relative(a: float, b: float) -> float:
    """|a − b| / max(|a|, |b|): how far apart two losses are."""
    return abs(a - b) / max(abs(a), abs(b))


@pytest.mark.parametrize("mode", ["free", "lockstep"])
@pytest.mark.parametrize("step", ["reference", "fast"])
def test_the_losses_of_a_float64_run_agree_to_float64_precision(tmp_path, mode, step):
    """Both sides compute the batch-mean loss in float64: at every step the two agree within the
    float64 bound of two computations (FLOAT64_REL), which the same loss rounded once to float32
    would exceed."""
    failure, records, _ = train(tmp_path, n=300, batch_size=70, epochs=2, mode=mode, step=step)
    assert failure is None, failure
    assert len(records) == 10
    bound = tolerances.gradient_rel("float64")
    assert all(relative(r["loss_manual"], r["loss_torch"]) <= bound for r in records), records
    # the bound sees a float32 loss: one rounding of the torch loss to float32 leaves it
    assert max(relative(r["loss_manual"], float(np.float32(r["loss_torch"]))) for r in records) > bound


# ------------------------------------------------------------------ every bound decides


@pytest.mark.parametrize("dtype, mode", list(PROMISES))
def test_every_bound_fails_an_error_just_above_it_and_keeps_its_promise(tmp_path, monkeypatch, dtype, mode):
    """For each measure (the gradients' relative and elementwise errors, the loss) of one step:
    the error each run promises to catch fails it, through that measure; 3x the bound the run
    records fails through that measure alone; 1/3 of it (all three at once) passes."""
    bounds = {}
    for what in MEASURES:
        with monkeypatch.context() as m:
            inject(m, what, PROMISES[dtype, mode][what])
            failure, (record,), _ = train(tmp_path / f"promise {what}", dtype=dtype, mode=mode)
        assert failure and re.search(FAILED[what], failure), (what, failure)
        assert "at epoch 1, step 1 (batch 1 of 1)" in failure
        if what != "loss":
            assert ": layer 1 W" in failure.splitlines()[0]
        bounds[what] = record[BOUND_FIELD[what]]
    for what in MEASURES:
        with monkeypatch.context() as m:
            inject(m, what, 3 * bounds[what])
            failure, _, _ = train(tmp_path / f"above {what}", dtype=dtype, mode=mode)
        assert failure and re.search(FAILED[what], failure), (what, failure)
        other = {"relative error": "elementwise error", "elementwise error": "relative error"}.get(what)
        if other:
            assert re.search(PASSED[other], failure), failure
    with monkeypatch.context() as m:
        inject(m, "relative error", bounds["relative error"] / 3, layer=2)
        inject(m, "elementwise error", bounds["elementwise error"] / 3)
        inject(m, "loss", bounds["loss"] / 3)
        failure, _, _ = train(tmp_path / "below", dtype=dtype, mode=mode)
    assert failure is None, failure


# ------------------------------------------------------------------ every batch updates both sides


def plain_sgd(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, skip_last: bool = False) -> list[np.ndarray]:
    """The weights [W1, b1, W2, b2] after cfg.epochs of the notes' loop, written out: the seed's
    generator draws the weights, then one permutation per epoch; θ ← θ − lr·∂L/∂θ on each slice of
    batch_size images of it, the last, shorter one included (`skip_last`: left out)."""
    from manual.mlp import MLP

    rng = np.random.default_rng(cfg.seed)
    net = MLP(cfg.sizes, cfg.activation, np.dtype(cfg.dtype), seed=rng)
    for _ in range(cfg.epochs):
        perm = rng.permutation(len(x))
        starts = range(0, len(x), cfg.batch_size)
        for start in list(starts)[:-1] if skip_last else starts:
            idx = perm[start:start + cfg.batch_size]
            _, grads = net.loss_and_grads(x[idx], y[idx])
            for (W, b), (dW, db) in zip(net.parameters(), grads):
                W -= cfg.lr * dW
                b -= cfg.lr * db
    return [a.copy() for pair in net.parameters() for a in pair]


@pytest.mark.parametrize("mode", ["free", "lockstep"])
@pytest.mark.parametrize("step", ["reference", "fast"])
def test_the_last_partial_batch_of_an_epoch_updates_both_sides(tmp_path, mode, step):
    """100 images in batches of 30: 30, 30, 30 and 10. After the epoch both sides hold the weights
    of the plain loop, within the drift of two float64 trajectories (FREE_WEIGHT_REL), which the
    update of the 10-image batch alone exceeds. Every step is checked, the partial one too."""
    failure, records, run = train(tmp_path, n=100, batch_size=30, mode=mode, step=step)
    assert failure is None, failure
    assert [(r["epoch"], r["batch"]) for r in records] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert run.global_step == len(records) == 4
    right = plain_sgd(run.cfg, run.x, run.y)
    without_last = plain_sgd(run.cfg, run.x, run.y, skip_last=True)
    bound = tolerances.FREE_WEIGHT_REL
    assert max(rel_distance(a, b) for a, b in zip(right, without_last)) > 100 * bound  # a skipped update shows
    for side, params in (("manual", run.manual.params), ("torch", run.torch.views)):
        for key, a, b in zip(run.manual.keys, params, right):
            assert rel_distance(a, b) <= bound, (side, str(key), rel_distance(a, b))


def test_a_manual_side_that_skips_the_partial_batchs_update_fails_the_next_step(tmp_path, monkeypatch):
    """In free mode the torch side still takes that update: the two trajectories part, and the
    first step of the next epoch fails, naming it."""
    right_grads, right_step = ManualMLP.loss_and_grads, ManualMLP.sgd_step
    sizes = []

    def remember_batch(self, x, y):
        sizes.append(len(x))
        return right_grads(self, x, y)

    def skip_partial(self):
        if sizes[-1] == 30:  # the bug: no update after the last, partial batch
            right_step(self)

    monkeypatch.setattr(ManualMLP, "loss_and_grads", remember_batch)
    monkeypatch.setattr(ManualMLP, "sgd_step", skip_partial)
    failure, records, _ = train(tmp_path, n=100, batch_size=30, epochs=2)
    assert sizes == [30, 30, 30, 10, 30] and len(records) == 5
    assert failure.startswith("gradients disagree (manual vs torch) at epoch 2, step 5 (batch 1 of 4)"), failure


# ------------------------------------------------------------------ the float64 referee


def torch_float64_grads(run: SideBySide, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """The gradients of the run's torch module at its weights, recomputed by autograd in float64
    (a copy of the module), in the manual side's order: a float64 gradient made without the
    referee's code."""
    import torch
    import torch.nn.functional as F

    module = copy.deepcopy(run.torch.module).double()
    position = {id(p): i for i, p in enumerate(run.torch.module.parameters())}
    params = list(module.parameters())
    params = [params[position[id(p)]] for p in run.torch.params]
    loss = F.cross_entropy(module(torch.from_numpy(x.astype(np.float64))), torch.from_numpy(y))
    return [g.numpy() for g in torch.autograd.grad(loss, params)]


SOFTPLUS_MODEL = f"{Path(__file__).resolve().parent.parent / 'examples' / 'softplus.py'}:build"


@pytest.mark.parametrize("model", ["", SOFTPLUS_MODEL], ids=["mlp", "user-stack"])
def test_the_referee_is_float64_and_each_float32_side_at_least_a_rounding_from_it(tmp_path, model):
    """On a float32 lockstep run's first batch: the referee's gradient agrees with torch's float64
    autograd within FLOAT64_REL, and each side's reported distance from it lies between the
    distance of the float64 gradient from its own float32 rounding (the nearest any float32 array
    can come, up to the norms' ratio) and FLOAT32_REL."""
    run = side_by_side(tmp_path, n=64, dtype="float32", referee=True, model=model)
    x, y = run.x, run.y
    grads_m = [g.copy() for g in run.manual.loss_and_grads(x, y)[1]]
    grads_t = [g.copy() for g in run.torch.loss_and_grads(x, y)[1]]
    exact = torch_float64_grads(run, x, y)
    for key, g64, e in zip(run.manual.keys, run.manual.float64_grads(x, y), exact):
        assert rel_distance(g64, e) <= tolerances.FLOAT64_REL, (str(key), rel_distance(g64, e))
    referee = run.checks.referee(grads_m, grads_t, x, y)
    assert len(referee["layers"]) == len(exact)
    for q, e in zip(referee["layers"], exact):
        nearest = rel_distance(e.astype(np.float32), e) / (1 + tolerances.FLOAT32_REL) - tolerances.FLOAT64_REL
        assert 0 < nearest <= q["manual_rel"] < tolerances.FLOAT32_REL, (q, nearest)
        assert nearest <= q["torch_rel"] < tolerances.FLOAT32_REL, (q, nearest)


def test_a_float32_run_with_the_referee_reports_distances_of_float32_size(tmp_path):
    """--referee: every checked step has the referee's verdict; each side's distance is above 0
    and below FLOAT32_REL, and the tally counts every step once."""
    failure, records, run = train(tmp_path, n=200, batch_size=50, epochs=2, dtype="float32", referee=True)
    assert failure is None, failure
    assert len(records) == 8 and all("referee" in r for r in records)
    for r in records:
        assert 0 < r["referee"]["manual_max_rel"] < tolerances.FLOAT32_REL, r["referee"]
        assert 0 < r["referee"]["torch_max_rel"] < tolerances.FLOAT32_REL, r["referee"]
    tally = run.records.referee
    assert tally.checks == 8 == tally.manual_closer + tally.torch_closer + tally.ties


def float32_referee(self, x, y):
    """The bug: the "float64" referee recomputes the gradient in the run's float32."""
    _, grads = self.mlp.loss_and_grads(x, y)
    return [g.astype(np.float64) for pair in grads for g in pair]


def test_a_referee_that_computed_in_float32_fails_the_run_in_one_line(tmp_path, monkeypatch):
    """Its gradient is then the manual side's to the last bit: distance 0, the manual side "closer" at
    every step, nothing refereed. The run stops at the first refereed step, saying why, in one line."""
    monkeypatch.setattr(ManualMLP, "float64_grads", float32_referee)
    failure, _, run = train(tmp_path, dtype="float32", referee=True)
    assert run.status == "failed" and len(failure.splitlines()) == 1, failure
    assert "referee" in failure and "the manual side's float32 gradient" in failure
    assert failure.endswith("did not compute in float64")
    assert json.loads((tmp_path / report.SUMMARY).read_text())["failure"] == failure


def test_zero_gradients_equal_in_both_precisions_are_no_alarm(tmp_path, monkeypatch):
    """A parameter whose gradient is exactly 0 (dead units) is 0 in float32 and float64 alike, and
    so is a gradient that is 0 everywhere: the referee reports distance 0 and the run goes on."""
    run = side_by_side(tmp_path, n=64, dtype="float32", referee=True)
    x, y = run.x, run.y
    grads_m = [g.copy() for g in run.manual.loss_and_grads(x, y)[1]]
    grads_t = [g.copy() for g in run.torch.loss_and_grads(x, y)[1]]
    right = ManualMLP.float64_grads

    def dead_first_layer(self, x, y):
        return [np.zeros_like(g) if i < 2 else g for i, g in enumerate(right(self, x, y))]

    monkeypatch.setattr(ManualMLP, "float64_grads", dead_first_layer)
    for g in grads_m[:2] + grads_t[:2]:
        g[...] = 0
    referee = run.checks.referee(grads_m, grads_t, x, y)
    assert [q["manual_rel"] == q["torch_rel"] == 0 for q in referee["layers"]] == [True, True, False, False]
    monkeypatch.setattr(ManualMLP, "float64_grads", lambda self, x, y: [np.zeros_like(g, np.float64) for g in grads_m])
    zeros = [np.zeros_like(g) for g in grads_m]
    assert run.checks.referee(zeros, zeros, x, y)["manual_max_rel"] == 0
