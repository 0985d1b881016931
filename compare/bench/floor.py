"""The GEMM floor: only the matrix products of one training step, each in its fastest layout.

Per layer the forward z·Wᵀ and the weight gradient δᵀ·z, and δ·W for every layer but the first,
into preallocated outputs (``np.matmul`` / ``torch.mm`` with out=). Bias, activation, softmax,
update and Python come on top, and no layout beats the fastest, so no implementation of the step
with that library can beat its floor. The floor runs at the full thread budget, where these
products in isolation are fastest. Each floor worker finds its own layouts (``fastest_layouts``)
and records them. The torch floor runs on the bench's device (on a GPU, timed with
``torch.cuda.synchronize`` around each timed loop); NumPy's on the CPU.
"""

from __future__ import annotations

import time

import numpy as np

LIBRARIES = ("numpy", "torch")

# A product C = A·B can be laid out in memory 8 ways: A, B and C each C-order or the transpose of a
# C-order array (BLAS takes either through its trans flags; for a transposed C NumPy and PyTorch
# compute Cᵀ = BᵀAᵀ). Their speeds differ by up to 40 % for these shapes, and no layout is best
# for all of them, so the floor times each product in every layout and keeps the fastest.
LAYOUTS = tuple((ta, tb, tc) for ta in (False, True) for tb in (False, True) for tc in (False, True))

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


def layout_name(layout) -> str:
    """(False, True, False) -> 'A·Bᵀ->C': which operands are stored transposed."""
    ta, tb, tc = layout
    return f"A{'ᵀ' * ta}·B{'ᵀ' * tb}->C{'ᵀ' * tc}"


def _array(values: np.ndarray, transposed: bool) -> np.ndarray:
    """`values` (rows, cols) as a C-order array, or as the transpose of a C-order (cols, rows) one."""
    return np.ascontiguousarray(values.T).T if transposed else np.ascontiguousarray(values)


def floor_operands(products: list[dict], x: np.ndarray, layouts, seed: int = 0) -> list[tuple]:
    """(a, b, out) arrays for each product, in `layouts` (one (A, B, C) transposed-flags triple per
    product, see ``LAYOUTS``). Layer 1 works on the values of the MNIST batch `x` (the forward's A,
    the weight gradient's B); everything else is random."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(x.dtype)  # noqa: E731
    ops = []
    for p, layout in zip(products, layouts, strict=True):
        m, k, n = p["shape"]
        a = x if p["layer"] == 1 and p["kind"] == "forward" else normal(m, k)
        b = x if p["layer"] == 1 and p["kind"] == "dW" else normal(k, n)
        ta, tb, tc = layout
        a, b = (x if v is x and not t else _array(v, t) for v, t in ((a, ta), (b, tb)))
        ops.append((a, b, np.empty((n, m), x.dtype).T if tc else np.empty((m, n), x.dtype)))
    return ops


def product_calls(ops: list[tuple], library: str, device: str = "cpu") -> list:
    """One callable per product of `ops`, each writing its `out` in place: ``np.matmul(a, b, out=c)``
    or ``torch.mm(a, b, out=c)``, on the CPU on the same memory (``torch.from_numpy``), on a GPU on
    copies there with the same strides (``Tensor.to`` keeps a dense layout's strides)."""
    if library == "numpy":
        return [lambda a=a, b=b, c=c: np.matmul(a, b, out=c) for a, b, c in ops]
    import torch

    tops = [tuple(torch.from_numpy(v).to(device) for v in op) for op in ops]
    return [lambda a=a, b=b, c=c: torch.mm(a, b, out=c) for a, b, c in tops]


def floor_step(ops: list[tuple], library: str, device: str = "cpu"):
    """-> a callable doing all the products `ops` (from `floor_operands`) with `library`, in order."""
    calls = product_calls(ops, library, device)

    def floor():
        for call in calls:
            call()

    return floor


def _quick_time(call, budget_s: float, sync=None) -> float:
    """Seconds per call: the least of 3 timed loops, each about budget_s / 3 long (`sync`: waits for
    queued GPU work, before and after each loop)."""
    sync = sync or (lambda: None)

    def loop(n):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        sync()
        return time.perf_counter() - t0

    loop(1)
    n = max(1, int(budget_s / 3 / max(loop(1), 1e-7)))
    return min(loop(n) / n for _ in range(3))


def fastest_layouts(products: list[dict], x: np.ndarray, budget_s: float, libraries=LIBRARIES, device: str = "cpu"
                    ) -> dict[str, list]:
    """Per library, per product: the fastest of the 8 layouts (each timed for about `budget_s`)."""
    seconds = {lib: [[] for _ in products] for lib in libraries}  # [product][layout]
    for layout in LAYOUTS:
        ops = floor_operands(products, x, [layout] * len(products))
        for lib in libraries:
            sync = _sync(lib, device)
            for per_layout, call in zip(seconds[lib], product_calls(ops, lib, device)):
                per_layout.append(_quick_time(call, budget_s, sync))
    return {lib: [LAYOUTS[int(np.argmin(per))] for per in per_product] for lib, per_product in seconds.items()}


def _sync(library: str, device: str):
    if library == "torch" and device != "cpu":
        import torch

        return lambda: torch.cuda.synchronize(device)
    return None


def floor_bench_step(sizes, x: np.ndarray, library: str, layout_s: float, device: str = "cpu"):
    """The floor of one grid point for one library: search the layouts, then build the step.

    Returns (callable, products, sync): `products` from ``gemm_products`` with each product's chosen
    layout (``layout``, see ``layout_name``) added, shapes as lists; `sync` waits for the GPU (None
    on the CPU).
    """
    products = gemm_products(sizes, len(x))
    best = fastest_layouts(products, x, layout_s, (library,), device)[library]
    step = floor_step(floor_operands(products, x, best), library, device)
    for p, layout in zip(products, best):
        p.update(shape=list(p["shape"]), layout=layout_name(layout))
    return step, products, _sync(library, device)
