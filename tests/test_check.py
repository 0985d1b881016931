"""compare.check: check_function and check_layer pass correct derivations, catch wrong ones by
every witness (naming the input or parameter), and meet bad use with one clear error."""

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from compare import check_function, check_layer, tolerances
from compare.check import DerivationError

# ------------------------------------------------------------------------------ layers under test


class Affine:
    """y = x Wᵀ + b with its VJPs dW = dyᵀx, db = Σ_rows dy, dx = dy W (torch.nn.Linear)."""

    torch_names = {"W": "weight", "b": "bias"}

    def __init__(self, n_in, n_out, rng, dtype=np.float64):
        self.params = {"W": rng.standard_normal((n_out, n_in)).astype(dtype),
                       "b": rng.standard_normal(n_out).astype(dtype)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy):
        self.grads["W"] = dy.T @ self.x
        self.grads["b"] = dy.sum(axis=0)
        return dy @ self.params["W"]


class Tanh:
    """y = tanh(x), backward dy ⊙ (1 − y²) (torch.nn.Tanh)."""

    params, grads = {}, {}

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y**2)


class TanhMissingFactor(Tanh):
    def backward(self, dy):
        return dy  # the factor 1 − y² is missing


class AffineTransposedW(Affine):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = self.x.T @ dy  # (in, out): transposed; square here, so the shape passes
        return dx


class AffineBiasWrongAxis(Affine):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["b"] = dy.sum(axis=1)  # over the features instead of the batch (B == out here)
        return dx


class AffineSignError(Affine):
    def backward(self, dy):
        return -super().backward(dy)


class AffineOverB(Affine):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = self.grads["W"] / len(dy)  # a 1/B the loss never had
        return dx


def square_case(cls):
    """A layer of 5 -> 5 and a batch of 5: transposes and wrong axes keep their shapes."""
    rng = np.random.default_rng(3)
    return cls(5, 5, rng), torch.nn.Linear(5, 5), rng.standard_normal((5, 5))


def failing(report):
    return {(c.tensor, c.a, c.b) for c in report.failures}


# ------------------------------------------------------------------------------ correct derivations pass


def test_correct_layers_pass_with_every_witness():
    rng = np.random.default_rng(0)
    for layer, module, x in [(Affine(6, 4, rng), torch.nn.Linear(6, 4), rng.standard_normal((3, 6))),
                             (Tanh(), torch.nn.Tanh(), rng.standard_normal((4, 7)))]:
        report = check_layer(layer, module, x)
        assert report.ok, str(report)
        pairs = {(c.a, c.b) for c in report.comparisons}
        assert {("manual", "torch"), ("manual", "fd"), ("torch", "fd"), ("manual", "dir")} <= pairs
        assert report.assert_ok() is report


def test_the_projects_own_layers_pass():
    from manual.layers import Linear, Sigmoid, Tanh as ProjectTanh

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    for layer, module in [(Linear.init(6, 3, rng), torch.nn.Linear(6, 3)), (Sigmoid(), torch.nn.Sigmoid()),
                          (ProjectTanh(), torch.nn.Tanh())]:
        assert check_layer(layer, module, x).ok


def test_a_function_of_two_inputs_passes_and_the_table_names_them():
    A, B = np.random.default_rng(2).standard_normal((2, 3, 4))
    report = check_function(lambda A, B: A @ B.T, lambda g, A, B: (g @ B, g.T @ A),
                            lambda A, B: A @ B.T, A, B)
    assert report.ok, str(report)
    text = str(report)
    assert "input A" in text and "input B" in text and "PASS" in text
    assert "manual~torch" in text and "manual~fd" in text and "manual~dir" in text


def test_scalar_empty_and_fortran_ordered_inputs():
    cos = lambda g, x: g * np.cos(x)  # noqa: E731
    assert check_function(np.sin, cos, torch.sin, np.float64(0.5)).ok  # 0-d in, NumPy scalars out
    assert check_function(lambda x: (x**2).sum(), lambda g, x: 2 * g * x, lambda t: (t**2).sum(), np.ones((2, 3))).ok
    empty = check_function(np.sin, cos, torch.sin, np.zeros((0, 3)))  # runs, but compares nothing: no PASS
    assert not empty.ok and empty.refusal.startswith("nothing to compare")  # (tests/test_cannot_judge.py)
    x = np.asfortranarray(np.random.default_rng(9).standard_normal((4, 5)))
    assert check_function(np.sin, cos, torch.sin, x).ok  # fd perturbs a C-ordered float64 copy
    assert not check_function(np.sin, lambda g, x: g * np.sin(x), torch.sin, x).ok


def test_the_layer_and_module_of_the_caller_keep_their_values():
    layer, module, x = square_case(Affine)
    W, weight = layer.params["W"].copy(), module.weight.detach().clone()
    check_layer(layer, module, x)
    assert np.array_equal(layer.params["W"], W) and torch.equal(module.weight, weight)


# ------------------------------------------------------------------------------ wrong derivations fail


@pytest.mark.parametrize("cls, tensor", [
    (AffineTransposedW, "parameter W"),
    (AffineBiasWrongAxis, "parameter b"),
    (AffineSignError, "input x"),
    (AffineOverB, "parameter W"),
])
def test_a_wrong_backward_is_caught_by_every_witness_and_named(cls, tensor):
    report = check_layer(*square_case(cls))
    assert {t for t, _, _ in failing(report)} == {tensor}
    assert {(tensor, "manual", b) for b in ("torch", "fd", "dir")} <= failing(report)
    assert all(c.ok for c in report.comparisons if c.a == "torch")  # the reference itself is right
    with pytest.raises(AssertionError) as e:
        report.assert_ok()
    lines = str(e.value).splitlines()
    assert lines[1].startswith(f"  {tensor} (5,") and lines[1].endswith(": manual vs torch")
    # one fact per line: each measure against its bound, the count, the greatest difference, the cosine
    facts = lines[2:7]
    assert all(line.startswith("    ") for line in facts), lines
    assert re.fullmatch(r"    relative error \S+ (>|<=) allowed 1e-10", facts[0] if "relative" in facts[0] else facts[1])
    assert any(re.fullmatch(r"    elementwise error \(greatest difference / greatest magnitude\) \S+ (>|<=) allowed "
                            r"1e-10", f) for f in facts[:2])
    assert re.fullmatch(r"    \d+ of \d+ elements differ by more than 1e-10 of the greatest magnitude \S+", facts[2])
    assert re.fullmatch(r"    greatest absolute difference \S+ at index \(\d+(, \d+)*,?\) \(manual \S+, torch \S+\)",
                        facts[3])
    assert re.fullmatch(r"    cosine similarity \S+", facts[4])
    failure = next(f for f in report.failed if f.witnesses == ("manual", "torch"))  # the same facts as data
    assert failure.tensor == tensor and not all(m.ok for m in failure.measures) and failure.greatest.diff > 0
    assert any(line == f"    diagnosis: {tensor}: {report.diagnoses[tensor].text}" for line in lines), lines


def test_a_missing_factor_is_caught_and_names_the_input():
    x = np.random.default_rng(4).standard_normal((3, 5))
    report = check_layer(TanhMissingFactor(), torch.nn.Tanh(), x)
    assert {t for t, _, _ in failing(report)} == {"input x"}
    assert ("input x", "manual", "fd") in failing(report)


def test_a_wrong_vjp_of_the_second_input_is_named():
    A, B = np.random.default_rng(5).standard_normal((2, 4, 4))
    report = check_function(lambda A, B: A @ B, lambda g, A, B: (g @ B.T, g.T @ A),  # should be Aᵀg
                            torch.matmul, A, B)
    assert {t for t, _, _ in failing(report)} == {"input B"}


def test_float32_with_a_correct_derivation_passes_with_the_float64_referee():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    report = check_layer(Affine(6, 4, rng, np.float32), torch.nn.Linear(6, 4), x)
    assert report.ok, str(report)
    pairs = {(c.a, c.b) for c in report.comparisons}
    assert {("manual", "manual64"), ("manual64", "torch64"), ("manual64", "fd"), ("manual64", "dir")} <= pairs


def centred_square(x):
    """(x − mean x)² over the last axis: cancels the mean, so float32 loses digits when |mean| ≫ spread."""
    return (x - x.mean(axis=-1, keepdims=True)) ** 2


def centred_square_vjp(g, x):
    c = x - x.mean(axis=-1, keepdims=True)
    gc = 2 * g * c
    return gc - gc.mean(axis=-1, keepdims=True)


def test_float32_rounding_of_an_ill_conditioned_function_is_not_a_bug_but_a_wrong_vjp_is():
    x = (3000 + np.random.default_rng(7).standard_normal((8, 16))).astype(np.float32)
    torch_fn = lambda t: (t - t.mean(dim=-1, keepdim=True)) ** 2  # noqa: E731
    report = check_function(centred_square, centred_square_vjp, torch_fn, x)
    assert report.ok, str(report)
    widened = [c.agreement.allowed for c in report.comparisons if (c.a, c.b) == ("manual", "torch")]
    assert max(widened) > tolerances.FLOAT32_REL  # float32 noise here exceeds the plain float32 bound
    wrong = check_function(centred_square, lambda g, x: 2 * g * (x - x.mean(axis=-1, keepdims=True)), torch_fn, x)
    assert ("input x", "manual64", "torch64") in failing(wrong) and ("input x", "manual64", "fd") in failing(wrong)


def test_fd_rounding_of_large_outputs_is_allowed_for_but_a_wrong_vjp_still_fails():
    """f = 1e7 + sin x: the outputs' ulp (1.9e-9) divided by 2h costs each difference ~1e-5 of a
    derivative of size 1, above FINITE_DIFF_REL; the allowance widens by that rounding bound."""
    x = np.random.default_rng(10).standard_normal((4, 6))
    f, torch_f = (lambda x: 1e7 + np.sin(x)), (lambda t: 1e7 + torch.sin(t))
    right = check_function(f, lambda g, x: g * np.cos(x), torch_f, x)
    assert right.ok, str(right)
    numeric = [c.agreement for c in right.comparisons if c.b in ("fd", "dir")]
    assert any(agr.rel_err > tolerances.FINITE_DIFF_REL for agr in numeric)  # unwidened: a false alarm
    assert all(agr.allowed < 1e-2 for agr in numeric)
    wrong = check_function(f, lambda g, x: g * np.cos(x) * 0.95, torch_f, x)
    assert ("input x", "manual", "fd") in failing(wrong) and ("input x", "manual", "dir") in failing(wrong)


def softplus(x):
    return np.logaddexp(0, x)


def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


def test_the_directional_witness_catches_a_wrong_vjp_of_a_million_elements():
    x = np.random.default_rng(8).standard_normal((1000, 1000))
    wrong = check_function(softplus, lambda g, x: g * sigmoid(x) ** 2, torch.nn.functional.softplus, x)
    assert not any(c.b == "fd" for c in wrong.comparisons)  # too large for per-coordinate differences
    assert ("input x", "manual", "dir") in failing(wrong)
    assert ("input x", "torch", "dir") not in failing(wrong)
    right = check_function(softplus, lambda g, x: g * sigmoid(x), torch.nn.functional.softplus, x)
    assert right.ok, str(right)


def test_a_forward_that_ignores_a_perturbed_parameter_is_flagged():
    class CachesW(Affine):
        def forward(self, x):
            if not hasattr(self, "W0"):
                self.W0 = self.params["W"].copy()  # reads a private copy, so fd cannot move it
            self.x = x
            return x @ self.W0.T + self.params["b"]

    report = check_layer(*square_case(CachesW))
    assert ("parameter W", "manual", "fd") in failing(report)
    assert "moving parameter W did not change the output" in str(report)


# ------------------------------------------------------------------------------ assert_ok and pytest


def test_assert_ok_hides_its_frames_from_pytest(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import numpy as np, torch
        from compare import check_function

        def test_mine():
            x = np.linspace(-2, 2, 12).reshape(3, 4)
            check_function(np.tanh, lambda g, x: g, torch.tanh, x).assert_ok()
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DerivationError: derivative disagrees: input x (manual vs torch)" in proc.stdout
    assert "check_function(np.tanh, lambda g, x: g, torch.tanh, x).assert_ok()" in proc.stdout
    assert "compare/check.py" not in proc.stdout and "__tracebackhide__" not in proc.stdout


def test_the_failure_is_an_assertion_error_that_carries_the_report():
    report = check_layer(*square_case(AffineSignError))
    with pytest.raises(DerivationError) as e:
        report.assert_ok()
    assert isinstance(e.value, AssertionError) and e.value.report is report
    assert "FAIL" in str(report) and report.table() in str(e.value)


# ------------------------------------------------------------------------------ bad use: one clear error


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_a_parameter_missing_in_the_module_is_named():
    layer, _, x = square_case(Affine)
    layer.torch_names = {}
    with pytest.raises(ValueError) as e:
        check_layer(layer, torch.nn.Linear(5, 5), x)
    assert "no parameter W, b" in one_line(e) and "['weight', 'bias']" in one_line(e)


def test_a_module_parameter_missing_in_the_layer_is_named():
    layer, _, x = square_case(Affine)
    del layer.params["b"]
    layer.torch_names = {"W": "weight"}
    with pytest.raises(ValueError) as e:
        check_layer(layer, torch.nn.Linear(5, 5), x)
    assert "parameter bias has no counterpart in the layer's parameters (['W'])" in one_line(e)


def test_parameter_shapes_that_differ_are_named():
    layer = Affine(5, 4, np.random.default_rng(0))
    with pytest.raises(ValueError) as e:
        check_layer(layer, torch.nn.Linear(5, 3), np.ones((2, 5)))
    assert "parameter W has shape (4, 5) in the layer but (3, 5) in the module (weight)" in one_line(e)


def test_a_vjp_with_the_wrong_number_of_gradients():
    A, B = np.ones((2, 3)), np.ones((3, 2))
    with pytest.raises(ValueError) as e:
        check_function(lambda A, B: A @ B, lambda g, A, B: g @ B.T, torch.matmul, A, B)
    assert "vjp returned 1 gradient for 2 inputs (A, B); expected one per input" in one_line(e)


def test_a_vjp_gradient_of_the_wrong_shape():
    x = np.ones((2, 3))
    with pytest.raises(ValueError) as e:
        check_function(np.sin, lambda g, x: (g * np.cos(x)).T, torch.sin, x)
    assert "vjp's gradient for input x has shape (3, 2); expected (2, 3)" in one_line(e)


def test_a_backward_dx_of_the_wrong_shape_and_grads_that_miss_a_name():
    class WrongDx(Tanh):
        def backward(self, dy):
            return super().backward(dy)[:, :-1]

    with pytest.raises(ValueError) as e:
        check_layer(WrongDx(), torch.nn.Tanh(), np.ones((2, 3)))
    assert "gradient for input x has shape (2, 2); expected (2, 3)" in one_line(e)

    class ForgetsB(Affine):
        def backward(self, dy):
            dx = super().backward(dy)
            del self.grads["b"]
            return dx

    with pytest.raises(ValueError) as e:
        check_layer(*square_case(ForgetsB))
    assert "grads holds ['W'] after backward; expected the names of params, ['W', 'b']" in one_line(e)


def test_a_torch_function_that_returns_no_tensor():
    with pytest.raises(TypeError) as e:
        check_function(np.sin, lambda g, x: g * np.cos(x), lambda t: torch.sin(t).tolist(), np.ones(3))
    assert "torch_fn returned list holding float; expected a torch.Tensor or a tuple of them" in one_line(e)


def test_non_finite_inputs_and_parameters():
    x = np.ones((2, 3))
    x[1, 2] = np.nan
    with pytest.raises(ValueError) as e:
        check_function(np.sin, lambda g, x: g * np.cos(x), torch.sin, x)
    assert "input x holds 1 non-finite value (first at index (1, 2): nan)" in one_line(e)
    layer, module, x = square_case(Affine)
    layer.params["W"][0, 3] = np.inf
    with pytest.raises(ValueError) as e:
        check_layer(layer, module, x)
    assert "parameter W holds 1 non-finite value (first at index (0, 3): inf)" in one_line(e)


@pytest.mark.parametrize("call, error, needle", [
    (lambda: check_function(np.sin, lambda g, x: g, torch.sin, np.arange(3)), TypeError,
     "needs at least one float32 or float64 input to differentiate"),
    (lambda: check_function(np.sin, lambda g, x: g, torch.sin, np.ones(3, np.complex64)), TypeError,
     "has dtype complex64; expected float32 or float64 (differentiated), or an integer or bool array"),
    (lambda: check_function(torch.sin, lambda g, x: g, torch.sin, torch.ones(3, dtype=torch.complex64)), TypeError,
     "has dtype torch.complex64; expected float64, float32, float16 or bfloat16"),
    (lambda: check_function(lambda x: (x, x), lambda g, x: g[0] + g[1], torch.sin, np.ones(3)), ValueError,
     "torch_fn returned 1 output, the hand-written side 2; expected one torch output per output"),
    (lambda: check_function(np.sin, None, torch.sin, np.ones(3)), TypeError, "vjp must be callable"),
    (lambda: check_layer(object(), torch.nn.Tanh(), np.ones(3)), TypeError,
     "object has no .params, .forward, .backward"),
    (lambda: check_layer(Tanh(), np.tanh, np.ones(3)), TypeError,
     "counterpart must be a torch.nn.Module or a function of torch tensors; got ufunc"),
])
def test_other_bad_use_gets_one_clear_error(call, error, needle):
    with pytest.raises(error) as e:
        call()
    assert needle in one_line(e)
