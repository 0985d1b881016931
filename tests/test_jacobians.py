"""manual/jacobians.py: the notes' explicit Jacobians against torch, and the literal chain
against the fast backward pass."""

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from manual import functional as F
from manual import jacobians as J
from manual.mlp import MLP

RNG = np.random.default_rng(1)


def test_d_activation_is_diag_of_sigma_prime():
    zhat = RNG.standard_normal(6)
    ref = jacobian(torch.sigmoid, torch.from_numpy(zhat)).numpy()
    np.testing.assert_allclose(J.d_activation(F.sigmoid(zhat)), ref, rtol=1e-14, atol=1e-17)


def test_d_softmax_is_diag_minus_outer():
    x = RNG.standard_normal(5)
    ref = jacobian(lambda t: torch.softmax(t, 0), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(J.d_softmax(F.softmax(x[None])[0]), ref, rtol=1e-13, atol=1e-17)


def test_d_cross_entropy_wrt_h():
    h = F.softmax(RNG.standard_normal((1, 4)))[0]
    ref = jacobian(lambda t: -torch.log(t[2]), torch.from_numpy(h)).numpy()
    np.testing.assert_allclose(J.d_cross_entropy(h, 2)[0], ref, rtol=1e-15)


def test_d_linear_wrt_x_W_b():
    n_in, n_out = 4, 3
    x, W, b = RNG.standard_normal(n_in), RNG.standard_normal((n_out, n_in)), RNG.standard_normal(n_out)
    tx, tW, tb = map(torch.from_numpy, (x, W, b))
    np.testing.assert_array_equal(J.d_linear_x(W), jacobian(lambda v: tW @ v + tb, tx).numpy())
    JW = jacobian(lambda w: w @ tx + tb, tW).numpy().reshape(n_out, n_out * n_in)  # row-major vec(W)
    DW = J.d_linear_W(x, n_out)
    assert DW.shape == (n_out, n_out * n_in)
    np.testing.assert_array_equal(DW, JW)
    np.testing.assert_array_equal(DW[1, n_in:2 * n_in], x)  # xᵀ in the second diagonal block
    np.testing.assert_array_equal(J.d_linear_b(n_out), jacobian(lambda v: tW @ tx + v, tb).numpy())


@pytest.mark.parametrize("sizes", [(12, 4), (12, 6, 4), (12, 7, 5, 4)])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_literal_chain_equals_fast_backward(sizes, activation):
    mlp = MLP(sizes, activation, seed=3)
    x, y = RNG.standard_normal((5, sizes[0])), RNG.integers(0, sizes[-1], 5)
    _, fast = mlp.loss_and_grads(x, y)
    chain = J.batch_grads(mlp.weights, mlp.biases, x, y, mlp.activation)
    for (a, b), (c, d) in zip(fast, chain):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-16)
        np.testing.assert_allclose(b, d, rtol=1e-12, atol=1e-16)


def test_literal_chain_refuses_big_sizes():
    with pytest.raises(ValueError, match=r"layer 1 .*limit"):
        J.check_size([784, 256, 10])
    J.check_size([784, 64, 32, 10])  # fine
    big = MLP((784, 512, 10), seed=0)
    with pytest.raises(ValueError, match="D_W"):
        J.batch_grads(big.weights, big.biases, np.zeros((1, 784)), np.array([0]))
