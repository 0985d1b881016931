"""The worked examples in examples/: each correct layer passes check_layer against its torch
counterpart, each deliberately wrong variant fails with a message naming the tensor, the index and
the size of the error. The files are loaded by path, as a user's own file would be."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compare import check_layer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


softplus, layernorm = load("softplus"), load("layernorm")


def assert_names_the_error(report, tensor: str):
    """The failure names `tensor` (and nothing else), the pair, the index and the size of the error."""
    assert {c.tensor for c in report.failures} == {tensor}
    with pytest.raises(AssertionError) as e:
        report.assert_ok()
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"derivative disagrees: {tensor} (manual vs torch)")
    first = lines[1]
    for needle in (f"{tensor} ", "manual vs torch", "relative error", "greatest absolute difference", "at index ("):
        assert needle in first, first
    worst = report.failures[0].agreement
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


def test_softplus_build_is_a_stack_of_project_layers_around_the_users_pair():
    from manual.layers import Linear

    first, (mine, theirs), last = softplus.build(np.random.default_rng(0))
    assert isinstance(first, Linear) and isinstance(last, Linear)
    assert first.params["W"].shape == (128, 784) and last.params["W"].shape == (10, 128)
    assert isinstance(mine, softplus.Softplus) and isinstance(theirs, torch.nn.Softplus)
    assert check_layer(mine, theirs, np.random.default_rng(3).standard_normal((4, 128))).ok


@pytest.mark.parametrize("example", [softplus, layernorm])
def test_each_example_runs_as_a_script_and_prints_a_pass_and_a_failure(example, capsys):
    example.main()
    out = capsys.readouterr().out
    assert out.count("PASS: all") == 1 and out.count("FAIL: ") == 1 and "input x" in out


def test_the_readme_usage_runs_as_quoted(tmp_path):
    """README's "Check your own derivation": its test file gives two passes and the quoted failure."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Check your own derivation", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "test_my_layers.py").write_text(code)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_layers.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout + proc.stderr
    quoted = [ln for ln in section.splitlines() if ln.startswith("E         input x")]
    assert len(quoted) == 3
    for line in quoted:  # up to the values, which carry rounding in their last digits
        head = line.split(" (manual ")[0]
        assert head in proc.stdout, (head, proc.stdout)
