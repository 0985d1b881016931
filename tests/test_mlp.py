"""manual/mlp.py and manual/optim.py: initialisation, forward, whole-network gradients against
torch autograd (0–3 hidden layers, several widths and batch sizes, both dtypes, all activations),
a property-based sweep, the extremes, and input validation."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compare.agreement import assert_grads_agree, compare_grads
from compare.tolerances import gradient_rel
from manual import functional as F
from manual import blas
from manual.mlp import LAYOUTS, MLP, init_parameters
from manual.optim import SGD
from torch_ref import convert

RNG = np.random.default_rng(2)


def agree_with_torch(mlp, x, y, slack: float = 0.0):
    """Manual and torch gradients agree within the tolerance (at least 10 × `slack`)."""
    loss, grads = mlp.loss_and_grads(x, y)
    t_loss, t_grads = convert.loss_and_grads(convert.from_manual(mlp), x, y)
    assert loss == pytest.approx(t_loss, rel=10 * gradient_rel(mlp.dtype))
    return assert_grads_agree(grads, t_grads, max(gradient_rel(mlp.dtype, loss), 10 * slack))


# ------------------------------------------------------------------ initialisation


def test_init_is_nn_linear_default_distribution():
    weights, biases = init_parameters((400, 300, 10), np.random.default_rng(0))
    for W, b, n_in in zip(weights, biases, (400, 300)):
        bound = 1 / np.sqrt(n_in)
        assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(W).max() > 0.99 * bound  # uses the whole interval
        assert abs(W.mean()) < 0.02 * bound and abs(W.var() / (bound**2 / 3) - 1) < 0.06  # U(−a, a)


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
    np.testing.assert_allclose(mlp.zhats[0], x @ mlp.weights[0].T + mlp.biases[0])
    np.testing.assert_allclose(mlp.zs[1], 1 / (1 + np.exp(-mlp.zhats[0])))


def test_no_hidden_layer_is_softmax_regression():
    mlp = MLP((6, 3), seed=0)
    x, y = RNG.standard_normal((4, 6)), np.array([0, 1, 2, 0])
    _, grads = mlp.loss_and_grads(x, y)
    p = np.exp(x @ mlp.weights[0].T + mlp.biases[0])
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), y] -= 1
    np.testing.assert_allclose(grads[0][0], p.T @ x / 4, rtol=1e-13)
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
@pytest.mark.parametrize("layout", LAYOUTS)
def test_whole_network_gradients_match_torch(sizes, batch, dtype, activation, layout):
    mlp = MLP(sizes, activation, dtype, seed=batch, layout=layout)
    x = RNG.standard_normal((batch, sizes[0])).astype(dtype)
    y = RNG.integers(0, sizes[-1], batch)
    agreements = agree_with_torch(mlp, x, y)
    assert len(agreements) == 2 * (len(sizes) - 1)
    # the reused buffers give the same answer on a second call
    again = agree_with_torch(mlp, x, y)
    assert [g.rel_err for g in again] == [g.rel_err for g in agreements]


PROPERTY = dict(
    n_in=st.integers(1, 30),
    hidden=st.lists(st.integers(1, 20), max_size=3),
    classes=st.integers(2, 10),
    batch=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    activation=st.sampled_from(["sigmoid", "tanh", "relu"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(LAYOUTS),
)


def random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype, layout):
    rng = np.random.default_rng(seed)
    mlp = MLP((n_in, *hidden, classes), activation, dtype, seed=rng, layout=layout)
    x = (rng.standard_normal((batch, n_in)) * 10**log_scale).astype(dtype)
    return mlp, x, rng.integers(0, classes, batch)


@settings(max_examples=300, deadline=None)
@given(log_scale=st.floats(-3, 1.5), **PROPERTY)
def test_property_gradients_match_torch(n_in, hidden, classes, batch, seed, log_scale, activation, dtype, layout):
    """Agreement with autograd over shapes, seeds and input scales up to ~30 (pixels are ~3).

    Beyond that the gradients become sums that cancel (confident answers, saturated units), and
    no pair of implementations agrees better than the rounding of those sums, which is why the
    test below only asks for finite, warning-free results there."""
    mlp, x, y = random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype, layout)
    _, grads = mlp.loss_and_grads(x, y)
    # A gradient that is exact cancellation up to rounding (e.g. confident answers that balance
    # out in a bias) carries no signal: its relative error is noise against noise.
    assume(all(np.linalg.norm(g) > 1e4 * np.finfo(dtype).eps for pair in grads for g in pair))
    agree_with_torch(mlp, x, y, slack=rounding_sensitivity(mlp, x, y))


@settings(max_examples=200, deadline=None)
@given(log_scale=st.floats(-3, 4), **PROPERTY)
def test_property_finite_and_warning_free_at_any_scale(n_in, hidden, classes, batch, seed, log_scale, activation,
                                                       dtype, layout):
    """Inputs up to 1e4 (pre-activations far beyond ±1000): forward and backward stay finite, no
    overflow warnings, and the predicted classes are torch's."""
    mlp, x, y = random_case(n_in, hidden, classes, batch, seed, log_scale, activation, dtype, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = mlp.loss_and_grads(x, y)
        pred = mlp.predict(x)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for pair in grads for g in pair)
    logits = convert.from_manual(mlp)(torch.from_numpy(x)).detach().numpy()
    top2 = np.sort(logits, axis=1)[:, -2:] if classes > 1 else None
    clear = top2[:, 1] - top2[:, 0] > 1e-3 * np.abs(top2).max(axis=1) + 1e-30
    np.testing.assert_array_equal(pred[clear], logits.argmax(axis=1)[clear])  # ties may break either way


def rounding_sensitivity(mlp, x, y) -> float:
    """How much the manual gradient moves when every pre-activation ẑ (logits included) and every
    stored activation moves by one ulp: the rounding noise that each side carries.

    Huge inputs make it large, and rightly so: with saturated units σ' = σ(1 − σ) is computed
    from an output next to 1 (relative error eps/σ'), and confident answers make p_y − 1 and the
    sums of the output deltas cancel (absolute error ~ulp(ẑ)). Both sides pay this, each with its
    own rounding, so their gradients can differ by that much; the largest relative change over
    all parameters is returned.
    """
    _, grads = mlp.loss_and_grads(x, y)
    grads = [(dW.copy(), db.copy()) for dW, db in grads]
    act, linear = mlp.activation, F.linear
    centre = mlp.dtype.type({"sigmoid": 0.5, "tanh": 0.0, "relu": 0.0}[act.name])

    def nudged_act(z, out=None):
        out = act.f(z, out=out)
        return np.nextafter(out, centre, out=out)

    def nudged_linear(*args, **kwargs):
        out = linear(*args, **kwargs)
        return np.nextafter(out, mlp.dtype.type(np.inf), out=out)

    mlp.activation, F.linear = F.Activation(act.name, nudged_act, act.prime), nudged_linear
    try:
        _, moved = mlp.loss_and_grads(x, y)
    finally:
        mlp.activation, F.linear = act, linear
    return max(g.rel_err for g in compare_grads(grads, moved, 1.0))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_pre_activations_near_1000_and_logits_near_1e4(activation):
    mlp = MLP((20, 8, 5), activation, seed=0)
    x = RNG.standard_normal((6, 20))
    x *= 1000 / np.abs(x @ mlp.weights[0].T).max()  # hidden pre-activations up to ±1000
    mlp.weights[1] *= 1e4 / np.abs(mlp.forward(x)).max()  # logits near ±1e4
    y = np.arange(6) % 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = mlp.loss_and_grads(x, y)
    assert np.abs(mlp.zhats[0]).max() > 900 and np.abs(mlp.zhats[1]).max() > 5e3
    assert np.isfinite(loss) and loss > 100
    agree_with_torch(mlp, x, y)


# ------------------------------------------------------------------ validation


def test_input_validation():
    mlp = MLP((784, 4, 10))
    with pytest.raises(ValueError, match=r"shape \(B, 784\) or \(B, 28, 28\)"):
        mlp.forward(np.zeros((2, 783)))
    with pytest.raises(ValueError, match=r"shape \(B, 784\)"):
        mlp.forward(np.zeros(784))
    with pytest.raises(TypeError, match="float32 but the weights are float64"):
        mlp.forward(np.zeros((2, 784), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
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


# ------------------------------------------------------------------ SGD


def test_sgd_updates_in_place_like_torch():
    mlp = MLP((6, 4, 3), seed=0)
    module = convert.from_manual(mlp)
    x, y = RNG.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1])
    W0 = mlp.weights[0]
    opt, t_opt = SGD(0.5), torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        _, grads = mlp.loss_and_grads(x, y)
        expected = W0 - 0.5 * grads[0][0]
        opt.step(mlp.parameters(), grads)
        np.testing.assert_array_equal(mlp.weights[0], expected)
        convert.loss_and_grads(module, x, y)
        t_opt.step()
    assert mlp.weights[0] is W0
    for a, b in zip(mlp.weights + mlp.biases, sum(map(list, convert.to_manual(module)), [])):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("fused", [True, False], ids=["blas-descend", "matmul-fallback"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_step_is_loss_and_grads_then_sgd(dtype, layout, fused, monkeypatch):
    """The benchmark's step (lr folded into δ, each layer's update inside its weight-gradient
    product, or matmul and a subtraction where that BLAS routine is missing) lands on the weights
    of the checked path."""
    calls = []
    if fused:
        assert blas.descend_available(dtype), "NumPy's wheels ship OpenBLAS with cblas_?gemm"
        monkeypatch.setattr(blas, "DESCEND_MIN_SIZE", 0)  # these layers are below the size that gains
        real = blas.gemm_descend
        monkeypatch.setattr(blas, "gemm_descend", lambda a, b, c: calls.append(c.shape) or real(a, b, c))
    else:
        monkeypatch.setattr(blas, "gemm_descend", lambda a, b, c: False)
    a, b = MLP((12, 9, 7, 4), dtype=dtype, seed=5), MLP((12, 9, 7, 4), dtype=dtype, seed=5, layout=layout)
    opt = SGD(0.3)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    for step in range(5):
        x, y = RNG.standard_normal((8, 12)).astype(dtype), RNG.integers(0, 4, 8)
        loss_a, grads = a.loss_and_grads(x, y)
        opt.step(a.parameters(), grads)
        assert b.train_step(x, y, 0.3) == pytest.approx(loss_a, rel=rtol)
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(wb, wa, rtol=rtol, atol=rtol * np.abs(wa).max())
    assert calls == ([(4, 7), (7, 9), (9, 12)] * 5 if fused else [])
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
        b.train_step(x, np.full(8, 4), 0.3)


def test_train_step_fuses_only_layers_large_enough_to_gain(monkeypatch):
    calls, real = [], blas.gemm_descend
    monkeypatch.setattr(blas, "gemm_descend", lambda a, b, c: calls.append(c.shape) or real(a, b, c))
    mlp = MLP((200, 100, 3), dtype=np.float32, seed=0)  # W¹ has 20,000 entries, W² 300
    mlp.train_step(RNG.standard_normal((4, 200)).astype(np.float32), np.array([0, 1, 2, 0]), 0.1)
    assert calls == [(100, 200)] and 100 * 200 >= blas.DESCEND_MIN_SIZE > 3 * 100


def test_train_step_updates_arrays_that_replaced_the_nets_own():
    mlp, reference = MLP((6, 4, 3), seed=0), MLP((6, 4, 3), seed=0)
    mlp.weights[0] = np.asfortranarray(mlp.weights[0])  # a new array, in the other memory order
    mlp.biases[1] = mlp.biases[1].copy()
    x, y = RNG.standard_normal((5, 6)), np.array([0, 1, 2, 0, 1])
    mlp.train_step(x, y, 0.5)
    _, grads = reference.loss_and_grads(x, y)
    SGD(0.5).step(reference.parameters(), grads)
    for a, b in zip(mlp.weights + mlp.biases, reference.weights + reference.biases):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert not np.array_equal(mlp.weights[0], MLP((6, 4, 3), seed=0).weights[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_descend_subtracts_the_product_in_every_layout(dtype):
    """c ← c − a·b for row- and column-major operands and row-strided views, as NumPy computes it."""
    tol = 1e-5 if dtype == np.float32 else 1e-13
    base = RNG.standard_normal((9, 13)).astype(dtype)
    for a in (base[:5, :7], np.asfortranarray(base[:5, :7]), base[::2, :7][:4]):  # the last: rows two apart
        for b in (RNG.standard_normal((7, 3)).astype(dtype), RNG.standard_normal((3, 7)).astype(dtype).T):
            for order in "CF":
                c = np.asarray(RNG.standard_normal((len(a), 3)), dtype, order=order)
                expected = c - a @ b
                assert blas.gemm_descend(a, b, c)
                np.testing.assert_allclose(c, expected, rtol=tol, atol=tol)


def test_gemm_descend_declines_what_blas_cannot_take_and_leaves_c_alone():
    read_only = np.ones((4, 3))
    read_only.flags.writeable = False
    for a, b, c in [
        (np.ones((4, 6))[:, ::2], np.ones((3, 3)), np.ones((4, 3))),  # no unit stride either way
        (np.ones((4, 3), np.float32), np.ones((3, 3)), np.ones((4, 3))),  # mixed dtypes
        (np.ones((4, 2)), np.ones((3, 3)), np.ones((4, 3))),  # shapes that do not chain
        (np.ones((4, 3), int), np.ones((3, 3), int), np.ones((4, 3), int)),  # no integer GEMM
        (np.ones((4, 3)), np.ones((3, 3)), read_only),
    ]:
        assert not blas.gemm_descend(a, b, c)
        np.testing.assert_array_equal(c, 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_differ_in_memory_order_only(layout):
    mlp = MLP((6, 4, 3), seed=1, layout=layout)
    reference = MLP((6, 4, 3), seed=1)
    for W, W0, (dW, _) in zip(mlp.weights, reference.weights, mlp.grads):
        assert W.shape == W0.shape == dW.shape
        np.testing.assert_array_equal(W, W0)
        c_order = layout == "linear"
        assert W.flags.c_contiguous == c_order and W.T.flags.c_contiguous != c_order
        assert dW.flags.c_contiguous == c_order
    with pytest.raises(ValueError, match="unknown layout 'fortran'; allowed: linear, transposed"):
        MLP((6, 4, 3), layout="fortran")


def test_small_steps_run_on_one_blas_thread_and_restore_the_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    assert blas_threads(), "NumPy's wheels ship OpenBLAS, which threadpoolctl controls"
    with threadpool_limits(2, user_api="blas"):
        seen = []
        with blas.threads_for(blas.SMALL_STEP_FLOP / 2):
            seen.append(blas_threads())
        with blas.threads_for(blas.SMALL_STEP_FLOP * 2):
            seen.append(blas_threads())
        assert blas_threads() == [2] * len(seen[0])
    assert seen == [[1] * len(seen[0]), [2] * len(seen[0])]


def test_step_flop_counts_the_benchmarks_gemm_floor():
    from compare.bench import gemm_products

    for sizes in [(784, 10), (784, 128, 10), (784, 512, 256, 10)]:
        assert blas.step_flop(sizes, 32) == sum(p["flops"] for p in gemm_products(sizes, 32))


@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf")])
def test_sgd_refuses_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        SGD(lr)
