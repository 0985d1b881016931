"""Checkpoints of a side-by-side run: both nets' weights and the harness state, swapped in whole.

``<out>/checkpoint/`` holds ``manual.npz`` (W1, b1, W2, ...), ``torch.pt`` (the module's
``state_dict``) and ``state.json`` (configuration, position, generator state, history). A new
checkpoint is assembled in a scratch folder and renamed into place, so a crash leaves either the
old or the new one, never a mixture. Loading uses ``np.load(allow_pickle=False)`` and
``torch.load(weights_only=True)`` and checks every shape and dtype against the configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from compare.errors import CrosscheckError

NAME = "checkpoint"
OLD = "checkpoint.old"
FORMAT = 1


class CheckpointError(CrosscheckError):
    """A checkpoint that cannot be used (missing, damaged, or for another configuration)."""


def save(out: Path, manual, torch_net, state: dict) -> None:
    import torch

    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=out))
    try:
        arrays = {f"{p}{i}": a for i, (W, b) in enumerate(manual.parameters(), start=1) for p, a in (("W", W), ("b", b))}
        np.savez(tmp / "manual.npz", **arrays)
        torch.save(torch_net.state_dict(), tmp / "torch.pt")
        (tmp / "state.json").write_text(json.dumps({"format": FORMAT, **state}, indent=1))
        final, old = out / NAME, out / OLD
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find(out: Path) -> Path:
    """The checkpoint folder of run directory `out` (falling back to one left mid-swap)."""
    out = Path(out)
    for name in (NAME, OLD):
        if (out / name / "state.json").is_file():
            return out / name
    raise CheckpointError(f"no checkpoint in {out} (expected {out / NAME}/state.json); "
                          f"pass the --out directory of an earlier `crosscheck train` run")


def read_state(folder: Path) -> dict:
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'state.json'} is damaged ({e}); cannot resume from it") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{folder / 'state.json'} is not a crosscheck checkpoint of format {FORMAT}")
    return state


def expected_shapes(sizes) -> dict[str, tuple]:
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_out, n_in), (n_out,)
    return shapes


def load_arrays(folder: Path, sizes, dtype: str):
    """Weights and biases of both sides, checked against `sizes` and `dtype`.

    Returns:
        (manual_weights, manual_biases, torch_state_dict)
    """
    import torch

    shapes = expected_shapes(sizes)
    path = folder / "manual.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            manual = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); cannot resume from it") from None
    _check(path, manual, shapes, dtype, lambda a: (tuple(a.shape), a.dtype.name))

    path = folder / "torch.pt"
    try:
        state_dict = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... on damage
        raise CheckpointError(f"{path} is damaged ({str(e).splitlines()[0]}); cannot resume from it") from None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} does not hold a state_dict")
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")  # layers.<i>.weight / layers.<i>.bias
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in ("weight", "bias"):
            raise CheckpointError(f"{path} has an unexpected entry {key!r}")
        renamed[f"{parts[2][0].upper() if parts[2] == 'weight' else 'b'}{int(parts[1]) + 1}"] = value
    _check(path, renamed, shapes, dtype, lambda t: (tuple(t.shape), str(t.dtype).removeprefix("torch.")))

    n = len(sizes) - 1
    weights = [manual[f"W{i}"] for i in range(1, n + 1)]
    biases = [manual[f"b{i}"] for i in range(1, n + 1)]
    return weights, biases, state_dict


def _check(path, arrays: dict, shapes: dict, dtype: str, describe) -> None:
    if set(arrays) != set(shapes):
        raise CheckpointError(f"{path} holds {sorted(arrays)}, expected {sorted(shapes)} for this configuration")
    for key, shape in shapes.items():
        got_shape, got_dtype = describe(arrays[key])
        if got_shape != shape or got_dtype != dtype:
            raise CheckpointError(f"{path}: {key} is {got_dtype} {got_shape}, expected {dtype} {shape}")
