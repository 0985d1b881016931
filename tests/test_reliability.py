"""Reliability, through the command line where the user meets it: bad input, divergence,
interruption and exact resume, damaged checkpoints, and the --debug escape hatch."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from compare import cli, report
from compare.train import checkpoint
from manual import functional as mf
from manual.mlp import MLP
from torch_ref import convert
from helpers import assert_one_line_error, run_cli

QUICK = ("--limit-train", "1200", "--batch-size", "40", "--epochs", "2")


def quick_run(out, mnist_dir, *extra):
    return run_cli("train", "--data-dir", mnist_dir, "--offline", "--out", out, *QUICK, *extra)


# ------------------------------------------------------------------ bad values, before any work


def test_out_inside_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("train", "--out", blocker / "run")
    assert_one_line_error(proc, 2, "--out", "not a writable directory")


def test_unwritable_data_dir_is_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("train", "--data-dir", blocker / "data", "--offline", "--out", tmp_path / "run")
    assert_one_line_error(proc, 2, "--data-dir", "not writable")
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback_too(tmp_path):
    proc = run_cli("--debug", "train", "--resume", tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "no checkpoint in" in proc.stderr.splitlines()[-1]
    assert "Traceback" not in run_cli("train", "--resume", tmp_path).stderr


def test_from_manual_refuses_a_net_with_wrong_shapes():
    mlp = MLP((6, 4, 3), seed=0)
    mlp.weights[1] = mlp.weights[1].T.copy()
    with pytest.raises(ValueError, match=r"layer 2 weight: expected shape \(3, 4\), got \(4, 3\)"):
        convert.from_manual(mlp)
    mlp = MLP((6, 4, 3), seed=0)
    mlp.biases[0] = mlp.biases[0].astype(np.float32)
    with pytest.raises(TypeError, match="layer 1 bias: expected dtype torch.float64, got float32"):
        convert.from_manual(mlp)


# ------------------------------------------------------------------ divergence


@pytest.mark.slow
def test_divergence_stops_at_the_step_and_names_it(tmp_path, mnist_dir):
    out = tmp_path / "run"
    proc = quick_run(out, mnist_dir, "--lr", "1e6")
    line = assert_one_line_error(proc, 1, "training diverged at epoch 1, step 2", "largest gradient: layer",
                                 "lower --lr")
    assert "1e+06" in line
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "failed" and "diverged" in summary["failure"]
    assert len((out / report.METRICS).read_text().splitlines()) == 2


@pytest.mark.slow
def test_nan_gradient_keeps_the_last_good_checkpoint(tmp_path, mnist_dir, monkeypatch, capsys):
    right, calls = mf.linear_backward, []

    def nan_after_epoch_one(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        calls.append(1)
        if len(calls) > 2 * 35:  # two layers per step; 30 steps per epoch, then 5 more
            dW[0, 0] = np.nan
        return dW, db, dx

    monkeypatch.setattr(mf, "linear_backward", nan_after_epoch_one)
    out = tmp_path / "run"
    code = cli.main(["train", "--data-dir", str(mnist_dir), "--offline", "--out", str(out), *QUICK])
    err = capsys.readouterr().err
    assert code == 1
    assert "training diverged at epoch 2, step 36 (batch 6 of 30): the manual gradient of layer" in err
    assert "is not finite" in err
    last = json.loads((out / report.METRICS).read_text().splitlines()[-1], parse_constant=pytest.fail)
    assert last["step"] == 36 and None in (last["grads"][0]["rel_err"], last["grads"][0]["max_abs"])  # null
    state = checkpoint.read_state(checkpoint.find(out))
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 0, 30)
    arrays, _ = checkpoint.load_arrays(checkpoint.find(out), checkpoint.mlp_shapes((784, 256, 10)), "float64")
    assert set(arrays) == {"W1", "b1", "W2", "b2"} and all(np.isfinite(a).all() for a in arrays.values())


# ------------------------------------------------------------------ interruption and resume


def start_and_interrupt(out, mnist_dir, signum):
    """Start a run, wait for its first checkpoint, send `signum`, wait for the exit."""
    cmd = [sys.executable, "-m", "compare", "train", "--data-dir", str(mnist_dir), "--offline", "--out", str(out),
           "--limit-train", "3000", "--batch-size", "20", "--epochs", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / checkpoint.NAME / "state.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.1)  # somewhere inside epoch 2 (or at its very start: resuming must work either way)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, mnist_dir, signum, code):
    straight = tmp_path / "straight"
    args = ("--limit-train", "3000", "--batch-size", "20", "--epochs", "4")
    assert run_cli("train", "--data-dir", mnist_dir, "--offline", "--out", straight, *args).returncode == 0

    out = tmp_path / "interrupted"
    rc, stdout, stderr = start_and_interrupt(out, mnist_dir, signum)
    assert rc == code, stderr
    assert "Traceback" not in stderr
    assert f"continue with: crosscheck train --resume {out}" in stdout
    summary = json.loads((out / report.SUMMARY).read_text())
    assert summary["status"] == "interrupted"
    state = checkpoint.read_state(checkpoint.find(out))
    assert 150 <= state["global_step"] < 600 and state["n_metrics"] == state["global_step"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files

    proc = run_cli("train", "--resume", out, "--data-dir", mnist_dir, "--offline")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at epoch" in proc.stdout
    assert (out / report.METRICS).read_text() == (straight / report.METRICS).read_text()
    a, b = (json.loads((d / report.SUMMARY).read_text()) for d in (out, straight))
    assert a["epochs"][-1]["test_acc_manual"] == b["epochs"][-1]["test_acc_manual"]
    assert a["status"] == "passed"


@pytest.mark.slow
def test_resume_refuses_other_options(tmp_path, mnist_dir):
    out = tmp_path / "run"
    assert quick_run(out, mnist_dir).returncode == 0
    proc = run_cli("train", "--resume", out, "--lr", "0.1")
    assert_one_line_error(proc, 2, "--resume", "--lr 0.1", "(checkpoint: 0.7)")


def test_resume_of_a_directory_without_a_run(tmp_path):
    proc = run_cli("train", "--resume", tmp_path)
    assert_one_line_error(proc, 1, "no checkpoint in")


# ------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert quick_run(out, mnist_dir).returncode == 0
    return out


def damaged_copy(finished_run, tmp_path, damage):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    damage(out / checkpoint.NAME)
    return out


def truncate(name):
    def damage(folder):
        path = folder / name
        path.write_bytes(path.read_bytes()[:200])
    return damage


def wrong_shapes(folder):
    with np.load(folder / "manual.npz") as npz:
        arrays = dict(npz)
    arrays["W1"] = arrays["W1"][:, :100]
    np.savez(folder / "manual.npz", **arrays)


def wrong_dtype(folder):
    with np.load(folder / "manual.npz") as npz:
        arrays = {k: v.astype(np.float32) for k, v in npz.items()}
    np.savez(folder / "manual.npz", **arrays)


def pickled(folder):
    np.savez(folder / "manual.npz", W1=np.array([object()], dtype=object))


@pytest.mark.slow
@pytest.mark.parametrize("damage, needle", [
    (truncate("manual.npz"), "manual.npz is damaged"),
    (truncate("torch.pt"), "torch.pt is damaged"),
    (truncate("state.json"), "state.json is damaged"),
    (wrong_shapes, "W1 is float64 (256, 100), expected float64 (256, 784)"),
    (wrong_dtype, "expected float64"),
    (pickled, "manual.npz"),
], ids=["npz-truncated", "pt-truncated", "state-truncated", "shapes", "dtype", "pickle"])
def test_damaged_checkpoint_is_refused(finished_run, tmp_path, mnist_dir, damage, needle):
    out = damaged_copy(finished_run, tmp_path, damage)
    before = sorted(p.name for p in out.iterdir())
    proc = run_cli("train", "--resume", out, "--data-dir", mnist_dir, "--offline")
    assert_one_line_error(proc, 1, needle)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, nothing lost


def test_npz_with_pickles_is_never_unpickled(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    pickled(folder)
    with pytest.raises(checkpoint.CheckpointError, match="damaged"):
        checkpoint.load_arrays(folder, checkpoint.mlp_shapes((784, 256, 10)), "float64")
    assert zipfile.is_zipfile(folder / "manual.npz")
