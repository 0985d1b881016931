"""manual/fast_compiled.py: the hand-derived step under torch.compile and jax.jit, held to the
same contract and bound as FastStep (tests/test_fast.py's ``assert_step_agrees``: loss and every
parameter after a step against the float64 NumPy reference), and mistakes injected into the very
source of each step caught by that check, naming the quantity.

torch.compile is slow (seconds per program): it compiles once for this module (``compiled_torch``);
the injected mistakes run the mutated source op by op (``compile=False``), the same function the
compiler traces. jax.jit compiles in a fraction of a second, so its mistakes run compiled.
"""

import inspect
import textwrap

import numpy as np
import pytest
import torch

from manual import fast_compiled
from manual.fast_compiled import CompiledTorchStep, JaxStep
from manual.mlp import MLP
from test_fast import assert_step_agrees, batch, named

jnp = pytest.importorskip("jax.numpy")

SIZES = (20, 16, 7, 5)  # two hidden layers: δ goes through σ' twice


def torch_net(dtype=np.float64):
    return MLP(SIZES, "sigmoid", dtype, seed=1).to(torch)


def jax_net():
    return MLP(SIZES, "sigmoid", np.float32, seed=1).to(jnp)  # JAX computes in float32 unless x64 is on


@pytest.fixture(scope="module")
def compiled_torch():
    """One CompiledTorchStep, compiled once (float64, batch 8) for every test here that needs one."""
    return CompiledTorchStep(torch_net())


def steps_agree(step, own, dtype, n=8, steps=3):
    for _ in range(steps):
        assert_step_agrees(step, *batch(SIZES, n, dtype), lr=0.3, own=own)


def test_torch_compile_of_the_hand_derived_step_is_loss_and_grads_then_sgd(compiled_torch):
    steps_agree(compiled_torch, torch.asarray, np.float64)
    assert all(isinstance(a, torch.Tensor) for pair in compiled_torch.mlp.parameters() for a in pair)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_same_torch_step_op_by_op_is_loss_and_grads_then_sgd(dtype):
    steps_agree(CompiledTorchStep(torch_net(dtype), compile=False), torch.asarray, dtype)


@pytest.mark.parametrize("compile", [True, False], ids=["jit", "eager"])
def test_the_hand_derived_jax_step_is_loss_and_grads_then_sgd(compile):
    step = JaxStep(jax_net(), compile=compile)
    steps_agree(step, jnp.asarray, np.float32, steps=3 if compile else 1)  # op by op: each op compiles once
    if compile:
        steps_agree(step, jnp.asarray, np.float32, n=3, steps=1)  # another batch shape: compiled anew


def mutated(fn, old: str, new: str):
    """`fn` with `old` replaced by `new` in its source (which must hold `old` once), defined in its module."""
    source = textwrap.dedent(inspect.getsource(fn))
    assert source.count(old) == 1, old
    namespace = dict(vars(inspect.getmodule(fn)))
    exec(compile(source.replace(old, new), f"<mutated {fn.__name__}>", "exec"), namespace)
    return namespace[fn.__name__]


MISTAKES = {  # name -> (torch source, jax source, replacement in both, what the check must name)
    "skipped weight update": ("W.sub_(delta.T @ zs[i])", 'W - jnp.einsum("bo,bi->oi", delta, zs[i])', None,
                              {"layer 1 W", "layer 2 W", "layer 3 W"}),
    "lr applied twice": ("* scale", "* scale", "* scale * scale", None),
    "wrong factor in σ'": ("(1 - zs[i])", "(1 - zs[i])", "(2 - zs[i])", None),
}


def inject(source_old: str, replacement, library: str) -> str:
    if replacement is not None:
        return replacement
    return "pass" if library == "torch" else "W"  # the update left out: W stays, b moves


@pytest.mark.parametrize("library", ["torch", "jax"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_in_the_step_is_caught(monkeypatch, mistake, library):
    torch_old, jax_old, replacement, names = MISTAKES[mistake]
    name, old = ("torch_update", torch_old) if library == "torch" else ("jax_update", jax_old)
    monkeypatch.setattr(fast_compiled, name, mutated(getattr(fast_compiled, name), old, inject(old, replacement, library)))
    step, own, dtype = ((CompiledTorchStep(torch_net(), compile=False), torch.asarray, np.float64) if library == "torch"
                        else (JaxStep(jax_net()), jnp.asarray, np.float32))
    with pytest.raises(AssertionError) as err:
        steps_agree(step, own, dtype)
    assert names is None or names == named(str(err.value))
    assert "layer 1 W" in named(str(err.value))


def test_the_steps_refuse_a_net_they_cannot_run_and_bad_input(compiled_torch):
    with pytest.raises(TypeError, match=r"CompiledTorchStep takes a sigmoid MLP of torch arrays"):
        CompiledTorchStep(MLP((4, 3)))
    with pytest.raises(TypeError, match=r"JaxStep takes a sigmoid MLP of jax/jaxlib arrays"):
        JaxStep(torch_net())
    before = [W.clone() for W in compiled_torch.mlp.weights]
    x = torch.zeros(2, SIZES[0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"labels must lie in 0..4"):
        compiled_torch(x, torch.tensor([0, 5]), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        compiled_torch(x, torch.tensor([0, 1]), 0.0)
    assert all(torch.equal(W, w) for W, w in zip(compiled_torch.mlp.weights, before))
