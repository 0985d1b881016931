"""``crosscheck bench`` keeps what it measured: bench.json after every point (a Ctrl-C loses none of
them), and ``--resume DIR`` goes on from it, keeping the points whose figures stood. The workers
are faked (synthetic figures), the data is MNIST."""
import json
import re

import pytest

from compare import bench
from compare.bench import resume, worker
from compare.errors import UsageError
from test_bench import parse
from test_bench_reliability import QUIET, TWO_MODES, result

GRID = ("--archs", "784-16-10", "--batches", "32", "64", "256", "--threads", "1", "--max-processes", "5",
        "--no-epoch", "--no-compile", "--no-jax")
PRODUCTS = [{"layer": 1, "kind": "forward", "shape": [32, 784, 16], "flops": 802816, "layout": "nt"}]


def fake_spawn(varies=(), interrupt_at=None, seen=None):
    """A fake ``worker.spawn``: quiet figures, processes that vary at the batches in `varies`, a
    KeyboardInterrupt when the batch `interrupt_at` starts; each spec's batch goes into `seen`."""
    counts = {}

    def spawn(spec):
        batch = int(re.search(r"-b(\d+)\.npz$", spec["batch_file"]).group(1))
        if batch == interrupt_at:
            raise KeyboardInterrupt
        if seen is not None:
            seen.append(batch)
        n = counts[spec["impl"], batch] = counts.get((spec["impl"], batch), -1) + 1
        source = TWO_MODES if batch in varies and spec["impl"] == "torch" else QUIET
        found = {**result(source[n % len(source)]["times_s"][0], cpu_s=0.5), "pid": 1000 + len(counts) * 100 + n}
        return {**found, "products": PRODUCTS} if spec["impl"].startswith("floor_") else found

    return spawn


def data_args(mnist_dir):
    return ("--offline", "--data-dir", mnist_dir)


@pytest.fixture
def interrupted(tmp_path, mnist_dir, monkeypatch, capsys):
    """A run stopped by Ctrl-C at batch 256, after batch 32 (every figure stood) and 64 (torch varied)."""
    out = tmp_path / "first"
    monkeypatch.setattr(worker, "spawn", fake_spawn(varies=(64,), interrupt_at=256))
    with pytest.raises(KeyboardInterrupt):
        bench.main(parse(*GRID, "--out", out, *data_args(mnist_dir)))
    return out, capsys.readouterr().out


def test_a_ctrl_c_keeps_every_point_measured_and_says_how_to_go_on(interrupted):
    out, printed = interrupted
    assert [p.name for p in out.iterdir()] == [bench.JSON_NAME]  # no plot, no temporary file
    report = json.loads((out / bench.JSON_NAME).read_text())
    assert report["complete"] is False and "incomplete" in report["summary"]
    assert [(p["batch"], p["reliability"]["reliable"]) for p in report["points"]] == [(32, True), (64, False)]
    assert all(len(p["measured"]) == 2 for p in report["points"])
    assert f"crosscheck bench --resume {out}" in printed


def test_resume_measures_only_the_points_that_did_not_stand_into_a_new_directory(interrupted, tmp_path, mnist_dir,
                                                                                  monkeypatch):
    first, _ = interrupted
    before = (first / bench.JSON_NAME).read_bytes()
    seen = []
    monkeypatch.setattr(worker, "spawn", fake_spawn(seen=seen))
    out = tmp_path / "second"
    assert bench.main(parse("--resume", first, "--out", out, *data_args(mnist_dir))) == 0
    assert set(seen) == {64, 256}  # 32 stood: kept, not measured again
    assert (first / bench.JSON_NAME).read_bytes() == before  # the earlier run is left as it was
    report = json.loads((out / bench.JSON_NAME).read_text())
    earlier = json.loads(before)
    assert report["complete"] is True and report["summary"].startswith("every figure stood")
    assert [p["batch"] for p in report["points"]] == [32, 64, 256]
    assert report["points"][0] == earlier["points"][0]
    assert report["resumed_from"]["kept"] == ["784-16-10 b32"] and report["resumed_from"]["path"] == str(first)
    assert report["config"]["threads"] == 1 and report["config"]["max_processes"] == 5

    # every figure stood now: nothing to measure, no directory made
    again = tmp_path / "third"
    assert bench.main(parse("--resume", out, "--out", again, *data_args(mnist_dir))) == 0
    assert not again.exists()


def test_resume_keeps_no_point_that_other_code_timed(interrupted, tmp_path, mnist_dir, monkeypatch, capsys):
    first, _ = interrupted
    report = json.loads((first / bench.JSON_NAME).read_text())
    assert report["points"][0]["code"] == resume.code_fingerprint()
    report["points"][0]["code"] = "0123456789ab"  # as if a step had changed since
    (first / bench.JSON_NAME).write_text(json.dumps(report))
    seen = []
    monkeypatch.setattr(worker, "spawn", fake_spawn(seen=seen))
    assert bench.main(parse("--resume", first, "--out", tmp_path / "second", *data_args(mnist_dir))) == 0
    assert set(seen) == {32, 64, 256}
    assert "not kept: 1 that stood there but were timed by other code" in capsys.readouterr().out


@pytest.mark.parametrize("changed", ["manual/fast_torch.py", "compare/bench/yardstick.py", "compare/bench/reliability.py"])
def test_the_code_fingerprint_changes_with_one_timed_file(changed, monkeypatch):
    fingerprint = resume.code_fingerprint()
    real = resume.Path.read_bytes
    monkeypatch.setattr(resume.Path, "read_bytes", lambda self: real(self) + b"#" * self.as_posix().endswith(changed))
    assert resume.code_fingerprint() != fingerprint


def test_the_code_fingerprint_changes_with_a_library_version(monkeypatch):
    fingerprint = resume.code_fingerprint()
    monkeypatch.setattr(resume.machine, "versions", lambda real=resume.machine.versions: {**real(), "torch": "9.9.9"})
    assert resume.code_fingerprint() != fingerprint


def test_resume_takes_the_runs_own_options(interrupted, mnist_dir):
    first, _ = interrupted
    with pytest.raises(UsageError, match="leave out --batches, --device"):
        bench.main(parse("--resume", first, "--batches", "32", "--device", "cpu", *data_args(mnist_dir)))


def test_resume_needs_a_bench_run_on_this_cpu(interrupted, tmp_path, mnist_dir):
    with pytest.raises(UsageError, match="--resume: a crosscheck bench run directory is expected"):
        bench.main(parse("--resume", tmp_path / "nowhere", *data_args(mnist_dir)))
    first, _ = interrupted
    report = json.loads((first / bench.JSON_NAME).read_text())
    report["machine"]["cpu"] = "Another CPU"
    (first / bench.JSON_NAME).write_text(json.dumps(report))
    with pytest.raises(UsageError, match="measured on Another CPU, this machine is"):
        bench.main(parse("--resume", first, *data_args(mnist_dir)))
    (first / bench.JSON_NAME).write_text("{")
    with pytest.raises(UsageError, match="cannot be read"):
        bench.main(parse("--resume", first, *data_args(mnist_dir)))
