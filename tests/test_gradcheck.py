"""compare/gradcheck.py and `crosscheck gradcheck`: four witnesses, pairwise, on real MNIST."""

import json

import numpy as np
import pytest

from compare import cli, gradcheck, tolerances
from manual import functional as mf
from manual.mlp import MLP
from helpers import assert_close_bound, assert_one_line_error, run_cli

RNG = np.random.default_rng(4)


def test_choose_coordinates_all_or_sampled():
    small = MLP((20, 7, 5), seed=0)
    coords = gradcheck.choose_coordinates(small, 10, RNG)
    assert [len(i) for pair in coords for i in pair] == [140, 7, 35, 5]
    big = MLP((784, 100, 10), seed=0)
    coords = gradcheck.choose_coordinates(big, 50, RNG)
    assert [len(i) for pair in coords for i in pair] == [50, 50, 50, 10]
    assert all(len(np.unique(i)) == len(i) and i.max() < 78400 for i in coords[0])


def test_finite_differences_match_the_analytic_gradient_at_the_chosen_coordinates():
    mlp = MLP((10, 6, 3), dtype=np.float32, seed=0)
    x, y = RNG.standard_normal((4, 10)).astype(np.float32), np.array([0, 1, 2, 1])
    coords = [(np.array([0, 7, 59]), np.array([2])), (np.array([1, 17]), np.array([0, 2]))]
    fd = gradcheck.finite_differences(mlp, x, y, coords)
    net64 = MLP((10, 6, 3), seed=0)
    net64.set_parameters(mlp.weights, mlp.biases)
    _, grads = net64.loss_and_grads(x.astype(np.float64), y)
    for (dW, db), (iW, ib), (fW, fb) in zip(grads, coords, fd):
        assert fW.dtype == np.float64  # the finite differences are taken in float64
        for fd_values, exact in ((fW, dW.ravel()[iW]), (fb, db[ib])):
            # FINITE_DIFF_REL bounds ‖fd − g‖ / max(‖fd‖, ‖g‖) over the chosen coordinates (the
            # gradcheck's own measure), so each coordinate is within FINITE_DIFF_REL·max(‖fd‖, ‖g‖)
            scale = max(np.linalg.norm(fd_values), np.linalg.norm(exact))
            assert_close_bound(fd_values, exact, tolerances.FINITE_DIFF_REL * scale)
    assert mlp.weights[0].dtype == np.float32  # the net itself is untouched


def test_the_witnesses_point_at_the_wrong_one(monkeypatch):
    """A bug in the fast path fails exactly the three pairs that contain it."""
    right = mf.linear_backward

    def bad_bias(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        return dW, db * 2, dx

    monkeypatch.setattr(mf, "linear_backward", bad_bias)
    mlp = MLP((12, 8, 4), seed=0)
    x, y = RNG.standard_normal((5, 12)), RNG.integers(0, 4, 5)
    grads, coords, notes, loss = gradcheck.witness_grads(mlp, x, y)
    results = gradcheck.compare_witnesses(grads, coords, np.float64, loss)
    failed = {pair for pair, agrs in results.items() if not all(agr.ok for agr in agrs)}
    assert failed == {("manual", "chain"), ("manual", "torch"), ("manual", "fd")}
    bad = {(agr.layer, agr.param) for agr in results[("manual", "torch")] if not agr.ok}
    assert bad == {(1, "b"), (2, "b")}
    assert "FAIL" in gradcheck.format_table(results)


def test_chain_witness_is_skipped_with_a_note_for_big_nets():
    mlp = MLP((784, 256, 10), seed=0)
    x, y = RNG.standard_normal((2, 784)), np.array([1, 2])
    grads, coords, notes, _ = gradcheck.witness_grads(mlp, x, y, fd_samples=20)
    assert "chain" not in grads and "skipped" in notes["chain"] and "layer 1" in notes["chain"]
    results = gradcheck.compare_witnesses(grads, coords, np.float64)
    assert set(results) == {("manual", "torch"), ("manual", "fd"), ("torch", "fd")}
    assert all(agr.ok for agrs in results.values() for agr in agrs)


# ------------------------------------------------------------------ on MNIST, through the CLI


@pytest.mark.slow
def test_cli_gradcheck_default_net_passes(mnist_dir):
    proc = run_cli("gradcheck", "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PASS: all 6 pairs" in out and "FAIL" not in out
    assert "50,890 of 50,890 coordinates" in out
    for row in ("1      W      64x784", "2      b      10"):
        assert row in out


@pytest.mark.slow
def test_cli_gradcheck_three_hidden_layers_json(mnist_dir):
    proc = run_cli("gradcheck", "--sizes", 784, 64, 32, 16, 10, "--batch", 4, "--json",
                   "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["config"]["sizes"] == [784, 64, 32, 16, 10]
    assert len(report["pairs"]) == 6
    for pair in report["pairs"]:
        assert [(g["layer"], g["param"]) for g in pair["agreements"]] == [
            (i, p) for i in range(1, 5) for p in "Wb"]
        allowed = tolerances.FINITE_DIFF_REL if pair["b"] == "fd" else tolerances.FLOAT64_REL
        assert all(g["ok"] and g["rel_err"] <= allowed for g in pair["agreements"])


@pytest.mark.slow
def test_cli_gradcheck_fails_on_a_wrong_derivative(mnist_dir, monkeypatch, capsys):
    ones = lambda s, out=None: np.ones_like(s)  # noqa: E731  σ' dropped
    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", mf.sigmoid, ones))
    code = cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline", "--batch", "4"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL:" in out and "layer 1 W" in out and "layer 1 b" in out
    assert "layer 2 W" not in out.split("FAIL:")[1]


@pytest.mark.parametrize("args, needle", [
    (["--sizes", "784", "10", "9"], "--sizes"),
    (["--sizes", "783", "10"], "the first 784"),
    (["--sizes", "784", "0", "10"], "must be an integer >= 1"),
    (["--batch", "0"], "--batch"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--activation", "gelu"], "--activation"),
])
def test_cli_gradcheck_bad_values(args, needle):
    assert_one_line_error(run_cli("gradcheck", *args), 2, needle)
