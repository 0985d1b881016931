"""compare/agreement.py's one-pass kernel and the elementwise measure: every figure against its
definition (computed separately in float64), on the sizes and layouts the checks meet, and the
messages that say which measure failed."""

import math

import numpy as np
import pytest

from compare import agreement
from compare.check import measure as measure_module
from compare.agreement import measure
from compare.tolerances import gamma, unit_roundoff

RNG = np.random.default_rng(13)
U64 = unit_roundoff(np.float64)


def definitions(a, b):
    """Σa², Σb², Σ(a−b)², first index of max|a−b|, max|a|, max|b|, max|a−b|, from NumPy in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    d = a - b
    return a @ a, b @ b, d @ d, int(np.abs(d).argmax()), np.abs(a).max(), np.abs(b).max(), np.abs(d).max()


def sums_close(got, want, n):
    """Two float64 sums of n non-negative terms, each within γ_n of the exact sum (any order)."""
    return abs(got - want) <= 2 * gamma(n, np.float64) * want


@pytest.mark.parametrize("n", [1, 7, agreement.BLOCK - 1, agreement.BLOCK, agreement.BLOCK + 1,
                               3 * agreement.BLOCK + 5, 256 * 784])
@pytest.mark.parametrize("dtypes", [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64)])
def test_one_pass_gives_the_definitions(n, dtypes):
    a = RNG.standard_normal(n).astype(dtypes[0])
    b = (a + 1e-3 * RNG.standard_normal(n)).astype(dtypes[1])
    aa, bb, dd, k, max_a, max_b, max_d = agreement._one_pass(a, b)
    want = definitions(a, b)
    for got, exact in zip((aa, bb, dd), want[:3]):
        assert sums_close(got, exact, n), (got, exact)
    # the maxima and the index are exact: no rounding in a comparison or in |x|
    assert (k, max_a, max_b) == want[3:6]
    assert max_d == want[6]  # a − b of two floats widened to float64 is rounded once, as NumPy does


def test_the_index_is_the_first_of_equal_greatest_differences_in_any_block():
    n = 5 * agreement.BLOCK
    a, b = np.zeros(n), np.zeros(n)
    for i in (3 * agreement.BLOCK + 17, agreement.BLOCK + 2, 4 * agreement.BLOCK - 1):
        a[i] = 0.5
    b[agreement.BLOCK + 2] = 1.0  # ties in magnitude with sign: |0.5 − 1| = |0.5 − 0|
    assert agreement._one_pass(a, b)[3] == agreement.BLOCK + 2
    assert agreement._one_pass(np.zeros(n), np.zeros(n))[3] == 0  # no difference: index 0, as argmax


def test_measure_matches_the_definitions_for_strided_and_transposed_views():
    base = RNG.standard_normal((256, 784))
    other = base + 1e-9 * RNG.standard_normal(base.shape)
    for a, b in [(base.T, other.T), (base[::3], other[::3]), (base[:, 5], other[:, 5])]:
        agr = measure(a, b, 1, "W", 1.0)
        aa, bb, dd, k, max_a, max_b, max_d = definitions(a, b)
        assert agr.worst_index == np.unravel_index(k, a.shape)
        assert (agr.a_value, agr.b_value) == (a[agr.worst_index], b[agr.worst_index])
        assert agr.peak == max(max_a, max_b) and agr.max_abs == max_d
        assert agr.elem_rel == max_d / max(max_a, max_b)
        # ‖·‖ from sums within γ_n; the square root halves the relative error, the division adds one rounding
        rel = math.sqrt(dd) / math.sqrt(max(aa, bb))
        assert abs(agr.rel_err - rel) <= (2 * gamma(a.size, np.float64) + 4 * U64) * rel


def test_the_elementwise_measure_sees_one_element_the_relative_error_dilutes():
    """One element of a 200,704-element gradient off by 1e-8 of the greatest entry: the relative
    error (2-norm) is ~1e-10, below a 1e-9 bound; the elementwise error is 1e-8."""
    g = RNG.standard_normal((256, 784)) * 1e-2
    wrong = g.copy()
    k = np.unravel_index(np.abs(g).argmin(), g.shape)
    wrong[k] += 1e-8 * np.abs(g).max()
    result = measure(wrong, g, 1, "W", 1e-9, 1e-9)
    assert result.rel_err < 1e-9 < result.elem_rel
    assert result.elem_rel == pytest.approx(1e-8, rel=1e-6)
    assert result.failed == ["elementwise error"] and result.worst_index == k


def test_zero_empty_and_equal_arrays():
    z = measure(np.zeros((3, 4)), np.zeros((3, 4)), 1, "W", 1e-10)
    assert z.ok and (z.rel_err, z.elem_rel, z.peak, z.cosine) == (0.0, 0.0, 0.0, 1.0)
    e = measure(np.zeros((0, 4)), np.zeros((0, 4)), 1, "W", 1e-10)
    assert e.ok and e.elem_rel == 0.0
    a = RNG.standard_normal(100)
    same = measure(a, a.copy(), 1, "b", 0.0, 0.0)  # equal arrays pass even a zero bound
    assert same.ok and same.elem_rel == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_fail_both_measures_at_the_first_such_index(bad):
    a = RNG.standard_normal(3000)
    b = a.copy()
    a[2100], b[1500] = bad, bad  # b's comes first in flat order
    agr = measure(a, b, 2, "b", 1.0, 1.0)
    assert not agr.ok and agr.failed == ["relative error", "elementwise error"]
    assert agr.worst_index == (1500,) and math.isinf(agr.elem_rel)
    assert "non-finite value at index (1500,)" in agreement.param_message(agr)


def test_squares_that_overflow_are_measured_on_scaled_copies():
    a = np.full(5000, 1e200)
    b = a.copy()
    b[123] *= 1 + 1e-6
    agr = measure(a, b, 1, "W", 1e-10, 1e-10)
    assert math.isfinite(agr.rel_err) and agr.worst_index == (123,)
    assert agr.elem_rel == pytest.approx(1e-6 / (1 + 1e-6), rel=1e-9)
    assert agr.rel_err == pytest.approx(1e-6 / math.sqrt(5000), rel=1e-6)
    assert agr.norm_a == pytest.approx(1e200 * math.sqrt(5000), rel=1e-12)


def test_integer_arrays_are_compared_as_floats():
    agr = measure(np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3) + [[0, 0, 0], [0, 0, 1]], 1, "W", 1e-3)
    assert agr.worst_index == (1, 2) and agr.elem_rel == pytest.approx(1 / 6)


def test_each_measure_has_its_own_bound_and_the_message_names_the_failing_one():
    g = RNG.standard_normal((40, 30))
    spread = g + 1e-6 * np.linalg.norm(g) / math.sqrt(g.size) * np.sign(RNG.standard_normal(g.shape))
    only_rel = measure(spread, g, 3, "W", 1e-7, 1e-5)
    assert only_rel.failed == ["relative error"]
    text = agreement.param_message(only_rel, arrays=(spread, g))
    assert "layer 3 W (40, 30): manual vs torch: relative error" in text and "> allowed 1e-07" in text
    assert "elementwise error (greatest difference / greatest magnitude)" in text and "<= allowed 1e-05" in text
    assert f"0 of {g.size} elements differ by more than 1e-05 of the greatest magnitude" in text

    local = g.copy()
    local[7, 11] += 1e-4 * np.abs(g).max()
    only_elem = measure(local, g, 3, "W", 1e-4, 1e-5)  # ‖d‖/‖g‖ ≈ 1e-4·3/√1200 ≈ 1e-5
    assert only_elem.failed == ["elementwise error"]
    text = agreement.param_message(only_elem, ("manual", "torch"), arrays=(local, g))
    assert text.index("elementwise error") < text.index("relative error")  # the failing measure first
    assert f"1 of {g.size} elements differ by more than 1e-05" in text and "at index (7, 11)" in text


def test_elem_allowed_defaults_to_the_relative_bound():
    agr = measure(np.ones(4), np.ones(4), 1, "b", 1e-7)
    assert agr.elem_allowed == 1e-7
    assert agreement.compare_grads([(np.ones((2, 2)), np.ones(2))], [(np.ones((2, 2)), np.ones(2))], 1e-7,
                                   1e-3)[0].elem_allowed == 1e-3


def test_rel_distance_and_sum_of_squares_follow_their_definitions():
    a = RNG.standard_normal((256, 784))
    b = a + 1e-7 * RNG.standard_normal(a.shape)
    aa, _, dd, *_ = definitions(a, b)
    rel = math.sqrt(dd / aa)
    assert abs(agreement.rel_distance(a, b) - rel) <= (2 * gamma(a.size, np.float64) + 4 * U64) * rel
    assert sums_close(agreement.sum_of_squares(a), aa, a.size)
    assert agreement.rel_distance(a[::32], b[::32]) > 0  # strided rows (the drift sample) are fine
    assert math.isnan(agreement.sum_of_squares(np.array([1.0, np.nan])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_greatest_magnitude_is_numpys_max_of_abs(dtype):
    for n in (0, 1, 10, 640, 3 * agreement.BLOCK + 1):
        x = (RNG.standard_normal(n) * 5).astype(dtype)
        assert agreement.greatest_magnitude(x) == (float(np.abs(x).max()) if n else 0.0)
    logits = RNG.standard_normal((64, 10)).astype(dtype)
    logits[3, 7] = -9.5  # the greatest magnitude may be a negative logit
    assert agreement.greatest_magnitude(logits) == 9.5
    logits[5, 1] = np.inf
    assert agreement.greatest_magnitude(logits) == np.inf
    logits[6, 2] = np.nan
    assert math.isnan(agreement.greatest_magnitude(logits))


def test_the_flat_index_unravels_as_numpy_does_for_every_shape():
    for shape in [(7,), (256, 784), (3, 4, 5), (2, 1, 3, 2)]:
        for k in (0, 1, int(np.prod(shape)) // 2, int(np.prod(shape)) - 1):
            assert measure_module._index(k, shape) == tuple(int(i) for i in np.unravel_index(k, shape))
