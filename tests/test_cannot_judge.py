"""compare.check says when it cannot judge instead of passing or surfacing another library's error:
an empty input (nothing compared can never PASS), a gradient in another precision than its tensor,
a counterpart that leaves torch for NumPy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_function, check_layer, check_model
from compare.check.report import NOTHING
from test_check import Affine


def softplus(x):
    return np.logaddexp(0, x)


def softplus_vjp(g, x):
    return g / (1 + np.exp(-x))


def one_line(excinfo) -> str:
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


# ------------------------------------------------------------------------------ nothing to compare


def test_an_empty_input_gets_no_verdict_never_a_pass():
    report = check_function(softplus, softplus_vjp, F.softplus, np.zeros((0, 5)))
    assert not report.ok and report.refusal.startswith(NOTHING)
    assert "nothing to compare (input x has 0 elements)" in str(report)
    assert "NO VERDICT" in str(report) and "PASS" not in str(report)
    with pytest.raises(AssertionError, match="input x has 0 elements"):
        report.assert_ok()


def test_an_empty_input_with_a_wrong_vjp_is_not_judged_either():
    """Nothing compared: a wrong VJP of an empty input cannot be seen, so no verdict, not a pass."""
    report = check_function(softplus, lambda g, x: 2 * g, F.softplus, np.zeros((3, 0)))
    assert not report.ok and report.refusal.startswith(NOTHING)


def test_an_input_with_elements_beside_an_empty_one_is_still_judged():
    """Only when everything differentiated is empty: a non-empty input still gets its verdict."""
    rng = np.random.default_rng(0)
    x, e = rng.standard_normal(4), np.zeros(0)
    fn, vjp = (lambda x, e: np.concatenate([np.tanh(x), e])), (lambda g, x, e: (g[:4] * (1 - np.tanh(x) ** 2), g[4:]))
    assert check_function(fn, vjp, lambda x, e: torch.cat([torch.tanh(x), e]), x, e).ok
    wrong = check_function(fn, lambda g, x, e: (g[:4], g[4:]), lambda x, e: torch.cat([torch.tanh(x), e]), x, e)
    assert not wrong.ok and not wrong.refusal and {c.tensor for c in wrong.failures} == {"input x"}


def test_a_layer_whose_output_is_empty_gets_no_verdict():
    """A batch of 0: W and b have elements, but every gradient of an empty output is zero, whatever
    the derivation."""
    rng = np.random.default_rng(0)
    report = check_layer(Affine(5, 3, rng), torch.nn.Linear(5, 3, dtype=torch.float64), np.zeros((0, 5)))
    assert not report.ok and report.refusal.startswith(NOTHING)
    assert "output has 0 elements" in report.refusal


def test_a_layer_whose_parameters_and_input_are_all_empty_gets_no_verdict():
    rng = np.random.default_rng(0)
    layer = Affine(0, 3, rng)  # W (3, 0), b (3,): b still has elements, so shrink it too
    layer.params["b"] = np.zeros(0)
    layer.params["W"] = np.zeros((0, 0))
    report = check_layer(layer, F.linear, np.zeros((4, 0)))
    assert not report.ok and report.refusal.startswith(NOTHING)
    assert "input x and parameter W and parameter b have 0 elements" in report.refusal


def test_a_model_where_no_layer_had_anything_to_compare_is_not_ok():
    rng = np.random.default_rng(0)
    model = [(Affine(5, 4, rng), torch.nn.Linear(5, 4, dtype=torch.float64)),
             (Affine(4, 2, rng), torch.nn.Linear(4, 2, dtype=torch.float64))]
    found = check_model(model, np.zeros((0, 5)))
    assert not found.ok and found.culprit is not None
    assert all(v.report.refusal.startswith(NOTHING) for v in found.verdicts)
    assert found.headline().startswith("no layer had anything to compare")
    with pytest.raises(AssertionError, match=NOTHING):
        found.assert_ok()


# ------------------------------------------------------------------------------ another precision


def test_a_vjp_returning_float32_for_a_float64_input_is_refused_in_one_line():
    x = np.random.default_rng(0).standard_normal((4, 5))
    with pytest.raises(TypeError) as e:
        check_function(softplus, lambda g, x: softplus_vjp(g, x).astype(np.float32), F.softplus, x)
    line = one_line(e)
    assert "vjp's gradient for input x is float32 for a float64 tensor" in line
    assert "a gradient must have its tensor's dtype" in line


def test_a_backward_returning_float64_for_a_float32_parameter_is_refused_in_one_line():
    class WidensW(Affine):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["W"] = self.grads["W"].astype(np.float64)
            return dx

    rng = np.random.default_rng(0)
    layer = WidensW(5, 3, rng, np.float32)
    with pytest.raises(TypeError) as e:
        check_layer(layer, torch.nn.Linear(5, 3), rng.standard_normal((4, 5)).astype(np.float32))
    assert "WidensW.grads['W'] is float64 for a float32 tensor" in one_line(e)


def test_gradients_in_their_tensors_dtype_pass_in_float32_and_float64():
    """The refusal is of a changed dtype only: the right VJP in either precision passes."""
    x = np.random.default_rng(0).standard_normal((4, 5))
    for dtype in (np.float32, np.float64):
        assert check_function(softplus, softplus_vjp, F.softplus, x.astype(dtype)).ok


def test_a_torch_vjp_returning_float32_for_a_float64_input_is_refused_in_one_line():
    """The tensor path keeps the NumPy path's rule: a gradient in another dtype is not measured."""
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(TypeError) as e:
        check_function(F.softplus, lambda g, x: (g * torch.sigmoid(x)).float(), F.softplus, x)
    line = one_line(e)
    assert "vjp's gradient for input x is float32 for a float64 tensor" in line
    assert "compute in float64: a float32 result cast back with .to(x.dtype) keeps float32's rounding" in line


def test_a_torch_vjp_returning_float32_for_a_bfloat16_input_is_refused_in_one_line():
    x = torch.randn(4, 5).to(torch.bfloat16)
    with pytest.raises(TypeError) as e:
        check_function(F.softplus, lambda g, x: g.float() * torch.sigmoid(x.float()), F.softplus, x)
    line = one_line(e)  # casting down rounds once, which bfloat16's bounds allow
    assert "is float32 for a bfloat16 tensor" in line and "compute in it, or cast the result with .to(x.dtype)" in line


def test_a_tensor_layer_whose_weight_gradient_changes_dtype_is_refused_in_one_line():
    class Linear32:
        """A bfloat16 layer whose dW is left in float32 (the product accumulated in float32)."""

        def __init__(self):
            self.params = {"W": torch.randn(3, 5).to(torch.bfloat16), "b": torch.zeros(3, dtype=torch.bfloat16)}
            self.grads = {}

        def forward(self, x):
            self.x = x
            return x @ self.params["W"].T + self.params["b"]

        def backward(self, dy):
            self.grads = {"W": dy.float().T @ self.x.float(), "b": dy.sum(0)}
            return dy @ self.params["W"]

    with pytest.raises(TypeError) as e:
        check_layer(Linear32(), torch.nn.functional.linear, torch.randn(4, 5).to(torch.bfloat16),
                    torch_params={"W": "weight", "b": "bias"})
    assert "Linear32.grads['W'] is float32 for a bfloat16 tensor" in one_line(e)


def test_torch_gradients_in_their_tensors_dtype_pass_in_each_precision():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
        assert check_function(F.softplus, lambda g, x: g * torch.sigmoid(x), F.softplus, x).ok, dtype


# ------------------------------------------------------------------------------ a counterpart outside torch


def numpy_softplus(t):
    return np.logaddexp(0, t)  # leaves torch: autograd cannot follow NumPy


def test_a_counterpart_computing_with_numpy_is_named_in_one_line():
    x = np.random.default_rng(0).standard_normal((4, 5))
    with pytest.raises(TypeError) as e:
        check_function(softplus, softplus_vjp, numpy_softplus, x)
    line = one_line(e)
    assert "torch_fn (numpy_softplus) left torch" in line
    assert "must compute with torch operations on the tensors it is given" in line


def numpy_linear(x, weight, bias):
    return torch.from_numpy(np.asarray(x) @ np.asarray(weight).T) + bias


def test_a_layer_counterpart_computing_with_numpy_is_named_in_one_line():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError) as e:
        check_layer(Affine(5, 3, rng), numpy_linear, rng.standard_normal((4, 5)))
    line = one_line(e)
    assert "the function numpy_linear" in line and "left torch" in line
    assert "must compute with torch operations on the tensors it is given" in line
