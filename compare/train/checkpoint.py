"""Checkpoints of a side-by-side run: both nets' weights and the harness state, swapped in whole.

``<out>/checkpoint/`` holds ``manual.npz`` (W1, b1, W2, ...: each parameter under its name and
layer number), ``torch.pt`` (the module's ``state_dict``) and ``state.json`` (configuration,
position, generator state, records). A new checkpoint is assembled in a scratch folder and renamed
into place, so a crash leaves either the old or the new one, never a mixture. Loading uses
``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)`` and checks every name, shape
and dtype against the nets of the configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from compare.errors import CrosscheckError
from compare.train.config import TrainConfig

NAME = "checkpoint"
OLD = "checkpoint.old"
FORMAT = 1


class CheckpointError(CrosscheckError):
    """A checkpoint that cannot be used (missing, damaged, or for another configuration)."""


def save(out: Path, manual_arrays: dict[str, np.ndarray], state_dict: dict, state: dict) -> None:
    """Write a checkpoint: `manual_arrays` (file key -> array), torch's `state_dict`, `state`."""
    import torch

    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=out))
    try:
        np.savez(tmp / "manual.npz", **manual_arrays)
        torch.save(state_dict, tmp / "torch.pt")
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
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if (not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("config"), dict)
            or not set(state["config"]) <= fields):
        raise CheckpointError(f"{folder / 'state.json'} is not a crosscheck checkpoint of format {FORMAT}")
    return state


def mlp_shapes(sizes) -> dict[str, tuple]:
    """The manual.npz entries of the built-in net: {"W1": (sizes[1], sizes[0]), "b1": (sizes[1],), ...}."""
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{i}"], shapes[f"b{i}"] = (n_out, n_in), (n_out,)
    return shapes


def load_arrays(folder: Path, manual_shapes: dict[str, tuple], dtype: str, torch_shapes: dict[str, tuple] | None = None):
    """Both sides' parameters, checked against the expected names, shapes and `dtype`.

    Args:
        manual_shapes: file key -> shape of manual.npz's entries (``mlp_shapes`` for the built-in net).
        torch_shapes: state_dict key -> shape (None: not checked beyond being a state_dict).
    Returns:
        (manual: dict file key -> array, torch_state_dict)
    """
    import torch

    path = folder / "manual.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            manual = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); cannot resume from it") from None
    _check(path, manual, manual_shapes, dtype, lambda a: (tuple(a.shape), a.dtype.name))

    path = folder / "torch.pt"
    try:
        state_dict = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... on damage
        raise CheckpointError(f"{path} is damaged ({str(e).splitlines()[0]}); cannot resume from it") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not hold a state_dict")
    if torch_shapes is not None:
        _check(path, state_dict, torch_shapes, dtype, lambda t: (tuple(t.shape), str(t.dtype).removeprefix("torch.")))
    return manual, state_dict


def _check(path, arrays: dict, shapes: dict, dtype: str, shape_and_dtype) -> None:
    if set(arrays) != set(shapes):
        raise CheckpointError(f"{path} holds {sorted(arrays)}, expected {sorted(shapes)} for this configuration")
    for key, shape in shapes.items():
        got_shape, got_dtype = shape_and_dtype(arrays[key])
        if got_shape != tuple(shape) or got_dtype != dtype:
            raise CheckpointError(f"{path}: {key} is {got_dtype} {got_shape}, expected {dtype} {tuple(shape)}")


# ------------------------------------------------------------------------------ a run's state


def save_run(run) -> None:
    """Checkpoint a ``SideBySide`` run: both sides' parameters, position, generator, records."""
    manual = {k.file_key: a for k, a in zip(run.manual.keys, run.manual.params)}
    state = {"config": run.cfg.to_dict(), "epoch": run.epoch, "step_in_epoch": run.step_in_epoch,
             "global_step": run.global_step, "n_checks": run.checks.n_checks,
             "epoch_rng_state": run.epoch_rng_state, "rng_state": run.rng.bit_generator.state, **run.records.state()}
    save(run.out, manual, run.torch.module.state_dict(), state)


def restore_run(run, folder: Path) -> None:
    """Continue `run` from the checkpoint in `folder`, made with the same configuration (weights,
    position, generator, records; the metrics lines come from the run's metrics.jsonl)."""
    from compare import report

    state = read_state(folder)
    saved, now = TrainConfig(**state["config"]).to_dict(), run.cfg.to_dict()  # older checkpoints: defaults
    if saved != now:
        differ = [f"{k} {saved.get(k)!r} vs {v!r}" for k, v in now.items() if saved.get(k) != v]
        raise CheckpointError(f"the checkpoint in {folder} was made with a different configuration "
                              f"({'; '.join(differ)}); resume with the original options or start a new run")
    shapes = {k.file_key: a.shape for k, a in zip(run.manual.keys, run.manual.params)}
    torch_shapes = {k: tuple(t.shape) for k, t in run.torch.module.state_dict().items()}
    manual, state_dict = load_arrays(folder, shapes, run.cfg.dtype, torch_shapes)
    run.manual.set_params([manual[k.file_key] for k in run.manual.keys])
    run.torch.module.load_state_dict(state_dict)
    if run.cfg.lockstep:
        run.torch.load(run.manual.params)
    run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    run.checks.n_checks, run.epoch_rng_state = state["n_checks"], state["epoch_rng_state"]
    run.rng.bit_generator.state = state["rng_state"]
    lines = report.read_metrics(run.out)
    if len(lines) < state["n_metrics"]:
        raise CheckpointError(f"{run.out / report.METRICS} has {len(lines)} lines but the checkpoint expects "
                              f"{state['n_metrics']}; it was changed after the run stopped")
    run.records.restore(state, lines[: state["n_metrics"]])
