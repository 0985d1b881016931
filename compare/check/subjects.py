"""What is checked, as the witnesses see it: a function and its VJP (``FunctionSubject``) or a layer
and its torch counterpart (``LayerSubject``).

A subject runs each witness on its own copies: the user's arrays are copied once, on arrival
(``pristine``), and every run gets fresh copies of them, of the upstream gradients and of the
layer, so that nothing one witness's code writes into its arguments reaches another (what it
writes is reported as a note). It labels the tensors ("input x", "parameter W", "output 1",
"buffer running_var") and knows, for the finite differences, a float64 forward whose tensors can
be perturbed in place (``referee``), of the hand-written side and of the torch counterpart.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

import numpy as np

from compare.check import usage
from compare.check.copies import float64_copy
from compare.check.forward_only import NoBackward
from compare.check.counterpart import Counterpart, check_kinds


@dataclasses.dataclass
class Run:
    """One witness's run: outputs, gradients by tensor label, buffers after the forward (in torch's
    layout) and notes (what its code wrote into its arguments)."""

    outputs: list
    grads: dict
    buffers: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Referee:
    """A float64 forward for finite differences: `tensors` (label -> float64 array, perturbed in
    place) and `evaluate()` -> the outputs, flattened and concatenated."""

    tensors: dict
    evaluate: object


def _flat(ys) -> np.ndarray:
    return np.concatenate([np.asarray(y, np.float64).reshape(-1) for y in ys])


def _written(before, after, labels, who: str) -> list[str]:
    """A note for each argument whose values changed during a call."""
    return [f"{who} wrote into {label}" for b, a, label in zip(before, after, labels)
            if b is not None and not np.array_equal(b, a, equal_nan=True)]


class Subject:
    """What both subjects share: the inputs, the torch runs and the referees. Subclasses set
    ``names`` (inputs), ``pristine``, ``params`` (name -> pristine array), ``title`` and the
    torch call (``_torch_call``)."""

    def _init_inputs(self, names, values) -> None:
        self.input_labels = [f"input {n}" for n in names]
        self.pristine = [np.array(usage.input_array(v, lab), order="C") for v, lab in zip(values, self.input_labels)]
        self.differentiable = [usage.is_float(a) for a in self.pristine]

    @property
    def float32(self) -> bool:
        arrays = [a for a, d in zip(self.pristine, self.differentiable) if d] + list(self.params.values())
        return any(a.dtype == np.float32 for a in arrays)

    @property
    def precision(self) -> str:
        """The precision the hand-written side computes in (``compare.check.precision``)."""
        return "float32" if self.float32 else "float64"

    def rounded(self, i: int, g: np.ndarray) -> np.ndarray:
        """An upstream gradient of output i, rounded to that output's precision (it is, here)."""
        return g

    @property
    def labels(self) -> list[str]:
        """The differentiated tensors: float inputs, then parameters."""
        inputs = [lab for lab, d in zip(self.input_labels, self.differentiable) if d]
        return inputs + [f"parameter {n}" for n in self.params]

    def inputs(self, precise: bool) -> list[np.ndarray]:
        """Fresh copies of the inputs (float ones in float64 for the referee)."""
        return [np.array(a, dtype=np.float64 if precise and usage.is_float(a) else a.dtype, order="C")
                for a in self.pristine]

    def _input_grads(self, dxs, xs, who) -> dict:
        return {lab: usage.gradient(d, x.shape, x.dtype, f"{who}'s gradient for {lab}", f"the shape of {lab}")
                for lab, d, x, diff in zip(self.input_labels, dxs, xs, self.differentiable) if diff}

    # ------------------------------------------------------------------ torch

    def torch_dtype(self, precise: bool):
        import torch

        return torch.float32 if self.float32 and not precise else torch.float64

    device = None  # where the counterpart runs (None: the CPU); a subject on CUDA tensors sets it

    def _torch_inputs(self, dtype, replace: dict):
        """Leaves for the float inputs (requires_grad), plain tensors for the others."""
        import torch

        values = [replace.get(lab, a) for lab, a in zip(self.input_labels, self.pristine)]
        return [torch.tensor(a, dtype=dtype, device=self.device).requires_grad_(d) if usage.is_float(a)
                else torch.tensor(a, device=self.device) for a, d in zip(values, self.differentiable)]

    def _numpy(self, t) -> np.ndarray:
        """A result tensor as a NumPy array (a copy)."""
        return t.detach().cpu().numpy().copy()

    def torch(self, precise: bool, gs: list[np.ndarray], replace: dict | None = None) -> Run:
        """Autograd on the counterpart, from the pristine values in the witness's dtype, with the
        upstream gradients `gs` (one per output); `replace` ({label: array}) runs those inputs or
        parameters with other values (a diagnosis's "what if")."""
        import torch

        replace = replace or {}
        dtype = self.torch_dtype(precise)
        xs = self._torch_inputs(dtype, replace)
        leaves = {f"parameter {n}": torch.tensor(replace.get(f"parameter {n}", p), dtype=dtype,
                                                 device=self.device).requires_grad_()
                  for n, p in self.params.items()}
        try:
            ys, buffers = self._torch_call(xs, {k.removeprefix("parameter "): v for k, v in leaves.items()}, dtype)
        except RuntimeError as e:
            if "numpy()" not in str(e):
                raise
            raise TypeError(self._left_torch(e)) from None
        self._check_torch_outputs(ys, [g.shape for g in gs])
        pairs = [(y, torch.from_numpy(np.array(g)).to(y.device, y.dtype)) for y, g in zip(ys, gs) if y.requires_grad]
        if pairs:
            torch.autograd.backward([y for y, _ in pairs], [g for _, g in pairs])
        named = {**{lab: x for lab, x, d in zip(self.input_labels, xs, self.differentiable) if d}, **leaves}
        grads = {lab: self._numpy(t.grad if t.grad is not None else torch.zeros_like(t)) for lab, t in named.items()}
        return Run([self._numpy(y) for y in ys], grads, buffers)

    def _left_torch(self, e: Exception) -> str:
        """The line for a counterpart that computed outside torch (NumPy on its tensors), where
        autograd cannot follow it."""
        fn = getattr(self, "torch_fn", None)
        who = self.counterpart_name + (f" ({usage.callable_name(fn)})" if fn is not None else "")
        return (f"{who} left torch ({str(e).splitlines()[0]}): the counterpart must compute with torch operations on "
                "the tensors it is given (torch.logaddexp, not np.logaddexp), so that autograd can follow it")

    def _check_torch_outputs(self, ys, shapes) -> None:
        if len(ys) != len(shapes):
            raise ValueError(f"{self.counterpart_name} returned {len(ys)} output{'s' * (len(ys) != 1)}, the "
                             f"hand-written side {len(shapes)}; expected one torch output per output")
        for i, (y, shape) in enumerate(zip(ys, shapes)):
            which = "output" if len(ys) == 1 else f"output {i}"
            if tuple(y.shape) != tuple(shape):
                hint = "torch_outputs maps torch's layout to the layer's" if isinstance(self, LayerSubject) else \
                    "torch_fn must compute the same function of the same inputs"
                raise ValueError(f"{self.counterpart_name} gives {which} of shape {tuple(y.shape)}; the hand-written "
                                 f"side {tuple(shape)} ({hint})")

    def torch_outputs(self, out) -> list:
        """The counterpart's result as a list of tensors (after ``torch_outputs``)."""
        import torch

        if self.output_map is not None:
            out = self.output_map(out)
        ys = list(out) if isinstance(out, (tuple, list)) else [out]
        for y in ys:
            if not isinstance(y, torch.Tensor):
                got = f"{type(out).__name__} holding {type(y).__name__}" if isinstance(out, (tuple, list)) \
                    else type(out).__name__
                raise TypeError(f"{self.counterpart_name} returned {got}; expected a torch.Tensor or a tuple of them")
        return ys

    def torch_referee(self) -> Referee:
        """The counterpart's forward in float64 on arrays perturbed in place (shared with the tensors)."""
        import torch

        inputs = self.inputs(True)
        params = {n: np.array(p, dtype=np.float64, order="C") for n, p in self.params.items()}
        xs = [torch.from_numpy(a) for a in inputs]
        ps = {n: torch.from_numpy(a) for n, a in params.items()}

        def evaluate():
            with torch.no_grad():
                if self.device is None:
                    ys, _ = self._torch_call(xs, ps, torch.float64)
                else:  # the arrays perturbed in place, copied to the device at each call
                    ys, _ = self._torch_call([x.to(self.device) for x in xs],
                                             {n: p.to(self.device) for n, p in ps.items()}, torch.float64)
                return _flat([self._numpy(y) for y in ys])

        tensors = {lab: a for lab, a, d in zip(self.input_labels, inputs, self.differentiable) if d}
        tensors.update({f"parameter {n}": a for n, a in params.items()})
        return Referee(tensors, evaluate)


class FunctionSubject(Subject):
    """check_function's subject: fn(*inputs) -> y (or a tuple), vjp(g, *inputs) -> one gradient per
    input, torch_fn(*tensors) -> the same as a tensor (or a tuple)."""

    def __init__(self, fn, vjp, torch_fn, inputs, name=None):
        for f, what in ((fn, "fn"), (vjp, "vjp"), (torch_fn, "torch_fn")):
            if not callable(f):
                raise TypeError(f"{what} must be callable; got {type(f).__name__}")
        if not inputs:
            raise TypeError("check_function(fn, vjp, torch_fn, *inputs) needs at least one input array")
        self.fn, self.vjp, self.torch_fn, self.output_map = fn, vjp, torch_fn, None
        self.params = {}
        self._init_inputs(usage.positional_names(fn, len(inputs)), inputs)
        if not any(self.differentiable):
            raise TypeError("check_function needs at least one float32 or float64 input to differentiate; "
                            "integer and bool inputs pass unchanged")
        self.counterpart_name = "torch_fn"
        self.title = name or (f"check_function({usage.callable_name(fn)}, {usage.callable_name(vjp)}, "
                              f"{usage.callable_name(torch_fn)})")
        self.names = [lab.removeprefix("input ") for lab in self.input_labels]

    def forward(self, precise: bool) -> list[np.ndarray]:
        return usage.outputs(self.fn(*self.inputs(precise)), "fn", precise)

    def forwards_at_base(self) -> tuple[list, list, list]:
        """Three forwards at the base point, for the determinism probe."""
        first, again = self.forward(False), self.forward(False)
        return first, again, again

    def manual(self, precise: bool, gs: list[np.ndarray]) -> Run:
        xs = self.inputs(precise)
        before = [a.copy() for a in xs]
        ys = usage.outputs(self.fn(*xs), "fn", precise, len(gs))
        notes = _written(before, xs, self.input_labels, "fn")
        xs, g_in = self.inputs(precise), [g.copy() for g in gs]
        usage.check_arity(self.vjp, 1 + len(xs), "vjp", f"g, then one per input: {', '.join(self.names)}")
        result = self.vjp(g_in[0] if len(g_in) == 1 else tuple(g_in), *xs)
        dxs = usage.per_input(result, len(xs), "vjp", self.names, "gradient")
        notes += _written(gs, g_in, ["g" if len(gs) == 1 else f"g {i}" for i in range(len(gs))], "vjp")
        notes += _written(self.inputs(precise), xs, self.input_labels, "vjp")
        return Run(ys, self._input_grads(dxs, xs, "vjp"), {}, notes)

    def _torch_call(self, xs, params, dtype):
        return self.torch_outputs(self.torch_fn(*xs)), {}

    def referee(self) -> Referee:
        inputs = self.inputs(True)
        tensors = {lab: a for lab, a, d in zip(self.input_labels, inputs, self.differentiable) if d}
        return Referee(tensors, lambda: _flat(usage.outputs(self.fn(*[a.copy() for a in inputs]), "fn", True)))


class LayerSubject(Subject):
    """check_layer's subject: a layer with the protocol of ``compare.check`` and its counterpart, a
    ``torch.nn.Module`` (names matched, values copied in) or a function of tensors (the parameters
    by name as keyword arguments)."""

    def __init__(self, layer, counterpart, x, torch_params=None, torch_inputs=None, torch_outputs=None,
                 training=None, name=None, input_grads: bool = True, torch_fixed=None):
        usage.check_protocol(layer)
        check_kinds(counterpart, torch_inputs, torch_outputs)
        self.layer, self.counterpart, self.output_map, self.training = layer, counterpart, torch_outputs, training
        if training is not None and not hasattr(layer, "training"):
            raise TypeError(f"training={training} given, but {type(layer).__name__} has no .training attribute to set")
        self.name = type(layer).__name__
        xs = list(x) if isinstance(x, (tuple, list)) else [x]
        usage.check_arity(layer.forward, len(xs), f"{self.name}.forward",
                          f"one per input; x is {'a tuple of ' + str(len(xs)) if len(xs) > 1 else 'one array'}")
        self._init_inputs(usage.positional_names(layer.forward, len(xs)), xs)
        if not input_grads:  # the data at the bottom of a model: its gradient is nobody's business
            self.differentiable = [False] * len(xs)
        self.params = {n: np.array(usage.input_array(p, f"parameter {n}"), order="C")
                       for n, p in layer.params.items()}
        for n, p in self.params.items():
            if not usage.is_float(p):
                raise TypeError(f"parameter {n} has dtype {p.dtype}; expected float32 or float64")
        self.buffers = {n: np.array(b, order="C") for n, b in (getattr(layer, "buffers", None) or {}).items()}
        self.names = [lab.removeprefix("input ") for lab in self.input_labels]
        mapping = {**(getattr(layer, "torch_names", None) or {}), **(torch_params or {})}
        self.side = Counterpart(counterpart, mapping, torch_fixed, torch_inputs, training, self.params, self.buffers)
        self.counterpart_name, self.fixed = self.side.name, self.side.fixed
        shown = counterpart if self.side.is_module else self.counterpart_name
        self.title = name or f"check_layer({self.name}, {shown})"

    @property
    def unmatched_buffers(self) -> list[str]:
        return self.side.unmatched_buffers

    # ------------------------------------------------------------------ the hand-written side

    def copy_layer(self, precise: bool):
        """The witness's own copy of the layer (float64 for the referee), in the mode asked for."""
        if precise:
            layer = float64_copy(self.layer)
        else:
            try:
                layer = copy.deepcopy(self.layer)
            except Exception as e:
                raise TypeError(f"{self.name} cannot be copied (copy.deepcopy: {type(e).__name__}: {e}); the check "
                                "runs every witness on a copy of it") from None
        if self.training is not None:
            layer.training = self.training
        return layer

    def forward(self, precise: bool, layer=None) -> list[np.ndarray]:
        layer = self.copy_layer(precise) if layer is None else layer
        return usage.outputs(layer.forward(*self.inputs(precise)), f"{self.name}.forward", precise)

    def forwards_at_base(self) -> tuple[list, list, list]:
        """Two forwards on one copy of the layer and one on another, at the base point: a layer
        that draws random numbers, or its weights at the first call, shows here."""
        layer = self.copy_layer(False)
        return self.forward(False, layer), self.forward(False, layer), self.forward(False)

    def manual(self, precise: bool, gs: list[np.ndarray], backward: bool = True) -> Run:
        """The hand-written forward and (with `backward`) backward on a copy of the layer."""
        layer = self.copy_layer(precise)
        xs = self.inputs(precise)
        before, params = [a.copy() for a in xs], {n: np.array(p) for n, p in layer.params.items()}
        ys = usage.outputs(layer.forward(*xs), f"{self.name}.forward", precise, len(gs))
        notes = _written(before, xs, self.input_labels, "forward")
        notes += _written(params.values(), layer.params.values(), [f"parameter {n}" for n in params], "forward")
        buffers = {n: self.side.to_layout(n, b).detach().numpy().copy()
                   for n, b in (getattr(layer, "buffers", None) or {}).items()}
        if not backward:
            return Run(ys, {}, buffers, notes)
        g_in, before, params = [g.copy() for g in gs], [a.copy() for a in xs], \
            {n: np.array(p) for n, p in layer.params.items()}
        usage.check_arity(layer.backward, len(g_in), f"{self.name}.backward",
                          f"one dy per output of forward, which returned {len(g_in)}")
        dxs = usage.per_input(self._backward(layer, g_in, precise), len(xs), f"{self.name}.backward", self.names,
                              "dx")
        notes += _written(gs, g_in, ["dy" if len(gs) == 1 else f"dy {i}" for i in range(len(gs))], "backward")
        notes += _written(before, xs, self.input_labels, "backward")
        notes += _written(params.values(), layer.params.values(), [f"parameter {n}" for n in params], "backward")
        grads = self._input_grads(dxs, xs, f"{self.name}.backward")
        grads.update(self._param_grads(layer))
        return Run(ys, grads, buffers, notes)

    def _backward(self, layer, g_in, precise: bool):
        """layer.backward(*g_in); in evaluation mode (training=False) a backward that fails is taken
        for a layer with no backward in that mode (``forward_only``) where it says so
        (NotImplementedError) or where it runs in training mode; one that fails there too is broken,
        and its error is raised, not hidden behind a forward-only pass."""
        if self.training is not False:
            return layer.backward(*g_in)
        try:
            return layer.backward(*g_in)
        except NoBackward:
            raise
        except Exception as e:
            if not isinstance(e, NotImplementedError) and not self._backward_runs_in_training(precise, g_in):
                raise
            raise NoBackward(f"training=False: {self.name}.backward raised {type(e).__name__}: {e}") from None

    def _backward_runs_in_training(self, precise: bool, g_in) -> bool:
        """Whether forward and backward run without an error on a fresh copy in training mode."""
        probe = self.copy_layer(precise)
        probe.training = True
        try:
            probe.forward(*self.inputs(precise))
            probe.backward(*[np.array(g) for g in g_in])
        except Exception:
            return False
        return True

    def _param_grads(self, layer) -> dict:
        grads = getattr(layer, "grads", None)
        if not isinstance(grads, Mapping):
            raise TypeError(f"{self.name}.grads must be a dict of the parameters' gradients, filled by backward; "
                            f"got {type(grads).__name__}")
        if set(grads) != set(layer.params):
            raise ValueError(f"{self.name}.grads holds {sorted(grads)} after backward; expected the names of params, "
                             f"{sorted(layer.params)}")
        return {f"parameter {n}": usage.gradient(grads[n], p.shape, layer.params[n].dtype,
                                                 f"{self.name}.grads[{n!r}]", f"the shape of params[{n!r}]")
                for n, p in self.params.items()}

    def referee(self) -> Referee:
        layer = self.copy_layer(True)
        inputs = self.inputs(True)
        tensors = {lab: a for lab, a, d in zip(self.input_labels, inputs, self.differentiable) if d}
        tensors.update({f"parameter {n}": layer.params[n] for n in self.params})
        name = f"{self.name}.forward"
        return Referee(tensors, lambda: _flat(usage.outputs(layer.forward(*[a.copy() for a in inputs]), name, True)))

    # ------------------------------------------------------------------ torch

    def _torch_call(self, xs, params, dtype):
        """The counterpart on input tensors `xs` and parameter tensors `params` (manual names and
        layouts); returns (outputs, buffers after the call in torch's layout, as NumPy)."""
        out, after = self.side.call(xs, params, self.buffers, dtype, self.device)
        return self.torch_outputs(out), after
