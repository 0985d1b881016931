"""The ``crosscheck`` command (also ``python -m compare``).

Subcommands: ``data`` (prepare and verify MNIST), ``gradcheck`` (four witnesses of one gradient),
``train`` (side-by-side training on MNIST), ``bench`` (manual against autograd, with the GEMM
floor). A bad value gets one line naming the option, the value and what is allowed, and exit code
2; a failure the user can fix gets one line and exit code 1. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from compare import options
from compare.errors import CrosscheckError, UsageError
from compare.options import ACTIVATIONS, DTYPES, add_data_options, nonnegative_int, positive_float, positive_int


DESCRIPTION = "A hand-derived NumPy backpropagation of an MLP, checked against PyTorch autograd on MNIST."

EPILOG = """\
Run `crosscheck COMMAND --help` for a command's options. Exit codes: 0 success; 1 a failure the
tool found (the two sides disagree, training diverged, a damaged file); 2 a bad command-line
value; 130/143 interrupted (a training run and a bench can be resumed)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (argparse prints the usage block too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_net_options(p: argparse.ArgumentParser, sizes: list[int], dtype: str, given_only: bool = False) -> None:
    """--sizes, --activation, --dtype, --seed. With `given_only` the parsed default is None, so that
    `train --resume` can tell an option the user gave from one left at its default."""

    def default(value):
        return None if given_only else value

    p.add_argument("--sizes", type=positive_int, nargs="+", default=default(sizes), metavar="N",
                   help=f"layer widths, input first, classes last (default: {' '.join(map(str, sizes))})")
    p.add_argument("--activation", choices=ACTIVATIONS, default=default("sigmoid"),
                   help="hidden-layer nonlinearity (default: sigmoid, as in the notes)")
    p.add_argument("--dtype", choices=DTYPES, default=default(dtype),
                   help=f"floating-point type of both sides (default: {dtype})")
    p.add_argument("--seed", type=nonnegative_int, default=default(0), help="seed of the one generator (default: 0)")


def cmd_data(args, parser) -> int:
    from compare import data

    mnist = data.load_mnist(args.data_dir, dtype="float32", offline=args.offline)
    print(f"path:   {mnist.prepared.raw_dir}")
    for split, labels in (("train", mnist.y_train), ("test", mnist.y_test)):
        counts = [int(c) for c in (labels[:, None] == range(data.NUM_CLASSES)).sum(0)]
        per_digit = "  ".join(f"{d}:{c}" for d, c in enumerate(counts))
        print(f"{split + ':':7} {len(labels)} images   {per_digit}")
    return 0


def cmd_gradcheck(args, parser) -> int:
    from compare import data, gradcheck

    if args.device != "cpu" and args.manual_arrays == "numpy":
        raise UsageError(f"argument --device: {args.device!r} needs --manual-arrays torch (the hand-derived net on "
                         f"NumPy arrays runs on the CPU only)")
    log = options.logger(args.json)
    mnist = data.load_mnist(args.data_dir, dtype=args.dtype, offline=args.offline, log=log)
    report = gradcheck.run(mnist.x_train, mnist.y_train, args.sizes, args.activation, args.batch,
                           args.dtype, args.seed, args.fd_samples, args.manual_arrays, args.device)
    report["data"] = mnist.prepared.description
    if args.json:
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
    cfg, fd = report["config"], report["fd_coordinates"]
    where = "" if cfg["arrays"] == "numpy" else f", the hand-derived net on torch tensors on {cfg['device']}"
    print(f"gradcheck: sizes {'-'.join(map(str, cfg['sizes']))}, {cfg['activation']}, {cfg['dtype']}, "
          f"{cfg['batch']} MNIST training images (seed {cfg['seed']}){where}")
    step = f" (step {fd['step']:g})"
    for name, what in report["witnesses"].items():
        print(f"  {name:7} {what}{step if name == 'fd' else ''}")
    for name, why in report["skipped"].items():
        print(f"  {name:7} {why}")
    print("relative error per tensor and pair of witnesses, ||a-b|| / max(||a||, ||b||), each held to the "
          "referee's bound (docs/referee.md)\n")
    print(report["table"] + "\n")
    print("\n".join(report["notes"]))
    if report["ok"]:
        print(f"PASS: all {len(report['pairs'])} pairs of witnesses agree on every layer and parameter")
        return 0
    print(f"FAIL: {report['culprit']}")
    print("\n".join(report["failures"]))
    return 1


TRAIN_OPTIONS = ("sizes", "activation", "epochs", "batch_size", "lr", "dtype", "seed", "mode", "check_every",
                 "referee", "limit_train", "step", "model", "manual_arrays", "device")


def _train_config(args):
    """The TrainConfig from the options; with --resume, options not given come from the checkpoint."""
    from compare.train import TrainConfig, checkpoint

    given = {k: v for k in TRAIN_OPTIONS if (v := getattr(args, k)) is not None and v is not False}
    if args.resume is not None:
        saved = checkpoint.read_state(checkpoint.find(args.resume))["config"]
        differ = [f"--{k.replace('_', '-')} {v!r} (checkpoint: {saved.get(k)!r})" for k, v in given.items()
                  if (list(v) if k == "sizes" else v) != saved.get(k)]
        if differ:
            raise UsageError(f"argument --resume: the run in {args.resume} used other options: {', '.join(differ)}; "
                             f"leave them out to continue it as it was")
        config = TrainConfig(**saved)
        try:
            options.check_device(config.device)
        except ValueError as e:
            raise UsageError(f"argument --resume: the run in {args.resume} ran on --device {config.device}, "
                             f"but {e}") from None
        return config
    if "model" in given:
        _check_model_options(given)
        given.update(sizes=(), activation="")
    config = TrainConfig(**given)
    if config.device != "cpu" and config.manual_arrays == "numpy":
        raise UsageError(f"argument --device: {config.device!r} needs --manual-arrays torch (both sides compute on "
                         f"the device; the manual side on NumPy arrays runs on the CPU only)")
    n_train = config.limit_train or options.N_TRAIN
    if config.batch_size > n_train:
        raise options.usage_error("--batch-size", config.batch_size,
                                  f"between 1 and the training-set size ({n_train})")
    return config


def _check_model_options(given: dict) -> None:
    """--model brings its own layers (NumPy): --sizes, --activation, --step fast and --manual-arrays
    torch do not apply."""
    for option in ("sizes", "activation"):
        if option in given:
            raise UsageError(f"argument --{option}: not allowed with --model (the model file defines the layers)")
    if given.get("manual_arrays") == "torch":
        raise UsageError("argument --manual-arrays: 'torch' runs the built-in MLP only (its layers are the "
                         "reference's); use --manual-arrays numpy with --model")
    if given.get("step") == "fast":
        raise UsageError("argument --step: 'fast' trains the built-in MLP only (manual.fast.FastStep); "
                         "use --step reference with --model")


def _out_dir(args) -> Path:
    """A new, writable run directory (an existing run is never overwritten), or the --resume one."""
    from compare import report

    if args.resume is None:
        return options.new_run_dir(args.out, hint=f" (or --resume {args.out} to continue a run there)")
    options.writable_dir(args.resume)
    if not (args.resume / report.SUMMARY).exists():
        raise options.usage_error("--resume", args.resume, f"a crosscheck run directory (no {report.SUMMARY} there)")
    return args.resume


def cmd_train(args, parser) -> int:
    import numpy as np

    from compare import data, report
    from compare.train import Interrupted, SideBySide, checkpoint, summary

    config = _train_config(args)
    if config.model:  # a bad model file is one line before anything is created
        from compare.train import sides

        sides.build(config, np.random.default_rng(config.seed))
    out = _out_dir(args)
    log = options.logger(args.json)
    mnist = data.load_mnist(args.data_dir, dtype=config.dtype, offline=args.offline, log=log)
    run = SideBySide(config, mnist, out, log=log)
    if args.resume is not None:
        checkpoint.restore_run(run, checkpoint.find(args.resume))
        log(f"resuming {out} at epoch {run.epoch}, step {run.global_step}")
    log(f"training {config.net} {config.dtype}, {config.mode} mode, {'fast step, ' * (config.step == 'fast')}"
        f"manual side on {config.manual_side}, batch {config.batch_size}, lr {config.lr:g}, {config.epochs} epochs "
        f"on {len(run.x)} images, checking every {config.check_every} step{'s' * (config.check_every > 1)}; "
        f"writing to {out}")
    try:
        result = run.run()
    except Interrupted as e:
        log(f"interrupted at epoch {run.epoch}, step {run.global_step}: checkpoint and report saved in {out}; "
            f"continue with: crosscheck train --resume {out}")
        return e.exit_code
    finally:
        if run.history:
            log("\n" + report.epoch_table(run.history))
    if args.json:
        print(json.dumps(result, indent=1))
    log("\n" + summary.pass_line(result, out))
    return 0


def _add_train_parser(sub) -> None:
    """``crosscheck train`` and its options. Their parsed defaults are None, so that ``--resume``
    can tell an option the user gave from one left at its default (TrainConfig has the defaults)."""
    from compare.train.config import ARRAY_LIBRARIES, STEPS, TrainConfig

    p = sub.add_parser("train", help="train both sides side by side on MNIST, checking every step",
                       description="Train the manual NumPy MLP and the PyTorch reference from identical "
                                   "weights on identical shuffled mini-batches; check losses and per-layer "
                                   "gradients at every checked step; write metrics.jsonl, summary.json, "
                                   "plots and checkpoints. Exit 0 when everything agreed, 1 at the first "
                                   "disagreement or divergence, 130/143 when interrupted (resumable).")
    d = TrainConfig()
    _add_net_options(p, list(d.sizes), d.dtype, given_only=True)
    p.add_argument("--epochs", type=positive_int, default=None, help=f"default: {d.epochs}")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"default: {d.batch_size}")
    p.add_argument("--lr", type=positive_float, default=None, help=f"SGD learning rate (default: {d.lr:g})")
    p.add_argument("--mode", choices=("free", "lockstep"), default=None,
                   help="free: two independent trajectories (default for the built-in net in float64); "
                        "lockstep: torch takes "
                        "the manual weights after every step (default with float32 and with --model)")
    p.add_argument("--check-every", type=positive_int, default=None, metavar="N",
                   help="compare the two sides every N steps (default: 1)")
    p.add_argument("--step", choices=STEPS, default=None,
                   help="how the manual side trains: reference (loss_and_grads, checked against torch's "
                        "gradients, then SGD; the default) or fast (manual.fast.FastStep, on torch tensors "
                        "manual.fast_torch.FastTorchStep: the tuned steps the bench "
                        "times; checked by the weights after each step, or in lockstep by the update it applied)")
    p.add_argument("--manual-arrays", choices=ARRAY_LIBRARIES, default=None,
                   help="the array library the manual side computes on: numpy (the default) or torch (the same "
                        "hand-derived code on torch tensors, no autograd, on --device); checked the same way")
    p.add_argument("--device", type=options.device, default=None,
                   help="where torch computes: cpu (the default), cuda or cuda:N where torch sees a GPU (both sides "
                        "there; needs --manual-arrays torch)")
    p.add_argument("--model", default=None, metavar="FILE.py:build",
                   help="train your own stack of layers instead of the built-in MLP: build(rng, dtype) in FILE "
                        "returns a list of manual/layers.py layers and (your layer, torch module) pairs "
                        "(see the README)")
    p.add_argument("--referee", action="store_true",
                   help="float32: recompute the gradient in float64 at every checked step (default: "
                        "every 200th)")
    p.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="use only the first N training images (quick runs)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<timestamp>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the interrupted run in DIR from its checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_data_options(p)
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crosscheck", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    p = sub.add_parser("data", help="prepare and verify MNIST, print its summary",
                       description="Fetch (if needed) and verify the four MNIST files, then print "
                                   "the source used, the path and the per-digit counts.")
    add_data_options(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("gradcheck", help="four witnesses of one gradient on a batch of MNIST",
                       description="Check the gradient of the batch-mean loss with the referee (fast manual "
                                   "backprop against torch autograd and finite differences in float64), with "
                                   "the notes' literal Jacobian chain as one more witness, per layer and "
                                   "parameter; exit 0 only if all agree.")
    _add_net_options(p, [784, 64, 10], "float64")
    p.add_argument("--batch", type=positive_int, default=8, help="number of MNIST images (default: 8)")
    p.add_argument("--fd-samples", type=positive_int, default=500,
                   help="finite differences per parameter array for nets with >= "
                        "60,000 parameters (smaller nets: every coordinate; default: 500)")
    p.add_argument("--manual-arrays", choices=("numpy", "torch"), default="numpy",
                   help="the array library the hand-derived net computes on: numpy (the default) or torch (the "
                        "same code on torch tensors, no autograd, on --device; the referee's tensor path)")
    p.add_argument("--device", type=options.device, default="cpu",
                   help="where torch computes: cpu (the default), cuda or cuda:N where torch sees a GPU (every "
                        "witness there, float64 truth included; needs --manual-arrays torch)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_data_options(p)
    p.set_defaults(func=cmd_gradcheck)

    _add_train_parser(sub)

    from compare import bench

    p = sub.add_parser("bench", help="time one training step: manual NumPy, torch eager, torch.compile, jax.jit, "
                                     "GEMM floor",
                       description="Time one full training step (forward, loss, backward, SGD update) of the "
                                   "manual NumPy MLP, torch eager autograd, torch.compile and jax.jit, next to the "
                                   "floor of the step's matrix products alone, over a grid of architectures "
                                   "and batch sizes, with the same threads, data and dtype for every library, each "
                                   "in fresh processes until its figure is pinned down. Writes bench.json and "
                                   "bench.png; with --breakdown, where each step's time goes (breakdown.json, "
                                   "breakdown.png).")
    bench.add_arguments(p)
    p.set_defaults(func=lambda args, parser: bench.main(args))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "sizes", None) is not None:
            args.sizes = list(options.mnist_sizes(args.sizes))
        if hasattr(args, "data_dir"):
            options.check_data_dir(args.data_dir)
        return args.func(args, parser)
    except UsageError as e:  # the same line argparse writes for a bad value
        if args.debug:
            traceback.print_exc()
        print(f"crosscheck {args.command}: error: {e} (see `crosscheck {args.command} --help`)", file=sys.stderr)
        return e.exit_code
    except CrosscheckError as e:
        if args.debug:
            traceback.print_exc()
        print(f"crosscheck {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"crosscheck {args.command}: interrupted", file=sys.stderr)
        return 130
