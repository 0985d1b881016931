"""Four independent witnesses of the same gradient, compared pair by pair, layer by layer.

- manual: the fast NumPy backward pass (``manual.mlp``);
- chain: the notes' Jacobians multiplied out literally (``manual.jacobians``), small nets only;
- torch: PyTorch autograd on a ``TorchMLP`` holding a copy of the same weights;
- fd: central finite differences of the loss, always in float64 (every coordinate of small nets,
  a random sample of coordinates of big ones).

Each pair is held to two measures per layer and parameter (``compare.agreement``): the relative
error and the elementwise error. The loss values are compared too: manual, torch, and fd's
float64 loss L(θ) (the function the finite differences difference, computed through
``functional.cross_entropy``, not the path ``loss_and_grads`` takes); the chain computes no loss.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from compare import options, tolerances
from compare.agreement import Agreement, compare_grads, measure
from manual import jacobians
from manual.mlp import MLP

WITNESSES = {
    "manual": "the fast NumPy backward pass",
    "chain": "the notes' Jacobians multiplied out, example by example",
    "torch": "PyTorch autograd",
    "fd": "central finite differences in float64",
}
# Below this many parameters every coordinate gets a finite difference (two forward passes each).
FD_ALL_BELOW = 60_000


def copy_grads(grads):
    return [(np.array(dW), np.array(db)) for dW, db in grads]


def choose_coordinates(mlp: MLP, samples: int, rng: np.random.Generator):
    """Flat indices to difference, per layer and parameter: all of them for nets with fewer than
    FD_ALL_BELOW parameters, else up to `samples` drawn without replacement from each array."""
    total = sum(W.size + b.size for W, b in mlp.parameters())
    coords = []
    for W, b in mlp.parameters():
        pair = []
        for theta in (W, b):
            if total < FD_ALL_BELOW or theta.size <= samples:
                pair.append(np.arange(theta.size))
            else:
                pair.append(np.sort(rng.choice(theta.size, size=samples, replace=False)))
        coords.append(tuple(pair))
    return coords


def float64_copy(mlp: MLP) -> MLP:
    """A float64 MLP holding `mlp`'s weights (the fd witness's net)."""
    net = MLP(mlp.sizes, mlp.activation.name, np.float64)
    net.set_parameters(mlp.weights, mlp.biases)
    return net


def finite_differences(mlp: MLP, x: np.ndarray, y: np.ndarray, coords, h: float = tolerances.FD_STEP):
    """(L(θ + h) − L(θ − h)) / 2h for each chosen coordinate, on a float64 copy of `mlp`.

    Returns:
        [(dW_values, db_values), ...]: 1-D float64 arrays matching `coords`.
    """
    net, x = float64_copy(mlp), x.astype(np.float64)
    out = []
    for (W, b), pair in zip(net.parameters(), coords):
        values = []
        for theta, idx in zip((W, b), pair):
            v = np.empty(len(idx))
            for n, k in enumerate(idx):
                at = np.unravel_index(k, theta.shape)  # k counts in row-major order, as ravel() does
                saved = theta[at]
                theta[at] = saved + h  # in place: perturbing it perturbs the net
                up = net.loss(x, y)
                theta[at] = saved - h
                down = net.loss(x, y)
                theta[at] = saved
                v[n] = (up - down) / (2 * h)
            values.append(v)
        out.append(tuple(values))
    return out


def witness_grads(mlp: MLP, x: np.ndarray, y: np.ndarray, fd_samples: int = 500, seed: int = 0):
    """Compute every witness on the same weights and batch.

    Returns:
        (grads, coords, notes, loss): grads maps witness name -> [(dW, db), ...] (for "fd": the
        values at `coords` only); notes maps a skipped witness to the reason; loss is the batch loss.
    """
    from torch_ref.convert import from_manual, loss_and_grads

    grads, notes = {}, {}
    loss, manual = mlp.loss_and_grads(x, y)
    grads["manual"] = copy_grads(manual)
    try:
        grads["chain"] = jacobians.batch_grads(mlp.weights, mlp.biases, x, y, mlp.activation)
    except ValueError as e:
        notes["chain"] = f"skipped: {e}"
    grads["torch"] = copy_grads(loss_and_grads(from_manual(mlp), x, y)[1])
    coords = choose_coordinates(mlp, fd_samples, np.random.default_rng(seed))
    grads["fd"] = finite_differences(mlp, x, y, coords)
    return grads, coords, notes, loss


def witness_losses(mlp: MLP, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The batch-mean loss by each witness that computes one, on the same weights and batch:
    manual (``loss_and_grads``), torch (autograd's forward) and fd (L(θ) of the float64 copy)."""
    from torch_ref.convert import from_manual, loss_and_grads

    return {"manual": mlp.loss_and_grads(x, y)[0], "torch": loss_and_grads(from_manual(mlp), x, y)[0],
            "fd": float64_copy(mlp).loss(x.astype(np.float64), y)}


@dataclasses.dataclass(frozen=True)
class LossAgreement:
    """Two witnesses' batch-mean losses a and b: relative difference |a − b| / max(|a|, |b|, tiny)."""

    a_value: float
    b_value: float
    rel_err: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.allowed  # False for NaN


def bounds(dtype, loss=None) -> dict[str, float]:
    """The bounds of every comparison, widened for very confident batches by `loss` (tolerances):
    relative and elementwise error between analytic witnesses and against fd, and for the loss.
    The loss bound is the analytic one: fd's loss is a float64 forward pass, not a difference."""
    rel, elem = tolerances.gradient_rel(dtype, loss), tolerances.elementwise_rel(dtype, loss)
    return {"between analytic witnesses": rel, "against fd": max(tolerances.FINITE_DIFF_REL, rel),
            "elementwise between analytic witnesses": elem,
            "elementwise against fd": max(tolerances.FINITE_DIFF_ELEM, elem), "loss": rel}


def compare_losses(losses: dict[str, float], dtype) -> dict[tuple[str, str], LossAgreement]:
    """Every pair of the witnesses in `losses` (see `witness_losses`), in the order of WITNESSES."""
    allowed = bounds(dtype, min(losses.values()))["loss"]
    return {(a, b): LossAgreement(losses[a], losses[b], abs(losses[a] - losses[b]) /
                                  max(abs(losses[a]), abs(losses[b]), tolerances.TINY), allowed)
            for a, b in itertools.combinations([w for w in WITNESSES if w in losses], 2)}


def compare_witnesses(grads: dict, coords, dtype, loss=None) -> dict[tuple[str, str], list[Agreement]]:
    """Every pair of witnesses, layer by layer. Pairs with "fd" compare at the sampled coordinates.
    `loss` (the batch loss) widens the bounds for very confident batches (see tolerances)."""
    results, bound = {}, bounds(dtype, loss)
    for a, b in itertools.combinations([w for w in WITNESSES if w in grads], 2):
        if "fd" in (a, b):
            analytic = grads[a]  # "fd" comes last in WITNESSES
            rel, elem = bound["against fd"], bound["elementwise against fd"]
            results[(a, b)] = [
                measure(np.asarray(g).reshape(-1)[idx], fd, layer, param, rel, elem)
                for layer, (pair, cpair, fpair) in enumerate(zip(analytic, coords, grads["fd"]), start=1)
                for param, g, idx, fd in zip("Wb", pair, cpair, fpair)
            ]
        else:
            results[(a, b)] = compare_grads(grads[a], grads[b], bound["between analytic witnesses"],
                                            bound["elementwise between analytic witnesses"])
    return results


def format_table(results: dict[tuple[str, str], list[Agreement]], losses: dict | None = None) -> str:
    """Relative error per layer/parameter (rows) and witness pair (columns); failures marked (by
    either measure). `losses` (``compare_losses``) adds a last row, "loss", with the losses'
    relative difference ("-" for a pair with a witness that computes no loss)."""
    pairs = list(results)
    first = results[pairs[0]]
    header = ["layer", "param", "shape"] + [f"{a}~{b}" for a, b in pairs]
    rows = [header]
    for r, g in enumerate(first):
        cells = [str(g.layer), g.param, "x".join(map(str, g.shape))]
        for pair in pairs:
            q = results[pair][r]
            cells.append(f"{q.rel_err:.1e}" + ("" if q.ok else " FAIL"))
        rows.append(cells)
    if losses is not None:
        cells = [losses.get(pair) for pair in pairs]
        rows.append(["loss", "", ""] + ["-" if q is None else f"{q.rel_err:.1e}" + ("" if q.ok else " FAIL")
                                        for q in cells])
    return options.format_table(rows, align="l")


def run(mnist_x: np.ndarray, mnist_y: np.ndarray, sizes, activation: str, batch: int, dtype, seed: int,
        fd_samples: int) -> dict:
    """The whole check on a batch drawn from (mnist_x, mnist_y). Returns a JSON-ready report."""
    from compare.agreement import param_message

    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, activation, dtype, seed=rng)
    idx = np.sort(rng.choice(len(mnist_x), size=batch, replace=False))
    x, y = np.ascontiguousarray(mnist_x[idx], dtype=dtype), mnist_y[idx]
    grads, coords, notes, loss = witness_grads(mlp, x, y, fd_samples, seed)
    results = compare_witnesses(grads, coords, dtype, loss)
    loss_values = witness_losses(mlp, x, y)
    losses = compare_losses(loss_values, dtype)
    n_fd = sum(len(i) for pair in coords for i in pair)
    n_params = sum(W.size + b.size for W, b in mlp.parameters())
    failures = [param_message(g, pair) for pair, gs in results.items() for g in gs if not g.ok]
    failures += [f"loss: {a} {q.a_value!r} vs {b} {q.b_value!r}, relative difference {q.rel_err:.3g} > "
                 f"allowed {q.allowed:.0e}" for (a, b), q in losses.items() if not q.ok]
    return {
        "config": {"sizes": list(mlp.sizes), "activation": activation, "batch": batch,
                   "dtype": np.dtype(dtype).name, "seed": seed, "image_indices": idx.tolist()},
        "witnesses": {w: d for w, d in WITNESSES.items() if w in grads},
        "skipped": notes,
        "fd_coordinates": {"checked": n_fd, "of": n_params, "step": tolerances.FD_STEP},
        "loss": loss,
        "losses": loss_values,
        "allowed": bounds(dtype, loss),
        "pairs": [{"a": a, "b": b, "agreements": [g.to_dict() for g in gs]} for (a, b), gs in results.items()],
        "loss_pairs": [{"a": a, "b": b, **dataclasses.asdict(q), "ok": q.ok} for (a, b), q in losses.items()],
        "table": format_table(results, losses),
        "failures": failures,
        "ok": not failures,
    }
