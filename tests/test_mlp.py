"""manual/mlp.py and manual/optim.py: initialisation, forward, whole-network gradients against
torch autograd (0–3 hidden layers, several widths and batch sizes, both dtypes, all activations),
a property-based sweep, the extremes, input validation, the stack of layers and a user's own stack.
The tuned step (manual/fast.py) is held to this reference in tests/test_fast.py.

Bounds: against torch, compare/tolerances.py's gradient bounds (``gradient_rel``, ``elementwise_rel``,
widened for confident batches as the harness does); elementwise comparisons from the magnitudes
(``linear_bound``, tests/helpers.py's ``gradient_bounds``, ``logit_error``); the initialisation's
sample statistics within 5 standard errors of their n draws. The gradients against torch and the
stack's equality with the MLP also run on torch tensors and array-api-strict arrays (``lib``)."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compare.agreement import compare_grads
from helpers import assert_grads_agree
from compare.tolerances import FD_STEP, FINITE_DIFF_REL, elementwise_rel, gradient_rel, linear_bound, unit_roundoff
from helpers import ARRAY_LIBRARIES, assert_close_bound, forward_rel, from_library, gradient_bounds, in_library, net_in
from manual import functional as mf
from manual.layers import Linear, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh
from manual.mlp import MLP, Stack, init_parameters
from manual.optim import SGD
from torch_ref import convert

RNG = np.random.default_rng(2)


def agree_with_torch(mlp, x, y, slack: tuple[float, float] = (0.0, 0.0), lib: str = "numpy"):
    """Manual and torch loss and gradients agree within compare/tolerances.py's bounds for this
    batch (widened for a confident batch by its loss and max |logit|, as in ``crosscheck train``);
    the gradients' relative and elementwise errors at least within 10 × `slack` (the rounding
    sensitivity of each measure, see ``rounding_sensitivity``). The manual side computes on
    `lib`'s arrays (a copy of the net there)."""
    twin = mlp if lib == "numpy" else net_in(lib, mlp)
    loss, grads = from_library(lib, twin.loss_and_grads(in_library(lib, x), in_library(lib, y)))
    scale = float(np.abs(from_library(lib, twin.zhats[-1])).max())
    t_loss, t_grads = convert.loss_and_grads(convert.from_manual(mlp), x, y)
    assert loss == pytest.approx(t_loss, rel=gradient_rel(mlp.dtype, min(loss, t_loss), logit_scale=scale))
    return assert_grads_agree(grads, t_grads, max(gradient_rel(mlp.dtype, loss, logit_scale=scale), 10 * slack[0]),
                              elem_allowed=max(elementwise_rel(mlp.dtype, loss, logit_scale=scale), 10 * slack[1]))


# ------------------------------------------------------------------ initialisation


def test_init_is_nn_linear_default_distribution():
    """n draws of U(−a, a): mean 0 with standard error a/√(3n); variance a²/3 with relative standard
    error √(0.8/n) (fourth moment 9/5 of the variance²); P(max|w| ≤ (1 − t)a) = (1 − t)^n ≈ e^(−tn).
    Each statistic within 5 standard errors (a false alarm ~6e-7), the largest draw within t = 30/n."""
    weights, biases = init_parameters((400, 300, 10), np.random.default_rng(0))
    for W, b, n_in in zip(weights, biases, (400, 300)):
        a, n = 1 / np.sqrt(n_in), W.size
        assert np.abs(W).max() <= a and np.abs(b).max() <= a
        assert np.abs(W).max() > (1 - 30 / n) * a  # uses the whole interval
        assert abs(W.mean()) < 5 * a / math.sqrt(3 * n)
        assert abs(W.var() / (a**2 / 3) - 1) < 5 * math.sqrt(0.8 / n)


def test_same_seed_same_weights_and_dtypes_share_the_draw():
    a, b = MLP((8, 5, 3), seed=7), MLP((8, 5, 3), seed=7)
    c = MLP((8, 5, 3), dtype=np.float32, seed=7)
    for Wa, Wb, Wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(Wa.astype(np.float32), Wc)
    assert not np.array_equal(MLP((8, 5, 3), seed=8).weights[0], a.weights[0])
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(MLP((8, 5, 3), seed=gen).weights[0], a.weights[0])


def test_shapes_follow_nn_linear_layout():
    mlp = MLP((784, 256, 10))
    assert [W.shape for W in mlp.weights] == [(256, 784), (10, 256)]
    assert [b.shape for b in mlp.biases] == [(256,), (10,)]
    assert all(W.dtype == np.float64 for W in mlp.weights)


# ------------------------------------------------------------------ forward


def test_forward_keeps_the_base_points():
    mlp = MLP((6, 5, 4, 3), seed=0)
    x = RNG.standard_normal((2, 6))
    logits = mlp.forward(x)
    assert len(mlp.zs) == 3 and len(mlp.zhats) == 3
    assert mlp.zs[0] is x and logits is mlp.zhats[-1]
    W, b = mlp.weights[0], mlp.biases[0]
    assert_close_bound(mlp.zhats[0], x @ W.T + b, linear_bound(x, W, b))
    sigma = 1 / (1 + np.exp(-mlp.zhats[0]))
    assert_close_bound(mlp.zs[1], sigma, 2 * forward_rel("sigmoid", x.dtype) * np.abs(sigma))


def test_no_hidden_layer_is_softmax_regression():
    mlp = MLP((6, 3), seed=0)
    x, y = RNG.standard_normal((4, 6)), np.array([0, 1, 2, 0])
    _, grads = mlp.loss_and_grads(x, y)
    p = np.exp(x @ mlp.weights[0].T + mlp.biases[0])
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), y] -= 1
    # two computations of the gradient, this one with the unshifted softmax (logits ~1: no overflow)
    bound_W = gradient_bounds(mlp.weights, mlp.biases, x, y, mlp.activation)[0][0]
    assert_close_bound(grads[0][0], p.T @ x / 4, bound_W)
    agree_with_torch(mlp, x, y)


def test_predict_and_images_of_28x28():
    mlp = MLP((784, 16, 10), seed=0)
    x = RNG.standard_normal((5000, 784))
    pred = mlp.predict(x, batch=2048)
    assert pred.shape == (5000,) and pred.dtype == np.int64
    np.testing.assert_array_equal(mlp.predict(x.reshape(5000, 28, 28)), pred)
    logits = np.concatenate([mlp.forward(x[i:i + 1000]).copy() for i in range(0, 5000, 1000)])
    np.testing.assert_array_equal(logits.argmax(1), pred)


# ------------------------------------------------------------------ gradients against torch

ARCHS = [(12, 4), (12, 9, 4), (12, 16, 7, 4), (12, 5, 8, 6, 4), (784, 32, 10)]


@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("batch", [1, 7, 32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
def test_whole_network_gradients_match_torch(sizes, batch, dtype, activation, lib):
    mlp = MLP(sizes, activation, dtype, seed=batch)
    x = RNG.standard_normal((batch, sizes[0])).astype(dtype)
    y = RNG.integers(0, sizes[-1], batch)
    agreements = agree_with_torch(mlp, x, y, lib=lib)
    assert len(agreements) == 2 * (len(sizes) - 1)
    # a second call gives the same answer
    again = agree_with_torch(mlp, x, y, lib=lib)
    assert [agr.rel_err for agr in again] == [agr.rel_err for agr in agreements]


PROPERTY = dict(
    n_in=st.integers(1, 30),
    hidden=st.lists(st.integers(1, 20), max_size=3),
    classes=st.integers(2, 10),
    batch=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(["sigmoid", "tanh", "relu"]),
    dtype=st.sampled_from([np.float32, np.float64]),
)


def random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype):
    rng = np.random.default_rng(seed)
    mlp = MLP((n_in, *hidden, classes), activation, dtype, seed=rng)
    x = (rng.standard_normal((batch, n_in)) * 10**log_scale).astype(dtype)
    return mlp, x, rng.integers(0, classes, batch)


@settings(max_examples=300, deadline=None)
@given(log_scale=st.floats(-3, 1.5), **PROPERTY)
def test_property_gradients_match_torch(n_in, hidden, classes, batch, seed, log_scale, activation, dtype):
    """Agreement with autograd over shapes, seeds and input scales up to ~30 (pixels are ~3).

    Beyond that the gradients become sums that cancel (confident answers, saturated units), and
    no pair of implementations agrees better than the rounding of those sums, which is why the
    test below only asks for finite, warning-free results there."""
    mlp, x, y = random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype)
    _, grads = mlp.loss_and_grads(x, y)
    # A gradient that is exact cancellation up to rounding (e.g. confident answers that balance
    # out in a bias) carries no signal: its relative error is noise against noise.
    assume(all(np.linalg.norm(g) > 1e4 * np.finfo(dtype).eps for pair in grads for g in pair))
    agree_with_torch(mlp, x, y, slack=rounding_sensitivity(mlp, x, y))


@settings(max_examples=200, deadline=None)
@given(log_scale=st.floats(-3, 4), **PROPERTY)
def test_property_finite_and_warning_free_at_any_scale(n_in, hidden, classes, batch, seed, log_scale, activation,
                                                       dtype):
    """Inputs up to 1e4 (pre-activations far beyond ±1000): forward and backward stay finite, no
    overflow warnings, and the predicted classes are torch's."""
    mlp, x, y = random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = mlp.loss_and_grads(x, y)
        pred = mlp.predict(x)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for pair in grads for g in pair)
    logits = convert.from_manual(mlp)(torch.from_numpy(x)).detach().numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    # each logit of the two sides within e of the other's: where torch's top two lie more than 2·max e
    # apart, no logit of ours can overtake the top one; closer, the answer may differ either way
    clear = top2[:, 1] - top2[:, 0] > 2 * logit_error(mlp, x).max(axis=1)
    np.testing.assert_array_equal(pred[clear], logits.argmax(axis=1)[clear])


def logit_error(mlp, x) -> np.ndarray:
    """Elementwise bound (B, classes) on the difference of two computations of the logits
    (ours and torch's), first order and walking the layers:
    Δẑ_l = Δz_(l−1) @ |W_l|ᵀ + linear_bound(z_(l−1), W_l, b_l);
    Δz_l = max|f'| over [ẑ_l − Δẑ_l, ẑ_l + Δẑ_l] · Δẑ_l + 2·forward_rel(f)·|z_l| (tests/helpers.py).
    Runs the forward pass of `mlp` (its base points are those of `x`)."""
    mlp.forward(x)
    name = mlp.activation.name
    dz = np.zeros(x.shape)
    for i, (W, b) in enumerate(mlp.parameters()):
        dzhat = dz @ np.abs(W.astype(np.float64)).T + linear_bound(mlp.zs[i], W, b)
        if i == len(mlp.weights) - 1:
            return dzhat
        zhat, z = mlp.zhats[i].astype(np.float64), mlp.zs[i + 1].astype(np.float64)
        nearest = np.maximum(np.abs(zhat) - dzhat, 0)  # the point of the interval closest to 0
        # σ'(t) = e^(−t)/(1 + e^(−t))², tanh'(t) = 4e^(−2t)/(1 + e^(−2t))², written for t ≥ 0 (no overflow)
        steepest = {"sigmoid": lambda t: np.exp(-t) / (1 + np.exp(-t)) ** 2,
                    "tanh": lambda t: 4 * np.exp(-2 * t) / (1 + np.exp(-2 * t)) ** 2,
                    "relu": lambda t: (zhat + dzhat > 0).astype(np.float64)}[name](nearest)
        dz = steepest * dzhat + 2 * forward_rel(name, mlp.dtype) * np.abs(z)


def rounding_sensitivity(mlp, x, y) -> tuple[float, float]:
    """How much the manual gradient moves when every pre-activation ẑ (logits included) and every
    stored activation moves by one ulp: the rounding noise that each side carries.

    Huge inputs make it large, and rightly so: with saturated units σ' = σ(1 − σ) is computed
    from an output next to 1 (relative error eps/σ'), and confident answers make p_y − 1 and the
    sums of the output deltas cancel (absolute error ~ulp(ẑ)). Both sides pay this, each with its
    own rounding, so their gradients can differ by that much; the largest relative and the
    largest elementwise change over all parameters are returned.
    """
    _, grads = mlp.loss_and_grads(x, y)
    act, linear = mlp.activation, mf.linear
    centre = mlp.dtype.type({"sigmoid": 0.5, "tanh": 0.0, "relu": 0.0}[act.name])

    def nudged_act(z):
        return np.nextafter(act.f(z), centre)

    def nudged_linear(*args):
        return np.nextafter(linear(*args), mlp.dtype.type(np.inf))

    mf.linear = nudged_linear
    for layer in mlp.hidden:
        layer.fn = mf.Activation(act.name, nudged_act, act.prime)
    try:
        _, moved = mlp.loss_and_grads(x, y)
    finally:
        mf.linear = linear
        for layer in mlp.hidden:
            layer.fn = act
    moves = compare_grads(grads, moved, 1.0)
    return max(agr.rel_err for agr in moves), max(agr.elem_rel for agr in moves)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_pre_activations_near_1000_and_logits_near_1e4(activation):
    mlp = MLP((20, 8, 5), activation, seed=0)
    x = np.random.default_rng(3).standard_normal((6, 20))  # its own draw: the same in any test order
    x *= 1000 / np.abs(x @ mlp.weights[0].T).max()  # hidden pre-activations up to ±1000
    mlp.weights[1] *= 1e4 / np.abs(mlp.forward(x)).max()  # logits near ±1e4
    y = np.arange(6) % 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = mlp.loss_and_grads(x, y)
    assert np.abs(mlp.zhats[0]).max() > 900 and np.abs(mlp.zhats[1]).max() > 5e3
    assert np.isfinite(loss) and loss > 100
    # saturated units: σ' (tanh' = 1 − t²) from an output next to ±1 carries eps/σ' of relative
    # rounding on each side (13 of 180 draws of x failed the plain float64 bound by up to 9e-10)
    agree_with_torch(mlp, x, y, slack=rounding_sensitivity(mlp, x, y))


# ------------------------------------------------------------------ validation


def test_input_validation():
    mlp = MLP((784, 4, 10))
    with pytest.raises(ValueError, match=r"shape \(B, 784\) or \(B, 28, 28\)"):
        mlp.forward(np.zeros((2, 783)))
    with pytest.raises(ValueError, match=r"shape \(B, 784\)"):
        mlp.forward(np.zeros(784))
    with pytest.raises(TypeError, match="float32 but the weights are float64"):
        mlp.forward(np.zeros((2, 784), np.float32))
    with pytest.raises(TypeError, match="must be a numpy.ndarray like the net.s parameters, got list"):
        mlp.forward([[0.0] * 784])
    bad = np.zeros((3, 784))
    bad[1, 5] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(1, 5\)\)"):
        mlp.forward(bad)
    mlp.forward(np.full((2, 784), 1e308))  # huge but finite: fine (the sum overflows, the check copes)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        mlp.loss_and_grads(np.zeros((2, 784)), np.array([3, 10]))
    with pytest.raises(ValueError, match="integer labels"):
        mlp.loss_and_grads(np.zeros((2, 784)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        mlp.loss_and_grads(np.zeros((2, 784)), np.array([1, 2, 3]))


def test_constructor_validation():
    with pytest.raises(ValueError, match="at least 2 positive integers"):
        MLP((784,))
    with pytest.raises(ValueError, match="at least 2 positive integers"):
        MLP((784, 0, 10))
    with pytest.raises(ValueError, match="unknown activation 'gelu'; allowed: sigmoid, tanh, relu"):
        MLP((4, 2), "gelu")
    with pytest.raises(TypeError, match="float32 or float64"):
        MLP((4, 2), dtype=np.float16)


def test_set_parameters_copies_and_checks_shapes():
    a, b = MLP((5, 3, 2), seed=0), MLP((5, 3, 2), seed=1)
    a.set_parameters(b.weights, b.biases)
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    assert not np.shares_memory(a.weights[0], b.weights[0])
    with pytest.raises(ValueError, match=r"weights\[layer 1\]: expected shape \(3, 5\)"):
        a.set_parameters([b.weights[0].T, b.weights[1]], b.biases)


# ------------------------------------------------------------------ a stack of layers


def test_the_package_exports_the_net_its_layers_and_sgd():
    import manual

    assert (manual.MLP, manual.Stack, manual.SGD, manual.Linear, manual.SoftmaxCrossEntropy) == (
        MLP, Stack, SGD, Linear, SoftmaxCrossEntropy)


def test_the_mlp_is_a_stack_of_its_layers():
    mlp = MLP((6, 5, 4, 3), "tanh", seed=0)
    assert [type(layer) for layer in mlp.layers] == [Linear, Tanh, Linear, Tanh, Linear]
    assert [layer.need_dx for layer in mlp.linears] == [False, True, True]  # nobody needs ∂L/∂x
    assert all(W is layer.params["W"] for W, layer in zip(mlp.weights, mlp.linears))
    x, y = RNG.standard_normal((4, 6)), np.array([0, 1, 2, 0])
    _, grads = mlp.loss_and_grads(x, y)
    assert all(dW is layer.grads["W"] and db is layer.grads["b"] for (dW, db), layer in zip(grads, mlp.linears))
    again = mlp.backward(mlp.loss_layer.backward())
    for (dW, db), (dW2, db2) in zip(grads, again):
        np.testing.assert_array_equal(dW, dW2)
        np.testing.assert_array_equal(db, db2)


def test_assigning_one_layers_array_puts_it_in_that_layer():
    mlp = MLP((6, 4, 3), seed=0)
    W = np.ones((3, 4))
    mlp.weights[1] = W
    mlp.biases[0] = np.zeros(4)
    assert mlp.linears[1].params["W"] is W and mlp.weights[1] is W
    assert not mlp.biases[0].any()
    with pytest.raises(TypeError, match="one layer's array at a time"):
        mlp.weights[0:2] = [W, W]


@pytest.mark.parametrize("lib", ARRAY_LIBRARIES)
@pytest.mark.parametrize("activation, layer", [("sigmoid", Sigmoid), ("tanh", Tanh), ("relu", ReLU)])
def test_a_stack_of_the_same_layers_gives_the_mlps_loss_and_gradients_bit_for_bit(activation, layer, lib):
    mlp = MLP((10, 7, 5, 4), activation, seed=3)
    stack = Stack([Linear(mlp.weights[0].copy(), mlp.biases[0].copy(), need_dx=False), layer(),
                   Linear(mlp.weights[1].copy(), mlp.biases[1].copy()), layer(),
                   Linear(mlp.weights[2].copy(), mlp.biases[2].copy())])
    mlp, stack = net_in(lib, mlp), net_in(lib, stack)
    x, y = in_library(lib, RNG.standard_normal((6, 10))), in_library(lib, RNG.integers(0, 4, 6))
    loss, grads = from_library(lib, mlp.loss_and_grads(x, y))
    loss_s, grads_s = stack.loss_and_layer_grads(x, y)
    assert loss_s == loss and [sorted(g) for g in grads_s] == [["W", "b"]] * 3
    for (dW, db), g in zip(grads, grads_s):
        np.testing.assert_array_equal(from_library(lib, g["W"]), dW)
        np.testing.assert_array_equal(from_library(lib, g["b"]), db)
    np.testing.assert_array_equal(from_library(lib, stack.predict(x)), from_library(lib, mlp.predict(x)))
    assert stack.loss(x, y) == mlp.loss(x, y)


class Scale:
    """A user's layer: y = a ⊙ x per feature, params {"a": (n,)}; dL/da = Σ_rows dy ⊙ x, dL/dx = dy ⊙ a."""

    def __init__(self, n):
        self.params = {"a": np.linspace(0.5, 1.5, n)}
        self.grads = {"a": np.zeros(n)}

    def forward(self, x):
        self.x = x
        return x * self.params["a"]

    def backward(self, dy):
        self.grads["a"] = (dy * self.x).sum(axis=0)
        return dy * self.params["a"]


def test_a_users_layer_in_a_stack_gets_its_gradient_and_its_sgd_step():
    rng = np.random.default_rng(4)
    stack = Stack([Linear.init(8, 6, rng), Scale(6), Sigmoid(), Linear.init(6, 3, rng)])
    x, y = rng.standard_normal((5, 8)), np.array([0, 1, 2, 0, 1])
    _, grads = stack.loss_and_layer_grads(x, y)
    assert [sorted(g) for g in grads] == [["W", "b"], ["a"], ["W", "b"]]
    a, h = stack.layers[1].params["a"], FD_STEP
    fd = []
    for k in range(len(a)):  # central differences of the loss in a_k
        a[k] += h
        up = stack.loss(x, y)
        a[k] -= 2 * h
        down = stack.loss(x, y)
        a[k] += h
        fd.append((up - down) / (2 * h))
    # the project's finite-difference bound at its step (truncation h²/6·L‴ and rounding u·|L|/h, see
    # compare/tolerances.py)
    assert np.linalg.norm(grads[1]["a"] - fd) <= FINITE_DIFF_REL * np.linalg.norm(fd)
    expected = a - 0.1 * grads[1]["a"]
    SGD(0.1).step(stack.layer_params(), grads)
    np.testing.assert_array_equal(stack.layers[1].params["a"], expected)


def test_stack_validation_says_what_is_wrong():
    rng = np.random.default_rng(0)
    stack = Stack([Linear.init(4, 3, rng)])
    with pytest.raises(ValueError, match="at least one layer"):
        Stack([])
    with pytest.raises(TypeError, match="must be a numpy.ndarray like the net.s parameters, got list"):
        stack.forward([[0.0] * 4])
    with pytest.raises(TypeError, match="float32 but the weights are float64"):
        stack.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(1, 2\)\)"):
        stack.forward(np.array([[0.0] * 4, [0, 0, np.nan, 0]]))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        stack.loss_and_layer_grads(np.zeros((2, 4)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"layer 1: expected parameters \['W', 'b'\], got \['W'\]"):
        stack.set_layer_params([{"W": np.zeros((3, 4))}])
    with pytest.raises(ValueError, match=r"layer 1 W: expected shape \(3, 4\), got \(4, 3\)"):
        stack.set_layer_params([{"W": np.zeros((4, 3)), "b": np.zeros(3)}])
    with pytest.raises(ValueError, match="do not match parameters"):
        SGD(0.1).step(stack.layer_params(), [{"W": np.zeros((3, 4))}])


def test_the_loss_layer_hands_back_the_output_delta():
    ce = SoftmaxCrossEntropy()
    logits, y = RNG.standard_normal((4, 3)), np.array([0, 2, 1, 1])
    loss = ce.forward(logits, y)
    expected_loss, expected_delta = mf.cross_entropy_backward(logits, y)
    assert loss == expected_loss
    np.testing.assert_array_equal(ce.backward(), expected_delta)


# ------------------------------------------------------------------ SGD


def test_sgd_updates_in_place_like_torch():
    """Three steps, each from the same weights on both sides (torch's reloaded from ours): θ − lr·g
    agrees with torch.optim.SGD within lr × the gradients' bound plus, per side, the rounding of
    lr·g and of the subtraction (u·lr·|g| + u·|θ'|)."""
    mlp = MLP((6, 4, 3), seed=0)
    module = convert.from_manual(mlp)
    x, y = RNG.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1])
    W0, lr, u = mlp.weights[0], 0.5, unit_roundoff(np.float64)
    opt, t_opt = SGD(lr), torch.optim.SGD(module.parameters(), lr=lr)
    for _ in range(3):
        convert.load_manual(module, mlp.weights, mlp.biases)
        bounds = gradient_bounds(mlp.weights, mlp.biases, x, y, mlp.activation)
        _, grads = mlp.loss_and_grads(x, y)
        expected = W0 - lr * grads[0][0]
        opt.step(mlp.parameters(), grads)
        np.testing.assert_array_equal(mlp.weights[0], expected)
        convert.loss_and_grads(module, x, y)
        t_opt.step()
        theirs = sum(map(list, zip(*convert.to_manual(module))), [])
        for ours, t, g, bound in zip(sum(map(list, mlp.parameters()), []), theirs, sum(map(list, grads), []),
                                     sum(map(list, bounds), [])):
            assert_close_bound(ours, t, lr * bound + 2 * u * (lr * np.abs(g) + np.abs(ours)))
    assert mlp.weights[0] is W0


@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf")])
def test_sgd_refuses_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        SGD(lr)
