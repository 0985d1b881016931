"""Check your own derivation: a hand-written backward pass against autograd and finite differences.

    report = check_function(fn, vjp, torch_fn, *inputs)      # a NumPy function and its VJP
    report = check_layer(layer, counterpart, x)              # a layer, x one array or a tuple
    report = check_model(layers, x, y)                       # the first wrong layer of a model
    report = check_forward_backward(f_forward, f_backward, counterpart, x, w, b, ...)  # (out, cache) style
    report = check_loss(f_loss, counterpart, x, y)           # loss, dx = f_loss(x, y)
    report.ok;  print(report);  report.assert_ok()

The layer protocol:

    layer.params    dict name -> float array ({} for none); forward reads these very arrays
    layer.grads     the same names, filled by backward
    layer.forward(*inputs) -> y, or a tuple of outputs        (keeps its base point)
    layer.backward(*dys)   -> dx, or a tuple: one per input   (one dy per output; None for an
                                                               integer or bool input)
    layer.buffers   optional: dict name -> array, state the forward reads or updates (batch norm's
                    running statistics), compared after the forward with the module's buffers
    layer.torch_names  optional: manual name -> torch name, for parameters and buffers
    layer.training  optional: set by check_layer(..., training=True/False), as module.train(...)

The counterpart is a ``torch.nn.Module`` (its parameters and buffers matched by name, the layer's
values copied in, called through ``torch.func.functional_call``) or a plain function of torch
tensors, ``f(*inputs, **params)`` with the parameters by (torch) name. Layouts are functions on
torch tensors, and autograd carries the gradients back through them, so no inverse is needed:

    torch_params={"W": ("weight", lambda W: W.T)}                 # W held as (in, out)
    torch_params={"K": ("weight", lambda K: K.permute(3, 2, 0, 1)), "b": "bias"}
    torch_inputs=lambda x: x.permute(0, 3, 1, 2)                  # NHWC -> NCHW; or several
    torch_inputs=lambda x, h, c: (x, (h, c))                      #   arguments (nn.LSTMCell)
    torch_outputs=lambda y: y.permute(0, 2, 3, 1)                 # back to the layer's layout

Tensors in, tensors out: the user's side may compute on torch tensors (CPU or CUDA), JAX arrays or
NumPy float16, in float64, float32, float16 or bfloat16; a ``torch.autograd.Function`` or a
``jax.custom_vjp`` is handed with vjp=None (``compare.check.tensors``; the half-precision rule in
``compare.check.precision``). Inputs of float32 or float64 are differentiated; integer and bool arrays (ids, masks, labels)
pass to both sides unchanged, never perturbed. Every witness runs on its own copies of the layer,
the inputs and the upstream gradients: what user code writes into its arguments reaches no other
witness, and is reported as a note ("backward wrote into dy"). The caller's layer and module are
never changed.

Witnesses of one vector–Jacobian product Jᵀg (g: a seeded random upstream gradient per output),
each tensor compared pair by pair by ``compare.check.measure``, the relative error
‖a − b‖/max(‖a‖, ‖b‖) and the elementwise error max|a − b|/max(max|a|, max|b|) each bounded
(``compare.check.tolerances``):

- manual: the hand-written pass, in the inputs' dtype;  torch: autograd on the counterpart;
- manual64, torch64 (float32 inputs): the same two in float64, the referee that tells float32
  rounding from a wrong derivative: the derivation is judged in float64;
- fd: central differences of ⟨g, f⟩ in float64 of the hand-written forward (``compare.check.fd``),
  coordinate by coordinate while cheap, a seeded sample above;
- dir: the same along a random direction u, against ⟨Jᵀg, u⟩: two forward passes whatever the size.

Before any of them, two forwards at the same point must agree on each side; a forward that is not
deterministic gets that said instead of a gradient verdict. After a failure, the report names the
suspect (``compare.check.blame``): the side that finite differences of your forward do not support;
and for each failing gradient of yours (unless torch is the suspect), the kind of mistake
(``compare.check.diagnose``, ``report.diagnoses``; every finding is an object of
``compare.check.findings``, ``report.findings``, rendered by ``compare.check.text``): a constant factor (×2, ×½, ×B, ×1/B, a sign),
a transpose or another layout, a sum over the wrong axis, the upstream gradient g ignored or
mis-broadcast (your VJP rerun with a second g and with 2g), a mask (a kink, a row), zeros, or
"no simple pattern"; each held to the check's own bounds for two random g, never guessed.

``self_test=True`` (``compare.check.selftest``, ``report.self_test``) proves the check can see a
mistake in your backward: it injects the standard wrong variants into your gradients (scaled by
1 + 2ε for the smallest ε the bounds are sure to see, sign flipped, transposed, averaged over an
axis, g ignored), runs them through the check's comparisons (reusing torch's runs and the finite
differences) and reports each caught or missed, and per tensor the smallest relative error it
detects.
"""

from __future__ import annotations

from compare.check import tensor_layers, tensors, tolerances
from compare.check.engine import FD_BUDGET, FD_SAMPLES, check
from compare.check.findings import (BuffersDiffer, Diagnosis, Failure, Float32Only, ForwardsDiffer, Greatest, Measure,
                                    Note, OutputsDiffer, Suspect)
from compare.check.model import ModelReport, check_model
from compare.check.report import Comparison, DerivationError, Report
from compare.check.selftest import SelfTest
from compare.check.styles import check_forward_backward, check_loss, hold_constant
from compare.check.subjects import FunctionSubject, LayerSubject

FINDINGS = (Failure, Measure, Greatest, Suspect, Diagnosis, ForwardsDiffer, OutputsDiffer, BuffersDiffer, Float32Only,
            Note)
__all__ = ["check_function", "check_layer", "check_model", "check_forward_backward", "check_loss", "Comparison",
           "DerivationError", "ModelReport", "Report", "SelfTest", *(f.__name__ for f in FINDINGS)]
# tracebacks name them where users import them
for _public in (Comparison, DerivationError, ModelReport, Report, SelfTest, *FINDINGS):
    _public.__module__ = __name__
del _public


def check_function(fn, vjp, torch_fn, *inputs, seed: int = 0, h: float = tolerances.FD_STEP,
                   fd_samples: int = FD_SAMPLES, fd_budget: int = FD_BUDGET, name: str | None = None,
                   self_test: bool = False, constant=()) -> Report:
    """Check a hand-derived vector–Jacobian product against autograd and finite differences.

    Args:
        fn: fn(*inputs) -> y, an array or tensor, or a tuple of them (several outputs); or a
            ``torch.autograd.Function`` subclass or a ``jax.custom_vjp`` function (vjp None).
        vjp: vjp(g, *inputs) -> Jᵀg, one gradient per input of its input's shape: a tuple, or the
            array alone for one input (None for an integer or bool input). g has y's shape and
            dtype; with several outputs it is a tuple, one per output. None for a Function or a
            custom_vjp: their own backward is checked.
        torch_fn: the same function on torch tensors (e.g. ``torch.nn.functional.softplus``).
        inputs: NumPy arrays, torch tensors (CPU or CUDA) or JAX arrays: finite float ones are
            differentiated (below float64 with the float64 referee; float16 and bfloat16 by the
            rule of ``compare.check.precision``); integer and bool ones pass unchanged.
        seed: draws g, the directions u and the sampled fd coordinates.
        h: the finite-difference step.
        fd_samples, fd_budget: how many coordinates fd may take (``compare.check.engine``).
        name: the report's title (default: the functions' qualified names).
        self_test: also inject the standard wrong variants into the VJP's results and report
            which the check catches (``report.self_test``).
        constant: names of float inputs that are data, not variables (a regression target): not
            differentiated, not perturbed (the vjp's entry for them is ignored).
    Returns:
        a Report. Bad use (a wrong type, count or shape) raises TypeError or ValueError instead.
    """
    foreign = any(tensors.is_tensor(x) for x in inputs) or tensors.is_autograd_function(fn) or \
        tensors.is_custom_vjp(fn)
    subject = (tensors.TensorFunctionSubject if foreign else FunctionSubject)(fn, vjp, torch_fn, inputs, name)
    hold_constant(subject, constant)
    return check(subject, seed, h, fd_samples, fd_budget, self_test)


def check_layer(layer, module, x, seed: int = 0, h: float = tolerances.FD_STEP, fd_samples: int = FD_SAMPLES,
                fd_budget: int = FD_BUDGET, *, torch_params=None, torch_inputs=None, torch_outputs=None,
                training: bool | None = None, name: str | None = None, self_test: bool = False,
                torch_fixed=None) -> Report:
    """Check a layer's hand-written backward (every dx and parameter gradient), its outputs and its
    buffers against a torch counterpart and finite differences.

    Args:
        layer: the layer protocol (module docstring).
        module: a ``torch.nn.Module`` whose parameters and buffers carry the layer's names (after
            ``torch_names`` / ``torch_params``) and shapes (after the transforms), or a function
            of torch tensors f(*inputs, **params). Neither the module nor the layer is changed.
        x: the input, or a tuple of inputs: NumPy arrays (float32/float64 differentiated, integer
            and bool passed unchanged).
        seed, h, fd_samples, fd_budget: as for ``check_function``.
        torch_params: {manual name: torch name | transform | (torch name, transform)}; a transform
            maps the manual-layout tensor to torch's (e.g. ``lambda W: W.T``); a key that is a
            tuple of names packs them into one torch tensor, {(names): (torch name, f(*tensors))}
            (``compare.check.layouts``).
        torch_inputs: f(*input tensors) -> the module's positional arguments (a tuple or one tensor).
        torch_outputs: f(the module's result) -> the output(s) in the layer's layout.
        training: set ``layer.training`` and ``module.train(training)`` (default: as they are).
        name: the report's title (default: the layer's class and the counterpart).
        self_test: as for ``check_function``: the wrong variants injected into backward's results.
        torch_fixed: {torch name: a number or an array}: the counterpart's parameters the layer
            does not have, held at that value (``nn.LSTMCell``'s bias_hh at 0), said in a note.
    Returns:
        a Report. Bad use (a parameter or buffer missing on either side, shapes that differ, a
        transform that fails, the wrong number of outputs or of dx, a wrong type) raises TypeError or
        ValueError instead.
    """
    xs = x if isinstance(x, (tuple, list)) else (x,)
    foreign = tensor_layers.holds_tensors(layer) or any(tensors.is_tensor(v) for v in xs)
    subject = (tensor_layers.TensorLayerSubject if foreign else LayerSubject)(
        layer, module, x, torch_params, torch_inputs, torch_outputs, training, name, torch_fixed=torch_fixed)
    return check(subject, seed, h, fd_samples, fd_budget, self_test)
