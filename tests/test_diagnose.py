"""compare.check.diagnose: each classic mistake, injected into a small layer, is named in the report
with the number that shows it; a right derivation gets no diagnosis, a wrong one that fits no
pattern gets "no simple pattern", and none is given where torch's gradient is no reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_function, check_layer
from compare.check import DerivationError, Diagnosis, text

# ------------------------------------------------------------------------------ layers under test


class Affine:
    """y = x Wᵀ + b: dW = dyᵀx, db = Σ_rows dy, dx = dy W (torch.nn.Linear). `wrong(self, dy, dx)`
    may change self.grads and returns dx: the injected mistake."""

    torch_names = {"W": "weight", "b": "bias"}

    def __init__(self, n_in, n_out, rng, wrong=None, dtype=np.float64):
        self.params = {"W": rng.standard_normal((n_out, n_in)).astype(dtype),
                       "b": rng.standard_normal(n_out).astype(dtype)}
        self.grads, self.wrong = {}, wrong

    def forward(self, x):
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy):
        self.grads["W"], self.grads["b"] = dy.T @ self.x, dy.sum(axis=0)
        dx = dy @ self.params["W"]
        return dx if self.wrong is None else self.wrong(self, dy, dx)


class Tanh:
    """y = tanh(x), dx = dy ⊙ (1 − y²); `wrong(self, dy)` replaces the backward."""

    def __init__(self, wrong=None):
        self.params, self.grads, self.wrong = {}, {}, wrong

    def forward(self, x):
        self.x, self.y = x, np.tanh(x)
        return self.y

    def local(self):
        return 1 - self.y**2

    def backward(self, dy):
        return dy * self.local() if self.wrong is None else self.wrong(self, dy)


class ReLU:
    """y = max(x, 0); torch's derivative at 0 is 0. `at_zero`: the derivative taken there."""

    def __init__(self, at_zero=0.0):
        self.params, self.grads, self.at_zero = {}, {}, at_zero

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, dy):
        return dy * np.where(self.x == 0, self.at_zero, self.x > 0)


class Scale3D:
    """y = x ⊙ T with T of shape (2, 3, 4): dT = dy ⊙ x, dx = dy ⊙ T; `layout` rearranges dT."""

    def __init__(self, rng, layout=None):
        self.params, self.grads, self.layout = {"T": rng.standard_normal((2, 3, 4))}, {}, layout

    def forward(self, x):
        self.x = x
        return x * self.params["T"]

    def backward(self, dy):
        dT = dy * self.x
        self.grads["T"] = dT if self.layout is None else np.ascontiguousarray(self.layout(dT))
        return dy * self.params["T"]


class Clip:
    """y = clip(x, −1, 1): dx = dy where |x| < 1, else 0 (torch.clamp); `lower=False` forgets the
    lower bound's zeros."""

    def __init__(self, lower=True):
        self.params, self.grads, self.lower = {}, {}, lower

    def forward(self, x):
        self.x = x
        return np.clip(x, -1, 1)

    def backward(self, dy):
        inside = (self.x < 1) & ((self.x > -1) | (not self.lower))
        return dy * inside


def affine(wrong, n_in=6, n_out=3, B=4, dtype=np.float64):
    """check_layer of an Affine with the mistake `wrong`, batch B (4: not a shape of W)."""
    rng = np.random.default_rng(3)
    layer = Affine(n_in, n_out, rng, wrong, dtype)
    return check_layer(layer, torch.nn.Linear(n_in, n_out), rng.standard_normal((B, n_in)).astype(dtype))


def tanh(wrong, x=None):
    x = np.random.default_rng(4).standard_normal((4, 4)) if x is None else x
    return check_layer(Tanh(wrong), torch.nn.Tanh(), x)


def grad(name, f):
    """A mistake that replaces grads[name] by f(its right value, dy)."""
    def wrong(layer, dy, dx):
        layer.grads[name] = f(layer.grads[name], dy)
        return dx
    return wrong


def the_diagnosis(report, tensor):
    """The one diagnosis of the report: of `tensor`, among the findings and a line of its text."""
    assert not report.ok and list(report.diagnoses) == [tensor], report.diagnoses
    d = report.diagnoses[tensor]
    assert d in report.findings and f"    diagnosis: {tensor}: {d.text}\n" in str(report) + "\n"
    return d


# ------------------------------------------------------------------------------ constant factors


@pytest.mark.parametrize("tensor, wrong, kind, factor, name", [
    ("parameter W", grad("W", lambda g, dy: 2 * g), "constant factor", 2.0, "×2"),
    ("input x", lambda layer, dy, dx: dx / 2, "constant factor", 0.5, "×½"),
    ("parameter W", grad("W", lambda g, dy: len(dy) * g), "constant factor", 4.0, "×B"),
    ("parameter b", grad("b", lambda g, dy: dy.mean(axis=0)), "constant factor", 0.25, "×1/B"),
    ("input x", lambda layer, dy, dx: -dx, "sign error", -1.0, "a sign error"),
    ("parameter W", grad("W", lambda g, dy: -2 * g), "sign error", -2.0, "a sign error and a constant factor ×2"),
])
def test_a_constant_factor_is_named_with_its_value(tensor, wrong, kind, factor, name):
    d = the_diagnosis(affine(wrong), tensor)
    assert d.kind == kind and d.value == pytest.approx(factor, rel=1e-12)
    assert name in d.text and f"manual = {factor:.4g} × torch, residual" in d.text
    if name.startswith("×B") or name.startswith("×1/B"):
        assert "B = 4, the leading axis of input x" in d.text


def test_another_constant_factor_is_said_as_its_value():
    d = the_diagnosis(tanh(lambda layer, dy: 1.5 * dy * layer.local()), "input x")
    assert d.kind == "constant factor" and d.value == pytest.approx(1.5) and "×1.5 (manual = 1.5 × torch" in d.text


def test_float32_is_diagnosed_on_the_float64_witnesses():
    d = the_diagnosis(affine(grad("b", lambda g, dy: dy.mean(axis=0)), dtype=np.float32), "parameter b")
    assert d.kind == "constant factor" and d.value == pytest.approx(0.25) and "manual64 = 0.25 × torch64" in d.text


# ------------------------------------------------------------------------------ layouts and axes


def test_the_transpose_of_a_square_gradient():
    d = the_diagnosis(affine(grad("W", lambda g, dy: g.T.copy()), n_in=5, n_out=5, B=5), "parameter W")
    assert d.kind == "transpose" and d.value == (1, 0) and "manual = torchᵀ" in d.text


@pytest.mark.parametrize("layout, value, words", [
    (lambda dT: dT.transpose(2, 1, 0).reshape(2, 3, 4), (2, 1, 0),
     "axes in the order (2, 1, 0) read as shape (2, 3, 4)"),
    (lambda dT: np.flip(dT, 1), 1, "reversed along axis 1"),
])
def test_the_right_values_in_another_layout(layout, value, words):
    rng = np.random.default_rng(0)
    report = check_layer(Scale3D(rng, layout), lambda x, T: x * T, rng.standard_normal((2, 3, 4)))
    d = the_diagnosis(report, "parameter T")
    assert d.kind == "layout" and d.value == value and words in d.text


def test_a_bias_summed_over_the_features_instead_of_the_batch():
    d = the_diagnosis(affine(grad("b", lambda g, dy: dy.sum(axis=1)), n_in=5, n_out=5, B=5), "parameter b")
    assert d.kind == "wrong axis" and d.value == (1,)
    assert "manual = g summed over axis 1, torch = g summed over axis 0" in d.text


def test_an_extra_reduction_of_the_right_gradient():
    d = the_diagnosis(tanh(lambda layer, dy: np.broadcast_to((dy * layer.local()).mean(axis=0), dy.shape).copy()),
                      "input x")
    assert d.kind == "extra reduction" and d.value == (0,) and "averaged over axis 0 and broadcast back" in d.text


def test_dx_equal_to_g_itself_is_the_local_derivative_missing():
    d = the_diagnosis(tanh(lambda layer, dy: dy), "input x")
    assert d.kind == "local derivative missing" and "manual = the upstream gradient g itself" in d.text


# ------------------------------------------------------------------------------ the upstream gradient


def test_an_ignored_upstream_gradient():
    d = the_diagnosis(tanh(lambda layer, dy: layer.local()), "input x")
    assert d.kind == "g ignored" and "the same for another random g" in d.text


def test_a_vjp_that_is_not_linear_in_g():
    d = the_diagnosis(tanh(lambda layer, dy: dy * np.abs(dy) * layer.local()), "input x")
    assert d.kind == "not linear in g" and d.value == pytest.approx(4.0) and "4 times its value with g" in d.text
    d = the_diagnosis(affine(lambda layer, dy, dx: dx + 1.0), "input x")  # an offset independent of g
    assert d.kind == "not linear in g"


@pytest.mark.parametrize("wrong, how", [
    (lambda layer, dy: dy.mean(axis=0, keepdims=True) * layer.local(), "averaged over axis 0 and broadcast back"),
    (lambda layer, dy: dy.T * layer.local(), "transposed"),
])
def test_a_mis_broadcast_upstream_gradient(wrong, how):
    d = the_diagnosis(tanh(wrong), "input x")
    assert d.kind == "g mis-broadcast" and d.value == how and f"torch's gradient for g {how}" in d.text


# ------------------------------------------------------------------------------ masks and zeros


def test_wrong_exactly_at_a_kink_with_the_count():
    """2 at a ReLU's 0 lies outside its one-sided derivatives 0 and 1 (any value between them is a
    convention's, ``tests/test_kinks.py``): a mistake, confined to the kinks."""
    x = np.random.default_rng(5).standard_normal((4, 5))
    x[0, 1] = x[2, 3] = x[3, 0] = 0.0
    assert check_layer(ReLU(at_zero=1.0), torch.nn.ReLU(), x).ok
    d = the_diagnosis(check_layer(ReLU(at_zero=2.0), torch.nn.ReLU(), x), "input x")
    assert d.kind == "mask" and d.value == 3
    assert "exactly the 3 of 20 elements where input x is 0 (a kink); torch's is 0 there and manual is not" in d.text


def test_wrong_only_on_a_row_or_a_column():
    d = the_diagnosis(affine(grad("W", lambda g, dy: g * np.array([[3.0], [1.0], [1.0]]))), "parameter W")
    assert d.kind == "mask" and d.value == 6 and "row 0 (all of its 6 elements)" in d.text

    def last_column_doubled(layer, dy, dx):
        dx[:, -1] *= 2
        return dx

    d = the_diagnosis(affine(last_column_doubled), "input x")
    assert d.kind == "mask" and d.value == 4 and "column 5 (all of its 4 elements)" in d.text


def test_zero_where_it_should_not_be():
    d = the_diagnosis(affine(grad("W", lambda g, dy: np.zeros_like(g))), "parameter W")
    assert d.kind == "zero" and d.value == 18 and "zero everywhere (18 elements)" in d.text
    x = 1.5 * np.random.default_rng(6).standard_normal((4, 4))
    d = the_diagnosis(tanh(lambda layer, dy: dy * layer.local() * (np.abs(layer.x) <= 1), x), "input x")
    far = int(np.sum(np.abs(x) > 1))
    assert d.kind == "zero" and d.value == far
    assert f"zero at {far} of 16 elements where torch's gradient is not" in d.text


def test_non_zero_where_the_reference_is_zero():
    x = 1.5 * np.random.default_rng(7).standard_normal((4, 5))
    report = check_layer(Clip(lower=False), lambda x: torch.clamp(x, -1, 1), x)
    below = int(np.sum(x <= -1))
    d = the_diagnosis(report, "input x")
    assert d.kind == "non-zero" and d.value == below
    assert f"non-zero at {below} of 20 elements where torch's gradient is 0" in d.text


def test_non_finite_values_are_counted():
    def nan_row(layer, dy, dx):
        dx[1] = np.nan
        return dx

    d = the_diagnosis(affine(nan_row), "input x")
    assert d.kind == "non-finite" and d.value == 6


# ------------------------------------------------------------------------------ float32 arithmetic in a float64 check


def softplus_vjp(g, x):
    return g / (1 + np.exp(-x))


def in_float32(vjp):
    """`vjp` computed in float32 and cast back, as a `.float()` ... `.to(x.dtype)` backward is."""
    return lambda g, x: np.asarray(vjp(g.astype(np.float32), x.astype(np.float32))).astype(np.float64)


softplus32_vjp = in_float32(softplus_vjp)


def test_a_right_derivative_computed_in_float32_is_named_float32_precision_not_a_mistake():
    x = np.random.default_rng(5).standard_normal((4, 5))
    report = check_function(softplus, softplus32_vjp, F.softplus, x)
    d = the_diagnosis(report, "input x")  # still a failure: the gradient is not float64's
    assert d.kind == "float32 precision" and 1e-9 < d.value < 1e-6
    assert "holds float32 numbers only and agrees with torch within float32's bounds" in d.text
    assert "compute in float64, or check in float32" in d.text


def test_a_torch_backward_cast_back_from_float32_is_named_float32_precision():
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = check_function(F.softplus, lambda g, x: (g.float() * torch.sigmoid(x.float())).to(x.dtype), F.softplus, x)
    assert the_diagnosis(report, "input x").kind == "float32 precision"


@pytest.mark.parametrize("wrong, kind, says", [
    # a mistake made in float32 arithmetic is that mistake: the patterns fit within float32's bounds
    (in_float32(lambda g, x: 2 * softplus_vjp(g, x)), "constant factor", "a constant factor ×2"),
    (in_float32(lambda g, x: np.float32(1.001) * softplus_vjp(g, x)), "constant factor", "×1.001"),
    (in_float32(lambda g, x: g * sigmoid(x) ** 2), "no simple pattern", "no simple pattern"),
    # within float32's bounds a mistake cannot be told from its rounding, and the text says so (an ε)
    (in_float32(lambda g, x: np.float32(1 + 1e-6) * softplus_vjp(g, x)), "float32 precision", "an ε"),
])
def test_float32_arithmetic_does_not_hide_a_mistake(wrong, kind, says):
    x = np.random.default_rng(5).standard_normal((4, 5))
    d = the_diagnosis(check_function(softplus, wrong, F.softplus, x), "input x")
    assert d.kind == kind and says in d.text
    assert ("within float32's bounds, not float64's" in d.text) == (kind != "no simple pattern")


def test_a_mistake_in_float64_arithmetic_is_not_said_to_run_in_float32():
    x = np.random.default_rng(5).standard_normal((4, 5))
    d = the_diagnosis(check_function(softplus, lambda g, x: 2 * softplus_vjp(g, x), F.softplus, x), "input x")
    assert d.kind == "constant factor" and "float32" not in d.text


# ------------------------------------------------------------------------------ no false diagnosis


def test_a_right_derivation_gets_no_diagnosis():
    from manual.layers import Linear, ReLU as ProjectReLU, Sigmoid

    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6))
    for layer, module in [(Affine(6, 3, rng), torch.nn.Linear(6, 3)), (Tanh(), torch.nn.Tanh()),
                          (Linear.init(6, 3, rng), torch.nn.Linear(6, 3)), (Sigmoid(), torch.nn.Sigmoid()),
                          (ProjectReLU(), torch.nn.ReLU())]:
        report = check_layer(layer, module, x)
        assert report.ok and report.diagnoses == {} and not any(isinstance(f, Diagnosis) for f in report.findings)


def softplus(x):
    return np.logaddexp(0, x)


def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


@pytest.mark.parametrize("wrong", [
    lambda layer, dy: dy * (1 - 1.01 * layer.y**2),  # slightly wrong: no pattern, not a factor
    lambda layer, dy: dy * (1 - layer.y**3),
])
def test_a_wrong_derivative_that_fits_no_pattern_gets_no_simple_pattern(wrong):
    d = the_diagnosis(tanh(wrong), "input x")
    assert d.kind == "no simple pattern" and d.value is None
    assert d.text.startswith("no simple pattern: manual differs from torch at 16 of 16 elements; the best constant "
                             "factor")


def test_sigmoid_squared_for_softplus_fits_no_pattern():
    x = np.random.default_rng(9).standard_normal((4, 5))
    report = check_function(softplus, lambda g, x: g * sigmoid(x) ** 2, F.softplus, x)
    assert the_diagnosis(report, "input x").kind == "no simple pattern"


def test_no_diagnosis_where_torch_is_the_suspect_or_the_outputs_differ():
    above = 20 + np.random.default_rng(3).random((6, 10))  # torch's softplus is the identity there
    report = check_function(softplus, lambda g, x: g * sigmoid(x), F.softplus, above)
    assert not report.ok and report.suspects["input x"].side == "counterpart", report.findings
    assert report.diagnoses == {}
    x = np.random.default_rng(4).standard_normal((4, 5))
    report = check_function(softplus, lambda g, x: g * sigmoid(x), torch.tanh, x)
    assert not report.ok and report.diagnoses == {}


def test_a_right_tensor_beside_a_wrong_one_gets_none():
    report = affine(grad("W", lambda g, dy: 2 * g))
    assert set(report.diagnoses) == {"parameter W"}  # input x and parameter b pass


def test_the_diagnosis_is_part_of_the_failure_message_and_of_the_report():
    report = affine(lambda layer, dy, dx: -dx)
    line = text.line(report.diagnoses["input x"])
    assert line in str(report)
    with pytest.raises(DerivationError) as e:
        report.assert_ok()
    assert line in str(e.value)


def test_a_pattern_of_one_element_is_no_pattern():
    """A 0-d input: m = c·r holds for any c, which proves nothing about a constant factor."""
    report = check_function(np.sin, lambda g, x: g * np.sin(x), torch.sin, np.float64(0.7))
    assert the_diagnosis(report, "input x").kind == "no simple pattern"


def test_a_pattern_that_holds_for_the_checks_g_alone_is_not_claimed():
    """A VJP that doubles the right result for the check's g (and 2g) but gives another wrong one
    for a second g: a factor 2 of one g is a coincidence, not a constant factor."""
    seen = {}

    def vjp(g, x):
        first = seen.setdefault("g", g.copy())
        if np.array_equal(g, first) or np.array_equal(g, 2 * first):
            return 2 * g * np.cos(x)
        return g * np.cos(x) * (1 + x**2)

    x = np.random.default_rng(10).standard_normal((3, 4))
    d = the_diagnosis(check_function(np.sin, vjp, torch.sin, x), "input x")
    assert d.kind != "constant factor" and seen
