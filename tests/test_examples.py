"""The worked examples in examples/: each correct layer passes check_layer against a stock torch
module or function (layouts, several inputs, integer ids and buffers given through the API, no
custom torch module), each deliberately wrong variant fails with a message naming the tensor, the
index and the size of the error. The files are loaded by path, as a user's own file would be."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compare import check_layer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


softplus, layernorm = load("softplus"), load("layernorm")
conv2d, attention, embedding_bag = load("conv2d"), load("attention"), load("embedding_bag")
dropout, batchnorm = load("dropout"), load("batchnorm")
lstm_cell = load("lstm_cell")


def assert_names_the_error(report, *tensors: str):
    """The failures name `tensors` (and nothing else), the pair, the index and the size of the error."""
    assert {c.tensor for c in report.failures} == set(tensors)
    with pytest.raises(AssertionError) as e:
        report.assert_ok()
    lines = str(e.value).splitlines()
    assert lines[0].startswith("derivative disagrees: ") and " (manual vs torch)" in lines[0]
    assert lines[0].removeprefix("derivative disagrees: ").split(" (manual vs torch)")[0] in tensors
    assert lines[1].endswith(": manual vs torch"), lines[1]
    facts = lines[2:lines.index("", 2) if "" in lines[2:] else None]  # one fact per line, below its comparison
    for needle in ("relative error", "greatest absolute difference"):
        assert sum(line.startswith(f"    {needle}") for line in facts) >= 1, lines
    assert any(" at index (" in line for line in facts), lines
    for failure in report.failures:
        if (failure.a, failure.b) == ("manual", "torch"):
            worst = failure.agreement
            assert worst.max_abs > 1e-3 * worst.peak  # a real error, of the size of the gradient


def softplus_input(dtype=np.float64):
    """Most values in softplus' curved part, a few beyond torch's threshold 20 (the identity)."""
    x = 3 * np.random.default_rng(0).standard_normal((6, 10))
    x[0, :3] = [21.0, 25.0, -25.0]
    return x.astype(dtype)


def assert_every_injected_mistake_caught(report):
    """The self-test: every standard wrong variant of the layer's backward fails the check."""
    st = report.self_test
    assert st.ok and st.caught and st.missed == [] and st.skipped == [], str(st)
    assert f"self-test: the check caught {len(st.caught)} of {len(st.caught)} injected mistakes" in str(report)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softplus_passes_against_torch_softplus(dtype):
    report = check_layer(softplus.Softplus(), torch.nn.Softplus(), softplus_input(dtype), self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)


def test_softplus_beyond_the_threshold_is_the_identity_as_in_torch():
    x = softplus_input()
    y = torch.nn.Softplus()(torch.from_numpy(x).requires_grad_())
    y.backward(torch.ones_like(y))
    layer = softplus.Softplus()
    beyond = x > softplus.THRESHOLD
    assert np.array_equal(layer.forward(x)[beyond], y.detach().numpy()[beyond])
    assert np.array_equal(layer.backward(np.ones_like(x))[beyond], np.ones(beyond.sum()))


def test_softplus_with_the_factor_dy_missing_fails_naming_input_x():
    report = check_layer(softplus.SoftplusMissingFactor(), torch.nn.Softplus(), softplus_input())
    assert_names_the_error(report, "input x")
    assert report.diagnoses["input x"].kind == "g ignored"  # σ(x) alone: the same for every dy


@pytest.mark.parametrize("dtype, shape", [(np.float64, (5, 12)), (np.float32, (5, 12)), (np.float64, (2, 3, 12))])
def test_layernorm_passes_against_torch_layernorm(dtype, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    layer = layernorm.LayerNorm(12, rng=np.random.default_rng(2), dtype=dtype)
    report = check_layer(layer, torch.nn.LayerNorm(12), x, self_test=True)
    assert report.ok, str(report)
    assert {c.tensor for c in report.comparisons} == {"output", "input x", "parameter weight", "parameter bias"}
    assert_every_injected_mistake_caught(report)


def test_layernorm_with_the_factor_xhat_missing_fails_naming_input_x_while_weight_and_bias_pass():
    x = np.random.default_rng(1).standard_normal((5, 12))
    layer = layernorm.LayerNormMissingFactor(12, rng=np.random.default_rng(2))
    assert_names_the_error(check_layer(layer, torch.nn.LayerNorm(12), x), "input x")


def test_layernorm_starts_where_torch_does():
    layer = layernorm.LayerNorm(4)
    assert np.array_equal(layer.params["weight"], np.ones(4)) and np.array_equal(layer.params["bias"], np.zeros(4))


def nhwc(shape=(2, 6, 5, 3), dtype=np.float64):
    return np.random.default_rng(4).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype, kernel, padding", [(np.float64, (3, 3), 1), (np.float32, (3, 3), 1),
                                                    (np.float64, (3, 2), 0), (np.float64, (2, 2), 3)])
def test_conv2d_channels_last_passes_against_stock_conv2d(dtype, kernel, padding):
    layer = conv2d.Conv2D(3, 4, *kernel, padding=padding, rng=np.random.default_rng(5), dtype=dtype)
    module = torch.nn.Conv2d(3, 4, kernel, padding=padding)
    report = check_layer(layer, module, nhwc(dtype=dtype), **conv2d.torch_layouts(), self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)
    assert {c.tensor for c in report.comparisons} == {"output", "input x", "parameter K", "parameter b"}


def test_conv2d_passes_against_functional_conv2d_with_the_kernel_given_by_its_transform():
    layouts = {**conv2d.torch_layouts(), "torch_params": {"K": lambda K: K.permute(3, 2, 0, 1)}}
    report = check_layer(conv2d.Conv2D(3, 4, rng=np.random.default_rng(5)),
                         lambda x, K, b: F.conv2d(x, K, b, padding=1), nhwc(), **layouts)
    assert report.ok, str(report)


def test_conv2d_on_an_8x16x16x8_input_passes():
    """The size the finite differences must stay quick on (timed once in the report, not asserted)."""
    x = np.random.default_rng(6).standard_normal((8, 16, 16, 8))
    layer = conv2d.Conv2D(8, 8, rng=np.random.default_rng(7))
    report = check_layer(layer, torch.nn.Conv2d(8, 8, 3, padding=1), x, **conv2d.torch_layouts())
    assert report.ok, str(report)


def test_conv2d_with_the_kernel_not_flipped_fails_naming_input_x_while_K_and_b_pass():
    layer = conv2d.Conv2DUnflippedKernel(3, 4, rng=np.random.default_rng(5))
    report = check_layer(layer, torch.nn.Conv2d(3, 4, 3, padding=1), nhwc(), **conv2d.torch_layouts())
    assert_names_the_error(report, "input x")
    d = report.diagnoses["input x"]
    assert d.kind == "kernel not flipped" and d.value == ("parameter K", (0, 1)), d


def qkv(batch=(2,), dtype=np.float64):
    """q (..., 4, 8), k (..., 5, 8), v (..., 5, 3): as many keys as values, not as queries."""
    rng = np.random.default_rng(8)
    return tuple(rng.standard_normal((*batch, n, d)).astype(dtype) for n, d in ((4, 8), (5, 8), (5, 3)))


@pytest.mark.parametrize("dtype, batch", [(np.float64, (2,)), (np.float32, (2,)), (np.float64, (2, 3))])
def test_attention_of_q_k_v_passes_against_scaled_dot_product_attention(dtype, batch):
    report = check_layer(attention.Attention(), F.scaled_dot_product_attention, qkv(batch, dtype), self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)
    assert {c.tensor for c in report.comparisons} == {"output", "input q", "input k", "input v"}


def test_attention_with_softmax_jacobian_on_the_wrong_axis_fails_naming_q_and_k_while_v_passes():
    report = check_layer(attention.AttentionSoftmaxWrongAxis(), F.scaled_dot_product_attention, qkv())
    assert_names_the_error(report, "input q", "input k")


def bags():
    """Four bags of five ids in [0, 12): id 3 three times in the first bag, 7 in three bags."""
    return np.array([[3, 0, 3, 7, 3], [5, 7, 1, 1, 11], [2, 9, 7, 4, 4], [6, 8, 10, 0, 2]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_bag_with_repeated_ids_passes_against_stock_embedding_bag(dtype):
    layer = embedding_bag.EmbeddingBag(12, 5, rng=np.random.default_rng(9), dtype=dtype)
    report = check_layer(layer, torch.nn.EmbeddingBag(12, 5, mode="sum"), bags(), self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)
    assert {c.tensor for c in report.comparisons} == {"output", "parameter W"}  # the ids: never differentiated


def test_embedding_bag_counting_a_repeated_id_once_fails_naming_parameter_w():
    layer = embedding_bag.EmbeddingBagRepeatedIdOnce(12, 5, rng=np.random.default_rng(9))
    report = check_layer(layer, torch.nn.EmbeddingBag(12, 5, mode="sum"), bags())
    assert_names_the_error(report, "parameter W")


def masked(layer):
    """The counterpart of a ``dropout.Dropout``: its own fixed mask, applied in torch."""
    mask = torch.from_numpy(layer.mask)
    return lambda x: x * mask / (1 - layer.p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_with_a_fixed_mask_passes_against_the_same_mask_in_torch(dtype):
    x = np.random.default_rng(10).standard_normal((6, 9)).astype(dtype)
    layer = dropout.Dropout(0.3, x.shape, np.random.default_rng(11))
    assert 0 < layer.mask.mean() < 1
    report = check_layer(layer, masked(layer), x, self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)


def test_dropout_with_the_mask_missing_from_dx_fails_naming_input_x():
    x = np.random.default_rng(10).standard_normal((6, 9))
    mask = dropout.Dropout(0.3, x.shape, np.random.default_rng(11)).mask
    layer = dropout.DropoutMaskMissing(0.3, mask=mask)
    assert_names_the_error(check_layer(layer, masked(layer), x), "input x")


def test_dropout_forward_is_deterministic_where_torch_dropout_draws_a_fresh_mask():
    x = np.random.default_rng(10).standard_normal((6, 9))
    layer = dropout.Dropout(0.3, x.shape, np.random.default_rng(11))
    assert np.array_equal(layer.forward(x), layer.forward(x))
    theirs, t = torch.nn.Dropout(0.3), torch.from_numpy(x)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        assert not torch.equal(theirs(t), theirs(t))


def batch(dtype=np.float64):
    """(8, 5), away from zero mean and unit variance, so that the statistics matter."""
    return (2 + 3 * np.random.default_rng(12).standard_normal((8, 5))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_passes_against_stock_batchnorm1d(dtype, training):
    layer = batchnorm.BatchNorm(5, rng=np.random.default_rng(13), dtype=dtype)
    report = check_layer(layer, torch.nn.BatchNorm1d(5), batch(dtype), training=training, self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)
    tensors = {c.tensor for c in report.comparisons}
    assert {"output", "input x", "parameter weight", "parameter bias"} <= tensors
    assert {"buffer running_mean", "buffer running_var"} <= tensors  # evaluation mode: unchanged on both sides


def test_batchnorm_starts_where_torch_does():
    layer, theirs = batchnorm.BatchNorm(4), torch.nn.BatchNorm1d(4)
    for name, value in {**layer.params, **layer.buffers}.items():
        assert np.array_equal(value, getattr(theirs, name).detach().numpy()), name


def test_batchnorm_with_constant_batch_statistics_fails_naming_input_x_in_training_mode():
    layer = batchnorm.BatchNormConstantStatistics(5, rng=np.random.default_rng(13))
    report = check_layer(layer, torch.nn.BatchNorm1d(5), batch(), training=True)
    assert_names_the_error(report, "input x")


def test_batchnorm_with_constant_statistics_is_right_in_evaluation_mode_and_passes():
    """There the statistics are the running ones, constants indeed: no false alarm."""
    layer = batchnorm.BatchNormConstantStatistics(5, rng=np.random.default_rng(13))
    report = check_layer(layer, torch.nn.BatchNorm1d(5), batch(), training=False)
    assert report.ok, str(report)


def test_batchnorm_with_a_biased_running_variance_fails_naming_buffer_running_var():
    layer = batchnorm.BatchNormBiasedRunningVar(5, rng=np.random.default_rng(13))
    report = check_layer(layer, torch.nn.BatchNorm1d(5), batch(), training=True)
    assert_names_the_error(report, "buffer running_var")


def test_an_lstm_cell_of_twelve_arrays_passes_against_stock_lstmcell_through_packed_torch_params():
    report = lstm_cell.check(lstm_cell.LSTMCell(4, 3, np.random.default_rng(0)), self_test=True)
    assert report.ok, str(report)
    assert_every_injected_mistake_caught(report)
    assert {"parameter Wx_f", "parameter b_o", "input c"} <= {c.tensor for c in report.comparisons}
    assert "bias_hh at 0, held fixed" in str(report)


def test_an_lstm_cell_with_the_forget_gate_missing_from_dc_fails_naming_input_c_alone():
    assert_names_the_error(lstm_cell.check(lstm_cell.LSTMCellForgetMissing(4, 3, np.random.default_rng(0))),
                           "input c")


def test_softplus_build_is_a_stack_of_project_layers_around_the_users_pair():
    from manual.layers import Linear

    first, (mine, theirs), last = softplus.build(np.random.default_rng(0))
    assert isinstance(first, Linear) and isinstance(last, Linear)
    assert first.params["W"].shape == (128, 784) and last.params["W"].shape == (10, 128)
    assert isinstance(mine, softplus.Softplus) and isinstance(theirs, torch.nn.Softplus)
    assert check_layer(mine, theirs, np.random.default_rng(3).standard_normal((4, 128))).ok


@pytest.mark.parametrize("example, passes, failures, named", [
    (softplus, 1, 1, "input x"), (layernorm, 1, 1, "input x"), (conv2d, 1, 1, "input x"),
    (attention, 1, 1, "input q"), (embedding_bag, 1, 1, "parameter W"), (dropout, 1, 1, "input x"),
    (batchnorm, 2, 2, "buffer running_var"), (lstm_cell, 1, 1, "input c")])
def test_each_example_runs_as_a_script_and_prints_its_passes_and_failures(example, passes, failures, named, capsys):
    example.main()
    out = capsys.readouterr().out
    assert out.count("PASS: all") == passes and out.count("FAIL: ") == failures and named in out
