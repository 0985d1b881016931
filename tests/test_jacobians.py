"""manual/jacobians.py: the notes' explicit Jacobians against torch, and the literal chain
against the fast backward pass."""

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from compare.tolerances import unit_roundoff
from helpers import assert_close_bound, gradient_bounds
from manual import functional as F
from manual import jacobians as J
from manual.mlp import MLP

RNG = np.random.default_rng(1)
U = unit_roundoff(np.float64)


def softmax_rel(x):
    """Relative error of one computation of SM(x) (n entries, float64): the shift and log-sum-exp
    (γ_n of the sum, the log, the subtractions: ≤ u·(n + 4 + 2·max|x| + ln n)), then exp (≤ 1 ulp
    = 2u, plus its argument's absolute error as a relative one)."""
    n = len(x)
    return (n + 8 + 4 * np.abs(x).max() + 2 * np.log(n)) * U


def test_d_activation_is_diag_of_sigma_prime():
    zhat = RNG.standard_normal(6)
    ref = jacobian(torch.sigmoid, torch.from_numpy(zhat)).numpy()
    # σ = 1/(1 + e^(−ẑ)) within 4u (exp ≤ 1 ulp, add, reciprocal); 1 − σ then within 4u·σ/(1 − σ) + u
    # = 4u·e^ẑ + u; the product one u more: (6 + 4e^ẑ)·u on each side (off the diagonal both are 0)
    bound = 2 * (6 + 4 * np.exp(np.abs(zhat))) * U * np.abs(np.diag(ref))
    assert_close_bound(J.d_activation(F.sigmoid(zhat)), ref, np.diag(bound))


def test_d_softmax_is_diag_minus_outer():
    x = RNG.standard_normal(5)
    ref = jacobian(lambda t: torch.softmax(t, 0), torch.from_numpy(x)).numpy()
    s = F.softmax(x[None])[0]
    # sᵢδᵢⱼ − sᵢsⱼ from s within softmax_rel: each side within (2·softmax_rel + 2u) of the terms' sizes
    bound = 2 * (2 * softmax_rel(x) + 2 * U) * (np.diag(s) + np.outer(s, s))
    assert_close_bound(J.d_softmax(s), ref, bound)


def test_d_cross_entropy_wrt_h():
    h = F.softmax(RNG.standard_normal((1, 4)))[0]
    ref = jacobian(lambda t: -torch.log(t[2]), torch.from_numpy(h)).numpy()
    # −1/h₂ at the same h: one division on each side, ≤ u each (rtol 1e-15 ≈ 9u); zeros elsewhere
    np.testing.assert_allclose(J.d_cross_entropy(h, 2)[0], ref, rtol=2 * U)


def test_d_linear_wrt_x_W_b():
    n_in, n_out = 4, 3
    x, W, b = RNG.standard_normal(n_in), RNG.standard_normal((n_out, n_in)), RNG.standard_normal(n_out)
    tx, tW, tb = map(torch.from_numpy, (x, W, b))
    # autograd's one-hot vector–Jacobian products pick single entries (1·w + 0·…): exact, so bit for bit
    np.testing.assert_array_equal(J.d_linear_x(W), jacobian(lambda v: tW @ v + tb, tx).numpy())
    JW = jacobian(lambda w: w @ tx + tb, tW).numpy().reshape(n_out, n_out * n_in)  # row-major vec(W)
    DW = J.d_linear_W(x, n_out)
    assert DW.shape == (n_out, n_out * n_in)
    np.testing.assert_array_equal(DW, JW)
    np.testing.assert_array_equal(DW[1, n_in:2 * n_in], x)  # xᵀ in the second diagonal block
    np.testing.assert_array_equal(J.d_linear_b(b), jacobian(lambda v: tW @ tx + v, tb).numpy())


@pytest.mark.parametrize("sizes", [(12, 4), (12, 6, 4), (12, 7, 5, 4)])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_literal_chain_equals_fast_backward(sizes, activation):
    mlp = MLP(sizes, activation, seed=3)
    x, y = RNG.standard_normal((5, sizes[0])), RNG.integers(0, sizes[-1], 5)
    _, fast = mlp.loss_and_grads(x, y)
    chain = J.batch_grads(mlp.weights, mlp.biases, x, y, mlp.activation)
    bounds = gradient_bounds(mlp.weights, mlp.biases, x, y, mlp.activation)
    for layer, ((a, b), (c, d), (bound_W, bound_b)) in enumerate(zip(fast, chain, bounds), start=1):
        assert_close_bound(a, c, bound_W, msg=f"layer {layer} W: ")
        assert_close_bound(b, d, bound_b, msg=f"layer {layer} b: ")


def test_literal_chain_refuses_big_sizes():
    with pytest.raises(ValueError, match=r"layer 1 .*limit"):
        J.check_size([784, 256, 10])
    J.check_size([784, 64, 32, 10])  # fine
    big = MLP((784, 512, 10), seed=0)
    with pytest.raises(ValueError, match="D_W"):
        J.batch_grads(big.weights, big.biases, np.zeros((1, 784)), np.array([0]))
