"""The options of ``crosscheck bench`` and the settings they become."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from compare import options
from compare.bench import machine, reliability

DEFAULT_ARCHS = ("784-128-10", "784-1024-10", "784-512-256-10")
DEFAULT_BATCHES = (32, 64, 256, 1024)
QUICK_ARCHS, QUICK_BATCHES, QUICK_EPOCH_IMAGES = ("784-128-10",), (32, 256), 6400
IMPLS = ("manual", "manual_torch", "yardstick", "torch", "compiled", "manual_compiled", "jax_eager", "manual_jax_eager",
         "jax", "manual_jax", "floor_numpy", "floor_torch")
COMPILED = ("compiled", "manual_compiled")  # torch.compile: autograd's, the hand-derived step's
JAX_IMPLS = ("jax_eager", "manual_jax_eager", "jax", "manual_jax")  # autograd and hand-derived, eager and jax.jit
OPTIONAL = COMPILED + JAX_IMPLS  # a failure skips the column (with its reason) instead of the bench
LR = 0.01  # small: an update costs the same whatever its size, and many steps on one batch stay far
#            from saturated (slow, denormal) numbers
EPOCH_SIZES, EPOCH_BATCH = (784, 256, 10), 32
JAX_HINT = "pip install -e '.[jax]'"
CPU_ONLY = ("manual", "floor_numpy")  # NumPy runs on the CPU only


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long each worker process times its step, and how many processes per implementation."""

    warmup_s: float
    blocks: int
    block_s: float  # each block: back-to-back steps for about this long
    layout_s: float  # the floor's layout search: per product and layout
    max_processes: int  # per implementation and grid point (and per side of the epoch figure)
    budget: float  # a point adds processes until it has taken `budget` times as long as its first rounds


# blocks × block_s is each worker's timed region: at least reliability.MIN_REGION_S, which the
# machine's CPU accounting needs to tell whether anything else ran. Every implementation first
# runs in reliability.MIN_PROCESSES processes (the fewest that give its figure an interval); more
# follow for the figures whose interval is still too wide, within max_processes and the budget.
FULL = Timing(warmup_s=0.2, blocks=10, block_s=0.06, layout_s=0.02, max_processes=15, budget=3.0)
QUICK = Timing(warmup_s=0.05, blocks=8, block_s=0.05, layout_s=0.003, max_processes=9, budget=2.0)


@dataclasses.dataclass
class Settings:
    """Validated options."""

    archs: list[tuple[int, ...]]
    batches: list[int]
    dtype: str
    threads: int
    skipped: dict[str, str]  # implementation -> why it is not timed
    epoch_images: int  # 0: no whole-epoch figure
    timing: Timing
    out: Path | None  # None: runs/bench-<timestamp>
    device: str = "cpu"  # "cuda" or "cuda:N": the torch (and JAX) steps on that GPU
    breakdown: bool = False  # where the time goes, instead of the table


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``crosscheck bench`` to its subparser `p`."""
    cores = os.cpu_count() or 1
    p.add_argument("--archs", nargs="+", default=None, metavar="ARCH",
                   help=f"layer widths joined by '-', 784 first and 10 last (default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--batches", nargs="+", type=options.int_in(1, options.N_TRAIN), default=None, metavar="B",
                   help=f"batch sizes, 1..{options.N_TRAIN} (default: {' '.join(map(str, DEFAULT_BATCHES))})")
    p.add_argument("--dtype", choices=options.DTYPES, default=None, help="default: float32")
    p.add_argument("--threads", type=options.int_in(1, cores), default=None, metavar="N",
                   help=f"threads for every implementation, 1..{cores} (default: the physical cores; 1 leaves the "
                        f"other CPUs to other programs, which keeps figures robust on a busy machine)")
    p.add_argument("--max-processes", type=options.int_in(reliability.MIN_PROCESSES, 99), default=None, metavar="N",
                   help=f"at most N processes per implementation and point, {reliability.MIN_PROCESSES}..99: each "
                        f"starts with {reliability.MIN_PROCESSES}, more are added while its figure's interval is too "
                        f"wide (default: {FULL.max_processes}, --quick {QUICK.max_processes})")
    p.add_argument("--device", type=options.device, default=None,
                   help="cpu (default), cuda or cuda:N where torch sees that GPU: the torch steps (the hand-derived "
                        "one on torch tensors too), torch.compile, the torch floor and jax.jit (where JAX sees a "
                        "GPU) there; the NumPy columns and the epoch figure are skipped")
    p.add_argument("--breakdown", action="store_true",
                   help="instead of the table: where each implementation's step time goes (forward, loss, backward, "
                        "update) at each point, as a table, breakdown.json and breakdown.png")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-jax", action="store_true", help="skip jax.jit")
    p.add_argument("--no-epoch", action="store_true", help="skip the whole-epoch figure on MNIST")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {' '.join(QUICK_ARCHS)}, batches {' '.join(map(str, QUICK_BATCHES))} "
                        f"(unless given), short timings, no compile, epoch figure on {QUICK_EPOCH_IMAGES} images")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/bench-<timestamp>)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="go on with the run in DIR, with its options, into a new directory: keep its points whose "
                        "figures all stood, measure the others and those it did not reach (after a Ctrl-C, or a "
                        "machine that slowed down)")
    p.add_argument("--json", action="store_true", help="print bench.json on stdout (the rest goes to stderr)")
    options.add_data_options(p)


def parse_arch(text: str) -> tuple[int, ...]:
    """'784-128-10' -> (784, 128, 10); UsageError unless positive widths, 784 first, 10 last."""
    return options.mnist_sizes(str(text).split("-"), "--archs", shown=str(text))


def _jax_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax") is None


def skipped_implementations(args) -> dict[str, str]:
    """Implementation -> why it is skipped, from the options and what is installed."""
    skipped = {}
    if args.no_compile:
        skipped.update(dict.fromkeys(COMPILED, "skipped: --no-compile"))
    elif args.quick:
        skipped.update(dict.fromkeys(COMPILED, "skipped: --quick (a cold torch.compile takes tens of seconds)"))
    if args.no_jax:
        skipped.update(dict.fromkeys(JAX_IMPLS, "skipped: --no-jax"))
    elif _jax_missing():
        skipped.update(dict.fromkeys(JAX_IMPLS, f"skipped: JAX is not installed (add it with {JAX_HINT})"))
    if args.device not in (None, "cpu"):
        skipped.update(dict.fromkeys(CPU_ONLY, f"skipped: NumPy runs on the CPU only (--device {args.device})"))
    return skipped


def settings(args) -> Settings:
    """Check the parsed options (UsageError naming option, value and what is allowed) -> Settings."""
    archs = args.archs or (QUICK_ARCHS if args.quick else DEFAULT_ARCHS)
    archs = list(dict.fromkeys(parse_arch(a) for a in archs))  # in the order given, without repeats
    batches = sorted(set(args.batches or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)))
    threads = args.threads or machine.default_threads()
    device = args.device or "cpu"
    no_epoch = args.no_epoch or device != "cpu" or args.breakdown
    epoch_images = 0 if no_epoch else QUICK_EPOCH_IMAGES if args.quick else options.N_TRAIN
    timing = QUICK if args.quick else FULL
    if args.max_processes is not None:
        timing = dataclasses.replace(timing, max_processes=args.max_processes)
    return Settings(archs, batches, args.dtype or "float32", threads, skipped_implementations(args), epoch_images,
                    timing, args.out, device, args.breakdown)
