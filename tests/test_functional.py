"""manual/functional.py: every derivative against torch.autograd.functional.jacobian and against
central finite differences; the numerics at the extremes.

Bounds: every comparison allows what the two computations' rounding can give, from the magnitudes
of the numbers compared (the bounds section below), never a fixed tolerance: products and sums
through compare.tolerances (``matmul_bound``, ``sum_bound``, ``linear_bound``), exp/log/tanh within
tests/helpers.py's LIBM_ULPS, finite differences within their truncation and rounding error (``central_diff_error``).

The comparisons with torch run the functions on each array library (``lib``: NumPy, torch tensors,
array-api-strict; tests/helpers.py's ``run_in``): the bounds are each computation's rounding,
whichever library's kernels round.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.autograd.functional import jacobian

from compare.tolerances import gamma, linear_bound, matmul_bound, sum_bound, unit_roundoff
from helpers import ARRAY_LIBRARIES, assert_close_bound, forward_rel, libm_rel, prime_error, run_in
from manual import functional as F

RNG = np.random.default_rng(0)
H = 1e-6  # finite-difference step (float64)
U = unit_roundoff(np.float64)


def torch_jac(fn, x):
    return jacobian(fn, torch.from_numpy(x)).numpy()


def central_diff(fn, x, h=H):
    """Jacobian of fn: R^n -> R^m by central differences, (m, n)."""
    cols = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = h
        cols.append((np.asarray(fn(x + e)) - np.asarray(fn(x - e))).ravel() / (2 * h))
    return np.stack(cols, axis=1)


# ------------------------------------------------------------------ bounds
#
# max |f‴| over the reals: σ‴ = σ'(1 − 6σ + 6σ²) peaks at 0 (1/8); tanh‴ = −2 + 8t² − 6t⁴ at 0 (2);
# relu's is 0 away from its kink.
THIRD_DERIVATIVE = {"sigmoid": 1 / 8, "tanh": 2.0, "relu": 0.0}
# max |σ''| = 1/(6√3): the third derivative of logsumexp (and of each row's cross-entropy) in one
# logit, whose first derivative is a sigmoid of it; softmax's entries are a sigmoid (or a multiple
# ≤ 1 of one) in each logit, so theirs is ≤ 1/8.
LSE_THIRD = 1 / (6 * math.sqrt(3))
SOFTMAX_THIRD = 1 / 8


def central_diff_error(h, third, f_err, x, slope) -> np.ndarray:
    """|(f(x + h) − f(x − h))/(2h) − f'(x)| in float64, for the coordinate x:
    h²/6·max|f‴| (truncation) + f_err/h (each evaluation of f within f_err)
    + (u·(|x| + h)/h + 2u)·|f'| (x ± h rounded, which changes the step; the subtraction, the division)."""
    return h * h / 6 * third + f_err / h + (U * (np.abs(x) + h) / h + 2 * U) * np.abs(slope)


def at_steps(bound, x, h=H):
    """bound(v), an error bound of one evaluation of f at v, taken at x ± h·e_k for each coordinate
    k, the larger of the two: what each evaluation in `central_diff`'s column k may be off by.
    Returns (f's size, x.size), as `central_diff`."""
    cols = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = h
        cols.append(np.maximum(np.asarray(bound(x + e)), np.asarray(bound(x - e))).ravel())
    return np.stack(cols, axis=1)


def ln_s_error(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """|error| of one computation of ln S, S = Σⱼ e^(xⱼ − c), c = max x, for each row of x (B, n):
    e^(x − c) within r + u·|x − c| each, their sum S ≤ n within γ_n more (so relative
    ρ_S = γ_n + r + u·Σ pⱼ|xⱼ − c|, p = SM(x)), its log within ρ_S + r·ln n. Returns (B,)."""
    x = np.asarray(x, np.float64)
    n, r, u = x.shape[1], libm_rel(dtype), unit_roundoff(dtype)
    c = x.max(axis=1, keepdims=True)
    p = F.softmax(x)
    return gamma(n, dtype) + r + u * (p * np.abs(x - c)).sum(axis=1) + r * math.log(n)


def lse_error(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """|error| of one computation of logsumexp of each row of x (B, n): c + ln S, ``ln_s_error``
    and the rounding of the sum (torch's the same). Returns (B,)."""
    return ln_s_error(x, dtype) + unit_roundoff(dtype) * np.abs(F.logsumexp(np.asarray(x, np.float64)))


def log_softmax_error(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """|error| of one computation of log SM(x), elementwise (B, n): x − logsumexp(x) (ours) or
    (x − c) − ln S (torch's): logsumexp's error and a rounding of x − c and of the result."""
    x = np.asarray(x, np.float64)
    c = x.max(axis=1, keepdims=True)
    lse = F.logsumexp(x)[:, None]
    return lse_error(x, dtype)[:, None] + unit_roundoff(dtype) * (np.abs(x - c) + np.abs(x - lse))


def softmax_rel(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Relative error of one computation of SM(x), elementwise (B, n): exp of log SM (ours) within
    r + log SM's error; e^(x − c)/S (torch's) within r + u·|x − c| + ρ_S + u, which that covers, + u."""
    return libm_rel(dtype) + log_softmax_error(x, dtype) + unit_roundoff(dtype)


def cross_entropy_error(logits: np.ndarray, y: np.ndarray, dtype=np.float64) -> float:
    """|error| of one computation of the batch-mean cross-entropy: each row's ℓ = logsumexp − ẑ_y
    (or ln S − (ẑ_y − c)) within log SM's error at y; the mean adds γ_(B+1) of the summed terms'
    magnitudes (ln S ≤ ln n, |ẑ_y − c|, ℓ)."""
    x = np.asarray(logits, np.float64)
    B, n = x.shape
    rows = np.arange(B)
    picked = np.abs(x[rows, y] - x.max(axis=1))
    ell = F.logsumexp(x) - x[rows, y]
    terms = log_softmax_error(x, dtype)[rows, y].mean()
    return float(terms + gamma(B + 1, dtype) * (math.log(n) + picked + np.abs(ell)).mean())


def delta_error(logits: np.ndarray, y: np.ndarray, dtype=np.float64) -> np.ndarray:
    """|error| of one computation of δ = (SM(ẑ) − onehot(y))/B, elementwise (B, n).

    p = e^(ẑ − c)/S (ours) within r + u·|ẑ − c| + ρ_S + u; p = exp((ẑ − c) − ln S) (torch's) within
    r + u·|ẑ − c| + ``ln_s_error`` + u·|log p|: both within ρ_p = r + ln_s_error + u·(|ẑ − c| + |log p| + 1)
    (no rounding of logsumexp's c + ln S enters δ). Then the subtraction, the 1/B and one more
    rounding, each ≤ u·(p + onehot)/B."""
    x = np.asarray(logits, np.float64)
    B, u = len(x), unit_roundoff(dtype)
    p = F.softmax(x)
    shift = np.abs(x - x.max(axis=1, keepdims=True))
    rho_p = libm_rel(dtype) + ln_s_error(x, dtype)[:, None] + u * (shift + np.abs(F.log_softmax(x)) + 1)
    onehot = np.eye(x.shape[1])[y]
    return (rho_p * p + 3 * u * (p + onehot)) / B


# ------------------------------------------------------------------ elementwise activations

ELEMENTWISE = [
    ("sigmoid", torch.sigmoid, np.linspace(-8, 8, 9)),
    ("tanh", torch.tanh, np.linspace(-3, 3, 9)),
    ("relu", torch.relu, np.array([-2.0, -0.5, 0.3, 1.0, 4.0])),  # away from the kink
]


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_forward_matches_torch(name, torch_fn, x, lib):
    act = F.ACTIVATIONS[name]
    ref = torch_fn(torch.from_numpy(x)).numpy()
    assert_close_bound(run_in(lib, act.f, x), ref, 2 * forward_rel(name) * np.abs(ref))  # relu: exactly


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_derivative_matches_torch_jacobian(name, torch_fn, x, lib):
    act = F.ACTIVATIONS[name]
    D = np.diag(run_in(lib, lambda v: act.prime(act.f(v)), x))  # Dσ = diag(σ'), σ' from the stored forward value
    # torch's backward also takes f' from its own stored f: two computations of prime_error; the
    # zeros off the diagonal are exact on both sides
    f_ref = torch_fn(torch.from_numpy(x)).numpy()
    assert_close_bound(D, torch_jac(torch_fn, x), np.diag(2 * prime_error(name, f_ref)))


@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_derivative_matches_finite_differences(name, torch_fn, x):
    act = F.ACTIVATIONS[name]
    f_ref = torch_fn(torch.from_numpy(x)).numpy()
    slope = np.diag(torch_jac(torch_fn, x))
    f_err = np.diag(at_steps(lambda v: forward_rel(name) * np.abs(torch_fn(torch.from_numpy(v)).numpy()), x))
    # (at x = 0 tanh's truncation error is h²/3, its bound itself: the bound is reached, never passed)
    fd = central_diff_error(H, THIRD_DERIVATIVE[name], f_err, x, slope)
    ours = prime_error(name, f_ref)  # one computation against the exact f'
    assert_close_bound(np.diag(act.prime(act.f(x))), central_diff(act.f, x), np.diag(fd + ours))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_return_new_arrays_of_the_inputs_dtype(dtype):
    x = RNG.standard_normal((3, 4)).astype(dtype)
    copy = x.copy()
    for act in F.ACTIVATIONS.values():
        z = act.f(x)
        p = act.prime(z)
        assert z.dtype == p.dtype == dtype and z.shape == p.shape == x.shape
        assert not np.shares_memory(z, x) and not np.shares_memory(p, z)
        np.testing.assert_array_equal(x, copy)


def test_relu_derivative_at_zero_is_zero_like_torch():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    torch.relu(x).sum().backward()
    np.testing.assert_array_equal(F.relu_prime(F.relu(np.zeros(3))), x.grad.numpy())


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_at_the_extremes(dtype, lib):
    x = np.array([-1e4, -1000, -100, -30, 0, 30, 100, 1000, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = run_in(lib, F.sigmoid, x)
        p = run_in(lib, F.sigmoid_prime, s)
    tiny = float(np.finfo(dtype).tiny)
    assert s.dtype == dtype and np.isfinite(s).all() and np.isfinite(p).all()
    assert 0 <= s[0] < tiny and 0 <= s[1] < tiny and s[-1] == 1 and s[4] == 0.5  # σ(−1e4) = e^−10000
    ref = torch.sigmoid(torch.from_numpy(x)).numpy()
    # each side within forward_rel, or (σ below the smallest normal number: x clipped, or e^(−x)
    # overflowed or was flushed) off by less than tiny
    assert_close_bound(s, ref, 2 * forward_rel("sigmoid", dtype) * np.abs(ref) + 2 * tiny)
    # relative accuracy is kept for very negative inputs (no 1 − σ cancellation, which would lose
    # every digit): σ(−30) = e^−30/(1+e^−30), here in float64, to the rounding of both sides
    exact = np.exp(-30.0) / (1 + np.exp(-30.0))
    assert abs(float(s[3]) / exact - 1) <= forward_rel("sigmoid", dtype) + forward_rel("sigmoid") + 2 * U


# ------------------------------------------------------------------ softmax, log-softmax, CE


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_logsumexp_is_shift_stable(lib):
    x = np.array([[1e4, 1e4 - 1, -1e4], [-1e4, -1e4, -1e4], [0.0, 1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = run_in(lib, F.logsumexp, x)
    assert_close_bound(lse, torch.logsumexp(torch.from_numpy(x), dim=1).numpy(), 2 * lse_error(x))
    # unshifted, as written: the sum of e^x within r + γ_n, its log within that + r·|ln S|
    naive = np.log(np.exp(x[2]).sum())
    r = libm_rel(np.float64)
    assert_close_bound(lse[2], naive, lse_error(x[2:])[0] + gamma(3, np.float64) + r + r * abs(naive))


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_softmax_and_log_softmax_match_torch(lib):
    x = RNG.standard_normal((4, 6)) * 5
    tx = torch.from_numpy(x)
    s = torch.softmax(tx, 1).numpy()
    ours = run_in(lib, F.softmax, x)
    assert_close_bound(ours, s, 2 * softmax_rel(x) * s)
    assert_close_bound(run_in(lib, F.log_softmax, x), torch.log_softmax(tx, 1).numpy(), 2 * log_softmax_error(x))
    # one computation against the exact 1: each entry within softmax_rel, the sum within γ_n of it
    total_error = (softmax_rel(x) * s).sum(axis=1) + gamma(x.shape[1], np.float64)
    assert_close_bound(ours.sum(axis=1), np.ones(len(x)), total_error)


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_d_softmax_vjp_matches_torch_jacobian_and_finite_differences(lib):
    x = RNG.standard_normal(5)
    s = F.softmax(x[None])[0]
    J_torch = torch_jac(lambda t: torch.softmax(t, 0), x)
    J_fd = central_diff(lambda v: F.softmax(v[None])[0], x)
    # s ⊙ (g − g·s) from s within ρ = softmax_rel: per side within
    # (max ρ + γ_n + 2u)·(|g| @ (diag s + 2 s sᵀ)) (s's error in both factors, the sum, two roundings)
    rho = softmax_rel(x[None])[0]
    per_side = (rho.max() + gamma(5, np.float64) + 2 * U) * (np.diag(s) + 2 * np.outer(s, s))
    # J_fd[i, k] = ∂sᵢ/∂x_k: each evaluation of sᵢ within ρᵢ·sᵢ there
    f_err = at_steps(lambda v: softmax_rel(v[None])[0] * F.softmax(v[None])[0], x)
    fd = central_diff_error(H, SOFTMAX_THIRD, f_err, x[None, :], J_torch)
    for i, g in enumerate(np.eye(5)):  # each row of the Jacobian is the VJP of a unit vector: g @ J exact
        vjp = run_in(lib, F.softmax_vjp, g[None], s[None])[0]
        assert_close_bound(vjp, g @ J_torch, 2 * per_side[i])
        assert_close_bound(vjp, g @ J_fd, per_side[i] + fd[i])


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_log_softmax_vjp_matches_torch_jacobian_and_finite_differences(lib):
    x = RNG.standard_normal(5)
    s = F.softmax(x[None])
    g = RNG.standard_normal((1, 5))
    J_torch = torch_jac(lambda t: torch.log_softmax(t, 0), x)
    J_fd = central_diff(lambda v: F.log_softmax(v[None])[0], x)
    vjp = run_in(lib, F.log_softmax_vjp, g, s)[0]
    # g − s·Σg from s within ρ = softmax_rel: per side within c·(|g| @ (I + 1sᵀ)), c = max ρ + γ_n + 3u;
    # torch's Jacobian row i is its VJP of a unit vector (within c·(I + 1sᵀ) row i), and the product
    # g @ J adds γ_n·(|g| @ |J|)
    n, G, J_abs = 5, np.abs(g[0]), np.abs(J_torch)
    c = softmax_rel(x[None])[0].max() + gamma(n, np.float64) + 3 * U
    per_side = c * (G @ (np.eye(n) + np.outer(np.ones(n), s[0])))
    assert_close_bound(vjp, g[0] @ J_torch, 2 * per_side + gamma(n, np.float64) * (G @ J_abs))
    # J_fd[i, k] = ∂(log SM)ᵢ/∂x_k: each evaluation within log_softmax_error there
    f_err = at_steps(lambda v: log_softmax_error(v[None])[0], x)
    fd = central_diff_error(H, LSE_THIRD, f_err, x[None, :], J_torch)
    assert_close_bound(vjp, g[0] @ J_fd, per_side + G @ fd + gamma(n, np.float64) * (G @ J_abs))


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("B", [1, 3, 8])
def test_cross_entropy_and_its_gradient_match_torch(B, lib):
    logits = RNG.standard_normal((B, 10)) * 3
    y = RNG.integers(0, 10, B)
    t = torch.from_numpy(logits).requires_grad_()
    ref = TF.cross_entropy(t, torch.from_numpy(y))
    ref.backward()
    loss, delta = run_in(lib, F.cross_entropy_backward, logits, y)
    e_loss = cross_entropy_error(logits, y)  # each side's
    assert_close_bound(loss, ref.item(), 2 * e_loss)
    assert_close_bound(run_in(lib, F.cross_entropy, logits, y), ref.item(), 2 * e_loss)
    grad = t.grad.numpy()
    assert_close_bound(delta, grad, 2 * delta_error(logits, y))
    J_fd = central_diff(lambda v: F.cross_entropy(v.reshape(B, 10), y), logits.ravel())
    # ∂³L/∂ẑ³ of one logit is (1/B)·σ'' of it; each evaluation within cross_entropy_error there
    f_err = at_steps(lambda v: cross_entropy_error(v.reshape(B, 10), y), logits.ravel())[0]
    fd = central_diff_error(H, LSE_THIRD / B, f_err, logits.ravel(), grad.ravel())
    assert_close_bound(delta.ravel(), J_fd[0], delta_error(logits, y).ravel() + fd)


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_cross_entropy_gradient_has_the_one_over_B_once(lib):
    logits = np.zeros((4, 2))
    y = np.array([0, 0, 1, 1])
    _, delta = run_in(lib, F.cross_entropy_backward, logits, y)
    np.testing.assert_array_equal(delta, np.array([[-0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, -0.5]]) / 4)


def test_cross_entropy_backward_does_not_touch_logits():
    logits = RNG.standard_normal((3, 4))
    copy = logits.copy()
    _, delta = F.cross_entropy_backward(logits, np.array([0, 1, 2]))
    assert not np.shares_memory(delta, logits)
    np.testing.assert_array_equal(logits, copy)


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_at_logits_near_1e4(dtype, lib):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 9999.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    t = torch.from_numpy(logits).requires_grad_()
    ref = TF.cross_entropy(t, torch.from_numpy(y))
    ref.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, delta = run_in(lib, F.cross_entropy_backward, logits, y)
    assert np.isfinite(loss) and np.isfinite(delta).all()
    # the bounds scale with the logits' 1e4 (the shift ẑ − c, logsumexp's c + ln S)
    assert_close_bound(loss, ref.item(), 2 * cross_entropy_error(logits, y, dtype))
    assert_close_bound(delta, t.grad.numpy(), 2 * delta_error(logits, y, dtype))


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_labels_must_match_the_batch(lib):
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), one per row of logits; got \(2,\)"):
        run_in(lib, F.cross_entropy, np.zeros((3, 4)), np.array([0, 1]))


# ------------------------------------------------------------------ the linear map


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_linear_matches_nn_linear(lib):
    x, W, b = RNG.standard_normal((5, 4)), RNG.standard_normal((3, 4)), RNG.standard_normal(3)
    ref = TF.linear(torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(b)).numpy()
    assert_close_bound(run_in(lib, F.linear, x, W, b), ref, linear_bound(x, W, b))


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_linear_backward_matches_torch_jacobians(lib):
    """D_z f = W, D_W f = blocks of zᵀ, D_b f = I, applied to δ and summed over the batch."""
    B, n_in, n_out = 4, 5, 3
    x, W, b = RNG.standard_normal((B, n_in)), RNG.standard_normal((n_out, n_in)), RNG.standard_normal(n_out)
    delta = RNG.standard_normal((B, n_out))
    dW, db, dx = run_in(lib, F.linear_backward, delta, x, W)
    tx, tW, tb, td = map(torch.from_numpy, (x, W, b, delta))
    JW = jacobian(lambda w: TF.linear(tx, w, tb), tW).numpy()  # (B, out, out, in)
    Jb = jacobian(lambda v: TF.linear(tx, tW, v), tb).numpy()  # (B, out, out)
    Jx = jacobian(lambda v: TF.linear(v, tW, tb), tx).numpy()  # (B, out, B, in)
    # the Jacobians' entries are copies of x, W, 1 or exact zeros (adding a zero does not round), so
    # each contraction is the product it stands for, in another order
    dW_t = np.einsum("bo,boij->ij", delta, JW)
    assert_close_bound(dW, dW_t, matmul_bound(delta.T, x))
    assert_close_bound(db, np.einsum("bo,boj->j", delta, Jb), sum_bound(delta, axis=0))
    assert_close_bound(dx, np.einsum("bo,boci->ci", delta, Jx), matmul_bound(delta, W))
    # and against finite differences of the scalar <δ, f(x)>: linear in W (no truncation); each
    # evaluation within γ_(in+2+B·out) of Σ|δ| ⊙ (|x| @ |W|ᵀ + |b|) (the map, the products, the sum)
    obj = lambda w: float((delta * F.linear(x, w.reshape(n_out, n_in), b)).sum())  # noqa: E731
    magnitude = float((np.abs(delta) * (np.abs(x) @ np.abs(W.T) + np.abs(b))).sum())
    f_err = gamma(n_in + 2 + B * n_out, np.float64) * magnitude
    fd = central_diff_error(H, 0.0, f_err, W.ravel(), dW_t.ravel())
    assert_close_bound(dW.ravel(), central_diff(obj, W.ravel())[0], fd + matmul_bound(delta.T, x).ravel())
    assert run_in(lib, F.linear_backward, delta, x, W, need_dx=False)[2] is None


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_and_row_sums_written_as_products_are_the_sums(dtype, lib):
    """1ᵀx and x·1 against NumPy's sums, within two computations of a sum of k terms: 2γ_(k−1)·Σ|xᵢ|
    (the products by 1 are exact)."""
    x = RNG.standard_normal((300, 7)).astype(dtype)
    col, row = run_in(lib, F.column_sum, x), run_in(lib, F.row_sum, x)
    assert col.shape == (7,) and row.shape == (300, 1) and col.dtype == row.dtype == dtype
    assert_close_bound(col, x.sum(axis=0), sum_bound(x, axis=0))
    assert_close_bound(row[:, 0], x.sum(axis=1), sum_bound(x, axis=1))
