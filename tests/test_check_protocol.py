"""The check API on layers shaped like real ones: several inputs and outputs, other layouts,
integer inputs, buffers, randomness, user code that writes into its arguments, a torch function
whose derivative is not that of its values; and a clear error for each new way to misuse it."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_function, check_layer
from compare.check import ForwardsDiffer, Note, engine, fd
from helpers import DenseInOut


def failing(report):
    return {(c.tensor, c.a, c.b) for c in report.failures}


def failing_tensors(report):
    return {c.tensor for c in report.failures}


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


# ------------------------------------------------------------------------------ writes into arguments


class ScalesDyInPlace:
    """y = x ⊙ m / (1 − p) for a fixed mask m; backward scales dy in place (legal NumPy). Every dy
    it receives is recorded in the class's `seen` (each witness runs on its own copy of the layer)."""

    p = 0.25
    seen: list = []

    def __init__(self, shape, rng):
        self.mask = (rng.random(shape) > self.p).astype(np.float64)
        self.params, self.grads = {}, {}

    def forward(self, x):
        return x * self.mask / (1 - self.p)

    def backward(self, dy):
        type(self).seen.append(dy.copy())
        dy *= 1 / (1 - self.p)  # in place: no other witness may see it
        return dy * self.mask


class AffineWritesIntoX:
    """y = x Wᵀ + b, whose forward clips x in place (a legal, surprising habit) before using it:
    the right gradients are those of the clipped function, which torch computes too."""

    torch_names = {"W": "weight", "b": "bias"}

    def __init__(self, rng):
        self.params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(3)}
        self.grads = {}

    def forward(self, x):
        x *= 2.0  # in place: the caller's array changes
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy):
        self.grads["W"], self.grads["b"] = dy.T @ self.x, dy.sum(axis=0)
        return 2.0 * dy @ self.params["W"]


def test_a_backward_that_scales_dy_in_place_gets_a_correct_verdict_and_a_note():
    rng = np.random.default_rng(0)
    layer = ScalesDyInPlace((4, 6), rng)
    mask = torch.from_numpy(layer.mask)
    report = check_layer(layer, lambda x: x * mask / (1 - layer.p), rng.standard_normal((4, 6)))
    assert report.ok, str(report)
    assert Note("wrote", "backward wrote into dy") in report.notes, report.notes
    assert "backward wrote into dy" in str(report)


def test_a_forward_that_writes_into_x_gets_a_correct_verdict_and_a_note():
    rng = np.random.default_rng(1)
    report = check_layer(AffineWritesIntoX(rng), lambda x, weight, bias: F.linear(2 * x, weight, bias),
                         rng.standard_normal((5, 4)))
    assert report.ok, str(report)
    assert Note("wrote", "forward wrote into input x") in report.notes, report.notes


def test_every_witness_receives_the_same_upstream_gradient(monkeypatch):
    """manual (the dy backward receives, before its in-place write), torch (the gradient reaching
    its output) and fd/dir (the weights of the differences) all hold the one g the check drew."""
    rng = np.random.default_rng(2)
    layer = ScalesDyInPlace((3, 5), rng)
    mask = torch.from_numpy(layer.mask)
    torch_seen, fd_seen = [], []

    def counterpart(x):
        y = x * mask / (1 - layer.p)
        y.register_hook(lambda grad: torch_seen.append(grad.detach().numpy().copy()))
        return y

    def recording(original):
        def differences(t, where, evaluate, g, h):
            fd_seen.append(np.array(g))
            return original(t, where, evaluate, g, h)
        return differences

    monkeypatch.setattr(fd, "coordinates", recording(fd.coordinates))
    monkeypatch.setattr(fd, "direction", recording(fd.direction))
    ScalesDyInPlace.seen = []
    report = check_layer(layer, counterpart, rng.standard_normal((3, 5)), seed=7)
    assert report.ok, str(report)
    g = engine.draws(7).standard_normal((3, 5))  # the check's first draw from its seed
    assert len(ScalesDyInPlace.seen) == 1 and np.array_equal(ScalesDyInPlace.seen[0], g)
    nonzero = [d for d in torch_seen if d.any()]  # the determinism probe backpropagates zeros
    assert len(nonzero) == 1 and np.array_equal(nonzero[0], g)
    assert len(fd_seen) == 2 and all(np.array_equal(d, g.reshape(-1)) for d in fd_seen)


# ------------------------------------------------------------------------------ blame the right side


def softplus(x):
    return np.logaddexp(0, x)


def softplus_vjp(g, x):
    return g * np.exp(-np.logaddexp(0, -x))  # g ⊙ σ(x), exact


@pytest.mark.parametrize("spread", [1.0, 0.05])
def test_torch_softplus_above_its_threshold_is_named_the_suspect(spread):
    """torch's softplus is the identity above 20, so its derivative there is exactly 1 where the
    true one is 1 − 2e-9: the check fails, and says that torch is the side finite differences
    contradict. Close above 20 the outputs differ beyond the float64 bound too (by e^-x ≈ 2e-9):
    then the report also says that each gradient is its own forward's."""
    x = 20 + spread * np.random.default_rng(3).random((6, 10))
    report = check_function(softplus, softplus_vjp, F.softplus, x)
    assert ("input x", "manual", "torch") in failing(report)
    assert ("input x", "manual", "fd") not in failing(report) and ("input x", "manual", "dir") not in failing(report)
    suspect = report.suspects["input x"]
    assert suspect.side == "counterpart" and suspect.yours <= suspect.error < suspect.counterpart, report.findings
    assert "suspect: the torch counterpart, for input x" in str(report)
    assert "your backward agrees with them" in str(report)
    if ("output", "manual", "torch") in failing(report):
        assert any(isinstance(f, ForwardsDiffer) for f in report.findings)


def test_a_wrong_backward_is_the_suspect_where_torch_agrees_with_finite_differences():
    x = np.random.default_rng(4).standard_normal((4, 5))
    report = check_function(softplus, lambda g, x: g * np.exp(-np.logaddexp(0, -x)) ** 2, F.softplus, x)
    assert report.suspects["input x"].side == "yours", report.findings
    assert "suspect: your backward, for input x" in str(report)


def test_outputs_that_differ_say_which_forward_each_gradient_belongs_to():
    """The counterpart computes another function (softplus against tanh): finite differences of
    each forward support each side's own gradient, so the forwards differ."""
    x = np.random.default_rng(5).standard_normal((3, 4))
    report = check_function(softplus, softplus_vjp, torch.tanh, x)
    assert ("output", "manual", "torch") in failing(report)
    forwards = [f for f in report.findings if isinstance(f, ForwardsDiffer)]
    assert forwards == [ForwardsDiffer(("input x",), ("input x",), ("input x",), layer=False)], report.findings
    text = str(report)
    assert "your backward agrees with finite differences of your forward for every gradient" in text
    assert "torch's gradient agrees with finite differences of the torch forward for every gradient" in text


def test_inputs_drawn_from_the_checks_seed_are_not_its_upstream_gradient():
    """x = default_rng(0).standard_normal(shape) is what users write; were g the same draw, layer
    normalisation's dx would cancel to rounding noise (g ∝ x is in its null space) and no relative
    bound could hold: a right derivation would fail."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "layernorm.py"
    spec = importlib.util.spec_from_file_location("layernorm_for_the_seed_test", path)
    layernorm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layernorm)
    x = np.random.default_rng(0).standard_normal((4, 8))
    report = check_layer(layernorm.LayerNorm(8), torch.nn.LayerNorm(8), x, seed=0)
    assert report.ok, str(report)


def test_a_vjp_that_cancels_to_almost_nothing_is_judged_with_the_truncation_of_the_differences(monkeypatch):
    """Forced: g = x (the check drawing from default_rng(seed) itself). Layer norm's dx then
    cancels to ~1e-12 of its terms while the finite differences keep their truncation error
    h²·f‴/6 of the terms' size: FINITE_DIFF_REL relative to the result cannot hold, the estimate
    from a second step 2h can. A wrong derivation at the same point still fails."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "layernorm.py"
    spec = importlib.util.spec_from_file_location("layernorm_for_the_cancel_test", path)
    layernorm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layernorm)
    monkeypatch.setattr(engine, "draws", np.random.default_rng)
    x = np.random.default_rng(0).standard_normal((4, 8))
    right = check_layer(layernorm.LayerNorm(8), torch.nn.LayerNorm(8), x, seed=0)
    assert right.ok, str(right)
    assert any(n.kind == "truncation" and n.text.startswith("input x:") for n in right.notes), right.notes
    assert "truncation error, estimated from a second step 2h" in str(right)
    wrong = check_layer(layernorm.LayerNormMissingFactor(8), torch.nn.LayerNorm(8), x, seed=0)
    assert {c.tensor for c in wrong.failures} == {"input x"}


def test_a_right_derivation_gets_no_findings():
    x = np.random.default_rng(6).standard_normal((3, 4))
    report = check_function(softplus, softplus_vjp, F.softplus, x)
    assert report.ok and report.findings == []


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_weight_held_transposed_checks_against_nn_linear_through_a_transform(dtype):
    rng = np.random.default_rng(7)
    layer = DenseInOut.random(5, 3, rng, dtype)
    report = check_layer(layer, torch.nn.Linear(5, 3), rng.standard_normal((4, 5)).astype(dtype),
                         torch_params={"W": ("weight", lambda W: W.T), "b": "bias"})
    assert report.ok, str(report)
    assert {"parameter W", "parameter b", "input x", "output"} <= {c.tensor for c in report.comparisons}


def test_a_transposed_weight_gradient_is_caught_through_the_transform():
    class WrongDW(DenseInOut):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["W"] = (dy.T @ self.x).T * 1.5
            return dx

    rng = np.random.default_rng(8)
    report = check_layer(WrongDW.random(4, 4, rng), torch.nn.Linear(4, 4), rng.standard_normal((3, 4)),
                         torch_params={"W": ("weight", lambda W: W.T), "b": "bias"})
    assert failing_tensors(report) == {"parameter W"}


class ConvNHWC:
    """A 3x3 convolution, stride 1, padding 1, channels last: x (B, H, W, C), K (3, 3, C, O), b (O,).

    y[n, i, j, o] = Σ_{a, b, c} xp[n, i + a, j + b, c] K[a, b, c, o] + b[o] with xp = x zero-padded.
    As one product: the 3x3 patches P (B·H·W, 9C) of xp, y = P K̃ + b with K̃ = K reshaped (9C, O).
    Backward: dK̃ = Pᵀ dy, db = Σ dy, dP = dy K̃ᵀ, and dx = the patches' gradient added back where
    each patch came from (the transpose of the patch extraction)."""

    def __init__(self, c_in, c_out, rng):
        self.params = {"K": rng.standard_normal((3, 3, c_in, c_out)) / 3, "b": rng.standard_normal(c_out)}
        self.grads = {}

    def forward(self, x):
        B, H, W, C = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        self.shape = x.shape
        self.P = np.stack([xp[:, a:a + H, b:b + W, :] for a in range(3) for b in range(3)], axis=3)  # (B,H,W,9,C)
        K = self.params["K"].reshape(9 * C, -1)
        return (self.P.reshape(B * H * W, 9 * C) @ K + self.params["b"]).reshape(B, H, W, -1)

    def kernel_for_dx(self):
        return self.params["K"]

    def backward(self, dy):
        B, H, W, C = self.shape
        O = dy.shape[-1]
        d = dy.reshape(B * H * W, O)
        self.grads["K"] = (self.P.reshape(B * H * W, 9 * C).T @ d).reshape(3, 3, C, O)
        self.grads["b"] = d.sum(axis=0)
        dP = (d @ self.kernel_for_dx().reshape(9 * C, O).T).reshape(B, H, W, 9, C)
        dxp = np.zeros((B, H + 2, W + 2, C))
        for k, (a, b) in enumerate((a, b) for a in range(3) for b in range(3)):
            dxp[:, a:a + H, b:b + W, :] += dP[:, :, :, k, :]
        return dxp[:, 1:-1, 1:-1, :]


NHWC = dict(torch_params={"K": ("weight", lambda K: K.permute(3, 2, 0, 1)), "b": "bias"},
            torch_inputs=lambda x: x.permute(0, 3, 1, 2), torch_outputs=lambda y: y.permute(0, 2, 3, 1))


def test_a_channels_last_convolution_checks_against_nn_conv2d_and_f_conv2d_without_adapters():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 6, 3))
    assert check_layer(ConvNHWC(3, 4, rng), torch.nn.Conv2d(3, 4, 3, padding=1), x, **NHWC).ok
    functional = lambda x, K, b: F.conv2d(x.permute(0, 3, 1, 2), K.permute(3, 2, 0, 1), b, padding=1)  # noqa: E731
    report = check_layer(ConvNHWC(3, 4, rng), functional, x, torch_outputs=lambda y: y.permute(0, 2, 3, 1))
    assert report.ok, str(report)


def test_a_convolution_whose_dx_uses_the_unflipped_kernel_is_caught_on_input_x():
    class Unflipped(ConvNHWC):
        def kernel_for_dx(self):
            return self.params["K"][::-1, ::-1]  # the patches' gradient through the kernel turned round

    rng = np.random.default_rng(10)
    report = check_layer(Unflipped(2, 3, rng), torch.nn.Conv2d(2, 3, 3, padding=1), rng.standard_normal((2, 4, 4, 2)),
                         **NHWC)
    assert failing_tensors(report) == {"input x"}


# ------------------------------------------------------------------------------ several inputs and outputs


class LSTMCell:
    """torch.nn.LSTMCell by hand: gates a = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh, split (i, f, g, o);
    i, f, o = σ(·), g = tanh(·); c' = f ⊙ c + i ⊙ g; h' = o ⊙ tanh(c').

    Backward from (dh', dc'): with t = tanh(c'), dc_all = dc' + dh' ⊙ o ⊙ (1 − t²);
    do = dh' ⊙ t, di = dc_all ⊙ g, dg = dc_all ⊙ i, df = dc_all ⊙ c, dc = dc_all ⊙ f; through the
    nonlinearities da = (di ⊙ i(1 − i), df ⊙ f(1 − f), dg ⊙ (1 − g²), do ⊙ o(1 − o)); then as for a
    linear map: dW_ih = daᵀx, dW_hh = daᵀh, db_ih = db_hh = Σ_rows da, dx = da W_ih, dh = da W_hh."""

    torch_names = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}

    def __init__(self, n_in, n_hidden, rng):
        H = n_hidden
        self.params = {"W_ih": rng.standard_normal((4 * H, n_in)) / 2, "W_hh": rng.standard_normal((4 * H, H)) / 2,
                       "b_ih": rng.standard_normal(4 * H), "b_hh": rng.standard_normal(4 * H)}
        self.grads = {}

    def forward(self, x, h, c):
        p = self.params
        a = x @ p["W_ih"].T + p["b_ih"] + h @ p["W_hh"].T + p["b_hh"]
        i, f, g, o = np.split(a, 4, axis=1)
        i, f, o, g = 1 / (1 + np.exp(-i)), 1 / (1 + np.exp(-f)), 1 / (1 + np.exp(-o)), np.tanh(g)
        c2 = f * c + i * g
        t = np.tanh(c2)
        self.saved = (x, h, c, i, f, g, o, t)
        return o * t, c2

    def backward(self, dh2, dc2):
        x, h, c, i, f, g, o, t = self.saved
        dc_all = dc2 + dh2 * o * (1 - t * t)
        da = np.concatenate([dc_all * g * i * (1 - i), dc_all * c * f * (1 - f), dc_all * i * (1 - g * g),
                             dh2 * t * o * (1 - o)], axis=1)
        self.grads = {"W_ih": da.T @ x, "W_hh": da.T @ h, "b_ih": da.sum(axis=0), "b_hh": da.sum(axis=0)}
        return da @ self.params["W_ih"], da @ self.params["W_hh"], dc_all * f


def lstm_inputs(rng, B=3, n_in=4, H=5):
    return rng.standard_normal((B, n_in)), rng.standard_normal((B, H)), rng.standard_normal((B, H))


def test_an_lstm_cell_with_outputs_h_and_c_checks_against_nn_lstmcell():
    rng = np.random.default_rng(11)
    report = check_layer(LSTMCell(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng),
                         torch_inputs=lambda x, h, c: (x, (h, c)))
    assert report.ok, str(report)
    tensors = {c.tensor for c in report.comparisons}
    assert {"output 0", "output 1", "input x", "input h", "input c", "parameter W_ih", "parameter b_hh"} <= tensors


def test_an_lstm_cell_that_forgets_the_path_through_c_is_caught_on_input_c_only():
    class NoForgetPath(LSTMCell):
        def backward(self, dh2, dc2):
            dx, dh, dc = super().backward(dh2, dc2)
            return dx, dh, dc * 0.5

    rng = np.random.default_rng(12)
    report = check_layer(NoForgetPath(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng),
                         torch_inputs=lambda x, h, c: (x, (h, c)))
    assert failing_tensors(report) == {"input c"}


def attention(q, k, v):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


def attention_vjp(g, q, k, v, axis=-1):
    d = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=axis, keepdims=True))
    return ds @ k / np.sqrt(d), np.swapaxes(ds, -1, -2) @ q / np.sqrt(d), np.swapaxes(p, -1, -2) @ g


def test_attention_with_three_inputs_checks_against_scaled_dot_product_attention():
    rng = np.random.default_rng(13)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 6))
    assert check_function(attention, attention_vjp, F.scaled_dot_product_attention, q, k, v).ok
    wrong = check_function(attention, functools.partial(attention_vjp, axis=-2), F.scaled_dot_product_attention,
                           q, k, v)
    assert failing_tensors(wrong) == {"input q", "input k"}  # v's gradient does not go through softmax
    assert "partial(attention_vjp)" in wrong.title


# ------------------------------------------------------------------------------ integer inputs and buffers


class Embedding:
    """y[b, j] = W[ids[b, j]]: dW = Σ of dy over every position holding each id (np.add.at adds a
    repeated id as often as it occurs)."""

    def __init__(self, n, d, rng):
        self.params, self.grads = {"weight": rng.standard_normal((n, d))}, {}

    def forward(self, ids):
        self.ids = ids
        return self.params["weight"][ids]

    def backward(self, dy):
        dW = np.zeros_like(self.params["weight"])
        np.add.at(dW, self.ids, dy)
        self.grads["weight"] = dW
        return None


def test_integer_ids_pass_unchanged_and_only_the_weights_are_differentiated():
    rng = np.random.default_rng(14)
    ids = np.array([[1, 3, 1], [0, 3, 3]])
    report = check_layer(Embedding(5, 4, rng), torch.nn.Embedding(5, 4), ids)
    assert report.ok, str(report)
    assert {c.tensor for c in report.comparisons} == {"output", "parameter weight"}

    class CountsOnce(Embedding):
        def backward(self, dy):
            dW = np.zeros_like(self.params["weight"])
            dW[self.ids] += dy
            self.grads["weight"] = dW

    assert failing_tensors(check_layer(CountsOnce(5, 4, rng), torch.nn.Embedding(5, 4), ids)) == {"parameter weight"}


class BatchNorm:
    """Batch normalisation of (B, C) in training mode, torch's running statistics as buffers."""

    def __init__(self, C, rng, unbiased=True):
        self.params = {"weight": 1 + rng.standard_normal(C) / 2, "bias": rng.standard_normal(C)}
        self.buffers = {"running_mean": rng.standard_normal(C), "running_var": 1 + rng.random(C)}
        self.grads, self.training, self.unbiased, self.eps, self.momentum = {}, True, unbiased, 1e-5, 0.1

    def forward(self, x):
        B = len(x)
        mu, var = x.mean(axis=0), x.var(axis=0)
        m = self.momentum
        self.buffers["running_mean"][...] = (1 - m) * self.buffers["running_mean"] + m * mu
        sample_var = var * B / (B - 1) if self.unbiased else var
        self.buffers["running_var"][...] = (1 - m) * self.buffers["running_var"] + m * sample_var
        self.s = np.sqrt(var + self.eps)
        self.xhat = (x - mu) / self.s
        return self.params["weight"] * self.xhat + self.params["bias"]

    def backward(self, dy):
        self.grads["weight"], self.grads["bias"] = (dy * self.xhat).sum(axis=0), dy.sum(axis=0)
        g = dy * self.params["weight"]
        return (g - g.mean(axis=0) - self.xhat * (g * self.xhat).mean(axis=0)) / self.s


def test_batch_norm_buffers_are_compared_with_the_modules_and_a_biased_running_variance_is_caught():
    rng = np.random.default_rng(15)
    x = 2 + rng.standard_normal((6, 3))
    report = check_layer(BatchNorm(3, rng), torch.nn.BatchNorm1d(3), x, training=True)
    assert report.ok, str(report)
    assert {"buffer running_mean", "buffer running_var"} <= {c.tensor for c in report.comparisons}
    assert any(n.kind == "counters" and "num_batches_tracked" in n.text for n in report.notes)
    biased = check_layer(BatchNorm(3, rng, unbiased=False), torch.nn.BatchNorm1d(3), x, training=True)
    assert failing_tensors(biased) == {"buffer running_var"}


def test_a_buffer_missing_on_either_side_is_one_clear_error():
    rng = np.random.default_rng(16)
    layer = BatchNorm(3, rng)
    del layer.buffers["running_var"]
    with pytest.raises(ValueError) as e:
        check_layer(layer, torch.nn.BatchNorm1d(3), rng.standard_normal((4, 3)))
    assert "buffer running_var has no counterpart in the layer's buffers" in one_line(e)
    layer = BatchNorm(3, rng)
    layer.buffers["extra"] = np.zeros(3)
    with pytest.raises(ValueError) as e:
        check_layer(layer, torch.nn.BatchNorm1d(3), rng.standard_normal((4, 3)))
    assert "the module has no buffer extra" in one_line(e)


# ------------------------------------------------------------------------------ determinism


class FreshMask:
    """Dropout that draws a new mask at every forward: not a function of its input."""

    params, grads = {}, {}

    def forward(self, x):
        self.mask = np.random.default_rng().random(x.shape) > 0.5
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


class LazyWeights:
    """Creates its weight, at random, at the first call."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        if "W" not in self.params:
            self.params["W"] = np.random.default_rng().standard_normal((x.shape[1], x.shape[1]))
        return x @ self.params["W"]

    def backward(self, dy):
        return dy @ self.params["W"].T


@pytest.mark.parametrize("layer", [FreshMask(), LazyWeights()])
def test_a_forward_that_is_not_deterministic_gets_that_said_instead_of_a_verdict(layer):
    report = check_layer(layer, torch.nn.Identity(), np.random.default_rng(17).standard_normal((3, 4)))
    assert not report.ok and report.comparisons == []
    assert "the hand-written forward is not deterministic" in report.refusal
    assert "greatest difference" in report.refusal
    with pytest.raises(AssertionError) as e:
        report.assert_ok()
    assert "not deterministic" in str(e.value)


def test_a_function_that_is_not_deterministic_is_told_to_take_its_draws_as_an_input():
    """check_function's advice names no parameters (a function has none)."""
    def noisy(x):
        return x * (np.random.default_rng().random(x.shape) > 0.5)

    report = check_function(noisy, lambda g, x: g, torch.nn.functional.dropout, np.ones((3, 4)))
    assert "the hand-written forward is not deterministic" in report.refusal
    assert "outside the function, and pass them in as an input" in report.refusal
    assert "parameters" not in report.refusal


def test_a_torch_counterpart_that_is_not_deterministic_is_named():
    class Mask:
        params, grads = {}, {}

        def __init__(self, shape):
            self.mask = np.random.default_rng(0).random(shape) > 0.5

        def forward(self, x):
            return x * self.mask * 2

        def backward(self, dy):
            return dy * self.mask * 2

    report = check_layer(Mask((3, 4)), torch.nn.Dropout(0.5), np.ones((3, 4)))
    assert "the torch counterpart is not deterministic" in report.refusal


# ------------------------------------------------------------------------------ the float64 copy and names


class Wrapper:
    """A layer that delegates to another, sharing its parameter arrays."""

    torch_names = {"W": "weight", "b": "bias"}

    def __init__(self, inner):
        self.inner, self.params, self.grads = inner, inner.params, inner.grads

    def forward(self, x):
        return self.inner.forward(x)

    def backward(self, dy):
        dx = self.inner.backward(dy)
        self.grads.update(self.inner.grads)
        return dx


def test_a_float32_layer_wrapping_another_is_checked_in_float64_on_the_arrays_it_reads():
    from manual.layers import Linear

    rng = np.random.default_rng(18)
    layer = Wrapper(Linear.init(4, 3, rng, np.float32))
    report = check_layer(layer, torch.nn.Linear(4, 3), rng.standard_normal((5, 4)).astype(np.float32))
    assert report.ok, str(report)
    assert not any(n.kind == "unmoved" for n in report.notes)


def test_titles_name_methods_partials_lambdas_and_accept_a_name():
    x = np.ones((2, 3))

    class Op:
        def f(self, x):
            return np.sin(x)

        def vjp(self, g, x):
            return g * np.cos(x)

    op = Op()
    report = check_function(op.f, op.vjp, torch.sin, x)
    assert "Op.f" in report.title and "Op.vjp" in report.title and "torch.sin" in report.title
    report = check_function(lambda x: np.sin(x), functools.partial(Op.vjp, op), torch.sin, x)
    assert "<lambda> (test_check_protocol.py:" in report.title and "partial(" in report.title
    assert check_function(np.sin, op.vjp, torch.sin, x, name="sine").title.startswith("sine:")


# ------------------------------------------------------------------------------ bad use of the new protocol


def test_a_transform_whose_result_has_the_wrong_shape_is_one_line():
    rng = np.random.default_rng(19)
    with pytest.raises(ValueError) as e:
        check_layer(DenseInOut.random(5, 3, rng), torch.nn.Linear(5, 3), np.ones((2, 5)),
                    torch_params={"W": ("weight", lambda W: W), "b": "bias"})
    assert "parameter W has shape (5, 3) in the layer after its transform (torch_params) but (3, 5)" in one_line(e)


def test_a_transform_that_fails_is_one_line():
    rng = np.random.default_rng(20)
    with pytest.raises(ValueError) as e:
        check_layer(DenseInOut.random(5, 3, rng), torch.nn.Linear(5, 3), np.ones((2, 5)),
                    torch_params={"W": ("weight", lambda W: W.permute(2, 0, 1)), "b": "bias"})
    assert "the transform of W in torch_params failed" in one_line(e)


def test_the_wrong_number_of_dx_or_dy_is_one_line():
    rng = np.random.default_rng(21)

    class TwoDx(LSTMCell):
        def backward(self, dh2, dc2):
            return super().backward(dh2, dc2)[:2]

    with pytest.raises(ValueError) as e:
        check_layer(TwoDx(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng), torch_inputs=lambda x, h, c: (x, (h, c)))
    assert "returned 2 dxs for 3 inputs (x, h, c); expected one per input" in one_line(e)

    class OneDy(LSTMCell):
        def backward(self, dh2):
            return super().backward(dh2, np.zeros_like(dh2))

    with pytest.raises(ValueError) as e:
        check_layer(OneDy(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng), torch_inputs=lambda x, h, c: (x, (h, c)))
    assert "OneDy.backward cannot take 2 positional arguments (one dy per output of forward, which returned 2)" in \
        one_line(e)
    with pytest.raises(ValueError) as e:
        check_layer(LSTMCell(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng)[:2])
    assert "LSTMCell.forward cannot take 2 positional arguments" in one_line(e)


def test_a_counterpart_with_fewer_outputs_or_another_shape_is_one_line():
    rng = np.random.default_rng(22)
    with pytest.raises(ValueError) as e:
        check_layer(LSTMCell(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng),
                    torch_inputs=lambda x, h, c: (x, (h, c)), torch_outputs=lambda hc: hc[0])
    assert "returned 1 output, the hand-written side 2" in one_line(e)
    with pytest.raises(ValueError) as e:
        check_layer(ConvNHWC(2, 3, rng), torch.nn.Conv2d(2, 3, 3, padding=1), rng.standard_normal((1, 4, 5, 2)),
                    torch_params=NHWC["torch_params"], torch_inputs=NHWC["torch_inputs"])
    assert "gives output of shape (1, 3, 4, 5); the hand-written side (1, 4, 5, 3)" in one_line(e)


def test_training_for_a_layer_without_a_training_attribute_is_one_line():
    with pytest.raises(TypeError) as e:
        check_layer(DenseInOut.random(3, 2, np.random.default_rng(0)), torch.nn.Linear(3, 2), np.ones((2, 3)), training=True,
                    torch_params={"W": ("weight", lambda W: W.T), "b": "bias"})
    assert "has no .training attribute to set" in one_line(e)
