"""A 2-D convolution in channels-last layout, derived by hand, checked against ``torch.nn.Conv2d``.

Layouts: the input x is NHWC (B, H, W, C_in), the kernel K is (kh, kw, C_in, C_out), the bias b
is (C_out,), the output y is NHWC (B, H', W', C_out). Torch keeps channels first: input NCHW,
weight (C_out, C_in, kh, kw); the check maps one layout to the other (``torch_params``,
``torch_inputs``, ``torch_outputs``), and a stock ``torch.nn.Conv2d`` serves as it is.

Forward, stride 1, zero padding p: xp is x with p zeros on each side of H and W, and

    y[b, i, j, o] = Σ_{u, v, c} xp[b, i + u, j + v, c] · K[u, v, c, o] + b[o]

for 0 ≤ i < H' = H + 2p − kh + 1, 0 ≤ j < W' = W + 2p − kw + 1: a correlation, as torch's
convolution is. Laid out as one matrix product (im2col): the window of xp at (b, i, j), flattened
in K's order (u, v, c), is one row of ``cols`` (B·H'·W', kh·kw·C_in), and

    y = cols · K₂ + b          (K₂: K reshaped to (kh·kw·C_in, C_out))

Backward, with dy = ∂L/∂y (B, H', W', C_out). The forward is a matrix product, so K and b are
the dense layer's gradients: the bias is added at every (b, i, j), and

    ∂L/∂b = Σ_{b, i, j} dy[b, i, j, :]            ∂L/∂K₂ = colsᵀ · dy₂

(dy₂: dy reshaped to (B·H'·W', C_out)), reshaped back to (kh, kw, C_in, C_out).

∂L/∂x: xp[b, m, n, c] enters y[b, i, j, o] wherever m = i + u and n = j + v, with weight
K[u, v, c, o], so

    ∂L/∂xp[b, m, n, c] = Σ_{u, v, o} dy[b, m − u, n − v, o] · K[u, v, c, o]

(dy taken as 0 outside its H' × W'). Padding dy with kh − 1 zeros above and below (kw − 1
left and right) into dyp, dy[b, m − u, ...] = dyp[b, m + (kh − 1 − u), ...]; substituting
u' = kh − 1 − u, v' = kw − 1 − v:

    ∂L/∂xp[b, m, n, c] = Σ_{u', v', o} dyp[b, m + u', n + v', o] · K[kh − 1 − u', kw − 1 − v', c, o]

the "full" correlation of dy with the kernel flipped in both spatial axes and its channel axes
swapped (C_out in, C_in out): the forward's own correlation, with K' = K[::-1, ::-1] transposed
to (kh, kw, C_out, C_in). ∂L/∂x is ∂L/∂xp without its padding border.

``Conv2DUnflippedKernel`` forgets the flip (it swaps the channels alone), the classic slip:
``check_layer`` names input x, while K and b still pass, and says which slip: "a kernel not flipped
in the backward" (∂L/∂x is torch's with K reversed along axes (0, 1)).

    python examples/conv2d.py         # both checks, printed
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def im2col(xp: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """xp (B, Hp, Wp, C) -> cols (B, Hp − kh + 1, Wp − kw + 1, kh·kw·C): the kh × kw window at
    each position, flattened in the order (u, v, c); a copy, the dtype of xp."""
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (B, H', W', C, kh, kw), a view
    b, h, w, c = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(b, h, w, kh * kw * c)


def correlate(xp: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Σ_{u, v, c} xp[b, i + u, j + v, c] K[u, v, c, o]: xp (B, Hp, Wp, C), K (kh, kw, C, O) ->
    (B, Hp − kh + 1, Wp − kw + 1, O); no padding (the caller pads)."""
    kh, kw, c, o = K.shape
    return im2col(xp, kh, kw) @ K.reshape(kh * kw * c, o)


def pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """x (B, H, W, C) with ph zeros above and below, pw left and right: (B, H + 2ph, W + 2pw, C)."""
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))


class Conv2D:
    """y = correlation of x (NHWC) with K (kh, kw, C_in, C_out), plus b; stride 1, zero padding p.

    Counterpart ``torch.nn.Conv2d(c_in, c_out, (kh, kw), padding=p)`` with weight
    K.permute(3, 2, 0, 1) and input and output permuted between NHWC and NCHW.

    Args:
        c_in, c_out: C_in and C_out.  kh, kw: the kernel's height and width.  padding: p.
        rng: draws K ~ N(0, 1/(kh·kw·C_in)) and b ~ N(0, 1) (a generic point: no zero bias).
        dtype: of the parameters.
    Attributes:
        params: {"K": (kh, kw, C_in, C_out), "b": (C_out,)}.  grads: the same names, after ``backward``.
        cols, x_shape: the im2col matrix (B, H', W', kh·kw·C_in) and x's shape, of the last
            ``forward``: the base point of backward.
    """

    def __init__(self, c_in: int, c_out: int, kh: int = 3, kw: int = 3, padding: int = 1,
                 rng: np.random.Generator | None = None, dtype=np.float64):
        rng = np.random.default_rng(0) if rng is None else rng
        K = rng.standard_normal((kh, kw, c_in, c_out)) / np.sqrt(kh * kw * c_in)
        self.params = {"K": K.astype(dtype), "b": rng.standard_normal(c_out).astype(dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.padding = padding
        self.cols: np.ndarray | None = None
        self.x_shape: tuple | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, H, W, C_in) -> y (B, H', W', C_out); keeps cols and x's shape."""
        K = self.params["K"]
        kh, kw, c, o = K.shape
        self.x_shape = x.shape
        self.cols = im2col(pad(x, self.padding, self.padding), kh, kw)
        return self.cols @ K.reshape(kh * kw * c, o) + self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy = ∂L/∂y (B, H', W', C_out) -> ∂L/∂x (B, H, W, C_in); fills grads["K"], grads["b"]."""
        K = self.params["K"]
        o = K.shape[3]
        self.grads["b"] = dy.reshape(-1, o).sum(axis=0)
        cols = self.cols.reshape(-1, self.cols.shape[-1])
        self.grads["K"] = (cols.T @ dy.reshape(-1, o)).reshape(K.shape)
        return self._dx(dy)

    def _dx(self, dy: np.ndarray) -> np.ndarray:
        """The full correlation of dy with K flipped in (u, v), channels swapped; padding cut off."""
        return self._dx_with(dy, K_flipped=self.params["K"][::-1, ::-1].transpose(0, 1, 3, 2))

    def _dx_with(self, dy: np.ndarray, K_flipped: np.ndarray) -> np.ndarray:
        """∂L/∂x from dy (B, H', W', C_out) and the backward kernel (kh, kw, C_out, C_in)."""
        kh, kw = K_flipped.shape[:2]
        _, h, w, _ = self.x_shape
        p = self.padding
        dxp = correlate(pad(dy, kh - 1, kw - 1), K_flipped)  # (B, H + 2p, W + 2p, C_in)
        return dxp[:, p:p + h, p:p + w]


class Conv2DUnflippedKernel(Conv2D):
    """Deliberately wrong: ∂L/∂x correlates dy with K channel-swapped but not flipped."""

    def _dx(self, dy: np.ndarray) -> np.ndarray:
        return self._dx_with(dy, K_flipped=self.params["K"].transpose(0, 1, 3, 2))


def torch_layouts() -> dict:
    """check_layer's layout arguments that turn a stock ``torch.nn.Conv2d`` into this layer's
    counterpart: K (kh, kw, C_in, C_out) -> weight (C_out, C_in, kh, kw), NHWC <-> NCHW."""
    return {"torch_params": {"K": ("weight", lambda K: K.permute(3, 2, 0, 1)), "b": "bias"},
            "torch_inputs": lambda x: x.permute(0, 3, 1, 2),
            "torch_outputs": lambda y: y.permute(0, 2, 3, 1)}


def main() -> None:
    import torch

    from compare import check_layer

    x = np.random.default_rng(1).standard_normal((2, 6, 6, 3))
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    print(check_layer(Conv2D(3, 4), conv, x, **torch_layouts()))
    print()
    print(check_layer(Conv2DUnflippedKernel(3, 4), conv, x, **torch_layouts()))


if __name__ == "__main__":
    main()
