"""manual/functional.py: every derivative against torch.autograd.functional.jacobian and against
central finite differences; the numerics at the extremes."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch.autograd.functional import jacobian

from manual import functional as F

RNG = np.random.default_rng(0)
H = 1e-6  # finite-difference step (float64)


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


# ------------------------------------------------------------------ elementwise activations

ELEMENTWISE = [
    ("sigmoid", torch.sigmoid, np.linspace(-8, 8, 9)),
    ("tanh", torch.tanh, np.linspace(-3, 3, 9)),
    ("relu", torch.relu, np.array([-2.0, -0.5, 0.3, 1.0, 4.0])),  # away from the kink
]


@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_forward_matches_torch(name, torch_fn, x):
    act = F.ACTIVATIONS[name]
    np.testing.assert_allclose(act.f(x), torch_fn(torch.from_numpy(x)).numpy(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_derivative_matches_torch_jacobian(name, torch_fn, x):
    act = F.ACTIVATIONS[name]
    D = np.diag(act.prime(act.f(x)))  # Dσ = diag(σ'), σ' from the stored forward value
    np.testing.assert_allclose(D, torch_jac(torch_fn, x), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("name, torch_fn, x", ELEMENTWISE)
def test_activation_derivative_matches_finite_differences(name, torch_fn, x):
    act = F.ACTIVATIONS[name]
    np.testing.assert_allclose(np.diag(act.prime(act.f(x))), central_diff(act.f, x), rtol=1e-7, atol=1e-9)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_at_the_extremes(dtype):
    x = np.array([-1e4, -1000, -100, -30, 0, 30, 100, 1000, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = F.sigmoid(x)
        p = F.sigmoid_prime(s)
    assert s.dtype == dtype and np.isfinite(s).all() and np.isfinite(p).all()
    assert s[0] == 0 and s[-1] == 1 and s[4] == 0.5
    np.testing.assert_allclose(s, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6 if dtype == np.float32 else 1e-15)
    # relative accuracy is kept for very negative inputs (no 1 − σ cancellation): σ(−30) = e^−30/(1+e^−30)
    assert abs(float(s[3]) / (np.exp(-30.0) / (1 + np.exp(-30.0))) - 1) < 1e-6


# ------------------------------------------------------------------ softmax, log-softmax, CE


def test_logsumexp_is_shift_stable():
    x = np.array([[1e4, 1e4 - 1, -1e4], [-1e4, -1e4, -1e4], [0.0, 1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = F.logsumexp(x)
    np.testing.assert_allclose(lse, torch.logsumexp(torch.from_numpy(x), dim=1).numpy(), rtol=1e-15)
    np.testing.assert_allclose(lse[2], np.log(np.exp(x[2]).sum()), rtol=1e-15)


def test_softmax_and_log_softmax_match_torch():
    x = RNG.standard_normal((4, 6)) * 5
    tx = torch.from_numpy(x)
    np.testing.assert_allclose(F.softmax(x), torch.softmax(tx, 1).numpy(), rtol=1e-14)
    np.testing.assert_allclose(F.log_softmax(x), torch.log_softmax(tx, 1).numpy(), rtol=1e-14)
    np.testing.assert_allclose(F.softmax(x).sum(axis=1), 1, rtol=1e-15)


def test_d_softmax_vjp_matches_torch_jacobian_and_finite_differences():
    x = RNG.standard_normal(5)
    s = F.softmax(x[None])[0]
    J_torch = torch_jac(lambda t: torch.softmax(t, 0), x)
    J_fd = central_diff(lambda v: F.softmax(v[None])[0], x)
    for g in np.eye(5):  # each row of the Jacobian is the VJP of a unit vector
        np.testing.assert_allclose(F.softmax_vjp(g[None], s[None])[0], g @ J_torch, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(F.softmax_vjp(g[None], s[None])[0], g @ J_fd, rtol=1e-6, atol=1e-9)


def test_log_softmax_vjp_matches_torch_jacobian_and_finite_differences():
    x = RNG.standard_normal(5)
    s = F.softmax(x[None])
    g = RNG.standard_normal((1, 5))
    J_torch = torch_jac(lambda t: torch.log_softmax(t, 0), x)
    J_fd = central_diff(lambda v: F.log_softmax(v[None])[0], x)
    np.testing.assert_allclose(F.log_softmax_vjp(g, s)[0], g[0] @ J_torch, rtol=1e-13)
    np.testing.assert_allclose(F.log_softmax_vjp(g, s)[0], g[0] @ J_fd, rtol=1e-7)


@pytest.mark.parametrize("B", [1, 3, 8])
def test_cross_entropy_and_its_gradient_match_torch(B):
    logits = RNG.standard_normal((B, 10)) * 3
    y = RNG.integers(0, 10, B)
    t = torch.from_numpy(logits).requires_grad_()
    ref = TF.cross_entropy(t, torch.from_numpy(y))
    ref.backward()
    loss, delta = F.cross_entropy_backward(logits, y)
    assert loss == pytest.approx(ref.item(), rel=1e-15)
    assert F.cross_entropy(logits, y) == pytest.approx(ref.item(), rel=1e-15)
    np.testing.assert_allclose(delta, t.grad.numpy(), rtol=1e-14, atol=1e-17)
    J_fd = central_diff(lambda v: F.cross_entropy(v.reshape(B, 10), y), logits.ravel())
    np.testing.assert_allclose(delta.ravel(), J_fd[0], rtol=1e-6, atol=1e-9)


def test_cross_entropy_gradient_has_the_one_over_B_once():
    logits = np.zeros((4, 2))
    y = np.array([0, 0, 1, 1])
    _, delta = F.cross_entropy_backward(logits, y)
    np.testing.assert_array_equal(delta, np.array([[-0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, -0.5]]) / 4)


def test_cross_entropy_backward_does_not_touch_logits():
    logits = RNG.standard_normal((3, 4))
    copy = logits.copy()
    _, delta = F.cross_entropy_backward(logits, np.array([0, 1, 2]))
    assert not np.shares_memory(delta, logits)
    np.testing.assert_array_equal(logits, copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_at_logits_near_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 9999.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    t = torch.from_numpy(logits).requires_grad_()
    ref = TF.cross_entropy(t, torch.from_numpy(y))
    ref.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, delta = F.cross_entropy_backward(logits, y)
    assert np.isfinite(loss) and np.isfinite(delta).all()
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(delta, t.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_labels_must_match_the_batch():
    with pytest.raises(ValueError, match="labels must have shape"):
        F.cross_entropy(np.zeros((3, 4)), np.array([0, 1]))


# ------------------------------------------------------------------ the linear map


def test_linear_matches_nn_linear():
    x, W, b = RNG.standard_normal((5, 4)), RNG.standard_normal((3, 4)), RNG.standard_normal(3)
    ref = TF.linear(torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(F.linear(x, W, b), ref, rtol=1e-15)


def test_linear_backward_matches_torch_jacobians():
    """D_z f = W, D_W f = blocks of zᵀ, D_b f = I, applied to δ and summed over the batch."""
    B, n_in, n_out = 4, 5, 3
    x, W, b = RNG.standard_normal((B, n_in)), RNG.standard_normal((n_out, n_in)), RNG.standard_normal(n_out)
    delta = RNG.standard_normal((B, n_out))
    dW, db, dx = F.linear_backward(delta, x, W)
    tx, tW, tb, td = map(torch.from_numpy, (x, W, b, delta))
    JW = jacobian(lambda w: TF.linear(tx, w, tb), tW).numpy()  # (B, out, out, in)
    Jb = jacobian(lambda v: TF.linear(tx, tW, v), tb).numpy()  # (B, out, out)
    Jx = jacobian(lambda v: TF.linear(v, tW, tb), tx).numpy()  # (B, out, B, in)
    np.testing.assert_allclose(dW, np.einsum("bo,boij->ij", delta, JW), rtol=1e-14)
    np.testing.assert_allclose(db, np.einsum("bo,boj->j", delta, Jb), rtol=1e-14)
    np.testing.assert_allclose(dx, np.einsum("bo,boci->ci", delta, Jx), rtol=1e-14)
    # and against finite differences of the scalar <δ, f(x)>
    obj = lambda w: float((delta * F.linear(x, w.reshape(n_out, n_in), b)).sum())  # noqa: E731
    np.testing.assert_allclose(dW.ravel(), central_diff(obj, W.ravel())[0], rtol=1e-7)
    assert F.linear_backward(delta, x, W, need_dx=False)[2] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_and_row_sums_written_as_products_are_the_sums(dtype):
    """1ᵀx and x·1 against NumPy's sums, within the rounding of a sum of k terms: k·eps·Σ|xᵢ|."""
    x = RNG.standard_normal((300, 7)).astype(dtype)
    eps = np.finfo(dtype).eps
    col, row = F.column_sum(x), F.row_sum(x)
    assert col.shape == (7,) and row.shape == (300, 1) and col.dtype == row.dtype == dtype
    assert (np.abs(col - x.sum(axis=0)) <= 2 * 300 * eps * np.abs(x).sum(axis=0)).all()
    assert (np.abs(row[:, 0] - x.sum(axis=1)) <= 2 * 7 * eps * np.abs(x).sum(axis=1)).all()
