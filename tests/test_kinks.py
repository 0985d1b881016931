"""compare.check.kinks: at an input exactly at a ReLU's 0 or a tie in a max the derivative is not
defined, and a hand-written gradient that takes another convention than torch's there is no
mistake: the check passes, says how many elements sit at kinks, and holds both sides to the
interval between the one-sided differences. A value outside it, or any mistake elsewhere, still
fails; a smooth function is never taken for a kink."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_forward_backward, check_function
from compare.check import fd
from compare.check.kinks import meeting as meeting

rng = np.random.default_rng(3)


def relu(x):
    return np.maximum(x, 0)


def pool_forward(x):
    """2×2 max pooling, x (N, C, H, W)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)), x


def pool_backward(dy, x, tie="first"):
    """The gradient to the first (or last) of a window's maxima, split evenly among them, or (wrong
    at a tie) the whole of it to each, or to none."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    tied = windows == windows.max(axis=-1, keepdims=True)
    if tie == "none":  # wrong at a tie: the gradient to a window's maximum only where it is alone
        tied = tied & (tied.sum(axis=-1, keepdims=True) == 1)
    if tie in ("first", "last"):
        k = tied.argmax(axis=-1) if tie == "first" else 3 - tied[..., ::-1].argmax(axis=-1)
        share = np.zeros_like(windows)
        np.put_along_axis(share, k[..., None], 1.0, axis=-1)
    else:
        share = tied / (tied.sum(axis=-1, keepdims=True) if tie == "split" else 1)
    d = share * dy[..., None]
    return d.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)


def overlapping_pool(x, k=3, s=2):
    """k×k max pooling at stride s < k, x (N, C, H, W)."""
    n, c, h, w = x.shape
    y = np.empty((n, c, (h - k) // s + 1, (w - k) // s + 1))
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            y[:, :, i, j] = x[:, :, i * s:i * s + k, j * s:j * s + k].reshape(n, c, -1).max(-1)
    return y, x


def overlapping_pool_backward(dy, x, tie, k=3, s=2):
    n, c, h, w = x.shape
    dx = np.zeros_like(x)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            window = x[:, :, i * s:i * s + k, j * s:j * s + k].reshape(n, c, -1)
            tied = window == window.max(-1, keepdims=True)
            if tie in ("first", "last"):
                at = tied.argmax(-1) if tie == "first" else k * k - 1 - tied[..., ::-1].argmax(-1)
                share = np.zeros_like(window)
                np.put_along_axis(share, at[..., None], 1.0, -1)
            else:
                share = tied / (tied.sum(-1, keepdims=True) if tie == "split" else 1)
            dx[:, :, i * s:i * s + k, j * s:j * s + k] += (share * dy[:, :, i, j][..., None]).reshape(n, c, k, k)
    return dx


def integers(shape, low=-2, high=3, dtype=np.float64):
    return rng.integers(low, high, shape).astype(dtype)


def kink_note(report) -> str:
    return next(n.text for n in report.notes if n.kind == "kinks")


@pytest.mark.parametrize("tie", ["first", "last", "split"])
def test_max_pooling_at_ties_passes_whichever_tied_element_takes_the_gradient(tie):
    x = integers((2, 2, 4, 4), 0, 3)
    report = check_forward_backward(pool_forward, lambda d, c: pool_backward(d, c, tie),
                                    lambda x: F.max_pool2d(x, 2), x)
    assert report.ok, str(report)
    assert kink_note(report).startswith("input x: ") and "where two witnesses differ sit at kinks" in kink_note(report)
    assert {(c.a, c.b) for c in report.comparisons if c.b == "one-sided"} == {("manual", "one-sided"),
                                                                             ("torch", "one-sided")}


@pytest.mark.parametrize("tie", ["each", "none"])
def test_a_ties_gradient_given_whole_to_each_tied_element_or_to_none_fails_along_the_ties_together(tie):
    x = integers((2, 2, 4, 4), 0, 3)
    report = check_forward_backward(pool_forward, lambda d, c: pool_backward(d, c, tie),
                                    lambda x: F.max_pool2d(x, 2), x)
    assert not report.ok and [(c.tensor, c.a, c.b) for c in report.failures] == [("input x", "manual", "ties")]
    assert "they do not add up (manual~ties)" in kink_note(report)
    assert report.suspects["input x"].side == "yours"
    assert "kinks where yours takes a whole one-sided derivative" in str(report)
    diagnosis = report.diagnoses["input x"]  # yours over the function's move: ties of 2-4 elements, or none
    assert diagnosis.kind == "tie shared" and (1.5 < diagnosis.value < 4 if tie == "each" else diagnosis.value == 0)


@pytest.mark.parametrize("tie", ["first", "last", "split"])
def test_pooling_a_relus_zeros_passes_whichever_tied_element_takes_the_gradient(tie):
    """Windows of a ReLU's zeros, as after a convolution on MNIST's borders, tie four ways."""
    x = relu(rng.standard_normal((4, 3, 8, 8)))
    x[:, :, :4] = 0.0
    report = check_forward_backward(pool_forward, lambda d, c: pool_backward(d, c, tie),
                                    lambda x: F.max_pool2d(x, 2), x)
    assert report.ok, str(report)


def test_a_max_along_an_axis_taking_the_first_of_its_ties_passes_where_torch_splits_them():
    x = integers((6, 4), 0, 2)
    first = lambda g, x: g[:, None] * (np.arange(4) == (x == x.max(1, keepdims=True)).argmax(1)[:, None])
    report = check_function(lambda x: x.max(1), first, lambda x: x.amax(1), x)
    assert report.ok, str(report)


def test_max_pooling_without_ties_gets_no_kink_note_and_the_same_verdict():
    report = check_forward_backward(pool_forward, lambda d, c: pool_backward(d, c, "last"),
                                    lambda x: F.max_pool2d(x, 2), rng.standard_normal((2, 2, 4, 4)))
    assert report.ok and not [n for n in report.notes if n.kind == "kinks"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, vjp", [("x >= 0", lambda g, x: g * (x >= 0)),
                                       ("half at 0", lambda g, x: g * np.where(x == 0, 0.5, x > 0).astype(x.dtype))])
def test_relu_at_exact_zeros_passes_with_another_convention_and_counts_the_zeros(name, vjp, dtype):
    x = integers((4, 5), dtype=dtype)
    report = check_function(relu, vjp, torch.relu, x)
    assert report.ok, str(report)
    zeros = int((x == 0).sum())
    assert kink_note(report).startswith(f"input x: {zeros} of the {zeros} elements where two witnesses differ sit at kinks")


def test_torchs_own_convention_on_an_mnist_sized_input_with_zeros_passes_with_dir_left_out():
    """fd samples 49 of 50,176 coordinates here; at the zeros central differences are the mean of the
    one-sided ones, so fd and dir disagree with manual and torch alike, both exactly right, unless the
    zeros are judged as kinks."""
    x = rng.standard_normal((64, 784))
    x[rng.random(x.shape) < 0.5] = 0.0  # as many zeros as an MNIST batch's pixels
    report = check_function(relu, lambda g, x: g * (x > 0), torch.relu, x)
    assert report.ok, str(report)
    assert "dir is left out (its direction crosses kinks" in kink_note(report)
    assert {c.b for c in report.comparisons if c.tensor == "input x"} == {"torch", "fd", "one-sided"}


def test_a_wrong_vjp_on_an_mnist_sized_input_with_zeros_still_fails():
    x = rng.standard_normal((64, 784))
    x[rng.random(x.shape) < 0.5] = 0.0
    report = check_function(relu, lambda g, x: 0.9 * g * (x > 0), torch.relu, x)
    assert not report.ok and {c.tensor for c in report.failures} == {"input x"}
    assert report.diagnoses["input x"].kind == "constant factor"


def test_an_input_all_at_kinks_is_judged_one_sided_alone_with_no_empty_pair_shown_as_agreement():
    report = check_function(relu, lambda g, x: g * (x >= 0), torch.relu, np.zeros((3, 4)))
    assert report.ok, str(report)
    # x >= 0 takes the right one-sided derivative at all 12: held to it along them together as well
    assert {(c.a, c.b) for c in report.comparisons if c.tensor == "input x"} == {("manual", "one-sided"),
                                                                                ("torch", "one-sided"),
                                                                                ("manual", "ties")}
    assert all(c.compared == 12 for c in report.comparisons if c.tensor == "input x")


def test_a_value_outside_the_one_sided_derivatives_at_a_kink_still_fails():
    x = integers((4, 5))
    report = check_function(relu, lambda g, x: g * np.where(x == 0, 2.0, x > 0), torch.relu, x)
    assert not report.ok and {c.tensor for c in report.failures} == {"input x"}
    assert "not explained by them alone: compared as always" in kink_note(report)


def dense_relu(x, w, b):
    return relu(x @ w + b)


def dense_relu_vjp(factor=1.0, at_zero=False):
    """relu(x·W + b)'s vjp with ReLU' taken as 1 at 0 (`at_zero`) or 0 (torch's), times `factor`."""
    def vjp(g, x, w, b):
        z = x @ w + b
        d = factor * g * ((z >= 0) if at_zero else (z > 0))
        return d @ w.T, x.T @ d, d.sum(0)
    return vjp


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("at_zero", [False, True])
def test_weights_all_zero_pass_with_either_convention_where_kinks_meet_along_each_weight(at_zero, dtype):
    # W = 0 puts every unit's input at ReLU's 0: along W[i, j] the batch's kinks meet, and torch's
    # gradient (0 at every one) lies outside the one-sided interval where its two sides, the sums of
    # x[:, i]·g[:, j] over x[:, i] > 0 and over x[:, i] < 0, have one sign.
    x, w, b = rng.standard_normal((8, 5)).astype(dtype), np.zeros((5, 3), dtype), np.zeros(3, dtype)
    report = check_function(dense_relu, dense_relu_vjp(at_zero=at_zero), lambda x, w, b: F.relu(x @ w + b), x, w, b)
    assert report.ok, str(report)
    note = next(n.text for n in report.notes if n.kind == "kinks" and n.text.startswith("input w"))
    assert "torch's own value lies outside that interval" in note and "check also where nothing is exactly 0" in note


@pytest.mark.parametrize("factor", [2.0, -1.0])
def test_a_wrong_factor_where_kinks_meet_fails_on_the_bias_and_leaves_the_weights_it_cannot_judge(factor):
    # Beside W = 0 the batch's rows switch on in any combination: a sum of any of their parts is some
    # convention's, so W's values outside the interval are not judged; b's kinks act as one (b moves
    # every row of a unit at once) and the factor shows there.
    x, w, b = rng.standard_normal((8, 5)), np.zeros((5, 3)), np.zeros(3)
    report = check_function(dense_relu, dense_relu_vjp(factor, True), lambda x, w, b: F.relu(x @ w + b), x, w, b)
    assert not report.ok and {c.tensor for c in report.failures} == {"input b"}
    note = next(n.text for n in report.notes if n.kind == "not judged")
    assert "are not judged: beside them the derivative takes values other than the one-sided ones" in note


def test_overlapping_pooling_windows_pass_whichever_convention_where_an_element_ties_in_two():
    """3×3 windows at stride 2 share rows and columns: an element tied in two windows takes one
    window's gradient under "last" or an even split, which can lie outside its [l, r] = [0, dA + dB]."""
    x = np.random.default_rng(7).integers(0, 3, (4, 3, 13, 13)).astype(np.float64)  # 757 kinks
    for tie in ("first", "last", "split"):
        report = check_forward_backward(overlapping_pool, lambda d, c: overlapping_pool_backward(d, c, tie),
                                        lambda x: F.max_pool2d(x, 3, 2), x)
        assert report.ok, str(report)
        if tie == "last":  # where yours lies outside [l, r] and kinks meet, the verdict says what it left
            assert "comparisons agree, but some elements were not judged (the notes say which)" in str(report)
            assert next(n.text for n in report.notes if n.kind == "not judged").startswith("input x: ")
    report = check_forward_backward(overlapping_pool, lambda d, c: overlapping_pool_backward(d, c, "each"),
                                    lambda x: F.max_pool2d(x, 3, 2), x)
    assert [(c.tensor, c.b) for c in report.failures] == [("input x", "ties")]


def test_a_value_outside_the_interval_at_lone_kinks_is_still_judged_after_looking_beside_them():
    x = integers((4, 5))
    report = check_function(relu, lambda g, x: g * np.where(x == 0, -1.0, x > 0), torch.relu, x)
    assert not report.ok and "are not judged" not in kink_note(report)


def test_meeting_widens_the_interval_to_autograds_value_and_its_mirror_only_outside_it():
    low, high = np.array([0.0, 1.0, -1.0]), np.array([1.0, 3.0, 1.0])
    autograd = np.array([0.5, 0.0, 3.0])
    wide_low, wide_high, outside = meeting(low, high, autograd)
    assert outside.tolist() == [False, True, True]
    np.testing.assert_array_equal(wide_low, [0.0, 0.0, -3.0])
    np.testing.assert_array_equal(wide_high, [1.0, 4.0, 3.0])


def test_a_mistake_away_from_the_kinks_still_fails():
    x = integers((4, 5))
    report = check_function(relu, lambda g, x: g * (x >= 0) * np.where(x > 1.5, 1.1, 1.0), torch.relu, x)
    assert not report.ok and "not explained by them alone" in kink_note(report)


def test_a_wrong_derivative_of_a_steep_smooth_function_fails_with_no_kink_found():
    x = rng.standard_normal((3, 4))
    report = check_function(lambda x: np.exp(6 * x), lambda g, x: 5 * g * np.exp(6 * x), lambda x: torch.exp(6 * x), x)
    assert not report.ok and not [n for n in report.notes if n.kind == "kinks"]


def test_one_sided_differences_tell_a_kink_from_a_smooth_point():
    t = np.array([0.0, 1.0])
    right, left, rounding = fd.one_sided(t, np.arange(2), lambda: np.array([abs(t[0]), t[1] ** 2]), np.ones(2), 1e-4)
    assert right[0] == pytest.approx(1) and left[0] == pytest.approx(-1)  # |x| at 0: a jump of 2
    assert right[1] - left[1] == pytest.approx(2e-4, rel=1e-6)  # x² at 1: h·f″ = 2h
    assert (rounding >= 0).all() and t.tolist() == [0.0, 1.0]


def test_one_sided_differences_along_a_direction_move_its_elements_at_once():
    t = np.array([0.0, 0.0, 1.0])
    f = lambda: np.array([max(t[0], t[1]), t[2] ** 2])  # noqa: E731
    right, left, rounding = fd.one_sided_along([t], [np.array([1.0, 1.0, 0.0])], f, np.array([1.0, 3.0]), 1e-4)
    assert right == pytest.approx(1, rel=1e-9) and left == pytest.approx(1, rel=1e-9)  # a tie moved as one
    assert rounding == pytest.approx(fd.EPS64, rel=1e-9) and t.tolist() == [0.0, 0.0, 1.0]
    right, left, _ = fd.one_sided_along([t], [np.array([1.0, 0.0, 0.0])], f, np.array([1.0, 3.0]), 1e-4)
    assert right == pytest.approx(1, rel=1e-9) and left == 0.0  # one of the tie alone: a kink


def test_too_many_kinks_to_judge_one_by_one_keep_the_failure_and_say_what_a_sample_shows():
    x = rng.standard_normal((64, 784)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    report = check_function(relu, lambda g, x: g * (x >= 0), torch.relu, x)
    assert not report.ok and {c.tensor for c in report.failures} == {"input x"}
    note = kink_note(report)
    assert f"the {int((x == 0).sum())} elements where two witnesses differ are too many" in note
    assert "all 256 of an even sample of them sit at kinks" in note and "Not judged: the comparisons stand" in note


def test_a_sample_that_finds_no_kinks_says_nothing():
    x = rng.standard_normal((64, 784))
    report = check_function(relu, lambda g, x: 0.9 * g * (x > 0), torch.relu, x)
    assert not report.ok and not [n for n in report.notes if n.kind == "kinks"]


class PoolToEachTie(torch.autograd.Function):
    """2×2 max pooling as a hand-written autograd Function whose backward gives a tie's gradient to
    every tied element (`mask = window == max`)."""

    @staticmethod
    def forward(ctx, x):
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        n, c, h, w = x.shape
        mask = x.reshape(n, c, h // 2, 2, w // 2, 2) == y[:, :, :, None, :, None]
        return (mask * g[:, :, :, None, :, None]).reshape(x.shape)


class PoolToTheFirstTie(PoolToEachTie):
    @staticmethod
    def backward(ctx, g):
        x, _ = ctx.saved_tensors
        _, at = F.max_pool2d(x, 2, return_indices=True)
        return F.max_unpool2d(g, at, 2, output_size=x.shape[-2:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_an_autograd_function_is_judged_at_ties_as_numpy_code_is(dtype):
    x = torch.tensor(integers((2, 2, 4, 4), 0, 3), dtype=dtype)
    report = check_function(PoolToEachTie, None, lambda x: F.max_pool2d(x, 2), x)
    assert [(c.tensor, c.b) for c in report.failures] == [("input x", "ties")]
    assert check_function(PoolToTheFirstTie, None, lambda x: F.max_pool2d(x, 2), x).ok


def test_the_self_test_at_ties_measures_its_reach_on_the_elements_held_to_values_not_to_intervals():
    # A scale 1 + ε of yours can stay inside a kink's interval: the reach comes from manual~torch.
    report = check_forward_backward(pool_forward, lambda d, c: pool_backward(d, c, "last"),
                                    lambda x: F.max_pool2d(x, 2), integers((2, 2, 4, 4), 0, 3), self_test=True)
    eps, by = report.self_test.smallest["input x"]
    assert report.ok and report.self_test.ok and not report.self_test.missed
    assert by == "manual~torch" and 0 < eps < 1e-8


class Shift:
    """x + b, b of one example's shape: a layer below the pooling that keeps its input's ties (b = 0)."""

    def __init__(self, shape):
        self.params, self.grads = {"b": np.zeros(shape)}, {"b": np.zeros(shape)}

    def forward(self, x):
        return x + self.params["b"]

    def backward(self, g):
        self.grads["b"][...] = g.sum(0)
        return g


class OverlappingPoolLast:
    params, grads = {}, {}

    def forward(self, x):
        self.x = x
        return overlapping_pool(x)[0].reshape(len(x), -1)

    def backward(self, g):
        return overlapping_pool_backward(g.reshape(len(self.x), 3, 6, 6), self.x, "last")


def test_a_model_whose_layer_left_elements_at_kinks_unjudged_says_so_in_its_headline():
    from compare import check_model
    from manual import Linear, SoftmaxCrossEntropy

    class ShiftTorch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.zeros(3, 13, 13, dtype=torch.float64))

        def forward(self, x):
            return x + self.b

    r = np.random.default_rng(7)
    x = r.integers(0, 3, (4, 3, 13, 13)).astype(np.float64)
    layers = [(Shift((3, 13, 13)), ShiftTorch()), (OverlappingPoolLast(), lambda x: F.max_pool2d(x, 3, 2).flatten(1)),
              Linear.init(108, 5, r)]
    found = check_model(layers, x, r.integers(0, 5, 4), loss=SoftmaxCrossEntropy())
    assert found.ok
    assert found.headline().endswith("; at kinks, some elements of entry 2 of 3 were not judged (their notes)")


def median_one(g, x):
    """The gradient of each row's median to the element a stable argsort puts in the middle (torch's)."""
    dx = np.zeros_like(x)
    dx[np.arange(len(x)), np.argsort(x, 1, kind="stable")[:, x.shape[1] // 2]] = g
    return dx


def median_split(g, x):
    tied = x == np.median(x, 1, keepdims=True)
    return tied * g[:, None] / tied.sum(1, keepdims=True)


@pytest.mark.parametrize("vjp", [median_one, median_split])
def test_a_median_in_the_middle_of_a_tie_is_no_smooth_point_though_no_coordinate_alone_shows_a_jump(vjp):
    # Moving one tied element leaves the median where it is on both sides; moving the three moves it.
    x = np.array([[0.0, 1.0, 1.0, 1.0, 2.0], [3.0, 0.0, 3.0, 1.0, 3.0]])
    median = lambda x: np.median(x, axis=1)  # noqa: E731
    report = check_function(median, vjp, lambda t: torch.median(t, dim=1).values, x)
    assert report.ok, str(report)
    assert "dir is left out" in kink_note(report) and [n for n in report.notes if n.kind == "not judged"]
    wrong = check_function(median, lambda g, x: 2 * vjp(g, x), lambda t: torch.median(t, dim=1).values,
                           x + 0.01 * np.arange(10.0).reshape(2, 5))
    assert not wrong.ok  # off the ties (distinct values), a wrong factor shows


@pytest.mark.parametrize("share, right", [("split", True), ("half of split", False), ("by k*k", False)])
def test_a_ties_shares_are_held_to_add_up_to_its_gradient(share, right):
    # Each share lies in [0, d]: only their sum, moved together, tells d/2 or d/4 from d.
    def backward(dy, x):
        n, c, h, w = x.shape
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        tied = windows == windows.max(axis=-1, keepdims=True)
        k = tied.sum(-1, keepdims=True)  # the mistakes at ties alone: a lone maximum takes d
        count = {"split": k, "half of split": np.where(k > 1, 2 * k, 1), "by k*k": np.where(k > 1, 4, 1)}[share]
        d = tied / count * dy[..., None]
        return d.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)

    x = np.random.default_rng(4).integers(0, 3, (3, 2, 6, 6)).astype(np.float64)  # ties of 2, 3 and 4
    report = check_forward_backward(pool_forward, backward, lambda x: F.max_pool2d(x, 2), x)
    assert report.ok == right, str(report)
    if not right:
        assert [(c.tensor, c.b) for c in report.failures] == [("input x", "ties")]


@pytest.mark.parametrize("vjp, right", [
    (lambda g, a, b: (g * (a >= b), g * (b > a)), True),  # the tie to a
    (lambda g, a, b: (g * (a == b) / 2 + g * (a > b), g * (a == b) / 2 + g * (b > a)), True),  # split
    (lambda g, a, b: (g * (a >= b), g * (b >= a)), False),  # the whole to both
    (lambda g, a, b: (g * (a > b), g * (b > a)), False)])  # to neither
def test_a_tie_between_two_inputs_is_held_to_add_up_across_them(vjp, right):
    a, b = np.array([0.0, 1.0, 2.0, 1.0, 3.0]), np.array([0.0, 1.0, 1.0, 2.0, 3.0])  # ties at 0, 1 and 4
    report = check_function(np.maximum, vjp, torch.maximum, a, b)
    assert report.ok == right, str(report)
    if not right:
        assert [(c.tensor, c.b) for c in report.failures] == [("input x1 and input x2", "ties")]
        assert any("add up on their own, but not together" in n.text for n in report.notes)


def test_one_kink_taken_with_two_conventions_fails_along_a_direction_that_keeps_it():
    # relu(x0 + x1) at x0 = −x1: (g, 0) is no convention's (every one is c·(g, g)); moving x0 up and
    # x1 down keeps the sum, and the function, where they are.
    x = np.array([[1.0, -1.0], [2.0, -2.0], [3.0, 1.0]])
    f, t = (lambda x: relu(x[:, 0] + x[:, 1])), (lambda x: torch.relu(x[:, 0] + x[:, 1]))
    mixed = lambda g, x: np.stack([g * (x.sum(1) >= 0), g * (x.sum(1) > 0)], 1)  # noqa: E731
    same = lambda g, x: np.stack([g * (x.sum(1) >= 0), g * (x.sum(1) >= 0)], 1)  # noqa: E731
    assert [c.b for c in check_function(f, mixed, t, x).failures] == ["ties"]
    assert check_function(f, same, t, x).ok


def test_a_relu_layer_whose_weight_and_bias_masks_differ_at_a_kink_fails_across_the_two():
    x, w, b = np.array([[1.0, 2.0, 0.0, -1.0]]), np.array([[1.0, 0, -1], [0, 1, 1], [1, 1, 0], [1, 2, 1]]), np.zeros(3)

    def vjp(g, x, w, b, mixed=True):
        z = x @ w + b
        dw = g * ((z >= 0) if mixed else (z > 0))
        return (g * (z > 0)) @ w.T, x.T @ dw, (g * (z > 0)).sum(0)

    torch_fn = lambda x, w, b: torch.relu(x @ w + b)  # noqa: E731
    report = check_function(dense_relu, vjp, torch_fn, x, w, b)
    assert not report.ok and {c.b for c in report.failures} == {"ties"}
    assert check_function(dense_relu, lambda g, x, w, b: vjp(g, x, w, b, mixed=False), torch_fn, x, w, b).ok


def test_moving_several_tensors_together_one_sided():
    a, b = np.array([0.0]), np.array([0.0])
    f = lambda: np.array([max(a[0], b[0])])  # noqa: E731
    right, left, _ = fd.one_sided_along([a, b], [np.ones(1), np.ones(1)], f, np.ones(1), 1e-4)
    assert right == pytest.approx(1, rel=1e-9) and left == pytest.approx(1, rel=1e-9)
    assert a.tolist() == [0.0] and b.tolist() == [0.0]
    right, left, _ = fd.one_sided_along([a, b], [np.ones(1), -np.ones(1)], f, np.ones(1), 1e-4)
    assert right == pytest.approx(1, rel=1e-9) and left == pytest.approx(-1, rel=1e-9)  # max(t, −t) = |t|
