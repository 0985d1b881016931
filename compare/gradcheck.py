"""``crosscheck gradcheck``: the referee's check of one MLP's whole gradient on a batch of MNIST,
plus the notes' chain rule multiplied out as one more witness.

The net's batch-mean loss, as a function of every Wⁱ and bⁱ, is handed to the referee
(``compare.check``) as a layer (``ModelLoss``) with ``TorchMLP``'s loss as its counterpart: the
referee's witnesses, finite differences, bounds and messages judge it (manual: the hand-derived
backward pass; torch: autograd; fd and dir: central differences in float64 of the hand-derived
forward; in float32 also manual64 and torch64). The chain (``manual.jacobians``, small nets only)
is compared with the referee's exact witnesses by the referee's own ``pair`` and bounds.

The hand-derived net computes on NumPy arrays, or (``arrays="torch"``) on torch tensors on a
device, CPU or CUDA: the same ``manual`` code through the array API, judged by the referee's
tensor path (``compare.check.tensor_layers``), every witness on that device, the counterpart too.
"""

from __future__ import annotations

import math

import numpy as np

from compare.check import text, tolerances
from compare.check.engine import FD_SAMPLES, check
from compare.check.report import Comparison, Report
from compare.check.subjects import LayerSubject
from compare.check.tensor_layers import TensorLayerSubject
from compare.check.witnesses import pair
from manual import jacobians
from manual.mlp import MLP

WITNESSES = {
    "manual": "the hand-derived backward pass (MLP.loss_and_grads)",
    "chain": "the notes' Jacobians multiplied out, example by example",
    "torch": "PyTorch autograd",
    "fd": "central finite differences in float64",
    "dir": "the same along a random direction",
}
# Below this many parameters every coordinate gets a finite difference (two forward passes each);
# above, fd_samples coordinates of each tensor (the referee's budget, ``compare.check.fd.choose``).
FD_ALL_BELOW = 60_000


class ModelLoss:
    """An MLP's batch-mean loss as a layer of the referee's protocol: params {"W1", "b1", ...} (the
    net's own arrays or tensors, which finite differences perturb), forward(x, y) -> the loss (a 0-d
    array of the net's library, dtype and device), backward(dL) -> (None, None) with grads from
    ``MLP.loss_and_grads`` times dL."""

    def __init__(self, mlp: MLP):
        self.mlp, self.grads = mlp, {}
        self.params = {f"{p}{i}": a for i, pair_ in enumerate(mlp.parameters(), start=1) for p, a in zip("Wb", pair_)}
        self.torch_names = {f"{p}{i}": f"net.layers.{i - 1}.{'weight' if p == 'W' else 'bias'}"
                            for i in range(1, len(mlp.sizes)) for p in "Wb"}

    def forward(self, x, y):
        self.x, self.y = x, y
        loss = self.mlp.loss(x, y)
        if isinstance(x, np.ndarray):
            return np.asarray(loss, dtype=self.mlp.dtype)
        return x.new_tensor(loss) if not hasattr(loss, "reshape") else loss.reshape(()).to(x.dtype)

    def backward(self, dL):
        grads = self.mlp.loss_and_grads(self.x, self.y)[1]
        self.grads = {f"{p}{i}": dL * (np.asarray(g) if isinstance(dL, np.ndarray) else g)
                      for i, gs in enumerate(grads, start=1) for p, g in zip("Wb", gs)}
        return None, None


def torch_loss(mlp: MLP):
    """The counterpart: ``TorchMLP``'s loss, forward(x, y), with the net's sizes and activation."""
    import torch

    from torch_ref.convert import from_manual

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = from_manual(mlp)

        def forward(self, x, y):
            return self.net.loss(x, y)

    return Loss()


def chain(mlp: MLP, x, y) -> tuple[dict, str]:
    """The chain witness's gradients of the loss, {tensor: gradient} on the float64 copy of the
    net, and why it was skipped ("" when it ran)."""
    weights, biases = [as_float64(W) for W in mlp.weights], [as_float64(b) for b in mlp.biases]
    try:
        grads = jacobians.batch_grads(weights, biases, as_float64(x), as_float64(y, None), mlp.activation)
    except ValueError as e:
        return {}, f"skipped: {e}"
    return {f"parameter {p}{i}": np.asarray(g) for i, gs in enumerate(grads, start=1) for p, g in zip("Wb", gs)}, ""


def as_float64(a, dtype=np.float64) -> np.ndarray:
    """A NumPy array, or a torch tensor on any device, as a NumPy array (float64, exactly; `dtype`
    None: its own)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        a = a.double() if dtype is not None else a
        return a.numpy()
    return np.asarray(a, dtype)


def fd_budget(mlp: MLP, fd_samples: int) -> int:
    """The referee's fd budget (``compare.check.witnesses.Numeric``: a forward pass costs the
    parameters and the loss, two per coordinate) that affords every coordinate of every tensor
    below FD_ALL_BELOW parameters, and fd_samples coordinates of each tensor above."""
    total = sum(math.prod(W.shape) + math.prod(b.shape) for W, b in mlp.parameters())
    return 2 * (total + 1) * (total if total < FD_ALL_BELOW else fd_samples)


def check_net(mlp: MLP, x, y, seed: int = 0, fd_samples: int = FD_SAMPLES) -> tuple[Report, str]:
    """The referee's report on the net's loss at (x, y) with the chain as one more witness, and why
    the chain was skipped ("")."""
    more, skipped = chain(mlp, x, y)
    kind = LayerSubject if isinstance(x, np.ndarray) else TensorLayerSubject
    subject = kind(ModelLoss(mlp), torch_loss(mlp), (x, y), input_grads=False,
                   name=f"gradcheck: MLP {'-'.join(map(str, mlp.sizes))} ({mlp.activation.name})")
    report = check(subject, seed, tolerances.FD_STEP, fd_samples, fd_budget(mlp, fd_samples),
                   others={"chain": lambda gs: {k: gs[0] * g for k, g in more.items()}} if more else None)
    report.comparisons.append(backward_loss(mlp, x, y))
    return report, skipped


def backward_loss(mlp: MLP, x, y) -> Comparison:
    """The loss the backward pass returns (``MLP.loss_and_grads``, the one training reports) against
    torch's, at the net's dtype bounds. The referee's own rows see the forward's loss (``MLP.loss``,
    which finite differences differentiate), so a loss that only the backward pass gets wrong, with
    its gradients right, shows here alone."""
    import torch

    ours = as_float64(mlp.loss_and_grads(x, y)[0])
    tx, ty = (torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y))) if isinstance(x, np.ndarray) else (x, y)
    with torch.no_grad():
        theirs = as_float64(torch_loss(mlp).to(tx.device)(tx, ty))
    dtype = np.dtype(str(mlp.dtype).removeprefix("torch."))
    bounds = (tolerances.gradient_rel(dtype), tolerances.elementwise_rel(dtype))
    return pair("loss (backward pass)", (), "manual", "torch", ours, theirs, bounds)


def run(mnist_x: np.ndarray, mnist_y: np.ndarray, sizes, activation: str, batch: int, dtype, seed: int,
        fd_samples: int, arrays: str = "numpy", device: str = "cpu") -> dict:
    """The whole check on a batch drawn from (mnist_x, mnist_y), the hand-derived net on `arrays`
    ("numpy", or "torch" on `device`). Returns a JSON-ready report."""
    from compare.check import check_model

    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, activation, dtype, seed=rng)
    idx = np.sort(rng.choice(len(mnist_x), size=batch, replace=False))
    x, y = np.ascontiguousarray(mnist_x[idx], dtype=dtype), mnist_y[idx]
    if arrays == "torch":
        import torch

        mlp.to(torch, device)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(np.asarray(y, np.int64)).to(device)
    report, skipped = check_net(mlp, x, y, seed, fd_samples)
    pairs = list(dict.fromkeys((c.a, c.b) for c in report.comparisons))
    culprit = None if report.ok else check_model(mlp, x, y, seed=seed).headline()
    coverage = next(n.text for n in report.notes if n.kind == "coverage")
    return {
        "config": {"sizes": list(mlp.sizes), "activation": activation, "batch": batch,
                   "dtype": np.dtype(dtype).name, "seed": seed, "image_indices": idx.tolist(),
                   "arrays": arrays, "device": str(device)},
        "witnesses": {w: d for w, d in WITNESSES.items() if w != "chain" or not skipped},
        "skipped": {"chain": skipped} if skipped else {},
        "fd_coordinates": {"checked": coverage, "step": tolerances.FD_STEP},
        "pairs": [{"a": a, "b": b, "comparisons": [{"tensor": c.tensor, **c.agreement.to_dict()}
                                                   for c in report.comparisons if (c.a, c.b) == (a, b)]}
                  for a, b in pairs],
        "table": report.table(),
        "notes": [text.line(n) for n in report.notes],
        "failures": text.failures(report.failed, report.findings),
        "culprit": culprit,
        "ok": report.ok,
    }
