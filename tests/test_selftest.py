"""compare.check.selftest: the standard wrong variants injected into a hand-written backward are
each caught at the check's settings on real layers, the smallest detectable error is the check's
real resolution, variants that change nothing are skipped, and a weak setting shows its misses."""

import math

import numpy as np
import pytest
import torch

from compare import check_function, check_layer
from compare.check import tolerances
from compare.check import fd  # noqa: E402
from test_check import Affine, Tanh, square_case
from test_check_protocol import NHWC, BatchNorm, ConvNHWC, Embedding, FreshMask, LSTMCell, lstm_inputs


def variants_of(shape) -> int:
    """scaled, sign flipped, g ignored; transposed (last two axes of one size); averaged over the
    first and the last axis (two or more axes)."""
    if len(shape) < 2:
        return 3
    return 3 + (shape[-1] == shape[-2]) + 2


def assert_every_variant_caught(report):
    st = report.self_test
    assert report.ok and st.ok and st.missed == [] and st.skipped == [], str(st)
    assert len(st.caught) == sum(variants_of(s) for s in st.shapes.values())
    assert all(v.detail.startswith("by manual") for v in st.caught)
    assert set(st.smallest) == {c.tensor for c in report.comparisons if not c.tensor.startswith(("output", "buffer"))}
    assert all(0 < eps <= 1e-6 for eps, _ in st.smallest.values()), st.smallest
    text = str(report)
    assert f"self-test: the check caught {len(st.caught)} of {len(st.caught)} injected mistakes" in text
    assert "MISSED" not in text


def project_layers(rng):
    from manual.layers import Linear, ReLU, Sigmoid, Tanh as ProjectTanh

    return [(Linear.init(6, 3, rng), torch.nn.Linear(6, 3)), (Sigmoid(), torch.nn.Sigmoid()),
            (ProjectTanh(), torch.nn.Tanh()), (ReLU(), torch.nn.ReLU())]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_variant_is_caught_on_the_test_layers_and_the_projects_own(dtype):
    rng = np.random.default_rng(0)
    layers = [(Affine(6, 4, rng, dtype), torch.nn.Linear(6, 4)), (Tanh(), torch.nn.Tanh()), *project_layers(rng)]
    for layer, module in layers:
        if dtype == np.float32:
            layer.params = {n: p.astype(np.float32) for n, p in layer.params.items()}
        report = check_layer(layer, module, rng.standard_normal((4, 6)).astype(dtype), self_test=True)
        assert_every_variant_caught(report)
    layer, module, x = square_case(Affine)  # square: the transposed variant too
    assert_every_variant_caught(check_layer(layer, module, x, self_test=True))


def test_every_variant_is_caught_on_layers_of_several_inputs_layouts_ids_and_buffers():
    rng = np.random.default_rng(1)
    checks = [
        lambda: check_layer(LSTMCell(4, 5, rng), torch.nn.LSTMCell(4, 5), lstm_inputs(rng),
                            torch_inputs=lambda x, h, c: (x, (h, c)), self_test=True),
        lambda: check_layer(ConvNHWC(3, 4, rng), torch.nn.Conv2d(3, 4, 3, padding=1), rng.standard_normal((2, 5, 6, 3)),
                            **NHWC, self_test=True),
        lambda: check_layer(BatchNorm(3, rng), torch.nn.BatchNorm1d(3), 2 + rng.standard_normal((6, 3)), training=True,
                            self_test=True),
        lambda: check_layer(Embedding(5, 4, rng), torch.nn.Embedding(5, 4), np.array([[1, 3, 1], [0, 3, 3]]),
                            self_test=True),
    ]
    for run in checks:
        assert_every_variant_caught(run())


def test_the_smallest_detectable_error_is_the_checks_resolution():
    """A scaling by 1 + 2ε fails the check, one by 1 + ε/2 passes: ε is neither loose nor optimistic."""
    layer, module, x = square_case(Affine)
    eps, by = check_layer(layer, module, x, self_test=True).self_test.smallest["parameter W"]
    assert by == "manual~torch" and eps == pytest.approx(tolerances.FLOAT64_REL, rel=1e-3)

    def scaled(factor):
        class Scaled(Affine):
            def backward(self, dy):
                dx = super().backward(dy)
                self.grads["W"] = self.grads["W"] * factor
                return dx
        layer, module, x = square_case(Scaled)
        return check_layer(layer, module, x)

    assert not scaled(1 + 2 * eps).ok
    assert scaled(1 + eps / 2).ok


def test_a_variant_that_changes_nothing_is_skipped_not_counted():
    """y = x + xᵀ: its gradient g + gᵀ is symmetric, so transposing it is no mistake; y ignores
    its second input, whose gradient is 0: no variant changes it."""
    x = np.random.default_rng(2).standard_normal((4, 4))
    report = check_function(lambda x, y: x + x.T, lambda g, x, y: (g + g.T, np.zeros_like(y)),
                            lambda x, y: x + x.T + 0 * y, x, x.copy(), self_test=True)
    st = report.self_test
    assert report.ok and st.ok
    skipped = {(v.tensor, v.name) for v in st.skipped}
    assert ("input x", "transposed") in skipped
    assert {v.tensor for v in st.variants if v.tensor == "input y"} == {"input y"}
    assert all(v.outcome == "skipped" for v in st.variants if v.tensor == "input y")
    assert len(st.caught) == 5 and st.smallest["input y"] == (math.inf, "its gradient is 0 here")
    assert "skipped: transposed (it leaves this gradient unchanged)" in str(st)


def loosen(monkeypatch, analytic: float, fd: float | None = None):
    """Loosen the check's bounds: the analytic pairs' (float64) and the finite differences'."""
    monkeypatch.setattr(tolerances, "FLOAT64_REL", analytic)
    monkeypatch.setattr(tolerances, "FLOAT64_ELEM", analytic)
    if fd is not None:
        monkeypatch.setattr(tolerances, "FINITE_DIFF_REL", fd)
        monkeypatch.setattr(tolerances, "FINITE_DIFF_ELEM", fd)


def test_a_weak_setting_reports_the_variants_it_misses(monkeypatch):
    loosen(monkeypatch, 1.5, 1.5)  # every bound allows a relative error of 150 %
    report = check_layer(*square_case(Affine), self_test=True)
    st = report.self_test
    assert report.ok and not st.ok
    missed = {(v.tensor, v.name) for v in st.missed}
    assert ("parameter W", "averaged over axis 0") in missed and ("parameter b", "scaled by 2") in missed
    assert ("input x", "sign flipped") not in missed  # −m is 200 % away: still seen
    assert all("within every bound of the check" in v.detail for v in st.missed)
    assert all(eps == math.inf for eps, _ in st.smallest.values())
    text = str(report)
    assert f"; MISSED {len(st.missed)}" in text and "MISSED: averaged over axis 0" in text
    assert "no scaling is sure to be seen" in text


def test_with_loose_analytic_bounds_the_finite_differences_stand_and_set_the_resolution(monkeypatch):
    loosen(monkeypatch, 10.0)
    report = check_layer(*square_case(Affine), self_test=True)
    st = report.self_test
    assert st.ok and len(st.caught) == 15
    for eps, by in st.smallest.values():
        assert by in ("manual~fd", "manual~dir") and tolerances.FINITE_DIFF_REL <= eps < 1e-5


def test_a_tensor_the_check_already_fails_is_skipped_and_the_others_tested():
    class WrongB(Affine):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["b"] = 2 * self.grads["b"]
            return dx

    st = check_layer(*square_case(WrongB), self_test=True).self_test
    assert {v.tensor for v in st.skipped} == {"parameter b"}
    assert all(v.detail == "the check already fails on this tensor" for v in st.skipped)
    assert st.missed == [] and {v.tensor for v in st.caught} == {"input x", "parameter W"}


def test_no_verdict_no_self_test():
    report = check_layer(FreshMask(), torch.nn.Identity(), np.ones((3, 4)), self_test=True)
    assert report.refusal and not report.self_test.ok and report.self_test.variants == []
    assert "self-test: not run: the check gave no verdict" in str(report)


class Counted(Affine):
    """Affine that counts its backward calls (each witness runs on its own copy)."""

    calls = 0

    def backward(self, dy):
        type(self).calls += 1
        return super().backward(dy)


@pytest.mark.parametrize("dtype, more", [(np.float64, 1), (np.float32, 2)])
def test_the_self_test_reuses_the_checks_runs_and_leaves_its_verdict_alone(monkeypatch, dtype, more):
    """Same finite differences, same torch runs, the same comparisons; one hand-written run more
    (with g₂; float32: also its float64 referee). (A variant that fails a comparison with the
    finite differences may have them taken once more with the step 2h, the check's second look
    at their truncation: those are not counted.)"""
    counts = {}

    def counting(name, original):
        def wrapped(*args, **kwargs):
            if args[-1] == tolerances.FD_STEP or name == "torch":
                counts[name] = counts.get(name, 0) + 1
            return original(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(fd, "coordinates", counting("fd", fd.coordinates))
    monkeypatch.setattr(fd, "direction", counting("dir", fd.direction))
    from compare.check import subjects
    monkeypatch.setattr(subjects.Subject, "torch", counting("torch", subjects.Subject.torch))
    results = {}
    for self_test in (False, True):
        counts.clear()
        Counted.calls = 0
        rng = np.random.default_rng(3)
        layer = Counted(5, 4, rng, dtype)
        report = check_layer(layer, torch.nn.Linear(5, 4), rng.standard_normal((3, 5)).astype(dtype),
                             self_test=self_test)
        results[self_test] = (dict(counts), Counted.calls, [(c.tensor, c.a, c.b, c.agreement.rel_err)
                                                            for c in report.comparisons])
    (plain_counts, plain_calls, plain), (tested_counts, tested_calls, tested) = results[False], results[True]
    assert tested_counts == plain_counts and tested == plain
    assert tested_calls == plain_calls + more
