"""manual/ on any array library: the reference computes in the library of the arrays it is given.

array-api-strict holds the standard's API and nothing more and computes with NumPy's own kernels,
so the reference run on its arrays must give NumPy's results bit for bit: the same arithmetic,
and no NumPy-only call (which fails on its arrays or hands back a NumPy array). On torch tensors
the results stay torch tensors of the inputs' dtype and device, without autograd; their agreement
with autograd, within each computation's rounding, is tested beside the NumPy case in
tests/test_functional.py, test_layers.py and test_mlp.py (``lib``). The GPU tests run where torch
sees a CUDA device and skip elsewhere.
"""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from array_api_compat import array_namespace

from compare.tolerances import elementwise_rel, gradient_rel
from helpers import from_library, in_library, net_in, run_in
from manual import MLP, SGD, Linear, Sigmoid, Stack
from manual import functional as mf
from manual import jacobians as J

RNG = np.random.default_rng(11)
STRICT = "array_api_strict"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def same(a, b) -> None:
    """Bit for bit: equal shapes, dtypes and values (tuples and lists element by element)."""
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            same(p, q)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def functional_cases(dtype) -> dict:
    """name -> (function, NumPy arguments), for every function of manual.functional."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 5)) * 4).astype(dtype)
    g = rng.standard_normal((6, 5)).astype(dtype)
    W, b = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal(3).astype(dtype)
    delta = rng.standard_normal((6, 3)).astype(dtype)
    s = mf.softmax(x)
    y = rng.integers(0, 5, 6)
    extremes = np.array([[-1e4, -100, -30, 0], [30, 100, 1e4, -0.5]], dtype=dtype)
    cases = {"linear": (mf.linear, (x, W, b)), "linear_backward": (mf.linear_backward, (delta, x, W)),
             "ones": (mf.ones, (x, (2, 3))), "column_sum": (mf.column_sum, (x,)), "row_sum": (mf.row_sum, (x,)),
             "logsumexp": (mf.logsumexp, (x,)), "log_softmax": (mf.log_softmax, (x,)), "softmax": (mf.softmax, (x,)),
             "log_softmax_vjp": (mf.log_softmax_vjp, (g, s)), "softmax_vjp": (mf.softmax_vjp, (g, s)),
             "pick": (mf.pick, (x, y)), "one_hot": (mf.one_hot, (y, x)), "cross_entropy": (mf.cross_entropy, (x, y)),
             "cross_entropy_backward": (mf.cross_entropy_backward, (x, y)), "sigmoid at the extremes": (mf.sigmoid, (extremes,))}
    for name, act in mf.ACTIVATIONS.items():
        cases[name], cases[f"{name}'"] = (act.f, (x,)), (act.prime, (act.f(x),))
    return cases


CASES = list(functional_cases(np.float64))


# ------------------------------------------------------------------ array-api-strict: NumPy's results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_every_function_on_strict_arrays_gives_numpys_result_bit_for_bit(name, dtype):
    fn, args = functional_cases(dtype)[name]
    same(run_in(STRICT, fn, *args), fn(*args))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_the_mlp_trains_on_strict_arrays_exactly_as_on_numpy(activation, dtype):
    """Three steps of loss_and_grads + SGD, then predictions: every number NumPy's."""
    mlp = MLP((12, 9, 7, 4), activation, dtype, seed=5)
    twin = net_in(STRICT, mlp)
    for _ in range(3):
        x, y = RNG.standard_normal((8, 12)).astype(dtype), RNG.integers(0, 4, 8)
        loss, grads = mlp.loss_and_grads(x, y)
        loss_s, grads_s = from_library(STRICT, twin.loss_and_grads(in_library(STRICT, x), in_library(STRICT, y)))
        same((loss_s, grads_s), (loss, grads))
        SGD(0.5).step(mlp.parameters(), grads)
        SGD(0.5).step(twin.parameters(), twin.grads)
    same(from_library(STRICT, twin.parameters()), mlp.parameters())
    same(run_in(STRICT, twin.predict, x, batch=3), mlp.predict(x, batch=3))
    same(run_in(STRICT, twin.loss, x, y), mlp.loss(x, y))


def test_the_literal_jacobian_chain_runs_on_strict_arrays_exactly_as_on_numpy():
    mlp = MLP((6, 4, 3), "tanh", seed=2)
    x, y = RNG.standard_normal((3, 6)), np.array([0, 2, 1])
    weights = [in_library(STRICT, W) for W in mlp.weights]
    biases = [in_library(STRICT, b) for b in mlp.biases]
    ours = from_library(STRICT, J.batch_grads(weights, biases, in_library(STRICT, x), in_library(STRICT, y),
                                              mlp.activation))
    same(ours, J.batch_grads(mlp.weights, mlp.biases, x, y, mlp.activation))


def test_a_numpy_only_call_in_the_reference_fails_on_strict_arrays(monkeypatch):
    """The check above can fail: a sigmoid written with np.exp breaks the run on strict arrays."""
    def numpy_sigmoid(x):
        return 1 / (1 + np.exp(-x))

    monkeypatch.setitem(mf.ACTIVATIONS, "sigmoid", mf.Activation("sigmoid", numpy_sigmoid, mf.sigmoid_prime))
    twin = net_in(STRICT, MLP((5, 4, 3), seed=0))
    with pytest.raises(TypeError):
        twin.loss_and_grads(in_library(STRICT, np.ones((2, 5))), in_library(STRICT, np.array([0, 1])))


# ------------------------------------------------------------------ torch tensors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_every_function_on_torch_tensors_gives_tensors_of_the_inputs_dtype(name, dtype):
    fn, args = functional_cases(dtype)[name]
    out = fn(*(in_library("torch", a) for a in args))
    tensors = [a for a in (out if isinstance(out, tuple) else (out,)) if not isinstance(a, float)]
    assert all(isinstance(a, torch.Tensor) and not a.requires_grad for a in tensors)
    assert all(a.dtype == getattr(torch, np.dtype(dtype).name) for a in tensors)


def test_to_copies_the_parameters_into_the_library_and_keeps_dtype_and_values():
    mlp = MLP((6, 5, 3), dtype=np.float32, seed=1)
    twin = copy.deepcopy(mlp).to(torch)
    assert twin.dtype == torch.float32
    for a, t in zip(mlp.parameters(), twin.parameters()):
        for p, q in zip(a, t):
            assert isinstance(q, torch.Tensor) and q.dtype == torch.float32 and not q.requires_grad
            np.testing.assert_array_equal(q.numpy(), p)
            q += 1  # a copy: the NumPy net keeps its numbers
            assert not np.array_equal(q.numpy(), p)
    assert all(isinstance(g, torch.Tensor) for pair in twin.grads for g in pair)


def test_sgd_updates_torch_tensors_in_place():
    twin = MLP((6, 4, 3), seed=0).to(torch)
    W0 = twin.weights[0]
    before = W0.clone()
    _, grads = twin.loss_and_grads(torch.asarray(RNG.standard_normal((5, 6))), torch.tensor([0, 1, 2, 0, 1]))
    SGD(0.5).step(twin.parameters(), grads)
    assert twin.weights[0] is W0
    torch.testing.assert_close(W0, before - grads[0][0] * 0.5, rtol=0, atol=0)


def test_set_parameters_converts_numpy_arrays_into_the_nets_library():
    a, b = MLP((5, 4, 3), seed=0).to(torch), MLP((5, 4, 3), seed=1)
    W0 = a.weights[0]
    a.set_parameters(b.weights, b.biases)
    assert a.weights[0] is W0 and isinstance(W0, torch.Tensor)
    np.testing.assert_array_equal(W0.numpy(), b.weights[0])


def test_inputs_from_another_library_or_dtype_get_one_clear_error():
    twin = MLP((5, 4, 3), seed=0).to(torch)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor like the net's parameters, got a numpy.ndarray; "
                                        r"convert it \(or the net: .to\(xp\)\)"):
        twin.loss_and_grads(np.ones((2, 5)), np.array([0, 1]))
    with pytest.raises(TypeError, match="y must be a torch.Tensor like the net's parameters, got a numpy.ndarray"):
        twin.loss_and_grads(torch.ones(2, 5, dtype=torch.float64), np.array([0, 1]))
    with pytest.raises(TypeError, match="x has dtype torch.float32 but the weights are torch.float64"):
        twin.forward(torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first at index \(1, 2\)\)"):
        twin.forward(torch.tensor([[0.0] * 5, [0, 0, float("nan"), 0, 0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2, got values from 0 to 3"):
        twin.loss_and_grads(torch.ones(2, 5, dtype=torch.float64), torch.tensor([0, 3]))


def test_layers_of_two_libraries_are_refused():
    with pytest.raises(TypeError, match="Linear needs W and b of one array library, got torch.Tensor and numpy.ndarray"):
        Linear(torch.zeros(3, 4, dtype=torch.float64), np.zeros(3))


def test_a_stack_follows_its_parameters_library():
    rng = np.random.default_rng(0)
    stack = Stack([Linear.init(4, 3, rng), Sigmoid(), Linear.init(3, 2, rng)]).to(torch)
    assert stack.dtype == torch.float64
    loss, grads = stack.loss_and_layer_grads(torch.ones(2, 4, dtype=torch.float64), torch.tensor([0, 1]))
    assert isinstance(loss, float) and all(isinstance(g, torch.Tensor) for d in grads for g in d.values())


def test_manual_never_imports_torch():
    code = ("import sys, manual, manual.fast, manual.functional, manual.jacobians, manual.layers, manual.mlp, "
            "manual.optim; assert 'torch' not in sys.modules, 'manual imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ a GPU, where torch sees one


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_on_a_device_the_mlp_computes_there_and_agrees_with_autograd(dtype, activation, device):
    """Manual on tensors of `device` against torch autograd there, from the same weights and
    batch, within the harness's bounds (compare/tolerances.py, widened for confident batches)."""
    from torch_ref import convert

    mlp = MLP((784, 64, 10), activation, dtype, seed=3)
    module = convert.from_manual(mlp, device)
    gpu = copy.deepcopy(mlp).to(torch, device=device)
    x = torch.asarray(RNG.standard_normal((128, 784)).astype(dtype), device=device)
    y = torch.asarray(RNG.integers(0, 10, 128), device=device)
    loss, grads = gpu.loss_and_grads(x, y)
    assert all(g.device.type == device for pair in grads for g in pair)
    assert module.layers[0].weight.device.type == device
    t_loss, t_grads = convert.loss_and_grads(module, x, y)
    scale = float(gpu.zhats[-1].abs().max())
    rel = gradient_rel(mlp.dtype, min(loss, t_loss), logit_scale=scale)
    assert abs(loss - t_loss) <= rel * max(abs(loss), abs(t_loss))
    from helpers import assert_grads_agree

    ours = [(dW.cpu().numpy(), db.cpu().numpy()) for dW, db in grads]
    assert_grads_agree(ours, t_grads, rel, elem_allowed=elementwise_rel(mlp.dtype, loss, logit_scale=scale))
    SGD(0.5).step(gpu.parameters(), grads)
    assert gpu.weights[0].device.type == device
    assert array_namespace(gpu.predict(x)) is array_namespace(x)
