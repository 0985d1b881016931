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

import itertools
import math

import numpy as np

from compare import options, tolerances
from compare.agreement import Agreement, compare_grads, measure
from compare.check import fd
from compare.check.copies import float64_copy
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
    FD_ALL_BELOW parameters, else up to `samples` drawn without replacement from each array
    (``compare.fd.choose``)."""
    total = sum(W.size + b.size for W, b in mlp.parameters())
    affordable = math.inf if total < FD_ALL_BELOW else samples
    return [tuple(fd.choose(theta.size, affordable, samples, 1, rng) for theta in pair) for pair in mlp.parameters()]


def finite_differences(mlp: MLP, x: np.ndarray, y: np.ndarray, coords, h: float = tolerances.FD_STEP):
    """(L(θ + h) − L(θ − h)) / 2h for each chosen coordinate, on a float64 copy of `mlp`
    (``compare.fd.coordinates`` with the loss as the one output, g = 1).

    Returns:
        [(dW_values, db_values), ...]: 1-D float64 arrays matching `coords`.
    """
    net, x = float64_copy(mlp), x.astype(np.float64)
    one = np.ones(1)

    def loss():
        return np.array([net.loss(x, y)])

    return [tuple(fd.coordinates(theta, idx, loss, one, h)[0] for theta, idx in zip(pair, cpair))
            for pair, cpair in zip(net.parameters(), coords)]


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


def compare_losses(losses: dict[str, float], dtype) -> dict[tuple[str, str], Agreement]:
    """Every pair of the witnesses in `losses` (see `witness_losses`), in the order of WITNESSES,
    measured as one-element arrays (the relative error is then |a − b| / max(|a|, |b|))."""
    allowed = tolerances.witness_bounds(dtype, min(losses.values()))["loss"]
    return {(a, b): measure(np.array([losses[a]]), np.array([losses[b]]), 0, "loss", allowed)
            for a, b in itertools.combinations([w for w in WITNESSES if w in losses], 2)}


def compare_witnesses(grads: dict, coords, dtype, loss=None) -> dict[tuple[str, str], list[Agreement]]:
    """Every pair of witnesses, layer by layer. Pairs with "fd" compare at the sampled coordinates.
    `loss` (the batch loss) widens the bounds for very confident batches (see tolerances)."""
    results, bound = {}, tolerances.witness_bounds(dtype, loss)
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
    for r, agr in enumerate(first):
        cells = [str(agr.layer), agr.param, "x".join(map(str, agr.shape))]
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
    from compare.agreement import message, param_message
    from compare.check import check_model

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
    failures = [param_message(agr, pair) for pair, agrs in results.items() for agr in agrs if not agr.ok]
    failures += [message(q, "loss", pair, shape=()) for pair, q in losses.items() if not q.ok]
    culprit = check_model(mlp, x, y, seed=seed).headline() if failures else None
    return {
        "config": {"sizes": list(mlp.sizes), "activation": activation, "batch": batch,
                   "dtype": np.dtype(dtype).name, "seed": seed, "image_indices": idx.tolist()},
        "witnesses": {w: d for w, d in WITNESSES.items() if w in grads},
        "skipped": notes,
        "fd_coordinates": {"checked": n_fd, "of": n_params, "step": tolerances.FD_STEP},
        "loss": loss,
        "losses": loss_values,
        "allowed": tolerances.witness_bounds(dtype, loss),
        "pairs": [{"a": a, "b": b, "agreements": [agr.to_dict() for agr in agrs]} for (a, b), agrs in results.items()],
        "loss_pairs": [{"a": a, "b": b, "a_value": q.a_value, "b_value": q.b_value, "rel_err": q.rel_err,
                        "allowed": q.allowed, "ok": q.ok} for (a, b), q in losses.items()],
        "table": format_table(results, losses),
        "failures": failures,
        "culprit": culprit,
        "ok": not failures,
    }
