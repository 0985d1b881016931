"""The training steps the bench times, one builder per implementation, all on the same net.

Every builder starts from the same weights (``initial``: the manual ``MLP`` with seed 0, copied
into the other libraries), takes the same batch and learning rate, and returns a ``Step``: one call
of ``step.run()`` is one whole SGD step (forward, batch-mean cross-entropy, backward, update)
θ ← θ − lr·∂L/∂θ, L = mean_b [logsumexp(ẑ_b) − ẑ_b,y_b], done in place on the step's own
parameters. ``step.weights()`` reads them back as NumPy [(W (out, in), b (out,)), ...], so tests
can hold every implementation to the same arithmetic (tests/test_bench.py).

`device` is "cpu", "cuda" or "cuda:N": the torch steps (the hand-derived one on torch tensors
too) move their net and batch there, the JAX step runs on JAX's GPU; the NumPy step runs on the
CPU only. On a GPU ``step.sync`` waits for the queued work (``torch.cuda.synchronize``), so that a
timer around steps measures the work, not its launch.

Imports are local: a worker process loads only the library it times (the manual worker never
imports torch or JAX).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

ACTIVATION = "sigmoid"


@dataclasses.dataclass
class Step:
    """One implementation's training step on one batch.

    Attributes:
        run: () -> loss; one SGD step in place (the loss as the library returns it).
        weights: () -> [(W, b), ...] NumPy copies of the current parameters, nn.Linear's layout.
        compile_s: seconds the first call took to compile (None: nothing is compiled).
        info: what exactly is timed (function, library details), recorded in bench.json.
        train: (x, y) -> loss; the same step on another NumPy batch (for the whole-epoch figure;
            None where the step is compiled for one batch's shapes).
        how_it_ran: () -> dict, how the step ran (called after timing; None: nothing to add).
        sync: () -> None, waits until the step's queued work is done (None: ``run`` returns when
            it is, as on the CPU and in the JAX step, which blocks on its result).
        parts: (clock) -> loss, one step as ``run`` does it, calling ``clock.mark(part)`` as each
            part ends ("forward", "loss", "backward", "update"; a fused pair under one name, e.g.
            "backward + update"), for ``breakdown``; None where the parts do not exist apart.
        prefixes: part -> () -> result, where the parts run as one compiled program: the programs
            doing the step up to and including each part, in the step's order (the last is ``run``);
            ``breakdown`` times each and takes the differences.
    """

    run: Callable[[], object]
    weights: Callable[[], list]
    compile_s: float | None = None
    info: dict = dataclasses.field(default_factory=dict)
    train: Callable[[np.ndarray, np.ndarray], object] | None = None
    how_it_ran: Callable[[], dict] | None = None
    sync: Callable[[], None] | None = None
    parts: Callable[[object], object] | None = None
    prefixes: dict[str, Callable[[], object]] | None = None

    def record(self) -> dict:
        """``info``, with ``how_it_ran()`` under "how_it_ran" where the step has one."""
        return {**self.info, **({"how_it_ran": self.how_it_ran()} if self.how_it_ran else {})}


def initial(sizes, dtype):
    """The manual net every implementation starts from: ``MLP(sizes, "sigmoid", dtype, seed=0)``."""
    from manual.mlp import MLP

    return MLP(sizes, ACTIVATION, dtype=dtype, seed=0)


def _manual_weights(mlp) -> list:
    return [(np.array(W), np.array(b)) for W, b in mlp.parameters()]


def cpu_only(device: str, what: str) -> None:
    """ValueError unless `device` is "cpu": `what` runs on the CPU only."""
    if device != "cpu":
        raise ValueError(f"{what} runs on the CPU only, not on {device!r}")


def manual_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """The hand-derived step: ``manual.fast.FastStep`` on the initial net, the very function that
    ``crosscheck train --step fast`` checks against torch at every step (its contract: the
    arithmetic of ``MLP.loss_and_grads`` + ``SGD(lr).step``, up to rounding).

    Args:
        x: (B, 784) float32/float64 batch; y: (B,) int64 labels.
    """
    from manual.fast import FastStep

    cpu_only(device, "the NumPy step")
    mlp = initial(sizes, x.dtype)
    fast = FastStep(mlp)
    x, y = fast.check(x, y)  # once, outside the timed region: each timed step is FastStep.run

    def train(xb, yb):
        return fast(xb, yb, lr)

    info = {"function": "manual.fast.FastStep", "checked_by": "crosscheck train --step fast"}
    return Step(lambda: fast.run(x, y, lr), lambda: _manual_weights(mlp), None, info, train, fast.how_it_ran,
                parts=fast_step_parts(fast, x, y, lr))


def manual_torch_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """The hand-derived step on torch tensors, without autograd: ``manual.fast_torch.FastTorchStep``
    on the initial net moved to torch (``MLP.to(torch, device)``), the function that ``crosscheck
    train --step fast --manual-arrays torch`` checks against autograd at every step (its contract:
    the arithmetic of ``MLP.loss_and_grads`` + ``SGD(lr).step``, up to rounding). The batch is checked
once (``FastTorchStep.check``: its values need a device synchronisation) and each timed step is
``FastTorchStep.run``, as lean as the twenty-line yardstick (``compare.bench.yardstick``). Its kernels are
    torch's, as the torch column's are; no tensor requires grad, so no graph is recorded: torch
    eager over this step is autograd's own cost. Each call returns the loss as a float, which waits
    for a GPU (``.item()``)."""
    import torch

    from manual.fast_torch import FastTorchStep

    mlp = initial(sizes, x.dtype).to(torch, device)
    fast = FastTorchStep(mlp)
    tx, ty = fast.check(to_device(x, device), to_device(y, device))  # once, outside the timed region

    def train(xb, yb):
        return fast(to_device(xb, device), to_device(yb, device), lr)

    def weights():
        return [(W.cpu().numpy().copy(), b.cpu().numpy().copy()) for W, b in mlp.parameters()]

    info = {"function": "manual.fast_torch.FastTorchStep (torch tensors, no autograd)",
            "checked_by": "crosscheck train --step fast --manual-arrays torch"}
    return Step(lambda: fast.run(tx, ty, lr), weights, None, info, train, sync=torch_sync(device),
                parts=fast_step_parts(fast, tx, ty, lr))


def yardstick_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """The twenty-line hand-derived step on torch tensors (``compare.bench.yardstick``), on copies
    of the initial weights: what ``FastTorchStep.run`` must not be slower than."""
    import torch

    from compare.bench.yardstick import twenty_line_step

    params = [(to_device(W, device).clone(), to_device(b, device).clone()) for W, b in initial(sizes, x.dtype).parameters()]
    tx, ty = to_device(x, device), to_device(y, device)

    def weights():
        return [(W.cpu().numpy().copy(), b.cpu().numpy().copy()) for W, b in params]

    info = {"function": "compare.bench.yardstick.twenty_line_step (torch tensors, no autograd, no checks)"}
    return Step(lambda: twenty_line_step(params, tx, ty, lr), weights, None, info,
                lambda xb, yb: twenty_line_step(params, to_device(xb, device), to_device(yb, device), lr),
                sync=torch_sync(device))


def fast_step_parts(fast, x, y, lr: float):
    """parts(clock) for a tuned hand-derived step (``manual.fast.FastStep`` and its kind), timed inside
    its own call: its ``_forward`` (ẑ and z of every layer) is "forward", what runs between it and
    its ``_descend`` (the labels' check, log-softmax, loss and δ) is "loss", ``_descend`` (each
    layer's δW, then its weight step fused into the weight-gradient product) is "backward +
    update", the rest (input checks, thread limits, buffers) "other". The two methods are wrapped on
    the instance at the first call; the wrappers only pass through while no clock is set."""
    state = {"clock": None}

    def wrap(method, before: str, after: str):
        def timed(*args):
            clock = state["clock"]
            if clock is None:
                return method(*args)
            clock.mark(before)
            out = method(*args)
            clock.mark(after)
            return out

        return timed

    def parts(clock):
        if "_forward" not in vars(fast):
            fast._forward = wrap(fast._forward, "other", "forward")
            fast._descend = wrap(fast._descend, "loss", "backward + update")
        state["clock"] = clock
        try:
            loss = getattr(fast, "run", fast)(x, y, lr)  # the timed call: FastTorchStep.run, FastStep itself
            clock.mark("other")
        finally:
            state["clock"] = None
        return loss

    return parts


# ------------------------------------------------------------------------------ torch


def torch_sequential(sizes, dtype):
    """``nn.Sequential(Linear, Sigmoid, ..., Linear)``, the net a torch user writes, holding copies of
    the initial weights (``initial``): Linear i has weight (sizes[i+1], sizes[i]) and bias (sizes[i+1],)."""
    import torch
    from torch import nn

    params = initial(sizes, dtype).parameters()
    layers = []
    for W, _ in params:
        layers += [nn.Linear(W.shape[1], W.shape[0], dtype=torch.from_numpy(W).dtype), nn.Sigmoid()]
    model = nn.Sequential(*layers[:-1])
    load_weights(model, params)
    return model


def linears(model) -> list:
    """The ``nn.Linear`` layers of `model`, in order."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def load_weights(model, params) -> None:
    """Copy NumPy [(W (out, in), b (out,)), ...] into `model`'s Linear layers (no autograd record)."""
    import torch

    with torch.no_grad():
        for layer, (W, b) in zip(linears(model), params, strict=True):
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))


def torch_sgd_step(loss_fn, opt, tx, ty):
    """The torch SGD step as a user writes it: zero_grad(set_to_none), loss_fn(tx, ty), backward(),
    opt.step(). Returns the loss tensor (no .item(): no extra synchronisation)."""
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(tx, ty)
    loss.backward()
    opt.step()
    return loss


def _torch_weights(model) -> list:
    return [(layer.weight.detach().cpu().numpy().copy(), layer.bias.detach().cpu().numpy().copy())
            for layer in linears(model)]


def to_device(a: np.ndarray, device: str):
    """A NumPy array as a torch tensor on `device` (on the CPU: sharing its memory)."""
    import torch

    return torch.from_numpy(a).to(device)


def torch_sync(device: str):
    """() -> None waiting for `device`'s queue (``torch.cuda.synchronize``) on a GPU, None on the CPU
    (nothing is queued there)."""
    import torch

    return (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else None


def _torch_setup(sizes, x, y, lr, device):
    """(model on `device`, torch.optim.SGD(lr) over its parameters, x and y as tensors on `device`)."""
    import torch

    model = torch_sequential(sizes, x.dtype).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=lr), to_device(x, device), to_device(y, device)


def torch_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """Eager autograd as a torch user writes it: the ``nn.Sequential`` net (``torch_sequential``),
    ``torch.nn.functional.cross_entropy``, ``backward()``, ``torch.optim.SGD.step()``; nothing
    validated inside the step. On the CPU torch reads the batch through ``torch.from_numpy``."""
    import torch.nn.functional as F

    model, opt, tx, ty = _torch_setup(sizes, x, y, lr, device)

    def loss_fn(inp, target):
        return F.cross_entropy(model(inp), target)

    def train(xb, yb):
        return torch_sgd_step(loss_fn, opt, to_device(xb, device), to_device(yb, device))

    info = {"function": "torch eager: nn.Sequential(Linear, Sigmoid, ...), torch.nn.functional.cross_entropy, "
                        "backward, torch.optim.SGD"}
    def parts(clock):  # torch_sgd_step, part by part (zero_grad is the optimizer's: "update")
        opt.zero_grad(set_to_none=True)
        clock.mark("update")
        logits = model(tx)
        clock.mark("forward")
        loss = F.cross_entropy(logits, ty)
        clock.mark("loss")
        loss.backward()
        clock.mark("backward")
        opt.step()
        clock.mark("update")
        return loss

    return Step(lambda: torch_sgd_step(loss_fn, opt, tx, ty), lambda: _torch_weights(model), None, info, train,
                sync=torch_sync(device), parts=parts)


def compiled_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """The torch step with forward + loss through ``torch.compile(dynamic=False)`` (AOTAutograd
    compiles the backward too; the optimizer stays eager), on the same ``nn.Sequential`` net. A
    first call compiles (``compile_s``, shorter when Inductor's on-disk cache holds the kernels;
    its update is undone). Raises if it fails."""
    import torch
    import torch.nn.functional as F

    model, opt, tx, ty = _torch_setup(sizes, x, y, lr, device)
    compiled = torch.compile(lambda inp, target: F.cross_entropy(model(inp), target), dynamic=False)
    t0 = time.perf_counter()
    torch_sgd_step(compiled, opt, tx, ty)  # compiles forward and backward
    if device != "cpu":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - t0
    load_weights(model, initial(sizes, x.dtype).parameters())  # the compiling step does not count
    info = {"function": "torch.compile(dynamic=False) of nn.Sequential forward + cross_entropy; eager "
                        "torch.optim.SGD"}
    def parts(clock):  # forward and loss are one compiled graph; backward runs its compiled backward
        opt.zero_grad(set_to_none=True)
        clock.mark("update")
        loss = compiled(tx, ty)
        clock.mark("forward + loss")
        loss.backward()
        clock.mark("backward")
        opt.step()
        clock.mark("update")
        return loss

    return Step(lambda: torch_sgd_step(compiled, opt, tx, ty), lambda: _torch_weights(model), compile_s, info,
                sync=torch_sync(device), parts=parts)


def manual_compiled_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """``torch.compile(dynamic=False)`` of the hand-derived step on torch tensors
    (``manual.fast_compiled.CompiledTorchStep``, held to the reference in tests/test_fast_compiled.py):
    the compiled column's hand-derived twin. A first call compiles (``compile_s``; its update is undone)."""
    import torch

    from manual.fast_compiled import CompiledTorchStep

    mlp = initial(sizes, x.dtype).to(torch, device)
    step = CompiledTorchStep(mlp)
    tx, ty = step.check(to_device(x, device), to_device(y, device))
    compile_s = _first_call_s(lambda: step.run(tx, ty, lr), sync=torch_sync(device))
    mlp.set_parameters(*zip(*initial(sizes, x.dtype).parameters()))  # the compiling step does not count

    def weights():
        return [(W.cpu().numpy().copy(), b.cpu().numpy().copy()) for W, b in mlp.parameters()]

    info = {"function": "torch.compile(dynamic=False) of manual.fast_compiled.torch_update (no autograd)"}
    return Step(lambda: step.run(tx, ty, lr), weights, compile_s, info, sync=torch_sync(device))


def _first_call_s(call, sync=None) -> float:
    """Seconds of `call`'s first run (tracing and compiling), waiting for the device where `sync`."""
    t0 = time.perf_counter()
    call()
    if sync:
        sync()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ JAX


def jax_logits(params, x):
    """The sigmoid MLP's logits ẑ (B, classes): hidden z ← σ(z Wᵀ + b), then ẑ = z Wᵀ + b.

    Args:
        params: [(W (out, in), b (out,)), ...]; x: (B, 784).
    """
    import jax

    z = x
    for W, b in params[:-1]:
        z = jax.nn.sigmoid(z @ W.T + b)
    W, b = params[-1]
    return z @ W.T + b


def jax_loss(params, x, y):
    """Batch-mean cross-entropy L = mean_b [logsumexp(ẑ_b) − ẑ_b,y_b] of ``jax_logits`` (the
    max-shifted log-sum-exp of ``jax.nn``); y: (B,) int32 labels."""
    import jax
    import jax.numpy as jnp

    logits = jax_logits(params, x)
    picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def jax_sgd(params, x, y, lr):
    """One SGD step: (loss, [(W − lr·∂L/∂W, b − lr·∂L/∂b), ...]) with ∂L/∂θ from ``jax.value_and_grad``."""
    import jax

    loss, grads = jax.value_and_grad(jax_loss)(params, x, y)
    return loss, jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)


def jax_device(device: str):
    """The JAX device for "cpu", "cuda" (JAX's first GPU) or "cuda:N"; RuntimeError when JAX sees no
    such GPU."""
    import jax

    if device == "cpu":
        return jax.devices("cpu")[0]
    index = int(device.partition(":")[2] or 0)
    try:
        return jax.devices("gpu")[index]
    except (RuntimeError, IndexError):
        raise RuntimeError(f"JAX sees no GPU {device} (its devices: {', '.join(map(str, jax.devices()))}); a CUDA "
                           f"build of jaxlib is needed") from None


def jax_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """``jax.jit`` of the whole step (``jax_sgd``, lr a constant of the compiled program), compiled by
    a first call (``compile_s``: trace, compile and one step, whose update is then undone). The
    parameters are donated, so XLA updates them in place as torch's SGD does. Each ``run`` waits for
    its result (``block_until_ready``): dispatch is asynchronous, and a step counts when its numbers
    exist. `device` "cuda": JAX's first GPU (RuntimeError where JAX sees none)."""
    import jax

    where = _jax_where(x, device)
    mlp = initial(sizes, x.dtype)

    def start():  # fresh copies of the initial weights on the step's device (they are donated)
        return [(jax.device_put(np.array(W), where), jax.device_put(np.array(b), where)) for W, b in mlp.parameters()]

    state = {"params": start()}
    jx, jy = jax.device_put(x, where), jax.device_put(y.astype(np.int32), where)
    step = jax.jit(lambda params, xb, yb: jax_sgd(params, xb, yb, lr), donate_argnums=0)

    def run():
        loss, state["params"] = step(state["params"], jx, jy)
        return jax.block_until_ready((loss, state["params"]))[0]

    def weights():
        return [(np.array(W), np.array(b)) for W, b in state["params"]]

    t0 = time.perf_counter()
    run()  # traces and compiles for these shapes
    compile_s = time.perf_counter() - t0
    state["params"] = start()  # back to the initial weights: the compiling step does not count
    info = {"function": "jax.jit(value_and_grad + SGD update, donated parameters)",
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "device": str(where)}
    return Step(run, weights, compile_s, info, prefixes=jax_prefixes(state, jx, jy, run))


def jax_eager_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """``jax_sgd`` (``jax.value_and_grad`` + the SGD update) op by op, without ``jax.jit``: autograd
    eager in JAX, each call waited for."""
    import jax

    where = _jax_where(x, device)
    state = {"params": [(jax.device_put(np.array(W), where), jax.device_put(np.array(b), where))
                        for W, b in initial(sizes, x.dtype).parameters()]}
    jx, jy = jax.device_put(x, where), jax.device_put(y.astype(np.int32), where)

    def run():
        loss, state["params"] = jax_sgd(state["params"], jx, jy, lr)
        return jax.block_until_ready((loss, state["params"]))[0]

    info = {"function": "jax.value_and_grad + SGD update, op by op (no jax.jit)", "device": str(where)}
    return Step(run, lambda: [(np.array(W), np.array(b)) for W, b in state["params"]], None, info)


def manual_jax_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu", compile: bool = True) -> Step:
    """The hand-derived step in ``jax.numpy`` (``manual.fast_compiled.JaxStep``, held to the reference in
    tests/test_fast_compiled.py): under ``jax.jit`` with donated parameters, or op by op
    (``compile=False``, the builder ``manual_jax_eager_step``). A jitted first call compiles
    (``compile_s``; its update is undone)."""
    import jax
    import jax.numpy as jnp

    from manual.fast_compiled import JaxStep

    where = _jax_where(x, device)
    mlp = initial(sizes, x.dtype).to(jnp, device=where)
    step = JaxStep(mlp, compile=compile)
    jx, jy = step.check(jax.device_put(x, where), jax.device_put(y, where))

    def run():  # the loss and the new parameters waited for, as in jax_step
        return jax.block_until_ready((step.launch(jx, jy, lr), [linear.params for linear in mlp.linears]))[0]

    compile_s = _first_call_s(run) if compile else None
    for linear, (W, b) in zip(mlp.linears, initial(sizes, x.dtype).parameters()):  # the compiling step does not count
        linear.params["W"], linear.params["b"] = jax.device_put(W, where), jax.device_put(b, where)
    info = {"function": f"{'jax.jit(donated parameters) of ' if compile else ''}manual.fast_compiled.jax_update"
                        f"{'' if compile else ' op by op'} (no jax.grad)", "device": str(where)}
    return Step(run, lambda: [(np.array(W), np.array(b)) for W, b in mlp.parameters()], compile_s, info)


def manual_jax_eager_step(sizes, x: np.ndarray, y: np.ndarray, lr: float, device: str = "cpu") -> Step:
    """``manual_jax_step`` op by op: the hand-derived step in ``jax.numpy`` without ``jax.jit``."""
    return manual_jax_step(sizes, x, y, lr, device, compile=False)


def _jax_where(x: np.ndarray, device: str):
    """The JAX device of ``jax_device``, with 64-bit arrays switched on for a float64 batch."""
    import jax

    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)  # JAX computes in float32 unless told
    return jax_device(device)


def jax_prefixes(state: dict, jx, jy, run) -> dict:
    """The step's prefixes as programs of their own, each ``jax.jit``-compiled (on first call) and
    waited for: forward (the logits), + loss, + backward (``value_and_grad``), + update (``run``)."""
    import jax

    forward, loss, grads = jax.jit(jax_logits), jax.jit(jax_loss), jax.jit(jax.value_and_grad(jax_loss))
    wait = jax.block_until_ready
    return {"forward": lambda: wait(forward(state["params"], jx)),
            "loss": lambda: wait(loss(state["params"], jx, jy)),
            "backward": lambda: wait(grads(state["params"], jx, jy)),
            "update": run}


BUILDERS = {"manual": manual_step, "manual_torch": manual_torch_step, "yardstick": yardstick_step, "torch": torch_step, "compiled": compiled_step,
            "manual_compiled": manual_compiled_step, "jax_eager": jax_eager_step, "manual_jax_eager": manual_jax_eager_step,
            "jax": jax_step, "manual_jax": manual_jax_step}
