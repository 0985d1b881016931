"""The referee's own tests see a mistake made in the referee: the finite differences'
formula and its order, the diagnosis held to the check's bounds on a near miss, the note for writes
into integer inputs, and each measure on its own (an error only it can see, just above the
resolution fails, just below passes); then the core pinned where `make mutate` found its tests
blind: fd's rounding bound, the bounds of products and sums in the precision they were computed
in, the Agreement of non-finite gradients, the float64 copy of layers holding tensors and dtypes.

The resolutions are those docs/referee.md promises to a user, not read from the constants that
implement them: a bound loosened (or tightened) in compare/check/tolerances.py fails here."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compare import check_function, check_layer
from compare.check import fd, tolerances
from compare.check.copies import float64_copy
from compare.check.findings import Note
from compare.check.measure import measure, param_message
from test_check_protocol import Embedding  # y[b, j] = W[ids[b, j]]

# What docs/referee.md promises: "1e-10 between analytic witnesses in float64, 1e-6 against fd and dir".
ANALYTIC64 = 1e-10
NUMERIC = 1e-6
PROMISE = "1e-10 between analytic witnesses in float64, 1e-6 against fd and dir"
ABOVE, BELOW = 2.0, 0.5  # an injected error, in units of the resolution


def test_the_resolutions_tested_here_are_those_the_docs_promise():
    text = " ".join((Path(__file__).resolve().parent.parent / "docs" / "referee.md").read_text().split())
    assert PROMISE in text


# ------------------------------------------------------------------------------ fd's formula and order
# t and h are dyadic, so t ± h and their cubes are exact in float64: the central difference of t³
# is exactly 3t² + h² (truncation h²·f‴/6, f‴ = 6), with no rounding to hide a wrong formula.

T = np.array([0.5, -1.25, 2.0, 0.0])
H = 2.0**-7


def cube_differences(h):
    t = T.copy()
    return fd.coordinates(t, np.arange(t.size), lambda: t**3, np.ones(t.size), h)


def test_the_coordinate_difference_is_central_its_truncation_exactly_h_squared_for_a_cube():
    for h in (H, 2 * H, 4 * H):
        values, rounding = cube_differences(h)
        assert np.array_equal(values, 3 * T**2 + h**2)  # a one-sided difference adds 3t·h (and ×2 for t = 0)
        assert np.all(rounding >= 0)


def test_the_truncation_estimate_from_2h_is_the_truncation_of_the_step_h():
    """Second order: the error grows 4× from h to 2h, so |D(h) − D(2h)|/3 is D(h)'s error, h²."""
    (at_h, _), (at_2h, _) = cube_differences(H), cube_differences(2 * H)
    assert np.array_equal(at_2h - 3 * T**2, 4 * (at_h - 3 * T**2))
    assert np.array_equal(fd.truncation(at_h, at_2h), np.full(T.size, H**2))


def test_the_directional_difference_is_central_its_truncation_exactly_h_squared_times_the_sum_of_u_cubed():
    t, u = T.copy(), np.array([1.0, -0.5, 0.25, 2.0])
    value, rounding = fd.direction(t, u, lambda: t**3, np.ones(t.size), H)
    assert value == float(np.dot(3 * T**2, u) + H**2 * np.sum(u**3))
    assert np.array_equal(t, T) and rounding >= 0  # t restored


def test_the_differences_restore_the_tensor_and_take_a_non_contiguous_one():
    t = np.asfortranarray(np.arange(6.0).reshape(2, 3) / 4)
    before = t.copy()
    values, _ = fd.coordinates(t, np.arange(6), lambda: np.ravel(t**3), np.ones(6), H)
    assert np.array_equal(t, before)
    assert np.array_equal(values, 3 * before.ravel() ** 2 + H**2)  # row-major order of the coordinates


def test_a_right_smooth_check_needs_no_truncation_allowance():
    """Central differences of a smooth function are within FINITE_DIFF_REL at the first step: no
    second look (a first-order formula would need one, and say so)."""
    x = np.random.default_rng(0).standard_normal((6, 5))
    report = check_function(np.sin, lambda g, x: g * np.cos(x), torch.sin, x)
    assert report.ok, str(report)
    assert not any(n.kind == "truncation" for n in report.notes), report.notes


def test_a_derivative_cancelling_to_almost_nothing_needs_the_truncation_allowance_and_passes():
    """x³ near 0: the derivative 3x² ~ 3e-8 is smaller than fd's truncation h² = 1e-8 relative to
    it; a right VJP passes only because the second look allows for the truncation."""
    x = np.array([1e-4, -2e-4, 1.5e-4])
    report = check_function(lambda x: x**3, lambda g, x: 3 * g * x**2, lambda t: t**3, x)
    assert report.ok, str(report)
    assert any(n.kind == "truncation" and n.text.startswith("input x:") for n in report.notes), report.notes
    wrong = check_function(lambda x: x**3, lambda g, x: 2 * g * x**2, lambda t: t**3, x)
    assert not wrong.ok


# ------------------------------------------------------------------------------ the diagnosis's bounds


def _tanh_vjp(g, x):
    return g * (1 - np.tanh(x) ** 2)


def doubled_with_noise(size):
    """A VJP ×2 plus noise of `size` times the comparison's bound, relative to its norm (fixed noise
    direction, whatever g)."""
    xi = np.random.default_rng(7).standard_normal((8, 6))

    def vjp(g, x):
        m = 2 * _tanh_vjp(g, x)
        return m + size * ANALYTIC64 * np.linalg.norm(m) * xi / np.linalg.norm(xi)

    return vjp


def diagnose_noisy_factor(size):
    x = np.random.default_rng(3).standard_normal((8, 6))
    report = check_function(np.tanh, doubled_with_noise(size), torch.tanh, x)
    assert not report.ok
    return report.diagnoses["input x"]


def test_a_factor_within_the_bounds_is_named():
    found = diagnose_noisy_factor(BELOW / 5)
    assert found.kind == "constant factor" and "×2" in found.text, found.text


def test_a_near_miss_just_above_the_bounds_stays_no_simple_pattern():
    """×2 plus noise just above the comparison's bound: a diagnosis that accepted a larger residual
    would name a factor the check cannot vouch for."""
    found = diagnose_noisy_factor(ABOVE)
    assert found.kind == "no simple pattern", found.text


# ------------------------------------------------------------------------------ writes into integer inputs


class SortsIds(Embedding):
    def backward(self, dy):
        dx = super().backward(dy)
        self.ids.sort(axis=-1)  # tidies up the ids in place once done with them
        return dx


class ClipsIds(Embedding):
    def forward(self, ids):
        np.clip(ids, 0, 3, out=ids)  # an out-of-range id becomes the last row: in place
        return super().forward(ids)


IDS = np.array([[1, 3, 1], [4, 0, 3]])


def test_a_backward_writing_into_integer_ids_is_noted_and_judged_right():
    report = check_layer(SortsIds(5, 4, np.random.default_rng(0)), torch.nn.Embedding(5, 4), IDS.copy())
    assert report.ok, str(report)
    assert Note("wrote", "backward wrote into input ids") in report.notes, report.notes


def test_a_forward_writing_into_integer_ids_is_noted():
    ids = IDS.copy()
    report = check_layer(ClipsIds(5, 4, np.random.default_rng(0)), lambda ids, weight: weight[ids.clamp(0, 3)], ids)
    assert report.ok, str(report)
    assert Note("wrote", "forward wrote into input ids") in report.notes, report.notes
    assert np.array_equal(ids, IDS)  # the caller's ids untouched


def test_a_vjp_writing_into_an_integer_input_is_noted():
    x, ids = np.random.default_rng(0).standard_normal(5), np.array([4, 0, 2])

    def vjp(g, x, ids):
        dx = np.zeros_like(x)
        np.add.at(dx, ids, g)
        ids[:] = 0
        return dx, None

    report = check_function(lambda x, ids: x[ids], vjp, lambda x, ids: x[ids], x, ids)
    assert report.ok, str(report)
    assert Note("wrote", "vjp wrote into input ids") in report.notes, report.notes
    clean = check_function(lambda x, ids: x[ids], lambda g, x, ids: (np.bincount(ids, g, 5), None),
                           lambda x, ids: x[ids], x, ids)
    assert not any(n.kind == "wrote" for n in clean.notes), clean.notes


# ------------------------------------------------------------------------------ each measure alone
# f(x) = Σ w·x (one output, so g is one number and every error below scales with it; linear, so
# finite differences carry no truncation). The hand-written VJP, or both analytic witnesses (a
# counterpart whose gradient carries the same error: y + Σ d·t − Σ d·t.detach() has y's value),
# get an error d that only one measure can see.


def linear_check(w, manual_error, shared_error=None, **options):
    shared = np.zeros_like(w) if shared_error is None else shared_error
    d = torch.from_numpy(shared)

    def torch_fn(t):
        return (torch.from_numpy(w) * t).sum() + ((d * t).sum() - (d * t.detach()).sum())

    return check_function(lambda x: np.asarray(np.dot(w, x)), lambda g, x: g * (w + shared + manual_error),
                          torch_fn, np.zeros_like(w), **options)


def failing(report):
    return {((c.a, c.b), tuple(c.agreement.failed)) for c in report.failures}


def peaked(n=10_000):
    """One element far above the others: the norm is the peak."""
    w = np.random.default_rng(1).uniform(1e-4, 2e-4, n)
    w[17] = 1.0
    return w


def flat(n=2_000):
    """Elements of one size: the norm is √n times the peak."""
    return np.random.default_rng(2).uniform(0.5, 1.0, n)


@pytest.mark.parametrize("size", [ABOVE, BELOW])
def test_the_relative_measure_alone_sees_an_error_spread_over_every_element(size):
    """‖d‖ = size × the resolution of ‖w‖, spread evenly: the elementwise measure sees 1/√n of it."""
    w = peaked()
    d = np.full(w.size, size * ANALYTIC64 * np.linalg.norm(w) / np.sqrt(w.size))
    report = linear_check(w, d, fd_budget=0)
    expected = {(("manual", "torch"), ("relative error",))} if size > 1 else set()
    assert failing(report) == expected, str(report)


@pytest.mark.parametrize("size", [ABOVE, BELOW])
def test_the_elementwise_measure_alone_sees_one_wrong_element(size):
    """d at the greatest element, size × the resolution of it: the relative measure sees 1/√n of it."""
    w = flat()
    d = np.zeros_like(w)
    d[np.argmax(w)] = size * ANALYTIC64 * w.max()
    report = linear_check(w, d, fd_budget=0)
    expected = {(("manual", "torch"), ("elementwise error",))} if size > 1 else set()
    assert failing(report) == expected, str(report)


@pytest.mark.parametrize("size", [ABOVE, BELOW])
def test_the_finite_differences_alone_see_a_wrong_coordinate_both_analytic_witnesses_share(size):
    """Manual and torch agree (the same error), the direction dilutes one coordinate; fd, taking
    every coordinate, sees it."""
    w = flat()
    d = np.zeros_like(w)
    d[np.argmax(w)] = size * NUMERIC * w.max()
    report = linear_check(w, np.zeros_like(w), d)
    assert Note("coverage", "fd coordinates: input x 2000/2000") in report.notes
    expected = {(("manual", "fd"), ("elementwise error",)), (("torch", "fd"), ("elementwise error",))}
    assert failing(report) == (expected if size > 1 else set()), str(report)


@pytest.mark.parametrize("size", [ABOVE, BELOW])
def test_the_directional_difference_alone_sees_a_scaled_gradient_both_analytic_witnesses_share(size):
    """No per-coordinate differences (a tensor too large for them: fd_budget=0): dir stands in and
    sees both witnesses' gradient scaled by 1 + size × the resolution."""
    w = flat()
    report = linear_check(w, np.zeros_like(w), size * NUMERIC * w, fd_budget=0)
    assert any(n.kind == "coverage" and n.text.startswith("fd coordinates: input x -/2000") for n in report.notes)
    both = ("relative error", "elementwise error")  # of one number, the two measures are one
    expected = {(("manual", "dir"), both), (("torch", "dir"), both)}
    assert failing(report) == (expected if size > 1 else set()), str(report)


# ------------------------------------------------------------------------------ the core, unit by unit

EPS64 = float(np.finfo(np.float64).eps)
U32, U64 = 2.0**-24, 2.0**-53
TINY32 = float(np.finfo(np.float32).tiny)


def gamma(k, u):
    return k * u / (1 - k * u)


# ------------------------------------------------------------------------------ fd's rounding bound


def test_the_rounding_bound_counts_the_magnitudes_of_the_outputs_the_step_reaches():
    """eps·Σ|g|(|f₊| + |f₋|)/2h over the outputs that moved: an output the step does not reach adds
    nothing, however large."""
    t, h = np.array([0.75]), 2.0**-7
    g = np.array([2.0, -3.0])

    def evaluate():
        return np.array([t[0] ** 3 - 5.0, 1e6])  # the second output ignores t

    _, rounding = fd.coordinates(t, np.arange(1), evaluate, g, h)
    up, down = (0.75 + h) ** 3 - 5.0, (0.75 - h) ** 3 - 5.0
    assert rounding[0] == EPS64 * 2.0 * (abs(up) + abs(down)) / (2 * h)


def test_differences_of_a_function_that_overflows_give_inf_or_nan_without_a_warning():
    """The referee measures what it got (a non-finite difference fails its comparison); the
    differences themselves raise no floating-point warning (which pytest turns into an error)."""
    t = np.array([1.0])
    values, rounding = fd.coordinates(t, np.arange(1), lambda: np.array([np.inf if t[0] > 1 else -np.inf]),
                                      np.array([1.0]), 1e-4)
    assert np.isinf(values[0]) and not np.isfinite(rounding[0])
    both_inf = fd.coordinates(t, np.arange(1), lambda: np.array([np.inf]), np.array([1.0]), 1e-4)[0]
    assert np.isnan(both_inf[0])


# ------------------------------------------------------------------------------ products and sums


def test_the_bound_of_a_product_is_in_the_lower_precision_of_its_operands():
    a = np.array([[1.0, -2.0, 0.5]])
    b = np.array([[4.0], [1.0], [-2.0]])
    magnitude = 1 * 4 + 2 * 1 + 0.5 * 2
    expect32 = 2 * gamma(3, U32) * magnitude + 3 * TINY32
    for a_, b_ in ((a.astype(np.float32), b.astype(np.float32)), (a, b.astype(np.float32)),
                   (a.astype(np.float32), b)):
        assert tolerances.matmul_bound(a_, b_)[0, 0] == pytest.approx(expect32, rel=1e-12, abs=0)
    assert tolerances.matmul_bound(a, b)[0, 0] == pytest.approx(2 * gamma(3, U64) * magnitude, rel=1e-12, abs=0)
    assert tolerances.matmul_bound(a, b, np.float32)[0, 0] == pytest.approx(expect32, rel=1e-12, abs=0)  # as asked
    assert tolerances.matmul_bound(a, b, factor=1)[0, 0] == pytest.approx(gamma(3, U64) * magnitude, rel=1e-12, abs=0)


def test_a_product_of_integers_is_bounded_in_float64():
    a, b = np.array([[1, 2]]), np.array([[3], [4]])
    assert tolerances.matmul_bound(a, b)[0, 0] == pytest.approx(2 * gamma(2, U64) * 11, rel=1e-12, abs=0)


def test_zero_operands_leave_the_underflow_allowance_of_their_precision():
    zeros32 = np.zeros((2, 5), np.float32)
    assert np.all(tolerances.matmul_bound(zeros32, zeros32.T) == 5 * TINY32)
    assert np.all(tolerances.sum_bound(zeros32, axis=1) == 5 * TINY32)
    assert tolerances.sum_bound(np.zeros(4)) == 4 * float(np.finfo(np.float64).tiny)


def test_the_bound_of_a_sum_counts_k_minus_1_roundings_in_the_precision_asked():
    x = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]])
    assert tolerances.sum_bound(x, axis=1) == pytest.approx(2 * gamma(2, U64) * np.array([6.0, 1.5]), rel=1e-12, abs=0)
    assert tolerances.sum_bound(x, axis=1, dtype=np.float32) == pytest.approx(
        2 * gamma(2, U32) * np.array([6.0, 1.5]) + 3 * TINY32, rel=1e-12, abs=0)
    assert tolerances.sum_bound(x.astype(np.float32)) == pytest.approx(2 * gamma(5, U32) * 7.5 + 6 * TINY32,
                                                                       rel=1e-12, abs=0)


def test_the_bound_of_a_linear_layer_takes_each_operand_and_the_bias_in_float64():
    x = np.array([[1.0, -2.0]])
    W = np.array([[3.0, 0.5], [-1.0, 1.0]])
    b = np.array([0.25, -4.0])
    magnitude = np.abs(x) @ np.abs(W).T + np.abs(b)  # [[4.25, 7.0]]
    assert tolerances.linear_bound(x, W, b) == pytest.approx(2 * gamma(3, U64) * magnitude, rel=1e-12, abs=0)
    expect32 = 2 * gamma(3, U32) * magnitude + 3 * TINY32
    f32 = np.float32
    for args in ((x.astype(f32), W, b), (x, W.astype(f32), b), (x, W, b.astype(f32))):
        assert tolerances.linear_bound(*args) == pytest.approx(expect32, rel=1e-12, abs=0)
    assert tolerances.linear_bound(x, W, b, dtype=f32) == pytest.approx(expect32, rel=1e-12, abs=0)
    assert tolerances.linear_bound(x, W, b, factor=1) == pytest.approx(gamma(3, U64) * magnitude, rel=1e-12, abs=0)
    # float32 values that float32 cannot hold: |x| summed in float64 (1 + 2^-30 is no float32)
    fine = np.array([[1 + 2.0**-30, 0.0]])
    assert tolerances.linear_bound(fine, np.eye(2), np.zeros(2), np.float64)[0, 0] > \
        tolerances.linear_bound(np.array([[1.0, 0.0]]), np.eye(2), np.zeros(2), np.float64)[0, 0]


def test_no_rounding_bound_past_k_u_of_one_names_the_precision():
    with pytest.raises(ValueError, match="2e\\+07 terms in float32|20000000 terms in float32"):
        tolerances.gamma(20_000_000, np.float32)


# ------------------------------------------------------------------------------ non-finite gradients


def test_a_non_finite_gradient_is_measured_at_its_first_non_finite_element():
    a = np.array([[1.0, 2.0], [np.nan, 4.0]])
    b = np.array([[1.0, 2.0], [3.0, np.inf]])
    agr = measure(a, b, 3, "W", 1e-10, 1e-9)
    assert (agr.layer, agr.param, agr.shape, agr.worst_index) == (3, "W", (2, 2), (1, 0))
    assert math.isnan(agr.a_value) and agr.b_value == 3.0
    assert agr.rel_err == agr.max_abs == agr.elem_rel == agr.peak == math.inf
    assert (agr.allowed, agr.elem_allowed, agr.note) == (1e-10, 1e-9, "")
    assert math.isnan(agr.cosine) and math.isnan(agr.norm_a) and math.isinf(agr.norm_b)
    assert agr.failed == ["relative error", "elementwise error"] and not agr.ok
    finite_a = measure(np.array([1.0, 2.0]), np.array([np.inf, 2.0]), 0, "b", 1e-10)
    assert finite_a.norm_a == pytest.approx(math.sqrt(5), rel=1e-9, abs=0) and finite_a.a_value == 1.0 and finite_a.b_value == math.inf


# ------------------------------------------------------------------------------ the float64 copy


class Kind:
    dtype = np.float32


class Holder:
    """A layer-like object holding torch tensors, dtypes of both libraries and a deep nesting."""

    def __init__(self):
        self.w = torch.ones(3, dtype=torch.float32)
        self.leaf = torch.full((2, 2), 0.5, requires_grad=True)  # a parameter as torch holds it: read through detach()
        self.ids = torch.arange(3)
        self.dtype = np.float32
        self.kept = np.int64
        self.deep = np.ones(2, np.float32)
        for _ in range(30):  # 30 levels down: within the walk's guard of 50
            self.deep = [self.deep]
        self.kind = Kind  # a class is not walked: its class attributes are not the object's
        self.inner = type("Inner", (), {})()
        self.inner.dtype = torch.float32
        self.inner.int_dtype = torch.int64
        self.ints = type("Ints", (), {})()
        self.ints.dtype = np.dtype(np.int64)  # a dtype, but not float32: kept


def test_the_float64_copy_turns_tensors_float32_arrays_and_float_dtypes_into_float64():
    clone = float64_copy(Holder())
    assert isinstance(clone.w, np.ndarray) and clone.w.dtype == np.float64 and clone.w.flags.c_contiguous
    assert isinstance(clone.leaf, np.ndarray) and clone.leaf.dtype == np.float64 and (clone.leaf == 0.5).all()
    assert isinstance(clone.ids, torch.Tensor)  # an integer tensor stays as it is
    assert clone.dtype == np.float64 and clone.inner.dtype == np.float64
    assert clone.kept is np.int64 and clone.inner.int_dtype is torch.int64 and clone.ints.dtype == np.int64
    deepest = clone.deep
    for _ in range(30):
        deepest = deepest[0]
    assert deepest.dtype == np.float64
    assert clone.kind is Kind and Kind.dtype is np.float32  # the class untouched


def test_a_structure_shared_many_times_over_is_walked_once():
    """Each object is visited once: 2^40 paths through 40 levels of shared pairs would never end."""
    node = [np.ones(1, np.float32)]
    for _ in range(40):
        node = [node, node]
    clone = float64_copy(node)
    leaf = clone
    for _ in range(40):
        assert leaf[0] is leaf[1]  # the sharing is kept
        leaf = leaf[0]
    assert leaf[0].dtype == np.float64


def test_a_copy_that_fails_names_the_object_and_why():
    class Unpicklable:
        def __init__(self):
            self.lock = __import__("threading").Lock()

    with pytest.raises(TypeError) as e:
        float64_copy(Unpicklable())
    text = str(e.value)
    assert text.startswith("Unpicklable cannot be copied (copy.deepcopy: TypeError: ")
    assert text.endswith("; the check runs every witness on a copy of it")


# ------------------------------------------------------------------------------ what the app reads


def test_the_noise_floor_of_confident_batches_widens_the_bounds_only_for_small_losses():
    eps32 = float(np.finfo(np.float32).eps)
    assert tolerances.noise_floor(np.float32, 1e-3, 9.0) == pytest.approx(tolerances.NOISE_FACTOR * eps32 * 10 / 1e-3, rel=1e-9, abs=0)
    assert tolerances.noise_floor(np.float32, 1e-3) == pytest.approx(tolerances.NOISE_FACTOR * eps32 / 1e-3, rel=1e-9,
                                                                     abs=0)  # no logit scale given: 0
    assert tolerances.gradient_rel(np.float32, loss=1e-5) == tolerances.noise_floor(np.float32, 1e-5, 0.0)
    assert tolerances.elementwise_rel(np.float32, loss=1e-5) == tolerances.noise_floor(np.float32, 1e-5, 0.0)
    for loss in (0.0, -1.0, math.inf, math.nan):
        assert tolerances.noise_floor(np.float32, loss) == 0.0
    base = tolerances.gradient_rel(np.float32)
    assert tolerances.gradient_rel(np.float32, loss=2.0) == base  # a usual loss: no widening
    small = tolerances.gradient_rel(np.float32, loss=1e-5, logit_scale=9.0)
    assert small == tolerances.noise_floor(np.float32, 1e-5, 9.0) > base
    assert tolerances.elementwise_rel(np.float32, loss=1e-5, logit_scale=9.0) == small
    assert tolerances.gradient_rel(np.float64, base=0.5) == 0.5 and tolerances.elementwise_rel(np.float64, base=0.5) == 0.5


def test_an_agreement_as_a_dict_and_as_the_training_loops_line():
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 5.0]])
    agr = measure(a, b, 2, "W", 1e-10)
    d = agr.to_dict()
    assert d["shape"] == [2, 2] and d["worst_index"] == [1, 1] and d["ok"] is False
    assert (d["layer"], d["param"], d["a_value"], d["b_value"], d["max_abs"]) == (2, "W", 4.0, 5.0, 1.0)
    line = param_message(agr, ("manual", "torch"), (a, b))
    assert line.startswith("layer 2 W (2, 2): manual vs torch: ") and "1 of 4 elements differ" in line
    assert "at index (1, 1) (manual 4, torch 5)" in line


# ------------------------------------------------------------------------------ the measures, field by field


def fields(agr) -> tuple:
    """An Agreement as a tuple, NaN as the string "nan" so that tuples compare."""
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in dataclasses.astuple(agr))


def test_arrays_of_other_shapes_or_of_no_elements_are_measured_field_by_field():
    assert fields(measure(np.ones(2), np.ones(3), 4, "W", 0.1, 0.2)) == (
        4, "W", (2,), math.inf, math.inf, (), "nan", "nan", "nan", 0.1, "shapes differ: (2,) vs (3,)", "nan", "nan",
        math.inf, 0.2, "nan")
    assert fields(measure(np.zeros((0, 3)), np.zeros((0, 3)), 4, "W", 0.1, 0.2)) == (
        4, "W", (0, 3), 0.0, 0.0, (), 0.0, 0.0, 1.0, 0.1, "", 0.0, 0.0, 0.0, 0.2, 0.0)
    assert measure(np.ones(2), np.ones(2), 0, "b", 0.3).elem_allowed == 0.3  # the elementwise bound by default


def test_two_arrays_are_measured_field_by_field():
    a, b = np.array([[1.0, 0.0], [0.0, 1e-3]]), np.array([[1.0, 1.0], [0.0, 2e-3]])
    agr = measure(a, b, 1, "W", 0.1, 0.2)
    assert fields(agr)[:11] == (1, "W", (2, 2), pytest.approx(math.sqrt(1 + 1e-6) / math.sqrt(2 + 4e-6), rel=1e-9, abs=0), 1.0, (0, 1),
                                0.0, 1.0, pytest.approx((1 + 2e-6) / math.sqrt((1 + 1e-6) * (2 + 4e-6)), rel=1e-9, abs=0), 0.1, "")
    assert (agr.norm_a, agr.norm_b) == (pytest.approx(math.sqrt(1 + 1e-6), rel=1e-9, abs=0), pytest.approx(math.sqrt(2 + 4e-6), rel=1e-9, abs=0))
    assert (agr.elem_rel, agr.elem_allowed, agr.peak) == (1.0, 0.2, 1.0)
    small = measure(np.array([1e-3]), np.array([2e-3]), 0, "b", 1.0)  # magnitudes below 1 set the scale
    assert small.peak == 2e-3 and small.elem_rel == pytest.approx(0.5, rel=1e-9, abs=0)


def test_the_cosine_is_clamped_to_its_range_and_one_for_two_zero_arrays():
    three = np.ones(3)  # √3·√3 rounds below 3: unclamped, the cosine would leave [-1, 1]
    assert measure(three, three, 0, "x", 1.0).cosine == 1.0
    assert measure(three, -three, 0, "x", 1.0).cosine == -1.0
    assert measure(np.zeros(2), np.zeros(2), 0, "x", 1.0).cosine == 1.0
    assert measure(np.zeros(2), np.ones(2), 0, "x", 1.0).cosine == 0.0
    assert measure(np.ones(2), np.zeros(2), 0, "x", 1.0).cosine == 0.0
    assert measure(np.array([1.0, 0.0]), np.array([1.0, 1.0]), 0, "x", 1.0).cosine == pytest.approx(2**-0.5, rel=1e-9, abs=0)


def test_finite_values_whose_squares_overflow_are_measured_rescaled():
    a, b = np.array([1e200, 1e150]), np.array([1e200, 0.0])  # ‖a‖², ‖b‖² overflow, ‖a − b‖² does not
    agr = measure(a, b, 0, "x", 1.0)
    assert agr.norm_a == pytest.approx(1e200, rel=1e-9, abs=0) and agr.norm_b == pytest.approx(1e200, rel=1e-9, abs=0)
    assert agr.rel_err == pytest.approx(1e-50, rel=1e-9, abs=0)
    both = measure(np.array([1e200, 2e200]), np.array([1e200, 2.2e200]), 0, "x", 1.0)  # every square overflows
    assert both.rel_err == pytest.approx(0.2e200 / math.hypot(1e200, 2.2e200), rel=1e-9, abs=0)
    assert both.norm_a == pytest.approx(math.hypot(1e200, 2e200), rel=1e-9, abs=0)
    one_side = measure(np.array([1.0, 2.0]), np.array([1e200, 1.0]), 0, "x", 1.0)
    assert one_side.rel_err == pytest.approx(1.0, rel=1e-9, abs=0) and one_side.norm_b == pytest.approx(1e200, rel=1e-9, abs=0)
    inf_one_side = measure(np.array([1.0, 2.0]), np.array([np.inf, 2.0]), 0, "b", 1e-10)
    assert inf_one_side.rel_err == math.inf and inf_one_side.worst_index == (0,)


def test_the_sums_are_taken_in_float64_for_float32_arrays():
    from compare.check.measure import one_pass

    tiny = np.array([1.0, 2.0**-13], np.float32)  # 1 + 2^-26: lost in a float32 sum, kept in float64
    aa, bb, dd, k, max_a, max_b, max_d = one_pass(tiny, np.zeros(2, np.float32))
    assert aa == 1 + 2.0**-26 and bb == 0.0 and dd == aa and k == 0 and (max_a, max_b, max_d) == (1.0, 0.0, 1.0)
    assert one_pass(np.zeros(2, np.float32), tiny)[1] == 1 + 2.0**-26


def test_count_differing_counts_beyond_the_elementwise_bound_of_the_greatest_magnitude():
    from compare.check.measure import count_differing

    a, b = np.array([4.0, 0.0, 1.0, 2.0]), np.array([4.0, 1.0, 2.5, 2.0])
    agr = measure(a, b, 0, "x", 1.0, 0.25)  # bound 0.25 × 4 = 1: a difference of exactly 1 is within
    assert count_differing(a, b, agr) == 1
    huge = np.array([1e308, -1e308])
    assert count_differing(huge, -huge, measure(huge, -huge, 0, "x", 1.0, 0.5)) == 2  # inf differences, no warning


def test_finite_difference_bounds_take_the_greater_of_both_sides_and_their_rounding():
    for a, d in (([1.0], [2.0]), ([2.0], [1.0])):
        rel, elem = tolerances.finite_difference_bounds(a, d, [1e-3])
        assert rel == pytest.approx(tolerances.NOISE_FACTOR * 1e-3 / 2, rel=1e-9, abs=0) == elem
    rel, elem = tolerances.finite_difference_bounds([1e-3], [2e-3], [1e-9])  # small derivatives: their own scale
    assert elem == pytest.approx(tolerances.NOISE_FACTOR * 1e-9 / 2e-3, rel=1e-9, abs=0) and rel == pytest.approx(elem, rel=1e-9, abs=0)
    assert tolerances.finite_difference_bounds([1e200], [1e200], [0.0]) == (tolerances.FINITE_DIFF_REL,
                                                                            tolerances.FINITE_DIFF_ELEM)


def test_each_precision_gets_its_own_bounds():
    assert tolerances.gradient_rel(np.float32) == tolerances.FLOAT32_REL
    assert tolerances.gradient_rel(np.float64) == tolerances.FLOAT64_REL
    assert tolerances.elementwise_rel(np.float32) == tolerances.FLOAT32_ELEM
    assert tolerances.elementwise_rel(np.float64) == tolerances.FLOAT64_ELEM


# ------------------------------------------------------------------------------ fd's coordinates


def test_fd_takes_every_coordinate_while_affordable_else_a_sorted_sample_without_repeats_else_none():
    rng = np.random.default_rng(0)
    assert np.array_equal(fd.choose(10, 10, 256, 8, rng), np.arange(10))
    picked = fd.choose(1000, 100, 20, 8, rng)
    assert len(picked) == 20 and np.all(np.diff(picked) > 0) and picked.min() >= 0 and picked.max() < 1000
    assert len(fd.choose(1000, 100, 256, 8, rng)) == 100  # no more than affordable
    nearly_all = fd.choose(30, 29, 256, 8, rng)
    assert len(np.unique(nearly_all)) == 29  # without replacement
    assert len(fd.choose(1000, 8, 256, 8, rng)) == 8  # exactly the least: still sampled
    assert fd.choose(1000, 7, 256, 8, rng) is None


def test_a_comparison_becomes_a_failure_with_its_measures_greatest_difference_and_count():
    from compare.check.findings import Greatest, Measure
    from compare.check.measure import failure, message
    from compare.check.text import one_line

    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.5])
    first = measure(a, b, 0, "x", 1.0)
    at_bounds = measure(a, b, 0, "x", first.rel_err, first.elem_rel)  # exactly at both bounds: within
    f = failure(at_bounds, "input x", ("manual", "torch"))
    assert (f.tensor, f.shape, f.witnesses, f.what, f.differ, f.compared) == ("input x", (2,), ("manual", "torch"),
                                                                              "elements", None, 1)
    assert f.measures == (Measure("relative error", first.rel_err, first.rel_err, True),
                          Measure("elementwise error", first.elem_rel, first.elem_rel, True))
    assert f.greatest == Greatest((1,), 2.0, 2.5, 0.5) and f.problem == ""
    tight = measure(a, b, 0, "x", 1e-3)
    g = failure(tight, "input x", ("manual", "fd"), (1, 2), "coordinates", (9,), (7,))
    assert (g.shape, g.greatest.index, g.differ, g.compared, g.what) == ((9,), (7,), 1, 2, "coordinates")
    assert [m.ok for m in g.measures] == [False, False]
    along = failure(tight, "input x", ("manual", "dir"), what="direction")
    assert along.measures == (Measure("relative error", tight.rel_err, 1e-3, False),)
    other = failure(measure(np.ones(2), np.ones(3), 0, "x", 1.0), "input x")
    assert other.greatest is None and other.problem == "shapes differ: (2,) vs (3,)"
    assert message(tight, "input x", ("manual", "fd"), (1, 2), "coordinates", (9,), (7,)) == one_line(g)
    assert "layer 0 x (2,): manual vs torch" in param_message(tight) and "differ by more" not in param_message(tight)
