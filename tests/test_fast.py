"""manual/fast.py and manual/fast_torch.py: the tuned steps (NumPy; torch tensors) held to their
contract (the arithmetic of MLP.loss_and_grads + SGD.step, up to rounding), the fused update really
taken, the thread rule, and bugs injected into the fast paths alone caught by the same check,
naming layer and parameter.

The check takes one step from identical weights on both paths and bounds their difference
element by element. The bound is a first-order forward error analysis of the two computations
(``step_error_bound``): every product and sum contributes compare.tolerances' ``matmul_bound`` /
``sum_bound`` (2·γ_k·(|A|@|B|): two computations, each in its own order), every elementwise
operation a few eps of its result, and differences already present in a product's operands travel
through it as |ΔA|@|B| + |A|@|ΔB|. No tolerance is fitted to a CPU.
"""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from compare.tolerances import linear_bound, matmul_bound, sum_bound
from helpers import forward_rel
from manual import fast, fast_torch
from manual.fast import FUSED, UNFUSED, FastStep
from manual.fast_torch import FastTorchStep
from manual.mlp import MLP
from manual.optim import SGD

RNG = np.random.default_rng(3)
SAFETY = 2.0  # the bound is first order: it leaves out products of two rounding errors
F64 = np.float64
SIGMA_PRIME_SLOPE = {  # |d f'/dz| as a function of the stored output z = f(x)
    "sigmoid": lambda z: np.abs(1 - 2 * z),
    "tanh": lambda z: 2 * np.abs(z),
    "relu": lambda z: np.zeros_like(z),
}


def forward_bounds(net: MLP, eps: float):
    """|Δẑᵢ| and |Δzᵢ| between two implementations of the last forward pass of `net`, each with its
    own rounding (hence the factors 2): products and bias, then f's own rounding (tests/helpers.py's
    ``forward_rel``: exp or tanh within 4 ulp, σ's add and reciprocal)."""
    zs = [z.astype(F64) for z in net.zs]
    ez, ezhat = [np.zeros_like(zs[0])], []
    for i, (W, b) in enumerate(net.parameters()):
        ezhat.append(ez[i] @ np.abs(W.astype(F64)).T + linear_bound(zs[i], W, b, net.dtype))
        if i < len(zs) - 1:
            prime = net.activation.prime(zs[i + 1])
            ez.append(np.abs(prime) * ezhat[i] + 2 * forward_rel(net.activation.name, net.dtype) * np.abs(zs[i + 1]))
    return zs, ez, ezhat


def output_bounds(logits, e_logits, y, eps: float):
    """δ = (SM(ẑ) − onehot)/B and its bound; the loss's bound. Softmax moves by
    |Δp| ≤ p ⊙ (|Δẑ| + pᵀ|Δẑ|); exp, the row sum of C terms and the division round (C + 4)·eps·p,
    the shift ẑ − c rounds eps·|ẑ − c| before the exp; lr folded in early or late: 4 eps·|δ|."""
    B, C = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    onehot = np.eye(C)[y]
    spread = (p * e_logits).sum(axis=1, keepdims=True)
    dp = p * (e_logits + spread) + 2 * ((C + 4) * eps * p + eps * np.abs(shifted) * p)
    delta = (p - onehot) / B
    e_delta = (dp + 2 * eps * np.abs(p - onehot)) / B + 4 * eps * np.abs(delta)
    picked = np.abs(shifted[np.arange(B), y])
    logs = np.abs(np.log(total[:, 0]))
    moved = spread[:, 0] + e_logits[np.arange(B), y]
    rounding = 2 * ((C + 3) * eps + eps * (logs + picked)) + 2 * B * eps * (logs + picked)
    return delta, e_delta, float((moved + rounding).sum() / B)


def step_error_bound(net: MLP, x, y, lr: float):
    """Elementwise bounds on |fast − reference| after one SGD step from `net`'s current weights:
    (loss bound, [(W bound, b bound), ...]). Leaves `net` unchanged (it runs a forward pass)."""
    eps = float(np.finfo(net.dtype).eps)
    net.forward(x)
    zs, ez, ezhat = forward_bounds(net, eps)
    delta, e_delta, e_loss = output_bounds(net.zhats[-1].astype(F64), ezhat[-1], y, eps)
    B, slope = len(x), SIGMA_PRIME_SLOPE[net.activation.name]
    bounds = []
    for i in reversed(range(len(zs))):
        W, b = net.weights[i].astype(F64), net.biases[i].astype(F64)
        dW, db = delta.T @ zs[i], delta.sum(axis=0)
        e_dW = e_delta.T @ np.abs(zs[i]) + np.abs(delta).T @ ez[i] + matmul_bound(delta.T, zs[i], net.dtype)
        e_db = e_delta.sum(axis=0) + sum_bound(delta, axis=0, dtype=net.dtype)
        # the update: lr·dW rounds once, θ − it once per side; a GEMM with beta = 1 adds the partial
        # sum of each block of batch rows into W, one rounding each: OpenBLAS's blocks are GEMM_Q rows
        # (an architecture's constant), so on any CPU at most B of them
        bounds.append((lr * e_dW + lr * eps * np.abs(dW) + (3 + B) * eps * (np.abs(W) + np.abs(W - lr * dW)),
                       lr * e_db + lr * eps * np.abs(db) + 3 * eps * (np.abs(b) + np.abs(b - lr * db))))
        if i > 0:
            dz = delta @ W
            e_dz = e_delta @ np.abs(W) + matmul_bound(delta, W, net.dtype)
            s = net.activation.prime(zs[i])
            e_s = slope(zs[i]) * ez[i] + 3 * eps * np.abs(s)
            delta, e_delta = dz * s, e_dz * np.abs(s) + np.abs(dz) * e_s + 2 * eps * np.abs(dz * s)
    return e_loss + 2 * eps * abs(net.loss(x, y)), bounds[::-1]


def reference_copy(net: MLP) -> MLP:
    """The reference MLP in NumPy holding the (NumPy or CPU torch) net's parameters."""
    ref = MLP(net.sizes, net.activation.name, np.asarray(net.biases[0]).dtype)
    ref.set_parameters(net.weights, net.biases)
    return ref


def assert_step_agrees(step, x, y, lr: float, own=lambda a: a) -> None:
    """One fast step (FastStep, or FastTorchStep given its batch as `own`(x), `own`(y)) and one
    reference step (loss_and_grads + SGD.step, NumPy) from the same weights; their losses and every
    parameter after the step agree within SAFETY × the bound. Otherwise AssertionError, one line
    per quantity beyond its bound ("loss: ..." or "layer 2 b: ...")."""
    net = step.mlp
    ref = reference_copy(net)
    bound_loss, bounds = step_error_bound(ref, x, y, lr)
    loss_r, grads = ref.loss_and_grads(x, y)
    SGD(lr).step(ref.parameters(), grads)
    loss_f = step(own(x), own(y), lr)
    failures = []
    if abs(loss_f - loss_r) > SAFETY * bound_loss:
        failures.append(f"loss: fast {loss_f!r}, reference {loss_r!r}, allowed {SAFETY * bound_loss:.3g}")
    for i, ((W, b), (Wr, br), (bW, bb)) in enumerate(zip(net.parameters(), ref.parameters(), bounds), start=1):
        for name, a, r, bound in (("W", np.asarray(W), Wr, bW), ("b", np.asarray(b), br, bb)):
            share = np.abs(a.astype(F64) - r) / bound
            k = np.unravel_index(np.argmax(share), share.shape)
            if share[k] > SAFETY:
                failures.append(f"layer {i} {name}: fast {a[k]!r} vs reference {r[k]!r} at index "
                                f"{tuple(map(int, k))}, {np.count_nonzero(share > SAFETY)} of {share.size} "
                                f"elements beyond the bound (here {SAFETY * bound[k]:.3g})")
    if failures:
        raise AssertionError("\n".join(failures))


def named(message: str) -> set[str]:
    """The quantities an AssertionError of ``assert_step_agrees`` names: {"loss", "layer 1 W", ...}."""
    return {line.split(":")[0] for line in message.splitlines()}


def batch(sizes, n, dtype, scale=1.0):
    return (RNG.standard_normal((n, sizes[0])) * scale).astype(dtype), RNG.integers(0, sizes[-1], n)


# ------------------------------------------------------------------ the contract

ARCHS = [(12, 4), (12, 9, 4), (20, 16, 7, 5), (784, 64, 10)]


@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "matmul"])
@pytest.mark.parametrize("small_step_flop", [float("inf"), 0.0], ids=["numpy-route", "scipy-route"])
def test_fast_step_is_loss_and_grads_then_sgd(sizes, dtype, activation, fuse, small_step_flop, monkeypatch):
    """Steps at several batch sizes (buffers per size, a last short batch), each from the weights
    the previous fast step left, each within the bound of the reference step; every step "small"
    (products in NumPy) or every step "large" (products in scipy.linalg.blas)."""
    monkeypatch.setattr(fast, "SMALL_STEP_FLOP", small_step_flop)
    step = FastStep(MLP(sizes, activation, dtype, seed=1), fuse=fuse)
    for n in (8, 8, 3, 33, 8):
        assert_step_agrees(step, *batch(sizes, n, dtype), lr=0.3)


@pytest.mark.slow
def test_mnist_sized_steps_agree_on_real_images(mnist32, mnist64):
    """784-256-10 at batch 64 and 512 on MNIST, both dtypes, the default learning rate."""
    for data, dtype in ((mnist32, np.float32), (mnist64, np.float64)):
        step = FastStep(MLP((784, 256, 10), "sigmoid", dtype, seed=0))
        for start, n in ((0, 64), (64, 512), (576, 512)):
            assert_step_agrees(step, data.x_train[start:start + n], data.y_train[start:start + n], lr=0.7)


# ------------------------------------------------------------------ what the step does


def test_the_fused_update_is_taken_in_scipys_blas_on_ws_own_memory(monkeypatch):
    mlp = MLP((30, 20, 5), dtype=np.float32, seed=0)
    step = FastStep(mlp)
    calls, real = [], step._gemm

    def spy(alpha, a, b, beta, c, **kw):
        out = real(alpha, a, b, beta=beta, c=c, **kw)
        calls.append((c.shape, out is c, alpha, beta))
        return out

    monkeypatch.setattr(step, "_gemm", spy)
    Ws = list(mlp.weights)
    step(*batch((30, 20, 5), 6, np.float32), 0.1)
    assert calls == [((5, 20), True, -1.0, 1.0), ((20, 30), True, -1.0, 1.0)]  # output layer first
    assert all(W is W0 for W, W0 in zip(mlp.weights, Ws))
    d = step.how_it_ran()
    assert d["update"] == FUSED and all(layer["update"] == FUSED for layer in d["layers"])
    assert d["products"]["fused weight step W − (lr·δ)ᵀz"] == "scipy"
    assert {"numpy", "scipy"} <= set(d["libraries"]), "the wheels ship two OpenBLAS libraries"
    assert all(d["libraries"][k]["filepath"] and d["libraries"][k]["version"] for k in ("numpy", "scipy"))
    assert "one BLAS thread" in d["threads"] and "folded into δ" in d["learning_rate"]


def test_a_copy_back_from_the_gemm_falls_back_and_says_so(monkeypatch):
    """Where ?gemm hands back a new array, W was not updated: that layer takes matmul + subtraction
    (this step and after), the result still meets the contract, and how_it_ran() names the reason."""
    step = FastStep(MLP((12, 9, 4), seed=0))
    real = step._gemm
    monkeypatch.setattr(step, "_gemm", lambda alpha, a, b, beta, c, **kw: real(alpha, a, b, beta=beta, c=c.copy(order="F"), **kw))
    for _ in range(2):
        assert_step_agrees(step, *batch((12, 9, 4), 8, np.float64), lr=0.3)
    layers = step.how_it_ran()["layers"]
    assert [layer["update"] for layer in layers] == [UNFUSED, UNFUSED]
    assert all("returned a copy" in layer["why"] for layer in layers)
    assert step.how_it_ran()["update"] == UNFUSED


def test_a_weight_array_replaced_after_construction_is_the_one_updated():
    """``mlp.weights[i] = A`` with a row-major A: the step updates A (by matmul + subtraction, as
    ?gemm cannot write a row-major W in place) and how_it_ran() says why."""
    mlp = MLP((6, 4, 3), seed=0)
    step = FastStep(mlp)
    mlp.weights[0] = np.ascontiguousarray(mlp.weights[0])
    replaced = mlp.weights[0]
    assert_step_agrees(step, *batch((6, 4, 3), 5, np.float64), lr=0.5)
    assert mlp.weights[0] is replaced
    assert "not column-major" in step.how_it_ran()["layers"][0]["why"]
    assert step.how_it_ran()["layers"][1]["update"] == FUSED


def test_construction_moves_w_to_column_major_keeping_values_and_shapes():
    mlp, reference = MLP((6, 4, 3), seed=1), MLP((6, 4, 3), seed=1)
    FastStep(mlp)
    for W, W0 in zip(mlp.weights, reference.weights):
        assert W.shape == W0.shape and W.flags.f_contiguous and W.T.flags.c_contiguous
        np.testing.assert_array_equal(W, W0)


def test_without_scipy_every_layer_takes_matmul_and_says_why(monkeypatch):
    monkeypatch.setattr(fast, "_GEMMS", {})
    monkeypatch.setattr(fast, "_GEMVS", {})
    monkeypatch.setattr(fast, "_NO_SCIPY", "scipy.linalg.blas not importable (test)")
    step = FastStep(MLP((12, 9, 4), seed=0))
    assert_step_agrees(step, *batch((12, 9, 4), 8, np.float64), lr=0.3)
    d = step.how_it_ran()
    assert d["update"] == UNFUSED and "not importable" in d["layers"][0]["why"]
    assert d["one_library"] == "numpy" and set(d["products"].values()) == {"numpy", "(none fused)"}
    assert all("not importable" in why for why in d["numpy_instead"].values())
    assert step._thread_rule(False) == (None, None), "one library: its threads are the caller's"


def blas_threads_by_owner(step: FastStep) -> dict:
    """{"numpy": n, "scipy": n}: the thread count of each package's BLAS right now."""
    path = {lib["filepath"]: owner for owner, lib in step.how_it_ran()["libraries"].items() if owner != "other"}
    return {path[lib["filepath"]]: lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and lib["filepath"] in path}


def test_a_large_step_runs_every_product_in_scipys_blas_with_numpys_held_to_one_thread(monkeypatch):
    """Above the one-thread rule, every BLAS call of the step goes to scipy.linalg.blas (SciPy's
    library at the caller's 2 threads), NumPy's matmul is never called, NumPy's BLAS has 1 thread
    during each call and 2 again after the step; how_it_ran() says one library, SciPy's."""
    sizes, n = (784, 256, 10), 64
    assert fast.step_flop(sizes, n) > fast.SMALL_STEP_FLOP
    step = FastStep(MLP(sizes, dtype=np.float32, seed=0))
    seen, matmuls = [], []

    def spy(real, name):
        return lambda *a, **kw: seen.append((name, blas_threads_by_owner(step))) or real(*a, **kw)

    monkeypatch.setattr(step, "_gemm", spy(step._gemm, "fused ?gemm"))
    for name in ("gemm", "gemv"):
        monkeypatch.setattr(step._routes[False], name, spy(getattr(step._routes[False], name), name))
    real_matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *a, **kw: matmuls.append(a) or real_matmul(*a, **kw))
    with threadpool_limits(2, user_api="blas"):
        assert_step_agrees(step, *batch(sizes, n, np.float32), lr=0.1)
        after = blas_threads_by_owner(step)
    # the reference step in assert_step_agrees calls np.matmul; the fast step alone must not
    fast_calls = [name for name, _ in seen]
    assert fast_calls.count("fused ?gemm") == 2 and fast_calls.count("gemm") == 2 + 1  # forward ×2, δ·W
    assert fast_calls.count("gemv") == 1 + 2  # the row sums, a bias step per layer
    assert all(threads == {"numpy": 1, "scipy": 2} for _, threads in seen), seen
    assert after == {"numpy": 2, "scipy": 2}
    d = step.how_it_ran()
    assert d["one_library"] == "scipy" and set(d["products"].values()) == {"scipy"} and not d["numpy_instead"]
    assert "numpy's held to one thread" in d["threads"]
    matmuls.clear()
    step(*batch(sizes, n, np.float32), 0.1)
    assert not matmuls, "NumPy's BLAS ran a product of the step"


@pytest.mark.parametrize("routine", ["gemm", "gemv"])
def test_a_copy_back_from_a_product_falls_back_to_numpy_and_says_so(monkeypatch, routine):
    """Where SciPy hands back a new array instead of the step's buffer, that product runs in NumPy
    from then on, the step still meets the contract, and how_it_ran() names the product and why."""
    monkeypatch.setattr(fast, "SMALL_STEP_FLOP", 0)  # every step "large": the SciPy route
    step = FastStep(MLP((12, 9, 4), seed=0), fuse=False)
    real = getattr(step._routes[False], routine)
    key = "c" if routine == "gemm" else "y"
    monkeypatch.setattr(step._routes[False], routine, lambda *a, **kw: real(*a, **{**kw, key: kw[key].copy(order="F")}))
    for _ in range(2):
        assert_step_agrees(step, *batch((12, 9, 4), 8, np.float64), lr=0.3)
    d = step.how_it_ran()
    moved = {k for k, lib in d["products"].items() if lib == "numpy"}
    assert moved == set(d["numpy_instead"]) and all("returned a copy" in w for w in d["numpy_instead"].values())
    expected = {"forward", "backward", "weight gradient"} if routine == "gemm" else {"row sums", "bias step"}
    assert moved == {fast.PRODUCTS[k] for k in expected}
    assert d["one_library"] == ""


def test_small_steps_run_on_one_thread_in_both_blas_libraries_and_restore_them(monkeypatch):
    def blas_threads():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    assert len(blas_threads()) >= 2, "NumPy's and SciPy's OpenBLAS are both loaded"
    sizes = (784, 128, 10)
    small = int(fast.SMALL_STEP_FLOP // fast.step_flop(sizes, 1))  # the largest batch below the rule's FLOP
    with threadpool_limits(2, user_api="blas"):
        with fast.one_thread_if_small(sizes, small):
            inside_small = blas_threads()
        with fast.one_thread_if_small(sizes, small + 1):
            inside_large = blas_threads()
        after = blas_threads()
        step, seen = FastStep(MLP(sizes, dtype=np.float32, seed=0)), []
        real = step._gemm
        monkeypatch.setattr(step, "_gemm", lambda *a, **kw: seen.append(blas_threads()) or real(*a, **kw))
        step(*batch(sizes, 16, np.float32), 0.1)
    assert set(inside_small.values()) == {1} and set(inside_large.values()) == {2} == set(after.values())
    assert seen and all(set(s.values()) == {1} for s in seen)
    d = step.how_it_ran()  # no pool awake: the products stay in NumPy, the fused update in SciPy
    assert d["regime"].startswith("last step below") and d["products"].pop("fused weight step W − (lr·δ)ᵀz") == "scipy"
    assert set(d["products"].values()) == {"numpy"} and set(d["numpy_instead"].values()) == {fast.SMALL_ROUTE}


def test_step_flop_counts_the_benchmarks_gemm_floor():
    floor = pytest.importorskip("compare.bench.floor")
    for sizes in [(784, 10), (784, 128, 10), (784, 512, 256, 10)]:
        assert fast.step_flop(sizes, 32) == sum(p["flops"] for p in floor.gemm_products(sizes, 32))


def test_bad_input_is_refused_before_any_weight_changes():
    mlp = MLP((12, 9, 4), seed=0)
    step, before = FastStep(mlp), [a.copy() for a in mlp.weights + mlp.biases]
    x, y = batch((12, 9, 4), 8, np.float64)
    bad_x = x.copy()
    bad_x[2, 3] = np.nan
    for args, error, message in [
        ((x, np.full(8, 4), 0.1), ValueError, r"labels must lie in 0\.\.3"),
        ((x, y[:5], 0.1), ValueError, r"y must be 8 integer labels"),
        ((x.astype(np.float32), y, 0.1), TypeError, "float32 but the weights are float64"),
        ((bad_x, y, 0.1), ValueError, r"NaN or inf \(first at index \(2, 3\)\)"),
        ((x, y, 0.0), ValueError, "lr must be a finite number > 0"),
        ((x, y, float("nan")), ValueError, "lr must be a finite number > 0"),
    ]:
        with pytest.raises(error, match=message):
            step(*args)
        if "NaN" not in message:  # run checks all but the values of x (check's, once)
            with pytest.raises(error, match=message):
                step.run(*args)
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(2, 3\)\)"):
        step.check(bad_x, y)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
        step.check(x, np.full(8, -1))
    for a, b in zip(mlp.weights + mlp.biases, before):
        np.testing.assert_array_equal(a, b)
    expected = mlp.loss(x, y)
    assert step.run(*step.check(x, y), 0.1) == pytest.approx(expected, rel=1e-12)


def test_fast_step_refuses_a_net_it_cannot_run():
    class Odd:
        activation = type("A", (), {"name": "gelu"})()

    with pytest.raises(TypeError, match="FastStep takes an MLP with activation in sigmoid, tanh, relu"):
        FastStep(Odd())


# ------------------------------------------------------------------ bugs in the fast path alone


def fast_bug_is_caught(monkeypatch, target, attr, replacement, sizes=(12, 9, 4), dtype=np.float64):
    """Inject a bug into the fast path only; the contract check must fail. Returns its message."""
    step = FastStep(MLP(sizes, "sigmoid", dtype, seed=0))
    monkeypatch.setattr(target(step) if callable(target) else target, attr, replacement(step))
    with pytest.raises(AssertionError) as err:
        for _ in range(3):
            assert_step_agrees(step, *batch(sizes, 8, dtype), lr=0.3)
    return str(err.value)


def test_doubled_bias_step_is_caught(monkeypatch):
    """b ← b − 2·lr·1ᵀδ."""
    real = fast.bias_step
    message = fast_bug_is_caught(monkeypatch, fast, "bias_step",
                                 lambda step: lambda b, delta, *rest: real(b, 2 * delta, *rest))
    assert named(message) == {"layer 1 b", "layer 2 b"}


@pytest.mark.parametrize("dtype, alpha", [(np.float32, -1.01), (np.float64, -1.01), (np.float64, -1 - 1e-6)],
                         ids=["f32 1e-2", "f64 1e-2", "f64 1e-6"])
def test_a_wrong_alpha_in_the_fused_update_is_caught(monkeypatch, dtype, alpha):
    """The weight step off by 1 % (both dtypes), and by 1e-6 of itself in float64: the bound is
    that much tighter than the update it checks."""
    def wrong_alpha(step):
        real = step._gemm
        return lambda _, *a, **kw: real(alpha, *a, **kw)

    message = fast_bug_is_caught(monkeypatch, lambda step: step, "_gemm", wrong_alpha, (784, 32, 10), dtype)
    assert named(message) == {"layer 1 W", "layer 2 W"}


def test_dropped_sigma_prime_in_the_fast_path_is_caught(monkeypatch):
    def no_prime(step):
        f, _ = fast.ACTIVATIONS["sigmoid"]
        return {**fast.ACTIVATIONS, "sigmoid": (f, lambda s, out: np.copyto(out, 1) or out)}

    message = fast_bug_is_caught(monkeypatch, fast, "ACTIVATIONS", no_prime)
    assert named(message) == {"layer 1 W", "layer 1 b"}  # the output layer never uses σ'


def test_learning_rate_applied_twice_is_caught(monkeypatch):
    real = fast.output_delta
    message = fast_bug_is_caught(monkeypatch, fast, "output_delta",
                                 lambda step: lambda logits, y, rows, scale, out, *rest: real(logits, y, rows, scale * scale, out, *rest))
    assert named(message) == {"layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"}


def test_a_wrong_loss_is_caught(monkeypatch):
    """The max shift dropped from the label term: the weights are right, the returned loss is not."""
    real = fast.output_delta

    def unshifted(step):
        def wrong(logits, y, rows, scale, out, *rest):
            loss, delta = real(logits, y, rows, scale, out, *rest)
            return loss + float(logits.max(axis=1).mean()), delta

        return wrong

    message = fast_bug_is_caught(monkeypatch, fast, "output_delta", unshifted)
    assert named(message) == {"loss"}


def test_the_bias_gemv_forgetting_b_is_caught(monkeypatch):
    """The bias step's ?gemv with beta = 0: b ← −1ᵀ(lr·δ) instead of b − 1ᵀ(lr·δ)."""
    def no_beta(step):
        real = step._routes[False].gemv
        return lambda *a, **kw: real(*a, **{**kw, "beta": 0.0} if "beta" in kw else kw)

    monkeypatch.setattr(fast, "SMALL_STEP_FLOP", 0)  # the SciPy route, where the ?gemv runs
    message = fast_bug_is_caught(monkeypatch, lambda step: step._routes[False], "gemv", no_beta)
    assert named(message) == {"layer 1 b", "layer 2 b"}


def test_a_transposed_backward_product_is_caught(monkeypatch):
    """δ·W taken from W's transpose memory read the wrong way round (square layer, so the shapes fit)."""
    def backward_untransposed(step):
        real = step._routes[False].gemm

        def gemm(alpha, W, *a, **kw):
            square = kw.get("trans_a") == 1 and W.shape[0] == W.shape[1]
            return real(alpha, W, *a, **{**kw, "trans_a": 0} if square else kw)

        return gemm

    monkeypatch.setattr(fast, "SMALL_STEP_FLOP", 0)
    message = fast_bug_is_caught(monkeypatch, lambda step: step._routes[False], "gemm", backward_untransposed, (12, 9, 9, 4))
    assert named(message) == {"layer 1 W", "layer 1 b"}


# ------------------------------------------------------------------ the tuned step on torch tensors


def torch_step(sizes, activation="sigmoid", dtype=np.float64, seed=1) -> FastTorchStep:
    return FastTorchStep(MLP(sizes, activation, dtype, seed=seed).to(torch))


@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_fast_torch_step_is_loss_and_grads_then_sgd(sizes, dtype, activation):
    """As FastStep's contract test: batch sizes with buffers each, a last short batch, each step from
    the weights the previous left, within the bound of the reference step (run in NumPy)."""
    step = torch_step(sizes, activation, dtype)
    for n in (8, 8, 3, 33, 8):
        assert_step_agrees(step, *batch(sizes, n, dtype), lr=0.3, own=torch.asarray)
    assert all(isinstance(a, torch.Tensor) for pair in step.mlp.parameters() for a in pair)


def test_fast_torch_step_refuses_a_net_it_cannot_run_and_bad_input():
    with pytest.raises(TypeError, match=r"FastTorchStep takes an MLP of torch tensors \(mlp.to\(torch, device\)\)"):
        FastTorchStep(MLP((4, 3)))
    step = torch_step((4, 3, 2))
    before = [W.clone() for W in step.mlp.weights]
    with pytest.raises(TypeError, match="x must be a torch.Tensor like the net's parameters, got a numpy.ndarray"):
        step(np.zeros((2, 4)), np.array([0, 1]), 0.1)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        step(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([0, 2]), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        step(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([0, 1]), float("nan"))
    assert all(torch.equal(W, w) for W, w in zip(step.mlp.weights, before))  # refused before any update


def test_run_takes_a_checked_batch_and_sends_anything_else_through_check():
    """``check`` converts or refuses; ``run`` reads only attributes, and a batch it cannot take as it
    is (int32 labels) or labels out of range (torch's gather fails) get ``check``'s own message."""
    step = torch_step((4, 3, 2))
    x, y = step.check(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([0, 1], dtype=torch.int32))
    assert y.dtype == torch.int64
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first at index \(1, 2\)\)"):
        step.check(torch.zeros(2, 4, dtype=torch.float64).index_put_((torch.tensor(1), torch.tensor(2)),
                                                                     torch.tensor(float("inf"), dtype=torch.float64)), y)
    before = [W.clone() for W in step.mlp.weights]
    for labels in (torch.tensor([0, 2]), torch.tensor([-1, 0]), torch.tensor([0, 2], dtype=torch.int32)):
        with pytest.raises(ValueError, match="labels must lie in 0..1"):
            step.run(x, labels, 0.1)
    assert all(torch.equal(W, w) for W, w in zip(step.mlp.weights, before))
    expected = step.mlp.loss(x, y)
    assert step.run(x, y, 0.1) == pytest.approx(expected, rel=1e-12)
    assert not all(torch.equal(W, w) for W, w in zip(step.mlp.weights, before))


def torch_bug_is_caught(monkeypatch, attr, replacement, sizes=(12, 9, 4), dtype=np.float64):
    """Inject a bug into the torch fast path only; the contract check must fail. Returns its message."""
    step = torch_step(sizes, dtype=dtype, seed=0)
    monkeypatch.setattr(fast_torch, attr, replacement)
    with pytest.raises(AssertionError) as err:
        for _ in range(3):
            assert_step_agrees(step, *batch(sizes, 8, dtype), lr=0.3, own=torch.asarray)
    return str(err.value)


def test_a_doubled_bias_step_on_torch_tensors_is_caught(monkeypatch):
    """b ← b − 2·δᵀ1."""
    message = torch_bug_is_caught(monkeypatch, "bias_step", lambda b, delta, ones, scale: b.addmv_(delta.T, ones, alpha=-2 * scale))
    assert named(message) == {"layer 1 b", "layer 2 b"}


@pytest.mark.parametrize("dtype, alpha", [(np.float32, -1.01), (np.float64, -1.01), (np.float64, -1 - 1e-6)],
                         ids=["f32 1e-2", "f64 1e-2", "f64 1e-6"])
def test_a_wrong_alpha_in_the_fused_torch_update_is_caught(monkeypatch, dtype, alpha):
    message = torch_bug_is_caught(monkeypatch, "weight_step",
                                  lambda W, delta, z, scale: W.addmm_(delta.T, z, alpha=alpha * scale),
                                  (784, 32, 10), dtype)
    assert named(message) == {"layer 1 W", "layer 2 W"}


def test_a_dropped_sigma_prime_on_torch_tensors_is_caught(monkeypatch):
    f, _ = fast_torch.ACTIVATIONS["sigmoid"]
    message = torch_bug_is_caught(monkeypatch, "ACTIVATIONS",
                                  {**fast_torch.ACTIVATIONS, "sigmoid": (f, lambda delta, s, tmp, one: delta)})
    assert named(message) == {"layer 1 W", "layer 1 b"}


def test_the_learning_rate_applied_twice_on_torch_tensors_is_caught(monkeypatch):
    """lr·lr/B instead of lr/B in every update (the tests' lr is 0.3)."""
    real_w, real_b = fast_torch.weight_step, fast_torch.bias_step
    monkeypatch.setattr(fast_torch, "bias_step", lambda b, delta, ones, scale: real_b(b, delta, ones, scale * 0.3))
    message = torch_bug_is_caught(monkeypatch, "weight_step", lambda W, delta, z, scale: real_w(W, delta, z, scale * 0.3))
    assert named(message) == {"layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b"}


def test_a_wrong_loss_on_torch_tensors_is_caught(monkeypatch):
    """The loss off by the mean row maximum (a max shift forgotten): the weights are right, the loss is not."""
    real = fast_torch.output_delta

    def unshifted(logits, y, minus_one):
        shift = float(logits.amax(dim=1).mean())
        loss, delta = real(logits, y, minus_one)
        return loss + shift, delta

    message = torch_bug_is_caught(monkeypatch, "output_delta", unshifted)
    assert named(message) == {"loss"}
