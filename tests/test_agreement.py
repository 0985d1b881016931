"""compare/agreement.py: the metrics, the failure messages, and — most important — that the
check fails, naming the right layer and parameter, when a derivative is wrong."""

import math

import numpy as np
import pytest

from compare import agreement, tolerances
from compare.agreement import measure
from helpers import AgreementError, assert_grads_agree
from compare.tolerances import gamma, unit_roundoff
from manual import functional as mf
from manual.mlp import MLP
from torch_ref import convert

RNG = np.random.default_rng(3)
U64 = unit_roundoff(np.float64)


def cosine_bound(a, b):
    """Relative allowance for the cosine of two float64 arrays computed two ways from dot products.

    Each of ‖a‖², ‖b‖², ‖a − b‖², a·b carries at most γ_(n+2) of its terms' magnitudes (n − 1
    additions, the square, and for ‖a − b‖² the rounding of each aᵢ − bᵢ); a·b from
    (‖a‖² + ‖b‖² − ‖a − b‖²)/2 carries γ_(n+2)·(‖a‖² + ‖b‖² + ‖a − b‖²)/2, the larger of the two; the
    square roots, the norms' product and the division add 4u. Two computations: twice that.
    """
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    g = gamma(a.size + 2, np.float64)
    aa, bb, dd = a @ a, b @ b, (a - b) @ (a - b)
    return 2 * (g * (aa + bb + dd) / 2 / abs(a @ b) + g + 4 * U64)


# ------------------------------------------------------------------ metrics


def test_measure_known_values():
    a = np.array([[3.0, 0.0], [0.0, 4.0]])
    b = np.array([[3.0, 0.0], [0.0, 4.5]])
    agr = measure(a, b, 2, "W", 1e-10)
    # the sums of squares are exact (25, 29.25, 0.25); sqrt, hypot, products and divisions add
    # at most 4 roundings on each side
    assert agr.rel_err == pytest.approx(0.5 / math.hypot(3, 4.5), rel=8 * U64)
    assert agr.max_abs == 0.5 and agr.worst_index == (1, 1) and (agr.a_value, agr.b_value) == (4.0, 4.5)
    assert agr.cosine == pytest.approx((9 + 18) / (5 * math.hypot(3, 4.5)), rel=8 * U64)
    assert not agr.ok and (agr.layer, agr.param, agr.shape) == (2, "W", (2, 2))


def test_measure_identical_zero_and_opposite():
    a = RNG.standard_normal(7)
    same = measure(a, a.copy(), 1, "b", 1e-10)
    assert same.ok and same.rel_err == 0 and same.cosine == pytest.approx(1, rel=cosine_bound(a, a))
    zeros = measure(np.zeros(3), np.zeros(3), 1, "b", 1e-10)
    assert zeros.ok and zeros.rel_err == 0 and zeros.cosine == 1
    opposite = measure(a, -a, 1, "b", 1e-10)
    # ‖a − (−a)‖² = 4‖a‖² exactly (every term scales by 4): only the square roots and the division round
    assert opposite.rel_err == pytest.approx(2, rel=4 * U64)
    assert opposite.cosine == pytest.approx(-1, rel=cosine_bound(a, -a))


def test_measure_non_finite_and_shape_mismatch():
    a = np.array([1.0, np.nan, 2.0])
    agr = measure(a, np.ones(3), 1, "W", 1e-4)
    assert not agr.ok and agr.worst_index == (1,) and math.isnan(agr.a_value)
    assert "non-finite" in agreement.param_message(agr)
    big = np.full(4, 1e200)
    assert measure(big, big, 1, "W", 1e-10).ok  # squares overflow, the scaled fallback copes
    s = measure(np.zeros((3, 4)), np.zeros((4, 3)), 2, "W", 1e-10)
    assert not s.ok and "shapes differ: (3, 4) vs (4, 3)" in agreement.param_message(s)


def test_float32_metrics():
    a = RNG.standard_normal((50, 40)).astype(np.float32)
    b = a + np.float32(1e-6) * RNG.standard_normal(a.shape).astype(np.float32)
    agr = measure(a, b, 1, "W", tolerances.FLOAT32_REL)
    expected = exact(a, b)[0]
    # float32 sums of n positive squares are within γ_n of the exact sums; the square root halves
    # that, for ‖a − b‖ and for max(‖a‖, ‖b‖) (a − b itself is exact: b is within a factor 2 of a),
    # and a few roundings more (sqrt, max, division)
    assert agr.ok and agr.rel_err == pytest.approx(expected, rel=gamma(a.size, np.float32) + 4 * unit_roundoff(np.float32))


def exact(a, b):
    """The metrics straight from their definitions, in float64."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return np.linalg.norm(a - b) / max(na, nb), a @ b / (na * nb), np.abs(a - b).argmax()


def norm_ratio_rel(n: int) -> float:
    """Relative allowance for two float64 computations of ‖a − b‖ / max(‖a‖, ‖b‖) over n elements.

    One computation: ‖a − b‖² is within γ_(n+2) (the rounding of each aᵢ − bᵢ, its square, n − 1
    additions in any order), ‖a‖² within γ_n; each square root halves that and adds u; the
    division adds u (max is exact). So γ_(n+2)/2 + γ_n/2 + 3u ≤ γ_(n+2) + 3u, and twice that
    for two computations (the kernel's and NumPy's, each in its own summation order).
    """
    return 2 * (gamma(n + 2, np.float64) + 3 * U64)


@pytest.mark.parametrize("gap", [0.0, 1e-15, 1e-9, 1e-7, 1e-3, 1.0])
def test_large_arrays_agree_with_the_definitions_near_and_far(gap):
    """Arrays of 196 kernel blocks, identical to far apart: every figure of the one-pass kernel is
    that of its definition, computed apart by NumPy, within the rounding of two computations."""
    a = RNG.standard_normal((256, 784))
    b = a + gap * RNG.standard_normal(a.shape) * np.abs(a).mean()
    assert a.size > 100 * agreement.BLOCK  # many blocks: the per-block partial sums are exercised
    agr = measure(a, b, 1, "W", 1e-9)
    rel, cosine, k = exact(a, b)
    assert agr.rel_err == pytest.approx(rel, rel=norm_ratio_rel(a.size), abs=1e-300)
    assert agr.cosine == pytest.approx(cosine, rel=cosine_bound(a, b))
    # ‖b‖ = √Σbᵢ²: γ_n/2 + u for each computation
    assert agr.norm_b == pytest.approx(np.linalg.norm(b), rel=gamma(a.size, np.float64) + 2 * U64)
    # the elementwise measure involves no sum: each aᵢ − bᵢ rounds once, the same in both, and the
    # maxima are exact, so it is the definition bit for bit
    d = np.abs(a - b)
    assert (agr.max_abs, agr.elem_rel) == (d.max(), d.max() / max(np.abs(a).max(), np.abs(b).max(), tolerances.TINY))
    if gap:
        assert agr.worst_index == np.unravel_index(k, a.shape)
    assert agr.ok == (rel <= 1e-9 and agr.elem_rel <= 1e-9)


def test_failure_message_reads_like_assert_close():
    good = [(np.ones((2, 3)), np.ones(2)), (np.ones((4, 2)), np.ones(4))]
    bad = [(np.ones((2, 3)), np.ones(2)), (np.ones((4, 2)), np.ones(4))]
    bad[1][0][3, 1] = 1.5
    with pytest.raises(AgreementError) as err:
        assert_grads_agree(bad, good, 1e-10, context="epoch 2, step 17")
    msg = str(err.value)
    first = msg.splitlines()[0]
    assert first == "gradients disagree (manual vs torch) at epoch 2, step 17: layer 2 W"
    for piece in ["layer 2 W (4, 2)", "> allowed 1e-10", "1 of 8 elements differ",
                  "greatest absolute difference 0.5 at index (3, 1)", "manual 1.5, torch 1"]:
        assert piece in msg, piece
    assert [(g.layer, g.param) for g in err.value.failures] == [(2, "W")]


def test_every_tolerance_is_below_what_a_bug_gives_and_above_rounding():
    assert 1e-16 < tolerances.FLOAT64_REL < 1e-6
    assert 1e-7 < tolerances.FLOAT32_REL < 1e-2
    assert tolerances.gradient_rel(np.float32) == tolerances.FLOAT32_REL
    assert tolerances.gradient_rel("float64") == tolerances.FLOAT64_REL


# ------------------------------------------------------------------ injected bugs


def failing_params(sizes, batch=4, activation="sigmoid", dtype=np.float64):
    """Run the manual side against torch and return the set of (layer, param) the check names."""
    mlp = MLP(sizes, activation, dtype, seed=0)
    x = RNG.standard_normal((batch, sizes[0])).astype(dtype)
    y = RNG.integers(0, sizes[-1], batch)
    _, grads = mlp.loss_and_grads(x, y)
    _, t_grads = convert.loss_and_grads(convert.from_manual(mlp), x, y)
    with pytest.raises(AgreementError) as err:
        assert_grads_agree(grads, t_grads, tolerances.gradient_rel(dtype))
    names = {(g.layer, g.param) for g in err.value.failures}
    for layer, param in names:
        assert f"layer {layer} {param}" in str(err.value)
    return names, err.value


def test_correct_code_passes():
    for sizes in [(12, 9, 4), (6, 6, 6, 6)]:
        mlp = MLP(sizes, seed=0)
        x, y = RNG.standard_normal((4, sizes[0])), RNG.integers(0, sizes[-1], 4)
        assert_grads_agree(mlp.loss_and_grads(x, y)[1],
                           convert.loss_and_grads(convert.from_manual(mlp), x, y)[1], tolerances.FLOAT64_REL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropped_sigma_prime_is_caught_in_the_hidden_layers(monkeypatch, dtype):
    ones = lambda s, out=None: np.ones_like(s)  # noqa: E731  σ' forgotten: δ passes through unchanged
    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", mf.sigmoid, ones))
    names, _ = failing_params((12, 9, 7, 4), dtype=dtype)
    assert names == {(1, "W"), (1, "b"), (2, "W"), (2, "b")}  # layer 3 never uses σ'


def test_sign_flip_in_sigma_prime(monkeypatch):
    flipped = lambda s, out=None: s * (s - 1)  # noqa: E731  σ(σ − 1) instead of σ(1 − σ)
    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", mf.sigmoid, flipped))
    names, err = failing_params((12, 9, 4))
    assert names == {(1, "W"), (1, "b")}
    assert "cosine similarity -1.0" in str(err)


def test_sign_flip_in_the_output_delta(monkeypatch):
    right = mf.cross_entropy_backward

    def onehot_minus_softmax(logits, y):
        loss, delta = right(logits, y)
        delta *= -1
        return loss, delta

    monkeypatch.setattr(mf, "cross_entropy_backward", onehot_minus_softmax)
    names, _ = failing_params((12, 9, 4))
    assert names == {(1, "W"), (1, "b"), (2, "W"), (2, "b")}


def test_transposed_weight_gradient(monkeypatch):
    right = mf.linear_backward

    def transposed(delta, x, W, need_dx=True):
        _, db, dx = right(delta, x, W, need_dx)
        return np.matmul(x.T, delta), db, dx  # xᵀδ instead of δᵀx

    monkeypatch.setattr(mf, "linear_backward", transposed)
    names, _ = failing_params((6, 6, 6, 6))  # square layers, so the shapes still fit
    assert names == {(1, "W"), (2, "W"), (3, "W")}


def test_transposed_gradient_of_wrong_shape_is_named(monkeypatch):
    def transposed(delta, x, W, need_dx=True):
        return x.T @ delta, delta.sum(0), (delta @ W if need_dx else None)

    monkeypatch.setattr(mf, "linear_backward", transposed)
    names, err = failing_params((12, 9, 4))
    assert names == {(1, "W"), (2, "W")}
    assert "shapes differ: (12, 9) vs (9, 12)" in str(err)


def test_bias_gradient_reduced_over_the_wrong_axis(monkeypatch):
    right = mf.linear_backward

    def wrong_axis(delta, x, W, need_dx=True):
        dW, _, dx = right(delta, x, W, need_dx)
        return dW, delta.sum(axis=1), dx  # a sum over the units instead of over the batch

    monkeypatch.setattr(mf, "linear_backward", wrong_axis)
    names, _ = failing_params((12, 5, 5), batch=5)  # batch = units, so the shapes still fit
    assert names == {(1, "b"), (2, "b")}


@pytest.mark.parametrize("factor", [4, 1 / 4], ids=["1/B missing", "1/B doubled"])
def test_batch_mean_factor(monkeypatch, factor):
    right = mf.cross_entropy_backward

    def scaled(logits, y):
        loss, delta = right(logits, y)
        delta *= factor  # B = 4: ×B undoes the 1/B, ×1/B applies it twice
        return loss, delta

    monkeypatch.setattr(mf, "cross_entropy_backward", scaled)
    names, err = failing_params((12, 9, 4), batch=4)
    assert names == {(1, "W"), (1, "b"), (2, "W"), (2, "b")}
    assert "cosine similarity 1.0" in str(err)  # right direction, wrong length
