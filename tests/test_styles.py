"""Code as it is written: the (out, cache) style (check_forward_backward), losses returning their
gradient (check_loss), several of the user's arrays packed into one of torch's, the counterpart's
parameters the layer lacks held fixed, constant float inputs, evaluation mode without a backward,
and the messages that teach the fix. Each right layer passes; each wrong one fails naming its
tensor."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_forward_backward, check_function, check_layer, check_loss
from compare.check.layouts import gates

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("course_layers", ROOT / "examples" / "course_layers.py")
course = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course)

rng = np.random.default_rng(5)
x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)


def linear(x, w, b):
    return F.linear(x, w.T, b)


def test_every_course_layer_passes_in_one_line_each():
    reports = course.checks()
    assert len(reports) == 9 and all(r.ok for r in reports), "\n\n".join(str(r) for r in reports if not r.ok)
    assert "input x" in str(reports[0]) and "input w" in str(reports[0]) and "input b" in str(reports[0])
    assert "parameter Wx" in str(reports[7]) and "input prev_c" in str(reports[7])


def test_the_course_file_prints_one_line_per_layer_and_names_the_missing_mean_term(capsys):
    course.main()
    out = capsys.readouterr().out
    assert out.count("-> PASS") == 9 and out.count("FAIL: ") == 1
    report = course.wrong_check()
    assert {c.tensor for c in report.failures} == {"input x"}
    assert report.diagnoses["input x"].kind == "missing mean terms" and "−mean(dx̂)" in report.diagnoses["input x"].text


def test_the_report_names_the_inputs_from_the_forwards_signature_and_passes_other_arguments_through():
    seen = {}

    def forward(x, scale, w, *, shift=0.0):
        seen.update(scale=scale, shift=shift)
        return scale * x @ w + shift, (x, w, scale)

    def backward(dout, cache):
        x, w, scale = cache
        return scale * dout @ w.T, scale * x.T @ dout

    report = check_forward_backward(forward, backward, lambda x, w: 3 * x @ w + 0.5, x, 3, w, shift=0.5)
    assert report.ok, str(report)
    assert seen == {"scale": 3, "shift": 0.5}
    assert {c.tensor for c in report.comparisons} >= {"input x", "input w"}


def test_a_counterpart_that_asks_for_the_forwards_options_is_told_in_one_line_where_they_go():
    def pool_forward(x, pool_param):
        s = pool_param["stride"]
        n, c, h, w = x.shape
        return x.reshape(n, c, h // s, s, w // s, s).max(axis=(3, 5)), x

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    with pytest.raises(TypeError) as e:
        check_forward_backward(pool_forward, None, lambda x, p: F.max_pool2d(x, p["stride"]), x, {"stride": 2})
    assert "\n" not in str(e.value) and "called with 1 tensor (the array inputs, in order)" in str(e.value)
    assert "arguments that are not arrays (a dict of options) go to the forward alone" in str(e.value)
    assert check_forward_backward(pool_forward, None, lambda x: F.max_pool2d(x, 2), x, {"stride": 2}).ok


def test_a_wrong_backward_in_the_cache_style_fails_naming_its_tensor():
    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0) / len(dout)  # db averaged: wrong

    report = check_forward_backward(course.affine_forward, affine_backward, linear, x, w, b)
    assert {c.tensor for c in report.failures} == {"input b"}
    assert "input b" in report.diagnoses and "×1/B" in report.diagnoses["input b"].text


def test_params_are_the_arrays_torch_params_maps_for_a_module_counterpart():
    module = torch.nn.Linear(5, 3, dtype=torch.float64)
    report = check_forward_backward(course.affine_forward, course.affine_backward, module, x, w, b,
                                    torch_params={"w": ("weight", lambda w: w.T), "b": "bias"})
    assert report.ok and {"parameter w", "parameter b", "input x"} <= {c.tensor for c in report.comparisons}


def test_a_backward_returning_the_wrong_count_gets_one_line():
    with pytest.raises(ValueError, match=r"returned 2 gradients; expected one per array argument of the forward "
                                         r"\(x, w, b\)"):
        check_forward_backward(course.affine_forward, lambda d, c: (d, d), linear, x, w, b)


def test_a_forward_not_in_the_cache_style_and_a_keyword_array_get_one_line():
    with pytest.raises(TypeError, match=r"expected \(out, cache\)"):
        check_forward_backward(lambda x: x * 2, lambda d, c: 2 * d, lambda x: 2 * x, x)
    with pytest.raises(TypeError, match="give every array positionally"):
        check_forward_backward(course.affine_forward, course.affine_backward, linear, x, w, b=b)


def test_test_mode_without_a_cache_checks_the_forward_and_the_buffers_alone_and_can_fail():
    module = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    stats = {"running_mean": rng.standard_normal(3), "running_var": rng.uniform(0.5, 2, 3)}
    gamma, beta = 1 + 0.5 * rng.standard_normal(3), rng.standard_normal(3)
    names = {"gamma": "weight", "beta": "bias"}
    report = check_forward_backward(course.batchnorm_forward, course.batchnorm_backward, module, x[:, :3], gamma,
                                    beta, {"mode": "test", **stats}, torch_params=names)
    assert report.ok and "forward only: batchnorm_forward returned no cache (None)" in str(report)
    assert {c.tensor for c in report.comparisons} == {"output", "buffer running_mean", "buffer running_var"}

    def no_eps(x, gamma, beta, bn_param):
        if bn_param["mode"] == "test":
            return gamma * (x - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"]) + beta, None
        return course.batchnorm_forward(x, gamma, beta, bn_param)

    wrong = check_forward_backward(no_eps, course.batchnorm_backward, module, x[:, :3], gamma, beta,
                                   {"mode": "test", **stats}, torch_params=names)
    assert {c.tensor for c in wrong.failures} == {"output"} and "forward only" in str(wrong)


def test_check_layer_in_evaluation_mode_with_no_backward_there_checks_the_forward_alone():
    class Norm:
        def __init__(self):
            self.params, self.grads, self.training = {}, {}, True
            self.buffers = {"running_mean": np.zeros(3), "running_var": np.ones(3)}

        def forward(self, x):
            self.cache = None if not self.training else x
            return (x - self.buffers["running_mean"]) / np.sqrt(self.buffers["running_var"] + 1e-5)

        def backward(self, dy):
            return dy * self.cache.std()  # the cache is None in evaluation mode

    module = torch.nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    report = check_layer(Norm(), module, x[:, :3], training=False)
    assert report.ok and "training=False: Norm.backward raised AttributeError" in str(report)


class BrokenNorm:
    """Its backward fails in every mode (a shape bug), not for want of a cache."""

    def __init__(self):
        self.params, self.grads, self.training = {}, {}, True
        self.buffers = {"running_mean": np.zeros(3), "running_var": np.ones(3)}

    def forward(self, x):
        self.cache = x
        return (x - self.buffers["running_mean"]) / np.sqrt(self.buffers["running_var"] + 1e-5)

    def backward(self, dy):
        return dy @ np.ones((4, 3))  # (B, 3) @ (4, 3): a shape error whatever the mode


def test_in_evaluation_mode_a_backward_broken_in_every_mode_raises_its_error_not_a_forward_only_pass():
    module = torch.nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    with pytest.raises(ValueError, match="matmul"):
        check_layer(BrokenNorm(), module, x[:, :3], training=False)


def test_in_evaluation_mode_a_backward_saying_not_implemented_checks_the_forward_alone():
    class InferenceOnly(BrokenNorm):
        def backward(self, dy):
            raise NotImplementedError("inference only")

    module = torch.nn.BatchNorm1d(3, affine=False, dtype=torch.float64)
    report = check_layer(InferenceOnly(), module, x[:, :3], training=False)
    assert report.ok and "training=False: InferenceOnly.backward raised NotImplementedError" in str(report)


def test_an_lstm_cell_against_stock_lstmcell_through_packing_and_its_gate_order_mistake():
    lstm = torch.nn.LSTMCell(5, 3, dtype=torch.float64)
    h, c = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    Wx, Wh, b4 = rng.standard_normal((5, 12)), rng.standard_normal((3, 12)), rng.standard_normal(12)
    common = dict(torch_inputs=lambda x, h, c: (x, (h, c)), torch_fixed={"bias_hh": 0.0})
    packing = {"Wx": ("weight_ih", lambda W: gates(W.T)), "Wh": ("weight_hh", lambda W: gates(W.T)),
               "b": ("bias_ih", gates)}
    assert check_forward_backward(course.lstm_step_forward, course.lstm_step_backward, lstm, x, h, c, Wx, Wh, b4,
                                  torch_params=packing, **common).ok
    as_is = {"Wx": ("weight_ih", lambda W: W.T), "Wh": ("weight_hh", lambda W: W.T), "b": "bias_ih"}
    wrong = check_forward_backward(course.lstm_step_forward, course.lstm_step_backward, lstm, x, h, c, Wx, Wh, b4,
                                   torch_params=as_is, **common)
    assert {"output 0", "output 1"} <= {c.tensor for c in wrong.failures}


def test_the_counterparts_fixed_parameter_holds_a_value_and_the_report_says_so():
    lstm = torch.nn.LSTMCell(5, 3, dtype=torch.float64)
    h, c = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    Wx, Wh, b4 = rng.standard_normal((5, 12)), rng.standard_normal((3, 12)), rng.standard_normal(12)
    packing = {"Wx": ("weight_ih", lambda W: gates(W.T)), "Wh": ("weight_hh", lambda W: gates(W.T)),
               "b": ("bias_ih", lambda b: gates(b - 0.25))}
    report = check_forward_backward(course.lstm_step_forward, course.lstm_step_backward, lstm, x, h, c, Wx, Wh, b4,
                                    torch_inputs=lambda x, h, c: (x, (h, c)), torch_fixed={"bias_hh": 0.25},
                                    torch_params=packing)
    assert report.ok and "the counterpart's bias_hh at 0.25, held fixed" in str(report)
    wrong = check_forward_backward(course.lstm_step_forward, course.lstm_step_backward, lstm, x, h, c, Wx, Wh, b4,
                                   torch_inputs=lambda x, h, c: (x, (h, c)), torch_fixed={"bias_hh": 0.0},
                                   torch_params=packing)
    assert {"output 0", "output 1"} <= {c.tensor for c in wrong.failures}  # the fixed value reaches torch
    with pytest.raises(ValueError, match="torch_fixed names 'bias_x'"):
        check_forward_backward(course.lstm_step_forward, course.lstm_step_backward, lstm, x, h, c, Wx, Wh, b4,
                               torch_inputs=lambda x, h, c: (x, (h, c)), torch_fixed={"bias_x": 0.0},
                               torch_params=packing)


def attention_forward(x, Wq, Wk, Wv, Wo):
    """Single-head self-attention as nn.MultiheadAttention(E, 1, bias=False, batch_first=True)."""
    q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T
    s = q @ k.swapaxes(1, 2) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    a = p @ v
    return a @ Wo.T, (x, Wq, Wk, Wv, Wo, q, k, v, p, a)


def attention_backward(dout, cache, swap=False):
    x, Wq, Wk, Wv, Wo, q, k, v, p, a = cache
    da, dWo = dout @ Wo, np.einsum("bte,btf->ef", dout, a)
    dp, dv = da @ v.swapaxes(1, 2), p.swapaxes(1, 2) @ da
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) / np.sqrt(q.shape[-1])
    dq, dk = ds @ k, ds.swapaxes(1, 2) @ q
    dWq, dWk, dWv = (np.einsum("bte,btf->ef", d, x) for d in (dq, dk, dv))
    if swap:
        dWq, dWk = dWk, dWq
    return dq @ Wq + dk @ Wk + dv @ Wv, dWq, dWk, dWv, dWo


def test_three_projections_packed_into_in_proj_weight_and_a_swapped_gradient_named():
    E = 4
    mha = torch.nn.MultiheadAttention(E, 1, bias=False, batch_first=True, dtype=torch.float64)
    xs = rng.standard_normal((2, 3, E))
    Ws = [rng.standard_normal((E, E)) for _ in range(4)]
    options = dict(torch_params={("Wq", "Wk", "Wv"): ("in_proj_weight", lambda q, k, v: torch.cat([q, k, v])),
                                 "Wo": "out_proj.weight"},
                   torch_inputs=lambda x: (x, x, x, None, False), torch_outputs=lambda out: out[0])
    report = check_forward_backward(attention_forward, attention_backward, mha, xs, *Ws, **options)
    assert report.ok, str(report)
    assert {"parameter Wq", "parameter Wk", "parameter Wv", "parameter Wo"} <= {c.tensor for c in report.comparisons}
    wrong = check_forward_backward(attention_forward, lambda d, c: attention_backward(d, c, swap=True), mha, xs,
                                   *Ws, **options)
    assert {c.tensor for c in wrong.failures} == {"parameter Wq", "parameter Wk"}


def test_a_regression_target_marked_constant_is_data():
    t = rng.standard_normal((4, 5))

    def mse(x, t):
        return ((x - t) ** 2).mean()

    def mse_vjp(g, x, t):
        return g * 2 * (x - t) / x.size, None

    report = check_function(mse, mse_vjp, F.mse_loss, x, t, constant=("t",))
    assert report.ok and "note: t held constant" in str(report)
    assert "input t" not in {c.tensor for c in report.comparisons}
    with pytest.raises(TypeError, match="NoneType"):
        check_function(mse, mse_vjp, F.mse_loss, x, t)


def test_check_loss_takes_loss_and_dx_and_names_a_wrong_dx():
    y = rng.integers(0, 5, 4)
    assert check_loss(course.softmax_loss, F.cross_entropy, x, y).ok

    def not_averaged(x, y):
        loss, dx = course.softmax_loss(x, y)
        return loss, dx * len(x)

    report = check_loss(not_averaged, F.cross_entropy, x, y)
    assert {c.tensor for c in report.failures} == {"input x"} and "×B" in report.diagnoses["input x"].text
    t = rng.standard_normal((4, 5))
    assert check_loss(lambda x, t: (((x - t) ** 2).mean(), 2 * (x - t) / x.size), F.mse_loss, x, t).ok


def test_a_cell_that_keeps_h_between_calls_is_told_how_to_reset_it():
    class KeepsH:
        def __init__(self):
            self.params, self.grads, self.h = {"W": rng.standard_normal((5, 5))}, {}, np.zeros((4, 5))

        def forward(self, x):
            self.h = np.tanh(x + self.h @ self.params["W"])
            return self.h

        def backward(self, dy):
            return dy

    report = check_layer(KeepsH(), lambda x, W: x, x)
    assert "state carried from one call to the next (a recurrent cell that keeps h" in report.refusal
    assert "reset it at the start of forward" in report.refusal


def test_messages_teach_the_fix():
    class Dense:
        def __init__(self):
            self.params, self.grads = {"weight": w, "bias": b}, {}

        def forward(self, x):
            return x @ self.params["weight"] + self.params["bias"]

        def backward(self, dy):
            return dy

    with pytest.raises(ValueError, match=r"transpose of torch's: give the layout as a transform, "
                                         r"torch_params=\{'weight': \('weight', lambda W: W.T\)\}"):
        check_layer(Dense(), torch.nn.Linear(5, 3, dtype=torch.float64), x)

    class Norm:
        def __init__(self):
            self.params, self.grads = {}, {}

        def forward(self, x):
            return x

        def backward(self, dy):
            return dy

    with pytest.raises(ValueError, match="track_running_stats=False"):
        check_layer(Norm(), torch.nn.BatchNorm1d(5, affine=False, dtype=torch.float64), x)
    with pytest.raises(ValueError) as e:
        check_function(np.sum, lambda g, x: g * np.ones_like(x), lambda x: x, x)
    assert "torch_outputs" not in str(e.value) and "torch_fn" in str(e.value)


def test_a_wrong_forward_gets_the_neutral_wording_and_torch_is_not_named_the_suspect():
    def softplus_forward(x):  # wrong: log(1 + 2eˣ), with its own right derivative
        return np.logaddexp(0, np.log(2) + x), x

    def softplus_backward(dout, x):
        return dout / (1 + np.exp(-x) / 2)

    report = check_forward_backward(softplus_forward, softplus_backward, F.softplus, x)
    text = str(report)
    assert {"output", "input x"} <= {c.tensor for c in report.failures}
    assert "suspect: the torch counterpart" not in text and report.suspects["input x"].side == "own forward"
    assert "your backward is the derivative of your own forward" in text
    assert "the check cannot tell which is right: compare your forward with its formula" in text
    assert report.diagnoses == {}
