"""compare/train/ and `crosscheck train`: side-by-side training on real MNIST subsets, the manual side on
NumPy arrays and on torch tensors (--manual-arrays torch; on a GPU with --device cuda where torch sees one)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compare import cli, report, tolerances
from compare.train import checkpoint
from manual import functional as F
from helpers import assert_one_line_error, run_cli

ARTEFACTS = {report.METRICS, report.SUMMARY, report.LOSS_PLOT, report.AGREEMENT_PLOT, checkpoint.NAME}
ARRAYS = ["numpy", "torch"]  # --manual-arrays
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def train(tmp_path, mnist_dir, *args, name="run"):
    out = tmp_path / name
    proc = run_cli("train", "--data-dir", mnist_dir, "--offline", "--out", out, *args)
    return proc, out


@pytest.mark.slow
def test_short_float64_run_writes_every_artefact_and_passes(tmp_path, mnist_dir):
    proc, out = train(tmp_path, mnist_dir, "--limit-train", 2000, "--epochs", 1, "--batch-size", 50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: 40 checked steps" in proc.stdout and "Traceback" not in proc.stderr
    assert {p.name for p in out.iterdir()} == ARTEFACTS  # and no temporary files
    assert {p.name for p in (out / checkpoint.NAME).iterdir()} == {"manual.npz", "torch.pt", "state.json"}
    for png in (report.LOSS_PLOT, report.AGREEMENT_PLOT):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    texts = (out / report.METRICS).read_text().splitlines()
    lines = [json.loads(line) for line in texts]
    # Written by hand for speed: each line must be exactly what json.dumps writes (strict JSON).
    assert texts == [json.dumps(r, separators=(",", ":"), allow_nan=False) for r in lines]
    assert [r["step"] for r in lines] == list(range(1, 41))
    first = lines[0]
    assert first["loss_manual"] == pytest.approx(first["loss_torch"], rel=tolerances.FREE_LOSS_REL)  # the run's own bound
    assert [(g["layer"], g["param"]) for g in first["grads"]] == [(1, "W"), (1, "b"), (2, "W"), (2, "b")]
    assert all(g["rel_err"] <= tolerances.FREE_GRAD_REL for r in lines for g in r["grads"])
    assert all("weight_drift_est" in r for r in lines)

    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "passed" and summary["failure"] is None
    assert summary["config"]["mode"] == "free" and summary["config"]["sizes"] == [784, 256, 10]
    assert set(summary["versions"]) >= {"numpy", "torch", "torchvision"}
    assert "MNIST" in summary["data"]
    (epoch,) = summary["epochs"]
    assert epoch["test_pred_diff"] == 0 and epoch["test_acc_manual"] == epoch["test_acc_torch"] > 0.7
    assert set(summary["worst_agreement"]) == {"layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"}
    assert summary["checked_steps"] == 40 and 0 < summary["checks_overhead"] < math.inf  # a timing ratio: never bounded in a test


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, mnist_dir):
    args = ("--limit-train", 1000, "--epochs", 2, "--batch-size", 100, "--seed", 3)
    a = train(tmp_path, mnist_dir, *args, name="a")
    b = train(tmp_path, mnist_dir, *args, name="b")
    c = train(tmp_path, mnist_dir, *args[:-1], 4, name="c")
    assert a[0].returncode == b[0].returncode == c[0].returncode == 0
    metrics = [(out / report.METRICS).read_text() for _, out in (a, b, c)]
    assert metrics[0] == metrics[1]  # bit for bit
    assert metrics[0] != metrics[2]  # and the seed matters


@pytest.mark.slow
def test_float32_lockstep_with_referee(tmp_path, mnist_dir):
    proc, out = train(tmp_path, mnist_dir, "--dtype", "float32", "--limit-train", 1000, "--epochs", 1,
                      "--batch-size", 100, "--referee", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # --json: the summary, alone, on stdout
    assert summary["config"]["mode"] == "lockstep"
    ref = summary["referee"]
    assert ref["checks"] == 10 == ref["manual_closer"] + ref["torch_closer"] + ref["ties"]
    assert 0 < ref["manual_max_rel"] < tolerances.FLOAT32_REL and 0 < ref["torch_max_rel"] < tolerances.FLOAT32_REL
    lines = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    assert all(r["referee"]["closer"] in ("manual", "torch", "tie") for r in lines)
    assert "weight_drift_est" not in lines[0]


@pytest.mark.slow
def test_float32_referee_is_sampled_by_default(tmp_path, mnist_dir):
    proc, out = train(tmp_path, mnist_dir, "--dtype", "float32", "--limit-train", 600, "--epochs", 1,
                      "--batch-size", 2)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    assert [r["step"] for r in lines if "referee" in r] == [1, 201]


@pytest.mark.slow
def test_check_every(tmp_path, mnist_dir):
    proc, out = train(tmp_path, mnist_dir, "--limit-train", 1000, "--epochs", 1, "--batch-size", 100,
                      "--check-every", 3)
    assert proc.returncode == 0, proc.stderr
    steps = [json.loads(line)["step"] for line in (out / report.METRICS).read_text().splitlines()]
    assert steps == [3, 6, 9]


@pytest.mark.slow
@pytest.mark.parametrize("arrays", ARRAYS)
def test_wrong_derivative_stops_the_run_and_keeps_the_report(tmp_path, mnist_dir, monkeypatch, capsys, arrays):
    right = F.linear_backward

    def bias_doubled_in_layer_2(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        if W.shape[0] == 10:  # the output layer
            db *= 2
        return dW, db, dx

    monkeypatch.setattr(F, "linear_backward", bias_doubled_in_layer_2)
    out = tmp_path / "bad"
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--offline", "--out", str(out),
                     "--limit-train", "1000", "--epochs", "1", "--batch-size", "100", "--manual-arrays", arrays])
    err = capsys.readouterr().err
    assert code == 1
    first = [ln for ln in err.splitlines() if "error" in ln][0]
    assert "epoch 1, step 1 (batch 1 of 10)" in first and "layer 2 b" in first
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "failed" and "layer 2 b" in summary["failure"]
    assert len((out / report.METRICS).read_text().splitlines()) == 1  # the failing step is recorded
    assert (out / report.AGREEMENT_PLOT).exists()


@pytest.mark.parametrize("args, code, needle", [
    (["--lr", "0"], 2, "--lr"),
    (["--lr", "nan"], 2, "finite number > 0"),
    (["--epochs", "0"], 2, "--epochs"),
    (["--batch-size", "60001"], 2, "between 1 and the training-set size (60000)"),
    (["--batch-size", "101", "--limit-train", "100"], 2, "(100)"),
    (["--limit-train", "-5"], 2, "--limit-train"),
    (["--mode", "fast"], 2, "invalid choice: 'fast'"),
    (["--sizes", "784", "10", "11"], 2, "the last 10"),
    (["--check-every", "0"], 2, "--check-every"),
    (["--activation", "softplus"], 2, "invalid choice: 'softplus'"),
    (["--dtype", "float16"], 2, "invalid choice: 'float16'"),
    (["--seed", "-1"], 2, "--seed"),
])
def test_bad_options_get_one_line(args, code, needle, tmp_path):
    proc = run_cli("train", "--out", tmp_path / "never", *args)
    assert_one_line_error(proc, code, needle)
    assert not (tmp_path / "never").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    proc = run_cli("train", "--out", tmp_path / "never", "--manual-arrays", "torch", "--device", "cuda")
    assert_one_line_error(proc, 2, "argument --device: invalid value 'cuda': torch sees no CUDA device on this machine")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args, needle", [
    (["--device", "tpu"], "argument --device: invalid value 'tpu': must be cpu, cuda or cuda:N"),
    (["--manual-arrays", "jax"], "argument --manual-arrays: invalid choice: 'jax'"),
    (["--model", "examples/softplus.py:build", "--manual-arrays", "torch"],
     "argument --manual-arrays: 'torch' runs the built-in MLP only"),
])
def test_bad_array_and_device_options_get_one_line(args, needle, tmp_path):
    proc = run_cli("train", "--out", tmp_path / "never", *args, cwd=Path(__file__).resolve().parent.parent)
    assert_one_line_error(proc, 2, needle)
    assert not (tmp_path / "never").exists()


def test_a_gpu_with_the_manual_side_on_numpy_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """Where torch sees a GPU (here made to say it does), --device cuda needs --manual-arrays torch."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.main(["train", "--out", str(tmp_path / "never"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "argument --device: 'cuda' needs --manual-arrays torch" in err
    with pytest.raises(SystemExit) as stop:  # argparse's own type check
        cli.main(["train", "--out", str(tmp_path / "never"), "--device", "cuda:1", "--manual-arrays", "torch"])
    assert stop.value.code == 2
    assert "argument --device: invalid value 'cuda:1': torch sees 1 CUDA device here (cuda:0)" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_out_dir_holding_files_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    proc = run_cli("train", "--out", tmp_path)
    assert_one_line_error(proc, 2, "--out", "already exists and is not empty")
    assert (tmp_path / "mine.txt").read_text() == "precious"


# ------------------------------------------------------------------ --step fast: what is timed is what is checked


def fast_step_class(arrays: str):
    """The tuned step that --step fast runs on `arrays`."""
    from manual import fast, fast_torch

    return fast.FastStep if arrays == "numpy" else fast_torch.FastTorchStep


def copy_of(a):
    return a.copy() if isinstance(a, np.ndarray) else a.clone()


def double_the_bias_step_of_the_output_layer(monkeypatch, arrays: str = "numpy"):
    """A bug in the fast path only: the tuned step takes the last layer's bias step twice."""
    cls = fast_step_class(arrays)
    right = cls.__call__

    def call(self, x, y, lr):
        b = self.mlp.parameters()[-1][1]
        before = copy_of(b)
        loss = right(self, x, y, lr)
        b += b - before  # b − 2·lr·db instead of b − lr·db
        return loss

    monkeypatch.setattr(cls, "__call__", call)


@pytest.mark.slow
@pytest.mark.parametrize("arrays", ARRAYS)
@pytest.mark.parametrize("dtype, key", [("float64", "weights"), ("float32", "updates")])
def test_fast_step_is_checked_at_every_step_and_passes(tmp_path, mnist_dir, dtype, key, arrays):
    proc, out = train(tmp_path, mnist_dir, "--step", "fast", "--dtype", dtype, "--limit-train", 1000,
                      "--epochs", 2, "--batch-size", 300, "--manual-arrays", arrays)
    assert proc.returncode == 0, proc.stderr
    side = "NumPy arrays" if arrays == "numpy" else "torch tensors on cpu"
    assert f"PASS: 8 checked steps of the fast step on {side}" in proc.stdout  # 4 per epoch, the last one partial
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["step"] == summary["config"]["step"] == "fast" and key in summary["tolerances"]
    assert summary["checked"].startswith("the weights after" if key == "weights" else "the update the fast step")
    lines = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 9)) and all("grads" not in r for r in lines)
    assert [(g["layer"], g["param"]) for g in lines[0][key]] == [(1, "W"), (1, "b"), (2, "W"), (2, "b")]
    if key == "updates":  # a bound per parameter, never below the gradient's
        assert all(g["allowed"] >= r["allowed_grad"] * 0.99 and g["rel_err"] <= g["allowed"]
                   for r in lines for g in r[key])
    assert (out / checkpoint.NAME / "manual.npz").exists() and (out / report.AGREEMENT_PLOT).exists()


@pytest.mark.slow
@pytest.mark.parametrize("arrays", ARRAYS)
@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_doubled_bias_step_in_the_fast_path_fails_at_the_first_step(tmp_path, mnist_dir, monkeypatch, capsys, mode,
                                                                    arrays):
    double_the_bias_step_of_the_output_layer(monkeypatch, arrays)
    base = ["train", "--data-dir", str(mnist_dir), "--offline", "--limit-train", "600", "--epochs", "1",
            "--batch-size", "100", "--mode", mode, "--manual-arrays", arrays]
    assert cli.main([*base, "--out", str(tmp_path / "reference")]) == 0  # the reference step has no such bug
    capsys.readouterr()
    out = tmp_path / "fast"
    assert cli.main([*base, "--out", str(out), "--step", "fast"]) == 1
    first = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln][0]
    what = "weights after the step" if mode == "free" else "updates"
    assert f"{what} disagree (manual vs torch) at epoch 1, step 1 (batch 1 of 6): layer 2 b" in first
    assert "and " not in first.split("layer 2 b")[1]  # layer 2 b alone
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["step"] == "fast" and "layer 2 b" in summary["failure"]


def scale_the_fast_step(monkeypatch, factor: list, what: str, arrays: str = "numpy"):
    """After each fast step, layer 1 W off by a relative `factor[0]` − 1: in its value ("weights")
    or in the update just applied ("updates")."""
    cls = fast_step_class(arrays)
    right = cls.__call__

    def call(self, x, y, lr):
        W = self.mlp.parameters()[0][0]
        before = copy_of(W)
        loss = right(self, x, y, lr)
        if what == "weights":
            W *= factor[0]
        else:
            W[...] = before - factor[0] * (before - W)
        return loss

    monkeypatch.setattr(cls, "__call__", call)


@pytest.mark.slow
@pytest.mark.parametrize("arrays", ARRAYS)
@pytest.mark.parametrize("dtype, mode", [("float64", "free"), ("float32", "free"), ("float64", "lockstep"),
                                         ("float32", "lockstep")])
def test_an_error_just_above_the_fast_bound_fails_and_just_below_passes(tmp_path, mnist_dir, monkeypatch,
                                                                        capsys, dtype, mode, arrays):
    """The bound a --step fast run passes or fails on (tolerances.FREE_WEIGHT_REL / FREE32_WEIGHT_REL
    in free mode, the update bound of lockstep with its UPDATE_ROUNDINGS term, each read from the
    run's own metrics) is the one that decides: layer 1 W off by 3x the bound fails the first step,
    by 1/3 of it passes."""
    key, factor = ("weights" if mode == "free" else "updates"), [1.0]
    scale_the_fast_step(monkeypatch, factor, key, arrays)
    args = ["train", "--data-dir", str(mnist_dir), "--offline", "--limit-train", "100", "--batch-size", "100",
            "--epochs", "1", "--step", "fast", "--dtype", dtype, "--mode", mode, "--manual-arrays", arrays]
    assert cli.main([*args, "--out", str(tmp_path / "exact")]) == 0
    (line,) = (tmp_path / "exact" / report.METRICS).read_text().splitlines()
    rec = json.loads(line)  # an error proportional to the update shows alike in both measures
    bound = min(rec[key][0].get("allowed", rec["allowed_grad"]), rec[key][0].get("allowed_elem", rec["allowed_elem"]))
    factor[0] = 1 + bound / 3
    assert cli.main([*args, "--out", str(tmp_path / "below")]) == 0
    capsys.readouterr()
    factor[0] = 1 + 3 * bound
    assert cli.main([*args, "--out", str(tmp_path / "above")]) == 1
    assert "at epoch 1, step 1 (batch 1 of 1): layer 1 W" in capsys.readouterr().err


# ------------------------------------------------------------------ --model: your own layers side by side

SOFTPLUS = str(Path(__file__).resolve().parent.parent / "examples" / "softplus.py")
QUICK_MODEL = ("--limit-train", "1000", "--epochs", "2", "--batch-size", "300")


def model_file(tmp_path, body: str, name="net.py") -> str:
    """A model file whose build() returns `body` (with the project's layers and softplus imported)."""
    path = tmp_path / name
    path.write_text(
        "import numpy as np\nimport torch\nimport sys\n"
        f"sys.path.insert(0, {str(Path(SOFTPLUS).parent)!r})\n"
        "from manual.layers import Linear, Sigmoid, ReLU\n"
        "from softplus import Softplus, SoftplusMissingFactor\n\n"
        f"def build(rng, dtype):\n    return {body}\n")
    return f"{path}:build"


@pytest.mark.slow
def test_a_user_stack_trains_side_by_side_with_every_check_and_report(tmp_path, mnist_dir):
    proc, out = train(tmp_path, mnist_dir, "--model", f"{SOFTPLUS}:build", *QUICK_MODEL)
    assert proc.returncode == 0, proc.stderr
    assert "PASS: 8 checked steps of the reference step" in proc.stdout and "lockstep mode" in proc.stdout
    assert {p.name for p in out.iterdir()} == ARTEFACTS
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["config"]["model"] == f"{SOFTPLUS}:build" and summary["config"]["mode"] == "lockstep"
    assert set(summary["worst_agreement"]) == {"layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"}
    (epoch,) = summary["epochs"][-1:]
    assert epoch["test_pred_diff"] == 0 and epoch["test_acc_manual"] == epoch["test_acc_torch"] > 0.2  # chance: 0.1
    lines = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    shapes = [(g["layer"], g["param"]) for g in lines[0]["grads"]]
    assert shapes == [(1, "W"), (1, "b"), (2, "W"), (2, "b")] and len(lines) == 8
    arrays, _ = checkpoint.load_arrays(checkpoint.find(out), {"W1": (128, 784), "b1": (128,), "W2": (10, 128),
                                                              "b2": (10,)}, "float64")
    assert all(np.isfinite(a).all() for a in arrays.values())


@pytest.mark.slow
def test_a_user_stack_resumes_to_the_same_metrics(tmp_path, mnist_dir, monkeypatch, capsys):
    import signal

    from compare.train import loop

    args = ["train", "--data-dir", str(mnist_dir), "--offline", "--model", f"{SOFTPLUS}:build", *QUICK_MODEL]
    assert cli.main([*args, "--out", str(tmp_path / "straight")]) == 0
    right = loop.SideBySide._step

    def interrupt_after_step_6(self, *a):
        right(self, *a)
        if self.global_step == 6:
            self._signal = signal.SIGINT

    monkeypatch.setattr(loop.SideBySide, "_step", interrupt_after_step_6)
    out = tmp_path / "interrupted"
    assert cli.main([*args, "--out", str(out)]) == 130
    monkeypatch.setattr(loop.SideBySide, "_step", right)
    assert cli.main(["train", "--resume", str(out), "--data-dir", str(mnist_dir), "--offline"]) == 0
    assert f"resuming {out} at epoch 2, step 6" in capsys.readouterr().out
    assert (out / report.METRICS).read_text() == (tmp_path / "straight" / report.METRICS).read_text()


@pytest.mark.slow
def test_a_wrong_user_layer_stops_the_run_at_the_first_step(tmp_path, mnist_dir, capsys):
    spec = model_file(tmp_path, "[Linear.init(784, 32, rng, dtype), (SoftplusMissingFactor(), torch.nn.Softplus()), "
                                "Linear.init(32, 10, rng, dtype)]")
    out = tmp_path / "bad"
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--offline", "--model", spec, "--out", str(out),
                     *QUICK_MODEL])
    first = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln][0]
    assert code == 1
    assert "gradients disagree (manual vs torch) at epoch 1, step 1 (batch 1 of 4): layer 1 W and 1 more" in first
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "failed" and "layer 1 b" in summary["failure"] and "layer 2" not in summary["failure"]


@pytest.mark.slow
def test_a_user_stack_in_float32_gets_the_float64_referee(tmp_path, mnist_dir):
    spec = model_file(tmp_path, "[Linear.init(784, 32, rng, dtype), ReLU(), (Softplus(), torch.nn.Softplus()), "
                                "Linear.init(32, 10, rng, dtype)]")
    proc, out = train(tmp_path, mnist_dir, "--model", spec, "--dtype", "float32", "--referee", *QUICK_MODEL)
    assert proc.returncode == 0, proc.stderr
    ref = json.loads((out / report.SUMMARY).read_text())["referee"]
    assert ref["checks"] == 8
    assert 0 < ref["manual_max_rel"] < tolerances.FLOAT32_REL and 0 < ref["torch_max_rel"] < tolerances.FLOAT32_REL


@pytest.mark.parametrize("body, needle", [
    (None, "no such file"),
    ("[]", "returned list; expected a non-empty list"),
    ("42", "returned int"),
    ("[Linear.init(784, 10, rng, dtype), 'relu']", "entry 2 is str; expected a layer"),
    ("[(Softplus(), 'softplus'), Linear.init(784, 10, rng, dtype)]", "entry 1 pairs Softplus with str"),
    ("[Linear.init(784, 32, rng, dtype), Linear.init(32, 11, rng, dtype)]", "expected (2, 10)"),
    ("[Linear.init(784, 32, rng, dtype), Linear.init(31, 10, rng, dtype)]", "forward failed"),
    ("[Linear.init(784, 10, rng, np.float32)]", "W is float32; the run is float64"),
    ("[(Linear.init(784, 10, rng, dtype), torch.nn.Linear(784, 11))]", "shape (10, 784), its torch weight: (11, 784)"),
    ("[(Linear.init(784, 10, rng, dtype), torch.nn.Softplus())]", "its torch module Softplus has []"),
    ("1/0", "raised ZeroDivisionError"),
], ids=["missing", "empty", "not-a-list", "not-a-layer", "not-a-module", "classes", "shapes", "dtype",
        "torch-shape", "torch-names", "raises"])
def test_bad_models_get_one_line(tmp_path, body, needle):
    spec = f"{tmp_path / 'nope.py'}:build" if body is None else model_file(tmp_path, body)
    proc = run_cli("train", "--model", spec, "--out", tmp_path / "never")
    assert_one_line_error(proc, 2, "--model", needle)
    assert not (tmp_path / "never").exists()


def test_model_file_without_build_or_broken_gets_one_line(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert_one_line_error(run_cli("train", "--model", f"{tmp_path / 'empty.py'}:make"), 2, "has no function 'make'")
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    assert_one_line_error(run_cli("train", "--model", str(tmp_path / "broken.py")), 2,
                          "could not be imported: ModuleNotFoundError")


@pytest.mark.parametrize("args, needle", [
    (["--sizes", "784", "10"], "--sizes: not allowed with --model"),
    (["--activation", "tanh"], "--activation: not allowed with --model"),
    (["--step", "fast"], "trains the built-in MLP only"),
])
def test_model_refuses_options_that_do_not_apply(tmp_path, args, needle):
    assert_one_line_error(run_cli("train", "--model", f"{SOFTPLUS}:build", *args), 2, needle)


@pytest.mark.slow
def test_a_wrong_loss_from_the_fast_step_fails_at_the_first_step(tmp_path, mnist_dir, monkeypatch, capsys):
    """The fast step's loss is checked too: 3x the loss bound off (the weights untouched) fails."""
    from manual import fast

    right = fast.FastStep.__call__
    monkeypatch.setattr(fast.FastStep, "__call__",
                        lambda self, x, y, lr: right(self, x, y, lr) * (1 + 3 * tolerances.FREE_LOSS_REL))
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--offline", "--limit-train", "100", "--batch-size", "100",
                     "--epochs", "1", "--step", "fast", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "losses disagree at epoch 1, step 1 (batch 1 of 1)" in capsys.readouterr().err


# ------------------------------------------------------------------ --manual-arrays torch: the derivation on torch tensors


@pytest.mark.slow
@pytest.mark.parametrize("dtype, mode", [("float64", "free"), ("float64", "lockstep"), ("float32", "lockstep"),
                                         ("float32", "free")])
def test_the_reference_step_on_torch_tensors_is_checked_at_every_step_and_says_so(tmp_path, mnist_dir, dtype, mode):
    proc, out = train(tmp_path, mnist_dir, "--manual-arrays", "torch", "--dtype", dtype, "--mode", mode,
                      "--limit-train", 1000, "--epochs", 2, "--batch-size", 300)
    assert proc.returncode == 0, proc.stderr
    assert f"{mode} mode, manual side on torch tensors on cpu, batch 300" in proc.stdout  # the start line
    assert "PASS: 8 checked steps of the reference step on torch tensors on cpu within tolerance" in proc.stdout
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["manual_side"] == "torch tensors on cpu"
    assert summary["config"]["manual_arrays"] == "torch" and summary["config"]["device"] == "cpu"
    lines = [json.loads(line) for line in (out / report.METRICS).read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 9))
    assert all(g["rel_err"] <= r["allowed_grad"] and g["elem_rel"] <= r["allowed_elem"] for r in lines for g in r["grads"])
    if dtype == "float32":
        assert "referee" in lines[0]  # the float64 referee (NumPy) at the first check


@pytest.mark.slow
def test_the_same_weights_and_batches_on_numpy_and_on_torch_tensors(tmp_path, mnist_dir):
    """The two runs differ only in the manual side's kernels: the torch side's numbers are the same
    bit for bit, and the manual side's losses within the run's bounds of them."""
    args = ("--limit-train", 600, "--epochs", 1, "--batch-size", 200, "--mode", "lockstep")
    a = train(tmp_path, mnist_dir, *args, name="numpy")
    b = train(tmp_path, mnist_dir, *args, "--manual-arrays", "torch", name="torch")
    assert a[0].returncode == b[0].returncode == 0
    la, lb = ([json.loads(line) for line in (out / report.METRICS).read_text().splitlines()] for _, out in (a, b))
    assert [r["loss_torch"] for r in la] == [r["loss_torch"] for r in lb]
    assert all(abs(p["loss_manual"] - q["loss_manual"]) <= q["allowed_loss"] * q["loss_torch"] for p, q in zip(la, lb))


@pytest.mark.slow
def test_a_run_on_torch_tensors_resumes_to_the_same_metrics_and_refuses_other_arrays(tmp_path, mnist_dir, monkeypatch,
                                                                                     capsys):
    from compare.train import loop

    args = ["train", "--data-dir", str(mnist_dir), "--offline", "--limit-train", "900", "--epochs", "2",
            "--batch-size", "100", "--manual-arrays", "torch", "--dtype", "float32"]
    assert cli.main([*args, "--out", str(tmp_path / "straight")]) == 0
    right = loop.SideBySide._step

    def interrupted_at_step_12(self, epoch, step, idx):  # as if Ctrl-C came in epoch 2
        right(self, epoch, step, idx)
        if self.global_step == 12:
            self._signal = 2

    monkeypatch.setattr(loop.SideBySide, "_step", interrupted_at_step_12)
    out = tmp_path / "interrupted"
    assert cli.main([*args, "--out", str(out)]) == 130
    monkeypatch.setattr(loop.SideBySide, "_step", right)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--manual-arrays", "numpy"]) == 2
    assert "--manual-arrays 'numpy' (checkpoint: 'torch')" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--data-dir", str(mnist_dir), "--offline"]) == 0
    assert (out / report.METRICS).read_text() == (tmp_path / "straight" / report.METRICS).read_text()


@pytest.mark.slow
@needs_cuda
@pytest.mark.parametrize("step", ["reference", "fast"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_on_a_gpu_both_sides_train_there_and_every_step_is_checked(tmp_path, mnist_dir, step, dtype):
    proc, out = train(tmp_path, mnist_dir, "--manual-arrays", "torch", "--device", "cuda", "--step", step,
                      "--dtype", dtype, "--limit-train", 2000, "--epochs", 2, "--batch-size", 250)
    assert proc.returncode == 0, proc.stderr
    assert f"PASS: 16 checked steps of the {step} step on torch tensors on cuda" in proc.stdout
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["config"]["device"] == "cuda" and summary["epochs"][-1]["test_acc_manual"] > 0.8
