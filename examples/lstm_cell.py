"""An LSTM cell with one weight matrix per gate, derived by hand, checked against stock
``torch.nn.LSTMCell`` through packed ``torch_params``: the cell's twelve arrays become torch's
four, and autograd carries the gradients back to each of the twelve.

Forward, for a batch x (B, D), the previous state h, c (B, H), and each gate k in i, f, g, o with
its own Wx_k (D, H), Wh_k (H, H), b_k (H,):

    aₖ = x Wx_k + h Wh_k + b_k
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c' = f ⊙ c + i ⊙ g          h' = o ⊙ tanh(c')

Torch holds the same numbers packed: ``weight_ih`` (4H, D) is the four Wx_kᵀ stacked in the order
i, f, g, o, ``weight_hh`` (4H, H) the four Wh_kᵀ, ``bias_ih`` (4H,) the four b_k, and a second
bias ``bias_hh`` that this cell does not have: held at zero (``torch_fixed``). Each packing is a
function of torch tensors (``torch.cat``), so no inverse is ever written.

Backward, with dh' and dc' from above. The cell state's gradient collects both routes,
dc = dc' + dh' ⊙ o ⊙ (1 − tanh²(c')); then

    da_o = dh' ⊙ tanh(c') ⊙ o(1 − o)      da_i = dc ⊙ g ⊙ i(1 − i)
    da_f = dc ⊙ c ⊙ f(1 − f)              da_g = dc ⊙ i ⊙ (1 − g²)
    dWx_k = xᵀ da_k   dWh_k = hᵀ da_k   db_k = Σ_b da_k
    dx = Σₖ da_k Wx_kᵀ     dh = Σₖ da_k Wh_kᵀ     dc_prev = dc ⊙ f

``LSTMCellForgetMissing`` returns dc_prev = dc, the forget gate missing from the state's own
path, the classic LSTM slip: ``check_layer`` names input c (and only it).

    python examples/lstm_cell.py        # both checks, printed
"""

from __future__ import annotations

import numpy as np

GATES = "ifgo"


def sigmoid(a):
    return np.exp(-np.logaddexp(0, -a))


class LSTMCell:
    """(h', c') = LSTMCell(x, h, c), one weight per gate (``torch.nn.LSTMCell(D, H)`` with
    bias_hh = 0).

    Args:
        d, h: D and H.  rng: draws every parameter ~ N(0, 1/H).  dtype: of the parameters.
    Attributes:
        params: Wx_k (D, H), Wh_k (H, H), b_k (H,) for k in i, f, g, o.  grads: the same names.
    """

    def __init__(self, d: int, h: int, rng: np.random.Generator, dtype=np.float64):
        scale = 1 / np.sqrt(h)
        self.params = {}
        for k in GATES:
            self.params[f"Wx_{k}"] = (scale * rng.standard_normal((d, h))).astype(dtype)
            self.params[f"Wh_{k}"] = (scale * rng.standard_normal((h, h))).astype(dtype)
            self.params[f"b_{k}"] = (scale * rng.standard_normal(h)).astype(dtype)
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x, h, c):
        p = self.params
        a = {k: x @ p[f"Wx_{k}"] + h @ p[f"Wh_{k}"] + p[f"b_{k}"] for k in GATES}
        i, f, g, o = sigmoid(a["i"]), sigmoid(a["f"]), np.tanh(a["g"]), sigmoid(a["o"])
        c_next = f * c + i * g
        self.base = x, h, c, i, f, g, o, np.tanh(c_next)
        return o * self.base[-1], c_next

    def backward(self, dh_next, dc_next):
        x, h, c, i, f, g, o, tc = self.base
        dc = dc_next + dh_next * o * (1 - tc ** 2)
        da = {"o": dh_next * tc * o * (1 - o), "i": dc * g * i * (1 - i), "f": dc * c * f * (1 - f),
              "g": dc * i * (1 - g ** 2)}
        dx, dh = 0, 0
        for k in GATES:
            self.grads[f"Wx_{k}"], self.grads[f"Wh_{k}"] = x.T @ da[k], h.T @ da[k]
            self.grads[f"b_{k}"] = da[k].sum(axis=0)
            dx, dh = dx + da[k] @ self.params[f"Wx_{k}"].T, dh + da[k] @ self.params[f"Wh_{k}"].T
        return dx, dh, self.carry(dc, f)

    def carry(self, dc, f):
        """The state's gradient to the previous step: c' = f ⊙ c + ..., so dc_prev = dc ⊙ f."""
        return dc * f


class LSTMCellForgetMissing(LSTMCell):
    """Wrong: dc_prev = dc, as if c' = c + i ⊙ g (the forget gate missing from the state's path)."""

    def carry(self, dc, f):
        return dc


def torch_params() -> dict:
    """The twelve arrays packed into torch's three tensors, in torch's gate order i, f, g, o."""
    import torch

    def stacked(*ws):
        return torch.cat([w.T for w in ws])

    return {tuple(f"Wx_{k}" for k in GATES): ("weight_ih", stacked),
            tuple(f"Wh_{k}" for k in GATES): ("weight_hh", stacked),
            tuple(f"b_{k}" for k in GATES): ("bias_ih", lambda *bs: torch.cat(bs))}


def check(layer, dtype=np.float64, **options):
    """check_layer of `layer` against nn.LSTMCell, bias_hh held at 0."""
    import torch

    from compare import check_layer

    rng = np.random.default_rng(1)
    d, h = layer.params["Wx_i"].shape
    x, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in ((3, d), (3, h), (3, h)))
    module = torch.nn.LSTMCell(d, h, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    return check_layer(layer, module, (x, h0, c0), torch_params=torch_params(), torch_fixed={"bias_hh": 0.0},
                       torch_inputs=lambda x, h, c: (x, (h, c)), **options)


def main() -> None:
    print(check(LSTMCell(4, 3, np.random.default_rng(0))))
    print()
    print(check(LSTMCellForgetMissing(4, 3, np.random.default_rng(0))))


if __name__ == "__main__":
    main()
