"""``crosscheck`` and ``python -m compare``: the thread-spin defaults first, before NumPy or torch
loads (``compare.spin``), then the command line (``compare.cli``)."""

import sys


def main(argv: list[str] | None = None) -> int:
    from compare import spin

    spin.apply_defaults()
    from compare.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
