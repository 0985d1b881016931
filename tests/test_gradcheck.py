"""compare/gradcheck.py and `crosscheck gradcheck`: the referee's check of a whole net's gradient,
with the notes' chain rule as one more witness, on real MNIST."""

import json
import re

import numpy as np
import pytest

import torch

from compare import cli, gradcheck
from manual import functional as mf
from manual.mlp import MLP
from helpers import assert_one_line_error, run_cli

RNG = np.random.default_rng(4)


def failing(report) -> set:
    return {(c.tensor, c.a, c.b) for c in report.failures}


def test_a_right_net_passes_every_witness_pair_with_every_coordinate_differenced():
    mlp = MLP((12, 8, 4), seed=0)
    x, y = RNG.standard_normal((5, 12)), RNG.integers(0, 4, 5)
    report, skipped = gradcheck.check_net(mlp, x, y)
    assert report.ok and not skipped, str(report)
    pairs = {(c.a, c.b) for c in report.comparisons}
    assert {("manual", "torch"), ("manual", "fd"), ("torch", "fd"), ("manual", "chain"), ("chain", "torch")} <= pairs
    coverage = next(n.text for n in report.notes if n.kind == "coverage")
    assert coverage == "fd coordinates: parameter W1 96/96, parameter b1 8/8, parameter W2 32/32, parameter b2 4/4"
    assert "manual~chain" in report.table()


def test_float32_is_judged_in_float64_with_the_chain_against_the_float64_witnesses():
    mlp = MLP((12, 8, 4), dtype=np.float32, seed=0)
    x, y = RNG.standard_normal((5, 12)).astype(np.float32), RNG.integers(0, 4, 5)
    report, _ = gradcheck.check_net(mlp, x, y)
    assert report.ok, str(report)
    assert {("manual64", "chain"), ("chain", "torch64"), ("manual", "torch")} <= {(c.a, c.b) for c in report.comparisons}
    assert mlp.weights[0].dtype == np.float32  # the net itself is untouched


def test_the_witnesses_point_at_the_wrong_one(monkeypatch):
    """A bug in the fast path (db doubled) fails exactly the pairs that contain manual, on the
    biases alone, and is diagnosed as the factor 2."""
    right = mf.linear_backward

    def bad_bias(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        return dW, db * 2, dx

    monkeypatch.setattr(mf, "linear_backward", bad_bias)
    mlp = MLP((12, 8, 4), seed=0)
    x, y = RNG.standard_normal((5, 12)), RNG.integers(0, 4, 5)
    report, _ = gradcheck.check_net(mlp, x, y)
    assert {t for t, _, _ in failing(report)} == {"parameter b1", "parameter b2"}
    assert {(a, b) for _, a, b in failing(report)} == {("manual", "torch"), ("manual", "fd"), ("manual", "dir"),
                                                      ("manual", "chain")}
    for tensor in ("parameter b1", "parameter b2"):
        d = report.diagnoses[tensor]
        assert d.kind == "constant factor" and d.value == pytest.approx(2.0), d
        assert report.suspects[tensor].side == "yours"
    assert "FAIL" in report.table()


def test_a_wrong_chain_fails_its_own_pairs_and_no_other(monkeypatch):
    """The chain is a witness, not a bystander: a chain off by a factor fails both of its pairs
    on every tensor, while manual, torch and the finite differences still agree."""
    right = gradcheck.jacobians.batch_grads
    monkeypatch.setattr(gradcheck.jacobians, "batch_grads",
                        lambda *args: [(1.01 * dW, 1.01 * db) for dW, db in right(*args)])
    mlp = MLP((12, 8, 4), seed=0)
    x, y = RNG.standard_normal((5, 12)), RNG.integers(0, 4, 5)
    report, _ = gradcheck.check_net(mlp, x, y)
    assert {(a, b) for _, a, b in failing(report)} == {("manual", "chain"), ("chain", "torch")}
    assert {t for t, _, _ in failing(report)} == {f"parameter {p}{i}" for i in (1, 2) for p in "Wb"}


def test_chain_witness_is_skipped_with_a_note_and_fd_samples_each_tensor_of_a_big_net():
    mlp = MLP((784, 256, 10), seed=0)
    x, y = RNG.standard_normal((2, 784)), np.array([1, 2])
    report, skipped = gradcheck.check_net(mlp, x, y, fd_samples=20)
    assert "skipped" in skipped and "layer 1" in skipped
    assert "chain" not in {w for c in report.comparisons for w in (c.a, c.b)}
    coverage = next(n.text for n in report.notes if n.kind == "coverage")
    assert coverage == ("fd coordinates: parameter W1 20/200704, parameter b1 20/256, parameter W2 20/2560, "
                        "parameter b2 10/10")
    assert report.ok, str(report)


# ------------------------------------------------------------------ the net on torch tensors, on a device

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="torch sees no CUDA device"))]


def torch_net(device, dtype=np.float64, sizes=(12, 8, 4)):
    mlp = MLP(sizes, dtype=dtype, seed=0).to(torch, device)
    x = torch.tensor(RNG.standard_normal((5, sizes[0])), dtype=getattr(torch, np.dtype(dtype).name), device=device)
    return mlp, x, torch.tensor(RNG.integers(0, sizes[-1], 5), device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_net_on_torch_tensors_is_judged_on_its_device(device, dtype):
    """The same hand-derived code on torch tensors (the array API) through the referee's tensor
    path: every witness pair, the chain, every coordinate differenced; the net stays where it was."""
    mlp, x, y = torch_net(device, dtype)
    report, skipped = gradcheck.check_net(mlp, x, y)
    assert report.ok and not skipped, str(report)
    pairs = {(c.a, c.b) for c in report.comparisons}
    exact = ("manual64", "torch64") if dtype == np.float32 else ("manual", "torch")  # the float64 witnesses
    assert {("manual", "torch"), (exact[0], "fd"), (exact[1], "fd"), (exact[0], "chain"), ("chain", exact[1])} <= pairs
    coverage = next(n.text for n in report.notes if n.kind == "coverage")
    assert coverage == "fd coordinates: parameter W1 96/96, parameter b1 8/8, parameter W2 32/32, parameter b2 4/4"
    W = mlp.weights[0]
    assert W.device.type == device and W.dtype == getattr(torch, np.dtype(dtype).name)


@pytest.mark.parametrize("device", DEVICES)
def test_a_wrong_bias_gradient_on_torch_tensors_is_named(monkeypatch, device):
    """db doubled in the hand-derived backward: the biases alone fail, the factor 2 is named and
    the hand-derived side blamed, as on NumPy."""
    right = mf.linear_backward

    def bad_bias(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        return dW, db * 2, dx

    monkeypatch.setattr(mf, "linear_backward", bad_bias)
    report, _ = gradcheck.check_net(*torch_net(device))
    assert {t for t, _, _ in failing(report)} == {"parameter b1", "parameter b2"}
    for tensor in ("parameter b1", "parameter b2"):
        assert report.diagnoses[tensor].value == pytest.approx(2.0) and report.suspects[tensor].side == "yours"


def test_device_other_than_cpu_needs_torch_arrays_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = cli.main(["gradcheck", "--device", "cuda", "--data-dir", str(tmp_path), "--offline"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "argument --device: 'cuda' needs --manual-arrays torch" in err


# ------------------------------------------------------------------ on MNIST, through the CLI


@pytest.mark.slow
def test_cli_gradcheck_default_net_passes(mnist_dir):
    proc = run_cli("gradcheck", "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PASS: all 7 pairs" in out and "FAIL" not in out
    assert "parameter W1 50176/50176, parameter b1 64/64, parameter W2 640/640, parameter b2 10/10" in out
    for row in (r"parameter W1 +64x784 ", r"parameter b2 +10 ", r"loss \(backward pass\) +\(\) +\d"):
        assert re.search(row, out), row


@pytest.mark.slow
def test_cli_gradcheck_on_torch_tensors_json(mnist_dir):
    proc = run_cli("gradcheck", "--manual-arrays", "torch", "--sizes", 784, 4, 10, "--batch", 2, "--json",
                   "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["config"]["arrays"] == "torch" and report["config"]["device"] == "cpu"
    assert len(report["pairs"]) == 7


@pytest.mark.slow
def test_cli_gradcheck_three_hidden_layers_json(mnist_dir):
    proc = run_cli("gradcheck", "--sizes", 784, 64, 32, 16, 10, "--batch", 4, "--json",
                   "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["config"]["sizes"] == [784, 64, 32, 16, 10]
    assert len(report["pairs"]) == 7
    for pair in report["pairs"]:
        tensors = [c["tensor"] for c in pair["comparisons"] if c["tensor"] not in ("output", "loss (backward pass)")]
        assert tensors == [f"parameter {p}{i}" for i in range(1, 5) for p in "Wb"], pair
        assert all(c["ok"] and c["rel_err"] <= c["allowed"] for c in pair["comparisons"])


@pytest.mark.slow
def test_cli_gradcheck_fails_on_a_wrong_derivative(mnist_dir, monkeypatch, capsys):
    ones = lambda s, out=None: np.ones_like(s)  # noqa: E731  σ' dropped
    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", mf.sigmoid, ones))
    code = cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline", "--batch", "4"])
    out = capsys.readouterr().out
    assert code == 1
    after = out.split("FAIL:")[1]
    assert "parameter W1 (64, 784): manual vs torch" in after and "parameter b1 (64,): manual vs torch" in after
    assert "parameter W2" not in after and "parameter b2" not in after


@pytest.mark.slow
def test_cli_gradcheck_on_torch_tensors_names_the_layer_of_a_wrong_derivative(mnist_dir, monkeypatch, capsys):
    ones = lambda s, out=None: s * 0 + 1  # noqa: E731  σ' dropped, on any array library
    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", mf.sigmoid, ones))
    code = cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline", "--batch", "2", "--sizes", "784", "4",
                     "10", "--manual-arrays", "torch"])
    out = capsys.readouterr().out
    assert code == 1 and "on torch tensors on cpu" in out
    after = out.split("FAIL:")[1]
    assert after.startswith(" the first wrong layer from the loss is entry 2 of 3 (Sigmoid)")
    assert "the local derivative is missing" in after
    assert "parameter W1 (4, 784): manual vs torch" in after and "parameter W2" not in after


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
