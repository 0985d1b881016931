"""compare.check.patterns: each classic mistake the first diagnosis did not name, injected into a
layer of the kind where it happens (in the (out, cache) style, as such code is written), is named
with the number that shows it; the right layer gets no diagnosis at all."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_forward_backward
from compare.check.patterns import factor
from tests.test_diagnose import affine, grad, the_diagnosis

rng = np.random.default_rng(11)


# ------------------------------------------------------------------------------ layers and their mistakes


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, x, flipped=False):
    return dout * (x < 0 if flipped else x > 0)


def embedding_forward(ids, W):
    return W[ids], (ids, W.shape)


def embedding_backward(dout, cache, buffered=False):
    ids, shape = cache
    dW = np.zeros(shape)
    if buffered:
        dW[ids] += dout  # a repeated id keeps one occurrence
    else:
        np.add.at(dW, ids, dout)
    return dW


def conv_forward(x, w):
    """A valid 2-D cross-correlation, x (N, C, H, W), w (F, C, kh, kw), as F.conv2d."""
    _, _, kh, kw = w.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # N, C, Ho, Wo, kh, kw
    return np.einsum("nchwij,fcij->nfhw", windows, w), (x, w)


def conv_backward(dout, cache, rotated=False, unflipped=False):
    x, w = cache
    _, _, kh, kw = w.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    dw = np.einsum("nchwij,nfhw->fcij", windows, dout)
    padded = np.pad(dout, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
    dwin = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    dx = np.einsum("nfhwij,fcij->nchw", dwin, w if unflipped else w[:, :, ::-1, ::-1])
    return dx, (dw[:, :, ::-1, ::-1] if rotated else dw)


def norm_forward(x, gamma, axis):
    mu = x.mean(axis=axis, keepdims=True)
    std = np.sqrt(x.var(axis=axis, keepdims=True) + 1e-5)
    xhat = (x - mu) / std
    return gamma * xhat, (xhat, gamma, std, axis)


def norm_backward(dout, cache, missing=()):
    xhat, gamma, std, axis = cache
    dxhat = dout * gamma
    dx = dxhat.copy()
    if "mean" not in missing:
        dx -= dxhat.mean(axis=axis, keepdims=True)
    if "variance" not in missing:
        dx -= xhat * (dxhat * xhat).mean(axis=axis, keepdims=True)
    dgamma = (dout * xhat).sum(axis=tuple(a for a in range(dout.ndim) if a != (axis % dout.ndim) or axis == 1))
    return dx / std, dgamma if gamma.ndim else dgamma


def group_norm_forward(x, groups):
    """F.group_norm without an affine part: each sample's channels in `groups` groups, each group
    (its channels and positions) normalised on its own."""
    xs = x.reshape(x.shape[0], groups, -1)
    std = np.sqrt(xs.var(axis=2, keepdims=True) + 1e-5)
    xhat = (xs - xs.mean(axis=2, keepdims=True)) / std
    return xhat.reshape(x.shape), (xhat, std, x.shape)


def group_norm_backward(dout, cache, missing=()):
    xhat, std, shape = cache
    d = dout.reshape(xhat.shape)
    dx = d.copy()
    if "mean" not in missing:
        dx -= d.mean(axis=2, keepdims=True)
    if "variance" not in missing:
        dx -= xhat * (d * xhat).mean(axis=2, keepdims=True)
    return (dx / std).reshape(shape)


def rnn_forward(x, h0, Wx, Wh):
    hs, h = [], h0
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ Wx + h @ Wh)
        hs.append(h)
    return np.stack(hs, axis=1), (x, h0, Wx, Wh, np.stack(hs, axis=1))


def rnn_backward(dh, cache, cut_short=False):
    x, h0, Wx, Wh, hs = cache
    dx, dWx, dWh, dnext = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        da = (dh[:, t] + (0 if cut_short else dnext)) * (1 - hs[:, t] ** 2)
        prev = hs[:, t - 1] if t else h0
        dx[:, t], dWx, dWh, dnext = da @ Wx.T, dWx + x[:, t].T @ da, dWh + prev.T @ da, da @ Wh.T
    return dx, dnext, dWx, dWh


def torch_rnn(x, h0, Wx, Wh):
    hs, h = [], h0
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ Wx + h @ Wh)
        hs.append(h)
    return torch.stack(hs, dim=1)


def softmax_forward(x):
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, p


def softmax_backward(dout, p, axis=1):
    return p * (dout - (dout * p).sum(axis=axis, keepdims=True))


# ------------------------------------------------------------------------------ each named


def test_a_flipped_relu_mask_is_named_with_its_counts():
    x = rng.standard_normal((5, 6))
    report = check_forward_backward(relu_forward, lambda d, c: relu_backward(d, c, flipped=True), torch.relu, x)
    d = the_diagnosis(report, "input x")
    k = int((x > 0).sum())
    assert d.kind == "flipped mask" and d.value == k
    assert f"blocks it where torch's passes it ({k} elements (where input x > 0))" in d.text


def test_repeated_ids_dropped_by_a_scatter_are_named_with_their_rows():
    ids, W = np.array([[0, 3, 3], [5, 1, 3]]), rng.standard_normal((7, 4))
    report = check_forward_backward(embedding_forward, lambda d, c: embedding_backward(d, c, buffered=True),
                                    F.embedding, ids, W)
    d = the_diagnosis(report, "input W")
    assert d.kind == "repeated indices dropped" and d.value == 1
    assert "the 1 rows whose index occurs more than once in input ids are wrong" in d.text


def test_a_kernel_gradient_rotated_by_180_degrees_is_named():
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    report = check_forward_backward(conv_forward, lambda d, c: conv_backward(d, c, rotated=True), F.conv2d, x, w)
    d = the_diagnosis(report, "input w")
    assert d.kind == "kernel flipped" and d.value == (2, 3) and "rotated by 180°, reversed along axes (2, 3)" in d.text


def test_an_input_gradient_that_does_not_flip_the_kernel_is_named_with_the_kernel_and_its_axes():
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 2))
    report = check_forward_backward(conv_forward, lambda d, c: conv_backward(d, c, unflipped=True), F.conv2d, x, w)
    d = the_diagnosis(report, "input x")
    assert d.kind == "kernel not flipped" and d.value == ("input w", (2, 3))
    assert "with input w reversed along axes (2, 3) (rotated by 180°)" in d.text


@pytest.mark.parametrize("missing, words", [
    (("mean",), "missing the term −mean(dx̂) along axis 0"),
    (("variance",), "missing the term −x̂·mean(dx̂ ⊙ x̂) along axis 0"),
    (("mean", "variance"), "missing both terms along axis 0")])
def test_a_batch_norm_backward_missing_mean_terms_says_which(missing, words):
    x, gamma = rng.standard_normal((8, 3)), 1 + 0.5 * rng.standard_normal(3)

    def counterpart(x, gamma):
        return F.batch_norm(x, None, None, gamma, None, True, 0.0, 1e-5)

    report = check_forward_backward(lambda x, gamma: norm_forward(x, gamma, 0),
                                    lambda d, c: norm_backward(d, c, missing)[:1] + (None,), counterpart, x, gamma,
                                    constant=("gamma",))
    d = the_diagnosis(report, "input x")
    assert d.kind == "missing mean terms" and d.value == (0,) and words in d.text


def test_a_layer_norm_backward_missing_its_mean_term_is_named_along_the_feature_axis():
    x, gamma = rng.standard_normal((4, 7)), 1 + 0.5 * rng.standard_normal(7)
    report = check_forward_backward(lambda x, gamma: norm_forward(x, gamma, 1),
                                    lambda d, c: norm_backward(d, c, ("mean",))[:1] + (None,),
                                    lambda x, gamma: F.layer_norm(x, (7,), gamma, None, 1e-5), x, gamma,
                                    constant=("gamma",))
    d = the_diagnosis(report, "input x")
    assert d.kind == "missing mean terms" and d.value == (1,) and "−mean(dx̂) along axis 1" in d.text


@pytest.mark.parametrize("missing, words", [
    (("mean",), "missing the term −mean(dx̂) along axes (1, 2, 3) in 3 groups of axis 1 (a group norm)"),
    (("variance",), "missing the term −x̂·mean(dx̂ ⊙ x̂) along axes (1, 2, 3) in 3 groups of axis 1"),
    (("mean", "variance"), "missing both terms along axes (1, 2, 3) in 3 groups of axis 1")])
def test_a_group_norm_backward_missing_mean_terms_names_the_groups(missing, words):
    x = rng.standard_normal((2, 6, 3, 3))
    report = check_forward_backward(lambda x: group_norm_forward(x, 3),
                                    lambda d, c: group_norm_backward(d, c, missing), lambda x: F.group_norm(x, 3), x)
    d = the_diagnosis(report, "input x")
    assert d.kind == "missing mean terms" and d.value == ((1, 2, 3), 3) and words in d.text


def test_a_group_norm_with_a_per_channel_scale_treating_its_statistics_as_constants_is_named():
    x, gamma = rng.standard_normal((2, 6, 3, 3)), 1 + 0.5 * rng.standard_normal(6)

    def forward(x, gamma):
        y, cache = group_norm_forward(x, 3)
        return y * gamma[:, None, None], cache

    def backward(d, cache):  # dx̂ = dy ⊙ γ, divided by σ: the group's mean and variance held constant
        return group_norm_backward(d * gamma[:, None, None], cache, ("mean", "variance")), None

    report = check_forward_backward(forward, backward, lambda x, gamma: F.group_norm(x, 3, gamma), x, gamma,
                                    constant=("gamma",))
    d = the_diagnosis(report, "input x")
    assert d.kind == "missing mean terms" and d.value == ((1, 2, 3), 3) and "missing both terms" in d.text


def test_a_recurrence_that_does_not_carry_dh_back_is_named_accumulation_cut_short():
    x, h0 = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 2))
    Wx, Wh = rng.standard_normal((4, 2)), 0.5 * rng.standard_normal((2, 2))
    report = check_forward_backward(rnn_forward, lambda d, c: rnn_backward(d, c, cut_short=True), torch_rnn,
                                    x, h0, Wx, Wh)
    d = report.diagnoses["input x"]
    assert d.kind == "accumulation cut short" and d.value == 1 and "the last step right, the 4 earlier wrong" in d.text


def test_softmax_with_its_sum_over_the_batch_axis_is_named_a_wrong_axis_inside_the_jacobian():
    x = rng.standard_normal((4, 6))
    report = check_forward_backward(softmax_forward, lambda d, c: softmax_backward(d, c, axis=0),
                                    lambda x: torch.softmax(x, dim=1), x)
    d = the_diagnosis(report, "input x")
    assert d.kind == "wrong axis" and d.value == (0,)
    assert "the softmax's VJP with Σ over axis 0, torch with Σ over axis 1" in d.text


def test_a_factor_near_one_is_printed_with_the_digits_that_tell_it_from_one():
    d = the_diagnosis(affine(grad("W", lambda g, dy: (1 + 1e-6) * g)), "parameter W")
    assert d.kind == "constant factor" and "×1 + 1e-06" in d.text
    assert factor(1 - 3.2e-9) == "1 − 3.2e-09" and factor(2.0) == "2" and factor(1.0) == "1"


# ------------------------------------------------------------------------------ right code: no diagnosis


def test_the_right_layers_pass_with_no_diagnosis():
    x, ids, W = rng.standard_normal((8, 3)), np.array([[0, 3, 3], [5, 1, 3]]), rng.standard_normal((7, 4))
    gamma = 1 + 0.5 * rng.standard_normal(3)
    xs, h0 = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 2))
    Wx, Wh = rng.standard_normal((4, 2)), 0.5 * rng.standard_normal((2, 2))
    reports = [
        check_forward_backward(relu_forward, relu_backward, torch.relu, x),
        check_forward_backward(embedding_forward, embedding_backward, F.embedding, ids, W),
        check_forward_backward(conv_forward, conv_backward, F.conv2d, rng.standard_normal((2, 3, 6, 6)),
                               rng.standard_normal((4, 3, 3, 3))),
        check_forward_backward(lambda x, gamma: norm_forward(x, gamma, 0),
                               lambda d, c: norm_backward(d, c)[:1] + (None,),
                               lambda x, gamma: F.batch_norm(x, None, None, gamma, None, True, 0.0, 1e-5), x, gamma,
                               constant=("gamma",)),
        check_forward_backward(rnn_forward, rnn_backward, torch_rnn, xs, h0, Wx, Wh),
        check_forward_backward(lambda x: group_norm_forward(x, 3), group_norm_backward, lambda x: F.group_norm(x, 3),
                               rng.standard_normal((2, 6, 3, 3))),
        check_forward_backward(softmax_forward, softmax_backward, lambda x: torch.softmax(x, dim=1), x),
    ]
    assert all(r.ok and r.diagnoses == {} for r in reports), "\n\n".join(str(r) for r in reports if not r.ok)
