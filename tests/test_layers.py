"""manual/layers.py: every layer's backward against torch autograd on the torch counterpart the layer
names, and against central finite differences, in float64; wrong derivatives injected into the
functions the layers use are caught, naming what they broke.

Bounds: against torch, elementwise from the magnitudes (compare.tolerances' ``matmul_bound``,
``linear_bound``, ``sum_bound``: 2·γ_k·(|A|@|B|) for two computations of a product of inner length
k; an activation and its derivative by tests/helpers.py's ``forward_rel`` and ``prime_error``, the
loss by a few eps of its terms per row and γ_(B+1) for the batch mean); against finite differences,
compare/tolerances.py's FINITE_DIFF_REL with its step FD_STEP.

The correct layers also run on torch tensors and array-api-strict arrays (``lib``), against the same
bounds: each computation's rounding, whichever library's kernels round.
"""

import numpy as np
import pytest
import torch

from compare.tolerances import FD_STEP, FINITE_DIFF_REL, gamma, linear_bound, matmul_bound, sum_bound
from helpers import ARRAY_LIBRARIES, forward_rel, from_library, in_library, prime_error
from manual import functional as F
from manual.layers import ACTIVATION_LAYERS, Linear, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh

RNG = np.random.default_rng(5)
EPS = np.finfo(np.float64).eps


def torch_counterpart(layer, *args):
    """The module named by ``layer.torch_module`` ("torch.nn.X"), float64."""
    assert layer.torch_module.startswith("torch.nn.")
    return getattr(torch.nn, layer.torch_module.removeprefix("torch.nn."))(*args).double()


def autograd(module, x, g, params=None):
    """(y, ∂⟨g, y⟩/∂x, {torch name: ∂⟨g, y⟩/∂param}) by torch autograd."""
    tx = torch.from_numpy(x).requires_grad_()
    ty = module(tx)
    (ty * torch.from_numpy(g)).sum().backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return ty.detach().numpy(), tx.grad.numpy(), grads


def central_diff(fn, v, h=FD_STEP):
    """∂fn/∂v for a scalar fn of the array v (changed in place and restored), same shape as v."""
    out = np.empty_like(v)
    for k in np.ndindex(v.shape):
        keep = v[k]
        v[k] = keep + h
        up = fn()
        v[k] = keep - h
        down = fn()
        v[k] = keep
        out[k] = (up - down) / (2 * h)
    return out


def beyond(name, a, b, bound):
    """"name" if a and b differ by more than `bound` anywhere (elementwise), else None."""
    return name if (np.abs(a - b) > bound).any() else None


def fd_off(name, a, fd):
    """"name" if the relative error ‖a − fd‖/‖fd‖ exceeds FINITE_DIFF_REL, else None."""
    return name if np.linalg.norm(a - fd) > FINITE_DIFF_REL * max(np.linalg.norm(fd), 1e-300) else None


# ------------------------------------------------------------------ the checks


def in_lib(lib: str, layer):
    """The layer itself (NumPy), or a layer of its class holding copies of its parameters in `lib`."""
    if lib == "numpy":
        return layer
    if isinstance(layer, Linear):
        return Linear(*(in_library(lib, layer.params[k]) for k in ("W", "b")), need_dx=layer.need_dx)
    return type(layer)()


def forward_backward(layer, x: np.ndarray, g: np.ndarray, lib: str = "numpy"):
    """(y, dx, grads) of the layer's forward on x and backward of g, computed on `lib`'s arrays
    (by a copy of the layer there), as NumPy."""
    twin = in_lib(lib, layer)
    y = from_library(lib, twin.forward(in_library(lib, x)))
    dx = from_library(lib, twin.backward(in_library(lib, g)))
    return y, dx, {k: from_library(lib, v) for k, v in twin.grads.items()}


def linear_failures(layer: Linear, x: np.ndarray, g: np.ndarray, lib: str = "numpy") -> set[str]:
    """Which of y, dx, W, b disagree with torch.nn.Linear or with finite differences (the layer's
    forward and backward on `lib`'s arrays; finite differences on NumPy's)."""
    W, b = layer.params["W"], layer.params["b"]
    module = torch_counterpart(layer, W.shape[1], W.shape[0])
    with torch.no_grad():
        for name, tname in layer.torch_names.items():
            getattr(module, tname).copy_(torch.from_numpy(layer.params[name]))
    y_t, dx_t, grads_t = autograd(module, x, g)
    y, dx, grads = forward_backward(layer, x, g, lib)
    found = {beyond("y", y, y_t, linear_bound(x, W, b)),
             beyond("dx", dx, dx_t, matmul_bound(g, W)),
             beyond("W", grads["W"], grads_t["weight"], matmul_bound(g.T, x)),
             beyond("b", grads["b"], grads_t["bias"], sum_bound(g, axis=0))}

    def objective():
        return float((g * F.linear(x, W, b)).sum())

    found |= {fd_off("dx", dx, central_diff(objective, x)), fd_off("W", grads["W"], central_diff(objective, W)),
              fd_off("b", grads["b"], central_diff(objective, b))}
    return found - {None}


def elementwise_failures(layer, x: np.ndarray, g: np.ndarray, lib: str = "numpy") -> set[str]:
    """Which of y, dx disagree with the torch activation or with finite differences. Each side's
    f within forward_rel·|f|, its f' (from its own f) within prime_error, times g one rounding more."""
    y_t, dx_t, _ = autograd(torch_counterpart(layer), x, g)
    y, dx, _ = forward_backward(layer, x, g, lib)
    dx_bound = 2 * (np.abs(g) * prime_error(layer.name, y_t) + EPS / 2 * np.abs(dx_t))
    found = {beyond("y", y, y_t, 2 * forward_rel(layer.name) * np.abs(y_t)), beyond("dx", dx, dx_t, dx_bound)}
    found.add(fd_off("dx", dx, central_diff(lambda: float((g * layer.fn.f(x)).sum()), x)))
    return found - {None}


def loss_failures(layer: SoftmaxCrossEntropy, logits: np.ndarray, y: np.ndarray, lib: str = "numpy") -> set[str]:
    """Which of the loss and δ disagree with torch.nn.CrossEntropyLoss or with finite differences.
    The loss rounds by ≲ (C + 4)·eps per row of (|logsumexp| + |ẑ_y|), and its batch mean by
    γ_(B+1) of the summed terms (each ≤ |logsumexp| + |ẑ_y| + 2 ln C); δ by (C + 4)·eps·(p + 1)/B."""
    t = torch.from_numpy(logits).requires_grad_()
    ref = torch_counterpart(layer)(t, torch.from_numpy(y))
    ref.backward()
    twin = in_lib(lib, layer)
    loss = twin.forward(in_library(lib, logits), in_library(lib, y))
    delta = from_library(lib, twin.backward())
    B, C = logits.shape
    scale = (np.abs(F.logsumexp(logits)) + np.abs(logits[np.arange(B), y])).mean()
    p = F.softmax(logits)
    loss_bound = 2 * ((C + 4) * EPS * scale + gamma(B + 1, np.float64) * (scale + 2 * np.log(C)))
    found = {beyond("loss", loss, ref.item(), loss_bound),
             beyond("delta", delta, t.grad.numpy(), 2 * (C + 4) * EPS * (p + 1) / B),
             fd_off("delta", delta, central_diff(lambda: F.cross_entropy(logits, y), logits))}
    return found - {None}


# ------------------------------------------------------------------ correct layers pass


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("B, n_in, n_out", [(1, 3, 2), (5, 7, 4), (16, 30, 10)])
def test_linear_matches_nn_linear_and_finite_differences(B, n_in, n_out, lib):
    layer = Linear.init(n_in, n_out, RNG)
    assert layer.torch_names == {"W": "weight", "b": "bias"}
    assert linear_failures(layer, RNG.standard_normal((B, n_in)), RNG.standard_normal((B, n_out)), lib) == set()


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_the_first_layer_skips_the_input_gradient(lib):
    layer = in_lib(lib, Linear.init(4, 3, RNG, need_dx=False))
    layer.forward(in_library(lib, RNG.standard_normal((2, 4))))
    assert layer.backward(in_library(lib, RNG.standard_normal((2, 3)))) is None and layer.grads["W"].shape == (3, 4)


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("cls", [Sigmoid, Tanh, ReLU])
def test_activations_match_torch_and_finite_differences(cls, lib):
    x = RNG.standard_normal((6, 5)) * 3
    x[np.abs(x) < 10 * FD_STEP] = 0.5  # finite differences across relu's kink measure nothing
    assert elementwise_failures(cls(), x, RNG.standard_normal((6, 5)), lib) == set()
    assert ACTIVATION_LAYERS[cls.name] is cls


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("B", [1, 4, 32])
def test_softmax_cross_entropy_matches_torch_and_finite_differences(B, lib):
    logits = RNG.standard_normal((B, 10)) * 4
    assert loss_failures(SoftmaxCrossEntropy(), logits, RNG.integers(0, 10, B), lib) == set()


def test_layers_follow_the_protocol():
    for layer in (Linear.init(3, 2, RNG), Sigmoid(), Tanh(), ReLU(), SoftmaxCrossEntropy()):
        assert isinstance(layer.params, dict) and isinstance(layer.grads, dict) and layer.torch_module
        assert set(layer.params) == set(layer.grads)
    with pytest.raises(ValueError, match=r"Linear needs W \(out, in\) and b \(out,\)"):
        Linear(np.zeros((3, 4)), np.zeros(4))


# ------------------------------------------------------------------ wrong derivatives are caught


def test_linear_with_a_doubled_bias_gradient_is_caught(monkeypatch):
    right = F.linear_backward

    def doubled(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        return dW, 2 * db, dx

    monkeypatch.setattr(F, "linear_backward", doubled)
    assert linear_failures(Linear.init(5, 4, RNG), RNG.standard_normal((3, 5)), RNG.standard_normal((3, 4))) == {"b"}


def test_linear_with_a_transposed_weight_gradient_is_caught(monkeypatch):
    right = F.linear_backward

    def transposed(delta, x, W, need_dx=True):
        _, db, dx = right(delta, x, W, need_dx)
        return (x.T @ delta).reshape(W.shape), db, dx  # xᵀδ, read back in W's shape

    monkeypatch.setattr(F, "linear_backward", transposed)
    assert linear_failures(Linear.init(4, 4, RNG), RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))) == {"W"}


@pytest.mark.parametrize("name, wrong", [
    ("sigmoid", lambda s: s * (s - 1)),  # sign error
    ("tanh", lambda t: 1 - t),  # a missing factor: 1 − t instead of 1 − t²
    ("relu", lambda r: np.ones_like(r)),  # the kink forgotten
])
def test_an_activation_with_a_wrong_derivative_is_caught(monkeypatch, name, wrong):
    act = F.ACTIVATIONS[name]
    monkeypatch.setitem(F.ACTIVATIONS, name, F.Activation(name, act.f, wrong))
    x = RNG.standard_normal((6, 5)) * 3
    x[np.abs(x) < 10 * FD_STEP] = 0.5
    assert elementwise_failures(ACTIVATION_LAYERS[name](), x, RNG.standard_normal((6, 5))) == {"dx"}


def test_a_loss_without_its_one_over_b_is_caught(monkeypatch):
    right = F.cross_entropy_backward

    def summed(logits, y):
        loss, delta = right(logits, y)
        return loss, delta * len(y)

    monkeypatch.setattr(F, "cross_entropy_backward", summed)
    logits = RNG.standard_normal((4, 10))
    assert loss_failures(SoftmaxCrossEntropy(), logits, RNG.integers(0, 10, 4)) == {"delta"}
