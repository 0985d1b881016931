"""compare.check.check_model: the first wrong layer of a model, each layer checked at the input it
receives in the stack, from the loss backwards; and gradcheck naming it on real MNIST."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import compare
from compare import cli
from manual import MLP, Linear, Sigmoid, SoftmaxCrossEntropy
from manual import functional as mf
from helpers import DenseInOut

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def softplus_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_softplus_for_models", EXAMPLES / "softplus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


softplus = softplus_module()


def check_model(model, *args, **kwargs):
    """``compare.check_model`` with the project's softmax cross-entropy handed in as the loss of a
    list of layers (an MLP brings its own ``loss_layer``)."""
    if isinstance(model, list):
        kwargs.setdefault("loss", SoftmaxCrossEntropy())
    return compare.check_model(model, *args, **kwargs)


def batch(rng, n_in=12, B=6, classes=4):
    return rng.standard_normal((B, n_in)), rng.integers(0, classes, B)


def four_layers(rng, wrong=None):
    """Linear, softplus, Linear, Linear: the second entry's backward `wrong` if given."""
    act = (wrong or softplus.Softplus)()
    return [Linear.init(12, 8, rng), (act, torch.nn.Softplus()), Linear.init(8, 6, rng), Linear.init(6, 4, rng)]


def test_a_right_model_has_no_culprit_and_every_layer_and_the_loss_are_checked():
    rng = np.random.default_rng(0)
    x, y = batch(rng)
    found = check_model(four_layers(rng), x, y)
    assert found.ok and found.culprit is None
    assert [v.position for v in found.verdicts] == [5, 4, 3, 2, 1]  # the loss first, then from the top
    assert found.verdicts[0].name == "SoftmaxCrossEntropy"
    assert "every layer's backward agrees" in found.headline()
    assert found.assert_ok() is found


def test_a_wrong_activation_in_entry_2_is_the_culprit_though_layer_1_gets_the_wrong_gradients():
    rng = np.random.default_rng(1)
    x, y = batch(rng)
    found = check_model(four_layers(rng, softplus.SoftplusMissingFactor), x, y)
    assert not found.ok and found.culprit.position == 2 and found.culprit.name == "SoftplusMissingFactor"
    assert [v.ok for v in found.verdicts] == [True, True, True, False, True]
    assert found.headline().startswith("the first wrong layer from the loss is entry 2 of 4 (SoftplusMissingFactor): "
                                       "its input x disagrees with autograd")
    assert {c.tensor for c in found.culprit.report.failures} == {"input x"}
    with pytest.raises(AssertionError) as e:
        found.assert_ok()
    assert "input x" in str(e.value)


def test_the_culprit_comes_with_the_kind_of_mistake_and_the_self_test_covers_every_layer():
    rng = np.random.default_rng(7)
    x, y = batch(rng)
    found = check_model(four_layers(rng, softplus.SoftplusMissingFactor), x, y, self_test=True)
    assert "diagnosis: input x: " in found.headline() and "ignored" in found.headline()
    right = check_model(four_layers(rng), x, y, self_test=True)
    assert right.ok and all(v.report.self_test.ok for v in right.verdicts if v.report.self_test.variants)
    assert "self-test: " in str(right) and " injected mistakes caught over 5 layers" in str(right)


def test_the_first_wrong_layer_from_the_loss_is_named_when_two_are_wrong():
    class DoubledBias(Linear):
        def backward(self, delta):
            dx = super().backward(delta)
            self.grads["b"] = 2 * self.grads["b"]
            return dx

    rng = np.random.default_rng(2)
    x, y = batch(rng)
    layers = four_layers(rng, softplus.SoftplusMissingFactor)
    W, b = layers[2].params["W"], layers[2].params["b"]
    layers[2] = DoubledBias(W, b)
    found = check_model(layers, x, y)
    assert found.culprit.position == 3 and [v.position for v in found.verdicts if not v.ok] == [3, 2]


def test_the_built_in_mlp_is_a_model_and_its_first_layer_input_is_the_data():
    rng = np.random.default_rng(3)
    mlp = MLP((12, 8, 6, 4), seed=3)
    x, y = batch(rng)
    found = check_model(mlp, x, y)
    assert found.ok, str(found)
    first = found.verdicts[-1]
    assert first.position == 1 and "input x" not in {c.tensor for c in first.report.comparisons}


def test_the_model_and_its_layers_are_not_changed():
    rng = np.random.default_rng(4)
    mlp = MLP((12, 8, 4), seed=4)
    before = [p.copy() for pair in mlp.parameters() for p in pair]
    check_model(mlp, *batch(rng))
    assert all(np.array_equal(a, b) for a, b in zip(before, (p for pair in mlp.parameters() for p in pair)))


def test_a_wrong_loss_is_named_as_the_loss():
    from manual.layers import SoftmaxCrossEntropy

    class NoMean(SoftmaxCrossEntropy):
        def backward(self):
            return self.delta * len(self.delta)  # the batch mean's 1/B dropped

    rng = np.random.default_rng(5)
    mlp = MLP((12, 8, 4), seed=5)
    mlp.loss_layer = NoMean()
    found = check_model(mlp, *batch(rng))
    assert found.culprit.position == 4 and found.culprit.name == "NoMean"
    assert found.headline().startswith("the first wrong layer from the loss is the loss (NoMean)")


def test_a_layer_without_a_counterpart_is_one_line():
    with pytest.raises(TypeError) as e:
        check_model([Linear.init(3, 2, np.random.default_rng(0)), softplus.Softplus()], np.ones((2, 3)))
    assert "entry 2 (Softplus) names no torch module" in str(e.value) and "\n" not in str(e.value)


def test_a_model_given_as_triples_takes_check_layer_options():
    rng = np.random.default_rng(6)
    layout = {"torch_params": {"W": ("weight", lambda W: W.T), "b": "bias"}}
    model = [Linear.init(12, 5, rng), Sigmoid(),
             (DenseInOut(rng.standard_normal((5, 4)), rng.standard_normal(4)), torch.nn.Linear(5, 4), layout)]
    assert check_model(model, *batch(rng)).ok


# ------------------------------------------------------------------ gradcheck on MNIST


@pytest.mark.slow
def test_gradcheck_names_a_wrong_linear_of_the_built_in_mlp(mnist_dir, monkeypatch, capsys):
    right = mf.linear_backward

    def bias_doubled_in_the_output_layer(delta, x, W, need_dx=True):
        dW, db, dx = right(delta, x, W, need_dx)
        return (dW, 2 * db, dx) if W.shape[0] == 10 else (dW, db, dx)

    monkeypatch.setattr(mf, "linear_backward", bias_doubled_in_the_output_layer)
    assert cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline"]) == 1
    out = capsys.readouterr().out
    verdict = [line for line in out.splitlines() if line.startswith("FAIL:")][0]
    assert "the first wrong layer from the loss is entry 3 of 3 (Linear): its parameter b disagrees" in verdict
    assert "diagnosis: parameter b: a constant factor ×2" in verdict
    assert cli.main(["gradcheck", "--data-dir", str(mnist_dir), "--offline", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["culprit"].startswith("the first wrong layer from the loss is entry 3 of 3 (Linear)")


def test_labels_without_a_loss_get_one_line_saying_how_to_hand_it_in():
    rng = np.random.default_rng(0)
    x, y = batch(rng)
    with pytest.raises(ValueError, match=r"loss=\(your loss layer, its torch counterpart\)"):
        compare.check_model(four_layers(rng), x, y)
    assert compare.check_model(four_layers(rng), x).ok  # no labels: no loss needed
