"""An embedding bag (sum mode) over integer ids, derived by hand, checked against
``torch.nn.EmbeddingBag(mode="sum")``.

The table W (N, D) holds one row per id; the input is a batch of bags of ids, ids (B, n), integers
in [0, N), and a bag may hold an id more than once. Forward, for each bag b:

    y[b] = Σⱼ W[ids[b, j]]                  (D,);   y (B, D)

Backward, with dy = ∂L/∂y (B, D). y[b] depends on row r of W once for each j with ids[b, j] = r,
each time with the identity as its Jacobian, so

    ∂L/∂W[r] = Σ_{b, j : ids[b, j] = r} dy[b]          (a row no bag holds gets 0)

a scatter-add of dy[b] into row ids[b, j], once per (b, j), repeats included: ``np.add.at``. The
ids are integers: nothing to differentiate, so the input gets no gradient (``backward`` returns
None) and the check passes them to both sides unchanged, never perturbed.

``EmbeddingBagRepeatedIdOnce`` writes ``dW[ids] += dy`` instead, the classic slip: NumPy's
fancy-index assignment reads dW[ids] once, adds, and writes each row back, the last write of a
repeated id winning, so a row held k times gets dy once instead of k times. ``check_layer``
names parameter W. The parameter is named W here, ``weight`` in torch (``torch_names``).

    python examples/embedding_bag.py  # both checks, printed
"""

from __future__ import annotations

import numpy as np


class EmbeddingBag:
    """y[b] = Σⱼ W[ids[b, j]] (``torch.nn.EmbeddingBag(n, d, mode="sum")``, its weight is W).

    Args:
        n: N, the number of ids.  d: D, the size of an embedding.
        rng: draws W ~ N(0, 1) (torch's initial distribution).
        dtype: of W.
    Attributes:
        params: {"W": (N, D)}.  grads: {"W": (N, D)}, after ``backward``.
        torch_names: {"W": "weight"}, the module's name of W.
        ids: the ids (B, n) of the last ``forward``, the base point of backward.
    """

    torch_names = {"W": "weight"}

    def __init__(self, n: int, d: int, rng: np.random.Generator | None = None, dtype=np.float64):
        rng = np.random.default_rng(0) if rng is None else rng
        self.params = {"W": rng.standard_normal((n, d)).astype(dtype)}
        self.grads = {"W": np.zeros_like(self.params["W"])}
        self.ids: np.ndarray | None = None

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """ids (B, n), integers in [0, N) -> y (B, D); keeps ids."""
        self.ids = ids
        return self.params["W"][ids].sum(axis=1)

    def backward(self, dy: np.ndarray) -> None:
        """dy = ∂L/∂y (B, D) -> None (integer ids: no gradient); fills grads["W"] (N, D)."""
        dW = np.zeros_like(self.params["W"])
        self._scatter_add(dW, np.broadcast_to(dy[:, None, :], self.ids.shape + dy.shape[1:]))
        self.grads["W"] = dW
        return None

    def _scatter_add(self, dW: np.ndarray, rows: np.ndarray) -> None:
        """dW[ids[b, j]] += rows[b, j] for every (b, j), repeated ids each time."""
        np.add.at(dW, self.ids, rows)


class EmbeddingBagRepeatedIdOnce(EmbeddingBag):
    """Deliberately wrong: ``dW[ids] += rows`` counts a repeated id once (the last write wins)."""

    def _scatter_add(self, dW: np.ndarray, rows: np.ndarray) -> None:
        dW[self.ids] += rows


def main() -> None:
    import torch

    from compare import check_layer

    ids = np.array([[0, 3, 3, 7], [5, 1, 1, 1], [2, 9, 0, 4]])  # ids 3 and 1 repeated in a bag, 0 across
    bag = torch.nn.EmbeddingBag(10, 4, mode="sum")
    print(check_layer(EmbeddingBag(10, 4), bag, ids))
    print()
    print(check_layer(EmbeddingBagRepeatedIdOnce(10, 4), bag, ids))


if __name__ == "__main__":
    main()
