"""compare/tolerances.py's elementwise bounds and tests/helpers.py's assert_close_bound.

The bounds must hold for every honest summation order (float32 BLAS, torch, a plain left-to-right
loop against a float64 reference) and fail just above themselves and on a real error.
"""

import math

import numpy as np
import pytest
import torch

from compare.tolerances import gamma, linear_bound, matmul_bound, sum_bound, unit_roundoff
from helpers import assert_close_bound


def exact_dot(a, b):
    """Σ aᵢbᵢ of float32 operands, correctly rounded to float64 (each float32·float32 product is
    exact in float64; fsum adds them without error)."""
    return math.fsum((np.asarray(a, np.float64) * np.asarray(b, np.float64)).tolist())


def cancelling_terms(k=784, top=7.0, result=0.26, seed=0):
    """float32 a, b of length k with terms aᵢbᵢ up to ~top² = 49 that sum to ~`result`.

    Signs are chosen greedily against the running sum so that it stays within one term of zero;
    the last aₖ brings it to `result`. Mirrors an element of the first layer's product on MNIST
    (784 terms up to ~50 summing to 0.26) that a fixed atol got wrong on another CPU.
    """
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, top, k)
    b = rng.uniform(1.0, top, k)
    s = 0.0
    for i in range(k - 1):
        a[i] = -a[i] if s > 0 else a[i]
        s += a[i] * b[i]
    a[-1] = (result - s) / b[-1]
    return a.astype(np.float32), b.astype(np.float32)


def sequential_f32(a, b):
    """Σ aᵢbᵢ rounded to float32 after every product and addition, left to right: the order with
    the largest error bound (IEEE, so the same on every CPU)."""
    s = np.float32(0)
    for x, y in zip(a, b):
        s = np.float32(s + np.float32(x * y))
    return float(s)


# ------------------------------------------------------------------------------ the constants


def test_unit_roundoff_and_gamma_follow_their_formulas():
    assert unit_roundoff(np.float32) == 2.0 ** -24 and unit_roundoff(np.float64) == 2.0 ** -53
    u = 2.0 ** -24
    assert gamma(784, np.float32) == pytest.approx(784 * u / (1 - 784 * u), rel=1e-15)  # one formula, two evaluations
    with pytest.raises(ValueError, match="k·u"):
        gamma(2 ** 24, np.float32)


def test_matmul_bound_is_twice_gamma_k_times_abs_product_in_the_lower_precision():
    a = np.array([[1.0, -2.0, 3.0]], np.float32)
    b = np.array([[4.0], [5.0], [-6.0]], np.float64)
    # float32 is the lower of the two precisions; |a| @ |b| = 4 + 10 + 18 = 32
    expected = 2 * gamma(3, np.float32) * 32 + 3 * np.finfo(np.float32).tiny
    assert matmul_bound(a, b)[0, 0] == pytest.approx(expected, rel=1e-15)
    assert matmul_bound(a, b, dtype=np.float64)[0, 0] < expected * 1e-8
    assert matmul_bound(a, b, factor=1.0)[0, 0] == pytest.approx(expected / 2, rel=1e-6)


def test_sum_bound_counts_k_minus_one_roundings_along_the_axis():
    x = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], np.float32)
    tiny = float(np.finfo(np.float32).tiny)
    np.testing.assert_allclose(sum_bound(x, axis=1), 2 * gamma(2, np.float32) * np.array([6.0, 15.0]) + 3 * tiny,
                               rtol=1e-15)  # the formula, evaluated two ways
    assert sum_bound(x) == pytest.approx(2 * gamma(5, np.float32) * 21.0 + 6 * tiny, rel=1e-15)
    assert sum_bound(x[:, :1], axis=1)[0] == pytest.approx(tiny)  # one term: nothing to round


# ------------------------------------------------------------------------------ they hold


@pytest.mark.parametrize("shape", [(5, 784, 16), (64, 784, 128), (128, 64, 10), (10, 1024, 784)])
def test_float32_blas_and_torch_products_stay_within_matmul_bound_of_float64(shape):
    m, k, n = shape
    rng = np.random.default_rng(sum(shape))
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    reference = a.astype(np.float64) @ b.astype(np.float64)
    bound = matmul_bound(a, b)
    assert_close_bound(a @ b, reference, bound)
    assert_close_bound(np.asfortranarray(a) @ b, reference, bound)  # another BLAS layout, another order
    assert_close_bound((torch.from_numpy(a) @ torch.from_numpy(b)).numpy(), reference, bound)
    assert_close_bound(a @ b, (torch.from_numpy(a) @ torch.from_numpy(b)).numpy(), bound)  # float32 vs float32


def test_cancelling_784_term_dot_product_within_bound_in_every_order_where_fixed_atol_fails():
    a, b = cancelling_terms()
    terms = a.astype(np.float64) * b.astype(np.float64)
    exact = exact_dot(a, b)
    assert abs(exact - 0.26) < 1e-3 and np.abs(terms).max() > 40  # the kind of element
    bound = matmul_bound(a, b)
    positives_first = np.argsort(-terms, kind="stable")  # partial sums climb to ~Σ|t|/2 before cancelling
    computed = {"numpy": float(a @ b), "torch": float(torch.from_numpy(a) @ torch.from_numpy(b)),
                "sequential": sequential_f32(a, b), "reversed": sequential_f32(a[::-1], b[::-1]),
                "pairwise": float(np.sum(a * b)),
                "positives first": sequential_f32(a[positives_first], b[positives_first])}
    for order, value in computed.items():
        assert_close_bound(value, exact, bound, msg=f"{order}: ")
    # a fixed allowance (rtol=1e-5, atol=1e-5) rejects an honest float32 order here; the
    # sequential orders are IEEE-determined, so this holds on every CPU
    assert abs(computed["positives first"] - exact) > 1e-5 + 1e-5 * abs(exact), computed


def test_float32_sums_stay_within_sum_bound_of_the_exact_sum():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 784)) * 30).astype(np.float32)
    exact = np.array([math.fsum(row) for row in x.astype(np.float64).tolist()])
    assert_close_bound(x.sum(axis=1), exact, sum_bound(x, axis=1))
    assert_close_bound(np.cumsum(x, axis=1)[:, -1], exact, sum_bound(x, axis=1))  # left to right
    assert_close_bound(torch.from_numpy(x).sum(dim=1).numpy(), exact, sum_bound(x, axis=1))
    a, b = cancelling_terms(seed=1)
    t = a * b  # float32 products: their own rounding is part of the data for a sum
    assert_close_bound(float(np.cumsum(t)[-1]), math.fsum(t.astype(np.float64).tolist()), sum_bound(t))


# ------------------------------------------------------------------------------ they can fail


@pytest.mark.parametrize("over, fails", [(1.001, True), (0.999, False)])
def test_a_perturbation_just_above_the_bound_fails_and_just_below_passes(over, fails):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((8, 784)).astype(np.float32)
    b = rng.standard_normal((784, 12)).astype(np.float32)
    reference = a.astype(np.float64) @ b.astype(np.float64)
    bound = matmul_bound(a, b)
    perturbed = reference.copy()
    perturbed[3, 7] += over * bound[3, 7]  # float64: the step is ~1e-2, resolved to ~1e-15
    if not fails:
        assert_close_bound(perturbed, reference, bound)
        return
    with pytest.raises(AssertionError) as info:
        assert_close_bound(perturbed, reference, bound)
    text = str(info.value)
    assert "1 / 96 elements" in text and "index (3, 7)" in text
    assert f"actual {float(perturbed[3, 7])!r}" in text and f"expected {float(reference[3, 7])!r}" in text
    assert f"allowed {bound[3, 7]:.6g}" in text


def test_real_errors_exceed_the_bound():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((16, 784)).astype(np.float32)
    b = rng.standard_normal((784, 10)).astype(np.float32)
    reference = a.astype(np.float64) @ b.astype(np.float64)
    bound = matmul_bound(a, b)
    with pytest.raises(AssertionError, match="exceed"):  # one operand element wrong
        wrong = b.copy()
        wrong[100, 3] += 1.0
        assert_close_bound(a @ wrong, reference, bound)
    with pytest.raises(AssertionError, match="exceed"):  # the last term of each dot product dropped
        assert_close_bound(a[:, :-1] @ b[:-1], reference, bound)
    with pytest.raises(AssertionError, match="exceed"):  # two output columns swapped
        assert_close_bound((a @ b)[:, [1, 0, *range(2, 10)]], reference, bound)
    a1, b1 = cancelling_terms()
    i = int(np.argmax(np.abs(a1 * b1)))
    with pytest.raises(AssertionError, match="exceed"):  # the cancelling sum missing its largest term
        assert_close_bound(float(np.delete(a1, i) @ np.delete(b1, i)), exact_dot(a1, b1), matmul_bound(a1, b1))


def test_nan_and_shape_mismatch_never_pass_and_equal_infinities_do():
    with pytest.raises(AssertionError, match="1 / 3 elements"):
        assert_close_bound(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0]), 1.0)
    with pytest.raises(AssertionError, match="1 / 1 elements"):
        assert_close_bound(np.nan, np.nan, 1.0)
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close_bound(np.zeros(3), np.zeros(4), 1.0)
    assert_close_bound(np.array([np.inf, -1.0]), np.array([np.inf, -1.0]), 0.0)


def test_linear_bound_counts_the_bias_as_one_more_term_and_holds_for_float32_layers():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((32, 784)).astype(np.float32)
    W = (rng.standard_normal((128, 784)) / 28).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    bound = linear_bound(x, W, b)
    by_hand = 2 * gamma(785, np.float32) * (np.abs(x).astype(np.float64) @ np.abs(W.T) + np.abs(b))
    np.testing.assert_allclose(bound, by_hand, rtol=1e-12)  # one formula evaluated two ways (float64 sums)
    reference = x.astype(np.float64) @ W.T.astype(np.float64) + b
    assert_close_bound(x @ W.T + b, reference, bound)
    assert_close_bound(torch.nn.functional.linear(*map(torch.from_numpy, (x, W, b))).numpy(), reference, bound)
    with pytest.raises(AssertionError, match=r"index \(\d+, 5\)"):  # one of 784 weights of unit 5 with its sign flipped
        wrong = W.copy()
        wrong[5, 300] *= -1
        assert_close_bound(x @ wrong.T + b, reference, bound)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_gradient_bounds_hold_between_manual_and_torch_and_catch_a_dropped_derivative(activation):
    from helpers import gradient_bounds
    from manual.mlp import MLP
    from torch_ref import convert

    rng = np.random.default_rng(9)
    mlp = MLP((784, 32, 16, 10), activation, np.float64, seed=2)
    x, y = rng.standard_normal((64, 784)), rng.integers(0, 10, 64)
    _, grads = mlp.loss_and_grads(x, y)
    _, t_grads = convert.loss_and_grads(convert.from_manual(mlp), x, y)
    bounds = gradient_bounds(mlp.weights, mlp.biases, x, y, mlp.activation)
    for (dW, db), (tW, tb), (bW, bb) in zip(grads, t_grads, bounds):
        assert_close_bound(dW, tW, bW)
        assert_close_bound(db, tb, bb)
        assert bW.max() < 1e-6 * np.abs(tW).max()  # far below what a wrong derivative gives
    # layer 1's gradient without f' (δ passed through the hidden layers unchanged) is far outside
    logits = mlp.forward(x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    delta = (p / p.sum(axis=1, keepdims=True) - np.eye(10)[y]) / 64  # δ at the logits: (softmax − onehot)/B
    no_prime = delta @ mlp.weights[2] @ mlp.weights[1]
    with pytest.raises(AssertionError, match="exceed"):
        assert_close_bound(no_prime.T @ x, t_grads[0][0], bounds[0][0])


def test_infinities_that_differ_fail_without_a_warning():
    with pytest.raises(AssertionError, match="1 / 2 elements"):
        assert_close_bound(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]), np.array([1e300, 0.0]))
