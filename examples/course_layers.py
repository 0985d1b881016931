"""Layers in the (out, cache) style of course assignments, each checked function by function in one
line, with no wrapper (``compare.check_forward_backward``, ``compare.check_loss``).

    out, cache = affine_forward(x, w, b)         dx, dw, db = affine_backward(dout, cache)

Every forward returns its output(s) and a cache; every backward takes the upstream gradient(s) and
the cache and returns one gradient per array argument, in order. Shapes and formulas:

    affine      x (N, D), w (D, M), b (M,):  out = x w + b;  dx = dout wᵀ, dw = xᵀ dout, db = Σₙ dout
    relu        out = max(x, 0);  dx = dout ⊙ [x > 0]
    batchnorm   x (N, D), per feature over the batch: x̂ = (x − μ)/√(v + ε), out = γ x̂ + β;
                dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂))/√(v + ε), dx̂ = dout ⊙ γ;  in "test" mode the
                running statistics and no cache (no backward: the forward and the buffers are checked)
    dropout     inverted dropout, mask = (U < p)/p from np.random.default_rng(seed): out = x ⊙ mask
    conv        naive loops, x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {stride, pad}:
                dx by scattering dout through w, dw by correlating x with dout
    rnn step    next_h = tanh(x Wx + prev_h Wh + b)
    lstm step   a = x Wx + prev_h Wh + b split in four blocks (i, f, o, g: the course's order),
                c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c')
    softmax_loss  x (N, C) scores, y (N,) labels: the batch-mean cross-entropy and its dx

``batchnorm_backward_mean_term_missing`` is the classic wrong variant: dx without −mean(dx̂), the
term that comes from the mean depending on every row. The check names input x, and the diagnosis
says which term is missing.

    python examples/course_layers.py       # every check, one line each
"""

from __future__ import annotations

import numpy as np


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return (dout @ w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T @ dout, dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def batchnorm_forward(x, gamma, beta, bn_param):
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.1)
    running_mean, running_var = bn_param["running_mean"], bn_param["running_var"]
    if bn_param["mode"] == "test":
        return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta, None
    mu, var = x.mean(axis=0), x.var(axis=0)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    n = x.shape[0]
    # torch's rule: the running variance from the unbiased batch variance
    bn_param["running_mean"] = (1 - momentum) * running_mean + momentum * mu
    bn_param["running_var"] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return gamma * xhat + beta, (xhat, gamma, std)


def batchnorm_backward(dout, cache):
    xhat, gamma, std = cache
    dxhat = dout * gamma
    dx = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) / std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_mean_term_missing(dout, cache):
    """Wrong: the −mean(dx̂) term dropped, as if the batch mean did not depend on every row."""
    xhat, gamma, std = cache
    dxhat = dout * gamma
    dx = (dxhat - xhat * (dxhat * xhat).mean(axis=0)) / std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def dropout_forward(x, dropout_param):
    p = dropout_param["p"]  # the probability of keeping a unit
    if dropout_param["mode"] == "test":
        return x, None
    mask = (np.random.default_rng(dropout_param["seed"]).random(x.shape) < p) / p
    return x * mask, mask


def dropout_backward(dout, cache):
    return dout * cache


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, hp, wp = xp.shape
    f, _, hh, ww = w.shape
    ho, wo = 1 + (hp - hh) // stride, 1 + (wp - ww) // stride
    out = np.zeros((n, f, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + hh, j * stride:j * stride + ww]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (xp, w, conv_param)


def conv_backward_naive(dout, cache):
    xp, w, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    _, _, hh, ww = w.shape
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = (slice(None), slice(None), slice(i * stride, i * stride + hh), slice(j * stride, j * stride + ww))
            dxp[window] += np.tensordot(dout[:, :, i, j], w, axes=([1], [0]))
            dw += np.tensordot(dout[:, :, i, j], xp[window], axes=([0], [0]))
    dx = dxp[:, :, pad:dxp.shape[2] - pad, pad:dxp.shape[3] - pad]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h ** 2)
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def sigmoid(a):
    return np.exp(-np.logaddexp(0, -a))


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    a = x @ Wx + prev_h @ Wh + b
    ai, af, ao, ag = np.split(a, 4, axis=1)
    i, f, o, g = sigmoid(ai), sigmoid(af), sigmoid(ao), np.tanh(ag)
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    tc = np.tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - tc ** 2)
    da = np.concatenate([dc * g * i * (1 - i), dc * prev_c * f * (1 - f), dnext_h * tc * o * (1 - o),
                         dc * i * (1 - g ** 2)], axis=1)
    return da @ Wx.T, da @ Wh.T, dc * f, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def softmax_loss(x, y):
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    dx = np.exp(log_p)
    dx[np.arange(n), y] -= 1
    return -log_p[np.arange(n), y].mean(), dx / n


def checks(rng=None) -> list:
    """Every layer above checked against stock torch, one line each: the reports."""
    import torch
    import torch.nn.functional as F

    from compare import check_forward_backward, check_loss
    from compare.check.layouts import gates

    rng = rng or np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    gamma, beta = 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3)
    stats = {"running_mean": rng.standard_normal(3), "running_var": rng.uniform(0.5, 2, 3)}
    xc, wc, bc = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    h, Wh, c = rng.standard_normal((4, 3)), rng.standard_normal((3, 3)), rng.standard_normal((4, 3))
    Wx4, Wh4, b4 = rng.standard_normal((5, 12)), rng.standard_normal((3, 12)), rng.standard_normal(12)
    keep = (np.random.default_rng(7).random((4, 3)) < 0.6) / 0.6
    lstm = torch.nn.LSTMCell(5, 3, dtype=torch.float64)
    return [
        check_forward_backward(affine_forward, affine_backward, F.linear, x, w, b,
                               torch_inputs=lambda x, w, b: (x, w.T, b)),
        check_forward_backward(relu_forward, relu_backward, torch.relu, x),
        check_forward_backward(batchnorm_forward, batchnorm_backward, torch.nn.BatchNorm1d(3, dtype=torch.float64),
                               x[:, :3], gamma, beta, {"mode": "train", **stats},
                               torch_params={"gamma": "weight", "beta": "bias"}),
        check_forward_backward(batchnorm_forward, batchnorm_backward, torch.nn.BatchNorm1d(3, dtype=torch.float64),
                               x[:, :3], gamma, beta, {"mode": "test", **stats},
                               torch_params={"gamma": "weight", "beta": "bias"}),
        check_forward_backward(dropout_forward, dropout_backward, lambda x: x * torch.from_numpy(keep), h,
                               {"mode": "train", "p": 0.6, "seed": 7}),
        check_forward_backward(conv_forward_naive, conv_backward_naive, F.conv2d, xc, wc, bc,
                               {"stride": 1, "pad": 1}, torch_inputs=lambda x, w, b: (x, w, b, 1, 1)),
        check_forward_backward(rnn_step_forward, rnn_step_backward,
                               lambda x, h, Wx, Wh, b: torch.tanh(x @ Wx + h @ Wh + b), x, h, w, Wh, b),
        check_forward_backward(lstm_step_forward, lstm_step_backward, lstm, x, h, c, Wx4, Wh4, b4,
                               torch_inputs=lambda x, h, c: (x, (h, c)), torch_fixed={"bias_hh": 0.0},
                               torch_params={"Wx": ("weight_ih", lambda W: gates(W.T)),
                                             "Wh": ("weight_hh", lambda W: gates(W.T)),
                                             "b": ("bias_ih", gates)}),
        check_loss(softmax_loss, F.cross_entropy, x, rng.integers(0, 5, 4)),
    ]


def wrong_check(rng=None):
    """The batch norm with its mean term missing, checked: the report."""
    import torch

    from compare import check_forward_backward

    rng = rng or np.random.default_rng(0)
    x, gamma, beta = rng.standard_normal((6, 3)), 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3)
    stats = {"running_mean": rng.standard_normal(3), "running_var": rng.uniform(0.5, 2, 3)}
    return check_forward_backward(batchnorm_forward, batchnorm_backward_mean_term_missing,
                                  torch.nn.BatchNorm1d(3, dtype=torch.float64), x, gamma, beta,
                                  {"mode": "train", **stats}, torch_params={"gamma": "weight", "beta": "bias"})


def main() -> None:
    for report in checks():
        print(report.title.split(": float")[0], "->", "PASS" if report.ok else "FAIL")
        if not report.ok:
            print(report)
    print()
    print(wrong_check())


if __name__ == "__main__":
    main()
