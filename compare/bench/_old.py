"""``crosscheck bench``: the hand-derived NumPy step next to PyTorch and next to its GEMM floor.

Timed per grid point (architecture × batch size, one dtype): one whole training step (forward,
batch-mean cross-entropy, backward, SGD update) of
- manual: ``mlp.train_step(x, y, lr)`` (forward, loss, backward, update; its input and label
  checks included; within the thread budget it runs small steps on one BLAS thread, and it takes
  the weight update inside the weight-gradient GEMM, see ``manual/blas.py``);
- torch: eager autograd: ``zero_grad(set_to_none=True)``, ``TorchMLP`` forward (its input check
  included), ``F.cross_entropy``, ``backward()``, ``torch.optim.SGD.step()``;
- compiled: that step with forward + loss through ``torch.compile(dynamic=False)`` (AOTAutograd
  compiles the backward too; the optimizer stays eager). It compiles the bare layer loop, since
  TorchMLP's input check branches on data and would split the graph. Dynamo is reset at every grid
  point: each point compiles once for its own shapes and never meets the recompile limit (past it,
  torch silently runs eager). The first call is the compile time (shorter when Inductor's on-disk
  cache already holds the kernels). A failure is recorded with its reason, never fatal;
- floor_numpy / floor_torch: only the step's matrix products (per layer the forward z·Wᵀ and the
  weight gradient δᵀ·z, and δ·W for every layer but the first) into preallocated outputs
  (``np.matmul`` / ``torch.mm`` with out=), each product in the fastest of its 8 memory layouts
  (A, B, C each stored as is or transposed; found by timing all 8 per grid point and library, and
  recorded in bench.json). Bias, activation, softmax, update and Python come on top, and no layout
  beats the fastest, so no implementation of the step with these libraries can beat it. The floor
  runs at the full thread budget, where these products in isolation are fastest.

Fair because: both libraries get the same threads (threadpoolctl limits every BLAS and OpenMP pool
it finds; ``torch.set_num_threads``), and the spin limits set in ``compare/__init__`` keep one
library's idle threads from starving the other's as they alternate; the same batch of real MNIST
training images (one array, torch reads it through ``torch.from_numpy``), initial weights
(``from_manual``), learning rate and dtype. Each implementation is warmed up, then timed with
``torch.utils.benchmark.Timer.blocked_autorange`` (blocks long enough for the timer's overhead to be
under 0.1%) in several rounds, each timing every implementation once in a rotated order so that the
machine's drift hits all alike; per implementation the per-step times of all blocks are pooled into
a median and quartiles. The learning rate is small (0.01): an update costs the same whatever its size,
and thousands of steps on one batch stay far from saturated (slow, denormal) numbers.

The whole-epoch figure trains 784-256-10 float32, batch 32, through the 60,000 training images in
one shuffled order (the same for both sides; gathering each batch is in both sides' time) and
reports seconds and images/s for manual and torch eager.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from compare.data import IMAGE_COUNTS, NUM_CLASSES, NUM_PIXELS
from compare.errors import UsageError
from compare.files import atomic_write_json
from manual.blas import DESCEND_MIN_SIZE

MNIST_IN, MNIST_CLASSES, N_TRAIN = NUM_PIXELS, NUM_CLASSES, IMAGE_COUNTS["train"]
DEFAULT_ARCHS = ("784-128-10", "784-1024-10", "784-512-256-10")
DEFAULT_BATCHES = (32, 64, 256, 1024)
QUICK_ARCHS, QUICK_BATCHES, QUICK_EPOCH_IMAGES = ("784-128-10",), (32, 256), 6400
IMPLS = ("manual", "torch", "compiled", "floor_numpy", "floor_torch")
ACTIVATION, LR = "sigmoid", 0.01
EPOCH_SIZES, EPOCH_BATCH = (784, 256, 10), 32
JSON_NAME, PLOT_NAME = "bench.json", "bench.png"
UPDATE_FUSED = (f"W ← W − δᵀz inside the weight-gradient GEMM (beta = 1, NumPy's OpenBLAS) for W of "
                f"{DESCEND_MIN_SIZE}+ entries")
UPDATE_FALLBACK = "weight gradient by matmul, then a subtraction"


@dataclasses.dataclass
class Settings:
    """Validated options. rounds × round_s is each implementation's timing budget per grid point."""

    archs: list[tuple[int, ...]]
    batches: list[int]
    dtype: str
    threads: int
    compile_note: str | None  # why torch.compile is skipped; None: it runs
    epoch_images: int  # 0: no whole-epoch figure
    epoch_passes: tuple[str, ...]
    rounds: int
    round_s: float
    warmup_s: float
    layout_s: float  # per product, layout and library, to find the floor's fastest layouts
    out: Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``crosscheck bench`` to its subparser `p` (values are checked by `main`)."""
    p.add_argument("--archs", nargs="+", default=None, metavar="ARCH",
                   help=f"layer widths joined by '-', 784 first and 10 last (default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--batches", nargs="+", default=None, metavar="B",
                   help=f"batch sizes, 1..{N_TRAIN} (default: {' '.join(map(str, DEFAULT_BATCHES))})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default: float32")
    p.add_argument("--threads", default=None, metavar="N",
                   help=f"threads for both libraries, 1..{os.cpu_count()} (default: all cores)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-epoch", action="store_true", help="skip the whole-epoch figure on MNIST")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {' '.join(QUICK_ARCHS)}, batches {' '.join(map(str, QUICK_BATCHES))} "
                        f"(unless given), short timings, no compile, epoch figure on {QUICK_EPOCH_IMAGES} images")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/bench-<timestamp>)")
    p.add_argument("--json", action="store_true", help="print bench.json on stdout (the rest goes to stderr)")
    p.add_argument("--data-dir", type=Path, default=None, help="where MNIST/raw/ lives (as for `train`)")
    p.add_argument("--offline", action="store_true", help="skip torchvision's download, use the offline mirror")


def parse_arch(text: str) -> tuple[int, ...]:
    """'784-128-10' -> (784, 128, 10); UsageError unless positive widths, 784 first, 10 last."""
    try:
        sizes = tuple(int(part) for part in str(text).split("-"))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1 or sizes[0] != MNIST_IN or sizes[-1] != MNIST_CLASSES:
        raise UsageError(f"argument --archs: invalid value {text!r}: must be positive layer widths joined by '-', "
                         f"the first {MNIST_IN} and the last {MNIST_CLASSES}, e.g. 784-128-10")
    return sizes


def _int_in(option: str, text, low: int, high: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"argument {option}: invalid value {text!r}: must be an integer from {low} to {high}")
    return value


def settings(args) -> Settings:
    """Check the parsed options (UsageError naming option, value and what is allowed) -> Settings."""
    cores = os.cpu_count() or 1
    archs = args.archs or (QUICK_ARCHS if args.quick else DEFAULT_ARCHS)
    archs = list(dict.fromkeys(parse_arch(a) for a in archs))  # in the order given, without repeats
    batches = args.batches or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    batches = sorted({_int_in("--batches", b, 1, N_TRAIN) for b in batches})
    threads = cores if args.threads is None else _int_in("--threads", args.threads, 1, cores)
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
        out, n = Path("runs") / f"bench-{stamp}", 1
        while out.exists():
            n += 1
            out = Path("runs") / f"bench-{stamp}-{n}"
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"argument --out: invalid value '{out}': it already exists and is not empty; "
                         f"choose a new directory")
    note = ("skipped: --no-compile" if args.no_compile else
            "skipped: --quick (a cold torch.compile takes tens of seconds)" if args.quick else None)
    epoch_images = 0 if args.no_epoch else QUICK_EPOCH_IMAGES if args.quick else N_TRAIN
    passes = ("manual", "torch") if args.quick else ("manual", "torch", "torch", "manual")
    rounds, round_s, warmup_s, layout_s = (3, 0.02, 0.01, 0.003) if args.quick else (5, 0.2, 0.1, 0.02)
    return Settings(archs, batches, args.dtype, threads, note, epoch_images, passes, rounds, round_s, warmup_s,
                    layout_s, out)


# ------------------------------------------------------------------------------ the steps


def _initial(sizes, dtype):
    """The manual net every implementation starts from (seed 0), in the manual side's fastest
    layout (``layout="transposed"``); torch gets a copy of its values in ``nn.Linear``'s own layout."""
    from manual.mlp import MLP

    return MLP(sizes, ACTIVATION, dtype=dtype, seed=0, layout="transposed")


def manual_step(sizes, x: np.ndarray, y: np.ndarray):
    """One manual training step on (x, y) (x: (B, 784) float array, y: (B,) int64) -> a callable.

    ``MLP.train_step``: the same forward and backward functions as ``loss_and_grads`` (which the
    harness checks against torch), with lr folded into the output delta and each layer's update
    taken inside its weight-gradient product (``F.linear_descend``); tests/test_mlp.py holds the
    two paths to the same weights."""
    mlp = _initial(sizes, x.dtype)

    def step():
        mlp.train_step(x, y, LR)

    return step


def _torch_model(sizes, dtype):
    import torch

    from torch_ref.convert import from_manual

    model = from_manual(_initial(sizes, dtype))
    return model, torch.optim.SGD(model.parameters(), lr=LR)


def torch_step(sizes, x: np.ndarray, y: np.ndarray):
    """One eager-autograd training step on the same (x, y), shared with torch -> a callable."""
    import torch
    import torch.nn.functional as F

    model, opt = _torch_model(sizes, x.dtype)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(tx), ty).backward()
        opt.step()

    return step


def compiled_step(sizes, x: np.ndarray, y: np.ndarray):
    """The torch step with forward + loss compiled -> (callable, compile seconds); raises if it fails."""
    import torch
    import torch.nn.functional as F

    torch._dynamo.reset()  # one compile per grid point, never the recompile limit's silent fallback
    model, opt = _torch_model(sizes, x.dtype)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    layers, act = list(model.layers), model.activation

    def loss_fn(inp, target):
        for layer in layers[:-1]:
            inp = act(layer(inp))
        return F.cross_entropy(layers[-1](inp), target)

    compiled = torch.compile(loss_fn, dynamic=False)

    def step():
        opt.zero_grad(set_to_none=True)
        compiled(tx, ty).backward()
        opt.step()

    t0 = time.perf_counter()
    step()  # compiles forward and backward
    return step, time.perf_counter() - t0


def gemm_products(sizes, batch: int) -> list[dict]:
    """The matrix products of one training step, in the step's order.

    Returns dicts: layer (1-based), kind ("forward" z·Wᵀ, "dW" δᵀ·z, "dx" δ·W), shape (m, k, n) of an
    (m, k) by (k, n) product, flops 2·m·k·n. Layer 1 has no "dx": nobody needs ∂L/∂x.
    """
    widths = list(zip(sizes[:-1], sizes[1:]))
    products = [{"layer": i, "kind": "forward", "shape": (batch, n_in, n_out)}
                for i, (n_in, n_out) in enumerate(widths, start=1)]
    for i, (n_in, n_out) in reversed(list(enumerate(widths, start=1))):
        products.append({"layer": i, "kind": "dW", "shape": (n_out, batch, n_in)})
        if i > 1:
            products.append({"layer": i, "kind": "dx", "shape": (batch, n_out, n_in)})
    for p in products:
        m, k, n = p["shape"]
        p["flops"] = 2 * m * k * n
    return products


# A product C = A·B can be laid out in memory 8 ways: A, B and C each C-order or the transpose of a
# C-order array (BLAS takes either through its trans flags; for a transposed C NumPy and PyTorch
# compute Cᵀ = BᵀAᵀ). Their speeds differ by up to 40 % for these shapes, and no layout is best
# for all of them, so the floor times each product in every layout and keeps the fastest.
LAYOUTS = tuple((ta, tb, tc) for ta in (False, True) for tb in (False, True) for tc in (False, True))


def layout_name(layout) -> str:
    """(False, True, False) -> 'A·Bᵀ->C': which operands are stored transposed."""
    ta, tb, tc = layout
    return f"A{'ᵀ' * ta}·B{'ᵀ' * tb}->C{'ᵀ' * tc}"


def _array(values: np.ndarray, transposed: bool) -> np.ndarray:
    """`values` (rows, cols) as a C-order array, or as the transpose of a C-order (cols, rows) one."""
    return np.ascontiguousarray(values.T).T if transposed else np.ascontiguousarray(values)


def floor_operands(products: list[dict], x: np.ndarray, layouts=None, seed: int = 0) -> list[tuple]:
    """(a, b, out) arrays for each product, in `layouts` (one (A, B, C) transposed-flags triple per
    product, default: the manual step's own, see ``MANUAL_LAYOUT``). Layer 1 works on the values of
    the MNIST batch `x` (the forward's A, the weight gradient's B); everything else is random."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(x.dtype)  # noqa: E731
    ops = []
    for p, layout in zip(products, layouts or [MANUAL_LAYOUT[p["kind"]] for p in products]):
        m, k, n = p["shape"]
        a = x if p["layer"] == 1 and p["kind"] == "forward" else normal(m, k)
        b = x if p["layer"] == 1 and p["kind"] == "dW" else normal(k, n)
        ta, tb, tc = layout
        a, b = (x if v is x and not t else _array(v, t) for v, t in ((a, ta), (b, tb)))
        ops.append((a, b, np.empty((n, m), x.dtype).T if tc else np.empty((m, n), x.dtype)))
    return ops


# The layouts of ``manual.mlp`` with ``layout="transposed"`` (as benchmarked): z (B, in) C-order, W the
# transpose of a C-order (in, out) block, δ (B, out) C-order; so forward z·Wᵀ is A·B (Wᵀ is C-order), the
# weight gradient δᵀ·z is Aᵀ·B into a transposed dW, and δ·W is A·Bᵀ.
MANUAL_LAYOUT = {"forward": (False, False, False), "dW": (True, False, True), "dx": (False, True, False)}


def _product_callables(ops: list[tuple]):
    """-> (numpy callables, torch callables), one per product, each writing its `out` in place."""
    import torch

    numpy_calls = [lambda a=a, b=b, c=c: np.matmul(a, b, out=c) for a, b, c in ops]
    tops = [tuple(torch.from_numpy(v) for v in op) for op in ops]
    torch_calls = [lambda a=a, b=b, c=c: torch.mm(a, b, out=c) for a, b, c in tops]
    return numpy_calls, torch_calls


def floor_steps(ops: list[tuple]):
    """-> (numpy floor, torch floor): callables doing only the products `ops` (from `floor_operands`),
    both into the same `out` arrays (torch through ``torch.from_numpy``; they never run at once)."""
    numpy_calls, torch_calls = _product_callables(ops)

    def numpy_floor():
        for call in numpy_calls:
            call()

    def torch_floor():
        for call in torch_calls:
            call()

    return numpy_floor, torch_floor


def _quick_time(call, budget_s: float) -> float:
    """Seconds per call: the least of 3 timed loops, each about budget_s / 3 long."""
    call()
    t0 = time.perf_counter()
    call()
    n = max(1, int(budget_s / 3 / max(time.perf_counter() - t0, 1e-7)))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def fastest_layouts(products: list[dict], x: np.ndarray, budget_s: float) -> dict[str, list]:
    """Per library ("numpy", "torch"), per product: the fastest of the 8 layouts (timed for about
    `budget_s` each)."""
    seconds = {lib: [[] for _ in products] for lib in ("numpy", "torch")}  # [product][layout]
    for layout in LAYOUTS:
        numpy_calls, torch_calls = _product_callables(floor_operands(products, x, [layout] * len(products)))
        for lib, calls in (("numpy", numpy_calls), ("torch", torch_calls)):
            for per_layout, call in zip(seconds[lib], calls):
                per_layout.append(_quick_time(call, budget_s))
    return {lib: [LAYOUTS[int(np.argmin(per))] for per in per_product] for lib, per_product in seconds.items()}


# ------------------------------------------------------------------------------ timing


def warm_up(step, seconds: float) -> None:
    """Call `step` at least 3 times and for at least `seconds`."""
    t0, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - t0 < seconds:
        step()
        n += 1


def _benchmark_module():
    """``torch.utils.benchmark``, imported without the warning its import of cpp_extension logs on a
    machine without CUDA ("No CUDA runtime is found"), which says nothing about a CPU benchmark."""
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def measure(step, threads: int, min_run_time: float) -> tuple[list[float], int]:
    """One ``blocked_autorange`` of `step` -> (seconds per step of each block, steps timed)."""
    benchmark = _benchmark_module()
    m = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    m = m.blocked_autorange(min_run_time=min_run_time)
    return list(m.times), m.number_per_run * len(m.times)


def summarize(times: list[float], steps: int) -> dict:
    """Pooled per-step times -> median, quartiles and IQR in seconds, runs (blocks) and steps timed."""
    q1, median, q3 = (float(v) for v in np.percentile(times, [25, 50, 75]))
    return {"median_s": median, "iqr_s": q3 - q1, "q1_s": q1, "q3_s": q3, "runs": len(times), "steps": steps}


def run_point(sizes, x: np.ndarray, y: np.ndarray, s: Settings) -> dict:
    """Time every implementation on one batch (x, y) of architecture `sizes` -> the grid point's record."""
    batch = len(x)
    steps = {"manual": manual_step(sizes, x, y), "torch": torch_step(sizes, x, y)}
    skipped, compile_s = {}, None
    if s.compile_note is None:
        try:
            steps["compiled"], compile_s = compiled_step(sizes, x, y)
        except Exception as e:  # Inductor needs a C++ compiler, a supported Python, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            skipped["compiled"] = f"torch.compile failed: {type(e).__name__}: {first[:300]}"
    else:
        skipped["compiled"] = s.compile_note
    products = gemm_products(sizes, batch)
    best = fastest_layouts(products, x, s.layout_s)
    steps["floor_numpy"] = floor_steps(floor_operands(products, x, best["numpy"]))[0]
    steps["floor_torch"] = floor_steps(floor_operands(products, x, best["torch"]))[1]
    for p, layout_numpy, layout_torch in zip(products, best["numpy"], best["torch"]):
        p["layout_numpy"], p["layout_torch"] = layout_name(layout_numpy), layout_name(layout_torch)
        p["layout_manual"] = layout_name(MANUAL_LAYOUT[p["kind"]])
    names = list(steps)
    for name in names:
        warm_up(steps[name], s.warmup_s)
    pooled = {name: ([], [0]) for name in names}
    for r in range(s.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated order
            times, n = measure(steps[name], s.threads, s.round_s)
            pooled[name][0].extend(times)
            pooled[name][1][0] += n
    results = {name: summarize(times, n[0]) for name, (times, n) in pooled.items()}
    m = results["manual"]["median_s"]
    return {
        "arch": "-".join(map(str, sizes)), "sizes": list(sizes), "batch": batch, "dtype": str(x.dtype),
        "results": results, "skipped": skipped, "compile_s": compile_s,
        "floor": {"products": [{**p, "shape": list(p["shape"])} for p in products],
                  "flops": sum(p["flops"] for p in products)},
        "manual_over_torch": m / results["torch"]["median_s"],
        "manual_over_floor": m / results["floor_numpy"]["median_s"],
        "images_per_s_manual": batch / m,
    }


def run_grid(x_train: np.ndarray, y_train: np.ndarray, s: Settings, log=print) -> list[dict]:
    """Every (architecture, batch size) of `s`, each on the first B images of one seeded permutation
    of the training set, cast to `s.dtype` -> the grid points' records."""
    perm = np.random.default_rng(0).permutation(len(x_train))
    points = []
    for sizes in s.archs:
        for batch in s.batches:
            idx = perm[:batch]
            x = np.ascontiguousarray(x_train[idx], dtype=s.dtype)
            point = run_point(sizes, x, np.ascontiguousarray(y_train[idx]), s)
            r = point["results"]
            log(f"  {point['arch']} batch {batch}: " + ", ".join(
                f"{name} {1e6 * r[name]['median_s']:.0f} µs" for name in IMPLS if name in r)
                + (f" (compile {point['compile_s']:.1f} s)" if point["compile_s"] is not None else ""))
            points.append(point)
    return points


def epoch_throughput(x_train: np.ndarray, y_train: np.ndarray, s: Settings) -> dict:
    """Whole passes of 784-256-10 float32, batch 32, SGD, through the first `s.epoch_images` of one
    shuffled order, per side in the order `s.epoch_passes` -> seconds and images/s per side."""
    import torch
    import torch.nn.functional as F

    x = np.ascontiguousarray(x_train, dtype=np.float32)
    n = min(s.epoch_images, len(x)) // EPOCH_BATCH * EPOCH_BATCH
    batches = np.random.default_rng(1).permutation(len(x))[:n].reshape(-1, EPOCH_BATCH)

    mlp = _initial(EPOCH_SIZES, np.float32)
    model, opt_t = _torch_model(EPOCH_SIZES, np.float32)

    def manual_pass(rows):
        for idx in rows:
            mlp.train_step(x[idx], y_train[idx], LR)

    def torch_pass(rows):
        for idx in rows:
            opt_t.zero_grad(set_to_none=True)
            F.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y_train[idx])).backward()
            opt_t.step()

    sides = {"manual": manual_pass, "torch": torch_pass}
    for run in sides.values():
        run(batches[:20])  # warm-up
    seconds = {side: [] for side in sides}
    for side in s.epoch_passes:
        t0 = time.perf_counter()
        sides[side](batches)
        seconds[side].append(time.perf_counter() - t0)
    record = {"arch": "-".join(map(str, EPOCH_SIZES)), "dtype": "float32", "batch": EPOCH_BATCH, "images": n,
              "lr": LR, "order": list(s.epoch_passes)}
    for side, secs in seconds.items():
        mean = float(np.mean(secs))
        record[side] = {"seconds": mean, "pass_seconds": secs, "images_per_s": n / mean}
    return record


# ------------------------------------------------------------------------------ output


def machine_info(threads: int) -> dict:
    """CPU model, cores, threads used, versions, and the BLAS/OpenMP pools threadpoolctl sees."""
    import torch
    from threadpoolctl import threadpool_info

    from compare import report

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {"cpu": cpu or platform.processor() or None, "cores": os.cpu_count(), "threads": threads,
            "platform": platform.platform(), **report.versions(), "blas": threadpool_info(),
            "loadavg_start": list(os.getloadavg()),  # other work on the machine shows here (and in the IQRs)
            "torch_parallel": [ln.strip() for ln in torch.__config__.parallel_info().splitlines() if ln.strip()],
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}}


def format_table(points: list[dict]) -> str:
    """The terminal table: one row per grid point, medians ± IQR in µs, ratios, manual images/s."""
    header = ("config", "manual µs", "torch µs", "compiled µs", "floor µs (numpy)", "floor µs (torch)",
              "manual/torch", "manual/floor", "manual img/s")
    rows = [header]
    for p in points:
        r = p["results"]
        cell = lambda name: (f"{1e6 * r[name]['median_s']:.0f} ±{1e6 * r[name]['iqr_s']:.0f}"  # noqa: E731
                             if name in r else "-")
        rows.append((f"{p['arch']} b{p['batch']} {p['dtype']}", *(cell(name) for name in IMPLS),
                     f"{p['manual_over_torch']:.2f}", f"{p['manual_over_floor']:.2f}",
                     f"{p['images_per_s_manual']:,.0f}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def plot(points: list[dict], path: Path, title: str) -> None:
    """bench.png: step time against batch size, log–log, one panel per architecture, quartiles as bars,
    the two GEMM floors dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compare.report import save_png

    archs = list(dict.fromkeys(p["arch"] for p in points))
    styles = {"manual": ("C0", "-", "o"), "torch": ("C1", "-", "s"), "compiled": ("C2", "-", "^"),
              "floor_numpy": ("k", "--", "."), "floor_torch": ("0.5", ":", ".")}
    fig, axes = plt.subplots(1, len(archs), figsize=(4.3 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        pts = [p for p in points if p["arch"] == arch]
        batches = [p["batch"] for p in pts]
        for name in IMPLS:
            have = [p for p in pts if name in p["results"]]
            if not have:
                continue
            us = {q: 1e6 * np.array([p["results"][name][f"{q}_s"] for p in have]) for q in ("q1", "median", "q3")}
            color, ls, marker = styles[name]
            ax.errorbar([p["batch"] for p in have], us["median"], [us["median"] - us["q1"], us["q3"] - us["median"]],
                        color=color, ls=ls, marker=marker, lw=1, ms=4, capsize=2, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_title(arch, fontsize=10)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    axes[0][0].set_ylabel("one training step (µs, median, quartiles)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main(args) -> int:
    """Run ``crosscheck bench`` with the options of `add_arguments`: print the table, write bench.json
    and bench.png to the output directory. Returns 0; UsageError on a bad option value."""
    s = settings(args)
    try:
        s.out.mkdir(parents=True, exist_ok=True)
        (s.out / ".write-test").touch()
        (s.out / ".write-test").unlink()
    except OSError as e:
        raise UsageError(f"argument --out: invalid value '{s.out}': not a writable directory ({e.strerror or e})")
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    import torch
    from threadpoolctl import threadpool_limits

    from compare import data

    _benchmark_module()  # first, so that torch.compile's own import of cpp_extension finds it loaded

    started = time.perf_counter()
    mnist = data.load_mnist(args.data_dir, dtype=np.float32, offline=args.offline, log=log)
    log(f"bench: {', '.join('-'.join(map(str, a)) for a in s.archs)} × batches {' '.join(map(str, s.batches))}, "
        f"{s.dtype}, {s.threads} thread{'s' * (s.threads > 1)}, {s.rounds} rounds of {s.round_s:g} s per "
        f"implementation; writing to {s.out}")
    from manual import blas

    update = UPDATE_FUSED if blas.descend_available(s.dtype) else UPDATE_FALLBACK
    if update == UPDATE_FALLBACK:
        log(f"manual: {update} (the routine that would fuse it was not found or failed its check)")
    prior = torch.get_num_threads()
    with threadpool_limits(limits=s.threads):
        torch.set_num_threads(s.threads)
        try:
            machine = machine_info(s.threads)
            points = run_grid(mnist.x_train, mnist.y_train, s, log)
            epoch = epoch_throughput(mnist.x_train, mnist.y_train, s) if s.epoch_images else None
        finally:
            torch.set_num_threads(prior)
    bench = {"machine": machine, "data": mnist.prepared.description,
             "config": {"archs": ["-".join(map(str, a)) for a in s.archs], "batches": s.batches, "dtype": s.dtype,
                        "threads": s.threads, "activation": ACTIVATION, "lr": LR, "rounds": s.rounds,
                        "round_s": s.round_s, "warmup_s": s.warmup_s, "layout_s": s.layout_s, "compile": s.compile_note or "on",
                        "manual_update": update},
             "points": points, "epoch": epoch, "elapsed_s": time.perf_counter() - started}
    machine["loadavg_end"] = list(os.getloadavg())
    atomic_write_json(s.out / JSON_NAME, bench)
    plot(points, s.out / PLOT_NAME, f"one SGD step, {s.dtype}, {s.threads} threads, {machine['cpu'] or ''}")
    log("\n" + format_table(points))
    log("medians ± IQR of per-step times pooled over all rounds; floor = the step's matrix products alone")
    compiled = [f"{p['arch']} b{p['batch']} {p['compile_s']:.1f} s" for p in points if p["compile_s"] is not None]
    if compiled:
        log(f"compile time (first call, one step included): {', '.join(compiled)}")
    for reason in dict.fromkeys(p["skipped"]["compiled"] for p in points if "compiled" in p["skipped"]):
        log(f"compiled: {reason}")
    if epoch:
        e = epoch
        log(f"epoch ({e['arch']} {e['dtype']}, batch {e['batch']}, {e['images']:,} images): manual "
            f"{e['manual']['seconds']:.2f} s = {e['manual']['images_per_s']:,.0f} images/s, torch "
            f"{e['torch']['seconds']:.2f} s = {e['torch']['images_per_s']:,.0f} images/s")
    log(f"wrote {s.out / JSON_NAME} and {s.out / PLOT_NAME} ({bench['elapsed_s']:.0f} s)")
    if args.json:
        print(json.dumps(bench, indent=1))
    return 0
