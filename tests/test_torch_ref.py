"""torch_ref: the reference module, the weight transfer and the gradient structure."""

import numpy as np
import pytest
import torch

from compare.tolerances import linear_bound, unit_roundoff
from helpers import assert_close_bound
from manual.mlp import MLP
from torch_ref import convert
from torch_ref.model import TorchMLP


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_manual_copies_exactly_and_round_trips(dtype):
    mlp = MLP((20, 7, 5), dtype=dtype, seed=0)
    module = convert.from_manual(mlp)
    assert module.dtype == (torch.float32 if dtype == np.float32 else torch.float64)
    for layer, W, b in zip(module.layers, mlp.weights, mlp.biases):
        assert layer.weight.shape == W.shape and layer.bias.shape == b.shape
        assert not np.shares_memory(layer.weight.detach().numpy(), W)  # a copy
    weights, biases = convert.to_manual(module)
    for a, b in zip(weights + biases, mlp.weights + mlp.biases):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # bit-exact
    mlp.weights[0][0, 0] += 1  # changing one side leaves the other alone
    assert module.layers[0].weight[0, 0].item() != mlp.weights[0][0, 0]


def test_forward_is_linear_sigmoid_linear():
    mlp = MLP((6, 4, 3), seed=1)
    module = convert.from_manual(mlp)
    x = np.random.default_rng(0).standard_normal((2, 6))
    W1, b1, W2, b2 = mlp.weights[0], mlp.biases[0], mlp.weights[1], mlp.biases[1]
    h = 1 / (1 + np.exp(-(x @ W1.T + b1)))
    expected = h @ W2.T + b2
    # each side's ẑ¹ within linear_bound; σ' ≤ 1/4 carries that into h, plus σ's own 4 roundings
    # (exp ≤ 1 ulp, add, reciprocal) on each side; the output adds its own linear_bound
    dh = 0.25 * linear_bound(x, W1, b1) + 2 * 4 * unit_roundoff(x.dtype) * np.abs(h)
    bound = linear_bound(h, W2, b2) + dh @ np.abs(W2.T)
    assert_close_bound(module(torch.from_numpy(x)).detach().numpy(), expected, bound)


def test_grads_in_manual_structure():
    mlp = MLP((6, 4, 3), seed=1)
    module = convert.from_manual(mlp)
    x = np.random.default_rng(0).standard_normal((2, 6))
    loss, grads = convert.loss_and_grads(module, x, np.array([0, 2]))
    assert isinstance(loss, float)
    assert [tuple(g.shape) for pair in grads for g in pair] == [(4, 6), (4,), (3, 4), (3,)]
    assert all(isinstance(g, np.ndarray) for pair in grads for g in pair)


def test_load_manual_refuses_wrong_shapes_and_dtypes():
    module = TorchMLP((6, 4, 3))
    mlp = MLP((6, 4, 3), seed=0)
    with pytest.raises(ValueError, match=r"layer 1 weight: expected shape \(4, 6\)"):
        convert.load_manual(module, [mlp.weights[0].T, mlp.weights[1]], mlp.biases)
    with pytest.raises(ValueError, match="expected 2 weight and bias arrays"):
        convert.load_manual(module, mlp.weights[:1], mlp.biases)
    with pytest.raises(TypeError, match="expected dtype torch.float64"):
        convert.load_manual(module, [w.astype(np.float32) for w in mlp.weights], mlp.biases)


def test_module_validates_its_inputs():
    module = TorchMLP((784, 5, 10))
    with pytest.raises(ValueError, match=r"shape \(B, 784\)"):
        module(torch.zeros(2, 783, dtype=torch.float64))
    module(torch.zeros(2, 28, 28, dtype=torch.float64))  # images are fine
    with pytest.raises(TypeError, match="dtype"):
        module(torch.zeros(2, 784, dtype=torch.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        module(torch.full((2, 784), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        module.loss(torch.zeros(2, 784, dtype=torch.float64), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="unknown activation"):
        TorchMLP((4, 2), "softplus")
