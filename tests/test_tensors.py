"""The user's side on tensors (``compare.check.tensors``), in any precision: a torch function with
its VJP on tensors, a ``torch.autograd.Function`` (examples/softmax_ce_fused.py), NumPy float16;
right code passes in float64, float32, bfloat16 and float16 over many seeds, and each injected
mistake fails with the tensor and the kind named."""

import numpy as np
import pytest
import torch
from helpers import load_example

from compare.check import check_function, check_layer, check_model, tolerances
from compare.check.findings import PrecisionError

sce = load_example("softmax_ce_fused")
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def softplus(x):
    return torch.nn.functional.softplus(x)


def softplus_vjp(g, x):
    """dx = g·σ(x), computed in x's precision."""
    return g * torch.sigmoid(x)


def softplus_vjp_wrong(g, x):
    return torch.sigmoid(x)  # the chain rule's g dropped


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autograd_function_passes_in_every_precision(dtype):
    report = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, *sce.inputs(dtype))
    assert report.ok, str(report)
    assert str(dtype).removeprefix("torch.") in report.title


def test_half_precision_report_shows_both_errors_and_their_ratio():
    report = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, *sce.inputs(torch.bfloat16))
    found = next(n for n in report.notes if isinstance(n, PrecisionError))
    assert (found.tensor, found.precision, found.factor) == ("input z", "bfloat16", tolerances.LOW_FACTOR)
    assert found.ratio[0] == pytest.approx(found.yours[0] / found.autograd[0])
    assert 0 < found.yours[0] <= max(found.factor * found.autograd[0], found.floor)
    line = next(x for x in str(report).splitlines() if x.startswith("input z: error against the float64 truth"))
    assert f"autograd's in bfloat16 {found.autograd[0]:.2g}" in line
    assert f": {found.ratio[0]:.2g}x what autograd makes in bfloat16" in line
    pairs = {(c.a, c.b) for c in report.comparisons}
    assert ("manual", "torch64") in pairs and ("manual64", "torch64") in pairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("wrong, kind", [("ScaledBackward", "constant factor"), ("NoMean", "constant factor"),
                                         ("DroppedOnehot", None)])
def test_wrong_fused_backward_is_named(dtype, wrong, kind):
    report = check_function(getattr(sce, wrong), None, sce.reference, *sce.inputs(dtype))
    assert not report.ok
    assert {c.tensor for c in report.failures} == {"input z"}
    if dtype in (torch.bfloat16, torch.float16):  # seen in the low precision itself, against the truth
        assert any((c.a, c.b) == ("manual", "torch64") for c in report.failures)
    if kind:
        assert report.diagnoses["input z"].kind == kind


def test_right_code_passes_over_seeds_and_shapes_in_half_precision():
    """No false alarm: 12 seeds and shapes in each of bfloat16 and float16 (the slow sweep of 200
    seeds is in docs/referee.md's measurement)."""
    for dtype in (torch.bfloat16, torch.float16):
        for seed in range(12):
            batch, classes = 4 + 5 * (seed % 4), 3 + 7 * (seed % 3)
            z, y = sce.inputs(dtype, batch, classes, seed)
            report = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, z, y, seed=seed, fd_budget=20_000)
            assert report.ok, str(report)


@pytest.mark.slow
def test_right_code_passes_over_200_seeds_and_shapes_in_half_precision():
    """No false alarm, the long sweep: 200 seeds in each of bfloat16 and float16, each seed a shape
    of its own, through the public check_function, alternating the fused softmax + cross-entropy
    Function and the attention backward. The sweep is about the half-precision bound, so per-coordinate
    finite differences give way to the directional witness on all but the smallest shapes (fd_budget:
    45 s against 5 s here). Marked slow for its length (no MNIST): it runs in CI too."""
    for dtype in (torch.bfloat16, torch.float16):
        for seed in range(200):
            if seed % 2:
                q, k, v = attn.inputs(dtype, 1 + seed % 2, 2 + seed % 9, 4 + seed % 13, seed)
                report = check_function(attn.attention, attn.attention_vjp, attn.reference, q, k, v, seed=seed,
                                        fd_budget=2_000)
            else:
                z, y = sce.inputs(dtype, 2 + seed % 30, 2 + (seed * 7) % 40, seed)
                report = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, z, y, seed=seed, fd_budget=2_000)
            assert report.ok, f"{dtype} seed {seed}:\n{report}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_function_with_torch_vjp(dtype):
    x = (3 * torch.randn(6, 10, generator=torch.Generator().manual_seed(0))).to(dtype)
    assert check_function(softplus, softplus_vjp, softplus, x).ok
    wrong = check_function(softplus, softplus_vjp_wrong, softplus, x)
    assert not wrong.ok and {c.tensor for c in wrong.failures} == {"input x"}


def test_numpy_float16_is_judged_in_float16():
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float16)
    report = check_function(lambda x: np.tanh(x), lambda g, x: g * (1 - np.tanh(x) ** 2), torch.tanh, x)
    assert report.ok and "float16" in report.title, str(report)
    wrong = check_function(lambda x: np.tanh(x), lambda g, x: g * (1 - np.tanh(x)), torch.tanh, x)
    assert not wrong.ok


def test_self_test_in_bfloat16_catches_every_variant():
    report = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, *sce.inputs(torch.bfloat16),
                            self_test=True)
    assert report.self_test.ok and report.self_test.caught, str(report.self_test)


def test_autograd_function_with_a_vjp_is_refused_in_one_line():
    with pytest.raises(TypeError, match="give vjp=None"):
        check_function(sce.SoftmaxCrossEntropy, softplus_vjp, sce.reference, *sce.inputs())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    """Every tensor the user's code and the counterpart are handed is on the device (the float64
    truth too); the verdicts are those of the CPU."""
    seen = set()

    class Watched(sce.SoftmaxCrossEntropy):
        @staticmethod
        def forward(ctx, z, y):
            seen.update((z.device.type, y.device.type))
            return sce.SoftmaxCrossEntropy.forward(ctx, z, y)

    def reference(z, y):
        seen.update((z.device.type, y.device.type))
        return sce.reference(z, y)

    z, y = (t.cuda() for t in sce.inputs(torch.bfloat16))
    report = check_function(Watched, None, reference, z, y)
    assert report.ok and seen == {"cuda"}, (seen, str(report))
    assert not check_function(sce.ScaledBackward, None, sce.reference, z, y).ok
    layer, x = dense(torch.bfloat16)
    layer.params = {n: p.cuda() for n, p in layer.params.items()}
    assert check_layer(layer, torch.nn.Linear(7, 5), x.cuda(), torch_params={"W": "weight", "b": "bias"}).ok


# ------------------------------------------------------------------------------ attention in bfloat16

attn = load_example("attention_bf16")
SMALL = dict(batch=1, length=4, dim=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_attention_backward_passes(dtype):
    report = check_function(attn.attention, attn.attention_vjp, attn.reference, *attn.inputs(dtype, **SMALL))
    assert report.ok, str(report)


@pytest.mark.parametrize("wrong, tensors, kind", [("vjp_scaled", {"input q"}, "constant factor"),
                                                  ("vjp_dropped_term", {"input q", "input k"}, None),
                                                  ("vjp_transposed", {"input k"}, None)])
def test_attention_mistakes_in_bfloat16_are_named(wrong, tensors, kind):
    report = check_function(attn.attention, getattr(attn, wrong), attn.reference,
                            *attn.inputs(torch.bfloat16, **SMALL))
    assert {c.tensor for c in report.failures} == tensors
    assert all(any((c.tensor, c.a, c.b) == (t, "manual", "torch64") for c in report.failures) for t in tensors)
    if kind:
        assert report.diagnoses["input q"].kind == kind


# ------------------------------------------------------------------------------ a mistake just above the bound


def scaled_in_low_precision(factor):
    """The fused backward with its result scaled by `factor` in the low-precision run only (a
    constant kept in half precision): the float64 run is right, so only the bound of the dtype
    itself can see it."""

    class Scaled(sce.SoftmaxCrossEntropy):
        @staticmethod
        def backward(ctx, g):
            dz, _ = sce.SoftmaxCrossEntropy.backward(ctx, g)
            return (dz if g.dtype == torch.float64 else (dz.double() * factor).to(g.dtype)), None

    return Scaled


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_a_mistake_just_above_the_bound_fails_at_each_dtype(dtype):
    z, y = sce.inputs(dtype)
    right = check_function(sce.SoftmaxCrossEntropy, None, sce.reference, z, y, self_test=True)
    eps, by = right.self_test.in_precision["input z"]
    assert by.startswith("manual~") and eps < {torch.float32: 1e-3, torch.bfloat16: 0.05, torch.float16: 0.01}[dtype]
    factor = 1 + 1.1 * eps
    wrong = check_function(scaled_in_low_precision(factor), None, sce.reference, z, y)
    assert not wrong.ok and {c.tensor for c in wrong.failures} == {"input z"}
    assert all(c.a == "manual" for c in wrong.failures)  # the low-precision run, not the derivation
    assert f"a factor {1 + eps:.3g}" in str(right.self_test)


# ------------------------------------------------------------------------------ a layer on tensors


class Dense:
    """y = x Wᵀ + b on tensors of any dtype, computed in float32 (float64 when handed float64)."""

    def __init__(self, W, b):
        self.params, self.grads = {"W": W, "b": b}, {}

    def forward(self, x):
        self.x, acc = x, torch.promote_types(x.dtype, torch.float32)
        return (x.to(acc) @ self.params["W"].to(acc).T + self.params["b"].to(acc)).to(x.dtype)

    def backward(self, dy):
        acc = torch.promote_types(dy.dtype, torch.float32)
        d = dy.to(acc)
        self.grads = {"W": (d.T @ self.x.to(acc)).to(dy.dtype), "b": d.sum(0).to(dy.dtype)}
        return (d @ self.params["W"].to(acc)).to(dy.dtype)


class DenseScaledW(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = (self.grads["W"].to(torch.promote_types(dy.dtype, torch.float32)) * 1.05).to(dy.dtype)
        return dx


class DenseWritesDy(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        dy.mul_(0)
        return dx


def dense(dtype, cls=Dense):
    gen = torch.Generator().manual_seed(0)
    W, b, x = (torch.randn(*s, generator=gen).to(dtype) for s in ((5, 7), (5,), (4, 7)))
    return cls(W, b), x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layer_on_tensors(dtype):
    layer, x = dense(dtype)
    report = check_layer(layer, torch.nn.Linear(7, 5), x, torch_params={"W": "weight", "b": "bias"})
    assert report.ok and {c.tensor for c in report.comparisons} >= {"input x", "parameter W", "parameter b"}, \
        str(report)
    assert layer.params["W"].dtype == dtype  # the caller's layer is not changed


def test_layer_on_tensors_mistake_and_write_are_named():
    layer, x = dense(torch.bfloat16, DenseScaledW)
    report = check_layer(layer, torch.nn.Linear(7, 5), x, torch_params={"W": "weight", "b": "bias"})
    assert {c.tensor for c in report.failures} == {"parameter W"}
    assert report.diagnoses["parameter W"].kind == "constant factor"
    layer, x = dense(torch.bfloat16, DenseWritesDy)
    report = check_layer(layer, torch.nn.Linear(7, 5), x, torch_params={"W": "weight", "b": "bias"})
    assert report.ok and any(n.kind == "wrote" and "backward wrote into dy" in n.text for n in report.notes), \
        str(report)


# ------------------------------------------------------------------------------ jax.custom_vjp


def test_jax_custom_vjp():
    jax = pytest.importorskip("jax", reason="jax not installed: pip install -e '.[jax]'")
    jnp = jax.numpy

    def make(vjp):
        @jax.custom_vjp
        def softplus_j(x):
            return jnp.logaddexp(0, x)

        softplus_j.defvjp(lambda x: (softplus_j(x), x), vjp)
        return softplus_j

    right, wrong = make(lambda x, g: (g * jax.nn.sigmoid(x),)), make(lambda x, g: (jax.nn.sigmoid(x),))
    x64 = jax.config.jax_enable_x64  # on where a test before this one in the process (a float64 JAX step) set it
    jax.config.update("jax_enable_x64", False)  # JAX's default, which the referee's float64 runs must leave alone
    try:
        for dtype in (jnp.float32, jnp.bfloat16):
            x = jnp.asarray(3 * np.random.default_rng(0).standard_normal((2, 3)), dtype)
            assert check_function(right, None, torch.nn.functional.softplus, x).ok
            report = check_function(wrong, None, torch.nn.functional.softplus, x)
            assert {c.tensor for c in report.failures} == {"input x"}
        assert not jax.config.jax_enable_x64  # the referee's float64 runs leave JAX's setting as it was
    finally:
        jax.config.update("jax_enable_x64", x64)


# ------------------------------------------------------------------------------ code with no float64 run


class Float32Inside(sce.SoftmaxCrossEntropy):
    """The fused kernel as often written: ``.float()``, float32 whatever it is handed."""

    @staticmethod
    def forward(ctx, z, y):
        za = z.float()
        lse = torch.logsumexp(za, dim=1)
        ctx.save_for_backward(torch.exp(za - lse[:, None]), y)
        return (lse - za.gather(1, y[:, None])[:, 0]).mean().to(z.dtype)


class HalfOnlyKernel(sce.SoftmaxCrossEntropy):
    """A kernel that refuses float64 (bfloat16 and float16 only)."""

    @staticmethod
    def forward(ctx, z, y):
        if z.dtype not in (torch.bfloat16, torch.float16):
            raise RuntimeError("this kernel supports bfloat16 and float16 only")
        return sce.SoftmaxCrossEntropy.forward(ctx, z, y)


class HalfOnlyScaled(HalfOnlyKernel):
    @staticmethod
    def backward(ctx, g):
        return sce.ScaledBackward.backward(ctx, g)


@pytest.mark.parametrize("kernel, why", [(Float32Inside, "computes below float64"),
                                         (HalfOnlyKernel, "does not run in float64")])
def test_code_with_no_float64_run_is_judged_in_its_precision_without_fd(kernel, why):
    report = check_function(kernel, None, sce.reference, *sce.inputs(torch.bfloat16), self_test=True)
    assert report.ok, str(report)
    left_out = next(n for n in report.notes if n.kind == "coverage")
    assert left_out.text.startswith("fd and dir left out") and why in left_out.text
    assert {(c.a, c.b) for c in report.comparisons} == {("manual", "torch64"), ("manual", "torch")}
    assert report.self_test.ok and report.self_test.caught


def test_half_only_kernel_mistake_is_named_with_its_kind():
    report = check_function(HalfOnlyScaled, None, sce.reference, *sce.inputs(torch.bfloat16))
    assert {c.tensor for c in report.failures} == {"input z"}
    assert report.diagnoses["input z"].kind == "constant factor"


# ------------------------------------------------------------------------------ not bit-deterministic


def atomic_sum_kernel(sign=1.0):
    """A kernel that sums in another order at every call (as atomics do): y = x @ w from partial sums
    added in x's dtype in a random order; its VJP likewise."""
    order = torch.Generator().manual_seed(1)

    def shuffled_matmul(a, b):
        """Blocks of 8 products summed in float32, the partial sums added in a.dtype in a random order."""
        acc = torch.promote_types(a.dtype, torch.float32)
        total = None
        for block in torch.randperm(a.shape[-1], generator=order).split(8):
            part = (a.to(acc)[:, block] @ b.to(acc)[block, :]).to(a.dtype)
            total = part if total is None else total + part
        return total

    def fn(x, w):
        return shuffled_matmul(x, w)

    def vjp(g, x, w):
        return sign * shuffled_matmul(g, w.T), shuffled_matmul(x.T, g)

    return fn, vjp


def test_a_kernel_that_is_not_bit_deterministic_gets_its_spread_bounded_not_refused():
    gen = torch.Generator().manual_seed(0)
    x, w = (torch.randn(*s, generator=gen).to(torch.bfloat16) for s in ((8, 64), (64, 6)))
    fn, vjp = atomic_sum_kernel()
    report = check_function(fn, vjp, lambda x, w: x @ w, x, w)
    assert report.ok and not report.refusal, str(report)
    assert any("not bit-deterministic" in getattr(n, "text", "") for n in report.notes)
    assert {"input x", "input w", "output"} <= {c.tensor for c in report.comparisons if c.b == "rerun"}
    fn, wrong = atomic_sum_kernel(sign=-1.0)
    assert {c.tensor for c in check_function(fn, wrong, lambda x, w: x @ w, x, w).failures} == {"input x"}


# ------------------------------------------------------------------------------ a model on tensors


class Relu:
    params, grads = {}, {}

    def forward(self, x):
        self.x = x
        return torch.relu(x)

    def backward(self, dy):
        return dy * (self.x > 0).to(dy.dtype)


class CrossEntropy:
    """The loss protocol of check_model on tensors: forward(logits, y) -> mean loss, backward() -> δ."""

    def forward(self, z, y):
        self.z, self.y = z, y
        return sce.SoftmaxCrossEntropy.apply(z, y)

    def backward(self):
        acc = torch.promote_types(self.z.dtype, torch.float32)
        d = torch.softmax(self.z.to(acc), dim=1)
        d[torch.arange(len(self.y)), self.y] -= 1
        return (d / len(self.y)).to(self.z.dtype)


def test_model_on_tensors_names_the_first_wrong_layer():
    gen = torch.Generator().manual_seed(0)
    first, _ = dense(torch.bfloat16)
    second = DenseScaledW(*(torch.randn(*s, generator=gen).to(torch.bfloat16) for s in ((3, 5), (3,))))
    x = torch.randn(4, 7, generator=gen).to(torch.bfloat16)
    y = torch.tensor([0, 2, 1, 2])
    names = {"torch_params": {"W": "weight", "b": "bias"}}
    model = [(first, torch.nn.Linear(7, 5), dict(names)), (Relu(), torch.nn.ReLU()),
             (second, torch.nn.Linear(5, 3), dict(names))]
    report = check_model(model, x, y, loss=(CrossEntropy(), torch.nn.CrossEntropyLoss()))
    assert not report.ok and report.culprit.position == 3, str(report)
    right = [(first, torch.nn.Linear(7, 5), dict(names)), (Relu(), torch.nn.ReLU()),
             (Dense(second.params["W"], second.params["b"]), torch.nn.Linear(5, 3), dict(names))]
    assert check_model(right, x, y, loss=(CrossEntropy(), torch.nn.CrossEntropyLoss())).ok


class NumpyDense:
    """y = x Wᵀ + b in NumPy, in the arrays' dtype (float16 here)."""

    def __init__(self, W, b, scale=1.0):
        self.params, self.grads, self.scale = {"W": W, "b": b}, {}, scale

    def forward(self, x):
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy):
        self.grads = {"W": dy.T @ self.x, "b": (self.scale * dy.sum(0)).astype(dy.dtype)}
        return dy @ self.params["W"]


def test_numpy_float16_layer():
    rng = np.random.default_rng(0)
    W, b, x = (rng.standard_normal(s).astype(np.float16) for s in ((5, 7), (5,), (4, 7)))
    names = {"W": "weight", "b": "bias"}
    report = check_layer(NumpyDense(W, b), torch.nn.Linear(7, 5), x, torch_params=names)
    assert report.ok and "float16" in report.title, str(report)
    wrong = check_layer(NumpyDense(W, b, scale=2.0), torch.nn.Linear(7, 5), x, torch_params=names)
    assert {c.tensor for c in wrong.failures} == {"parameter b"}
    assert wrong.diagnoses["parameter b"].kind == "constant factor"
