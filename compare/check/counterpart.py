"""A layer's torch counterpart as ``check_layer`` calls it: a ``torch.nn.Module`` (its parameters
and buffers matched to the layer's by name and shape, values copied in through the layouts of
``compare.check.layouts``) or a function of tensors (the parameters as keyword arguments)."""

from __future__ import annotations

import copy

import numpy as np

from compare.check import layouts, usage
from compare.check.names import match_names


def check_kinds(counterpart, torch_inputs=None, torch_outputs=None) -> None:
    """One TypeError line for a counterpart that is no torch module or function, or maps that are
    not functions."""
    if not callable(counterpart) or isinstance(counterpart, np.ufunc) or \
            (getattr(counterpart, "__module__", None) or "").startswith("numpy"):
        raise TypeError(f"check_layer's counterpart must be a torch.nn.Module or a function of torch tensors; "
                        f"got {type(counterpart).__name__}")
    for f, what in ((torch_inputs, "torch_inputs"), (torch_outputs, "torch_outputs")):
        if f is not None and not callable(f):
            raise TypeError(f"{what} must be a function of torch tensors; got {type(f).__name__}")


class Counterpart:
    """The counterpart of a layer whose parameters and buffers are `params` and `buffers` (name ->
    array), with `mapping` (``torch_names`` and ``torch_params`` merged), `fixed` (``torch_fixed``),
    `input_map` (``torch_inputs``) and the mode `training` (None: as it is).

    ``torch_names`` {parameter: torch name}, ``buffer_names`` {buffer: torch name} and
    ``unmatched_buffers`` (torch's integer buffers the layer does not hold: counters such as
    num_batches_tracked, not compared) are matched on construction; a name or shape that cannot be
    matched raises one ValueError line.
    """

    def __init__(self, counterpart, mapping: dict, fixed, input_map, training, params: dict, buffers: dict):
        import torch

        check_kinds(counterpart, input_map)
        self.module, self.input_map, self.training = counterpart, input_map, training
        self.is_module = isinstance(counterpart, torch.nn.Module)
        self.name = f"the module {type(counterpart).__name__}" if self.is_module else \
            f"the function {usage.callable_name(counterpart)}"
        self.params, self.buffers = params, buffers
        self.layouts, self.groups = layouts.parse(mapping)
        self.fixed = dict(fixed or {})
        self.torch_names, self.buffer_names, self.unmatched_buffers = self._match()

    def to_layout(self, name: str, value):
        """A manual array or tensor in torch's layout (its transform applied), as a tensor."""
        import torch

        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
        transform = self.layouts.get(name, (name, None))[1]
        return t if transform is None else transform(t)

    def _shapes(self, arrays) -> dict:
        shapes = {}
        for n, a in arrays.items():
            try:
                shapes[n] = tuple(self.to_layout(n, a).shape)
            except Exception as e:
                raise ValueError(f"the transform of {n} in torch_params failed on its value of shape {a.shape}: "
                                 f"{type(e).__name__}: {e}") from None
        return shapes

    def _packed_shape(self, names: tuple, torch_name: str) -> tuple:
        import torch

        try:
            packed = layouts.pack({names: self.groups[names]}, {n: torch.from_numpy(self.params[n].copy())
                                                                for n in names})
        except Exception as e:
            raise ValueError(f"the packing of {', '.join(names)} into {torch_name} (torch_params) failed: "
                             f"{type(e).__name__}: {e}") from None
        return tuple(packed[torch_name].shape)

    def _match(self):
        """{manual parameter: torch name}, {manual buffer: torch name}, torch's integer buffers the
        layer does not hold."""
        packed = [n for names in self.groups for n in names]
        unknown = [n for n in [*self.layouts, *packed] if n not in self.params and n not in self.buffers]
        if unknown:
            raise ValueError(f"torch_names / torch_params map {unknown}, which the layer's params "
                             f"({list(self.params)}) and buffers ({list(self.buffers)}) do not hold")
        names = {n: spec[0] for n, spec in self.layouts.items()}
        self.transformed = {n for n, spec in self.layouts.items() if spec[1] is not None}
        if not self.is_module:
            if self.fixed or packed:
                raise TypeError("torch_fixed and packed torch_params entries need a torch.nn.Module counterpart; a "
                                "function takes its arguments as they are")
            if self.buffers:
                raise ValueError(f"the layer has buffers {list(self.buffers)} but its counterpart is a function, which "
                                 "has none to compare them with; give a torch.nn.Module")
            return {n: names.get(n, n) for n in self.params}, {}, []
        return self._match_params(names, packed), *self._match_buffers(names)

    def _match_params(self, names: dict, packed: list) -> dict:
        theirs = {n: tuple(p.shape) for n, p in self.module.named_parameters()}
        layouts.check_fixed(self.fixed, theirs)
        ours = self._shapes({n: p for n, p in self.params.items() if n not in packed})
        ours.update({layouts.label(g): self._packed_shape(g, t) for g, (t, _) in self.groups.items()})
        mapping = {n: t for n, t in names.items() if n in self.params}
        mapping.update({layouts.label(g): t for g, (t, _) in self.groups.items()})
        return match_names(ours, {n: s for n, s in theirs.items() if n not in self.fixed}, mapping,
                           transformed=self.transformed | {layouts.label(g) for g in self.groups})

    def _match_buffers(self, names: dict) -> tuple[dict, list]:
        theirs = dict(self.module.named_buffers())
        counters = [n for n, b in theirs.items() if not b.is_floating_point() and n not in names.values()
                    and n not in self.buffers]
        buffers = match_names(self._shapes(self.buffers), {n: tuple(b.shape) for n, b in theirs.items()
                                                           if n not in counters},
                              {n: t for n, t in names.items() if n in self.buffers}, kind="buffer",
                              transformed=self.transformed)
        return buffers, counters

    def call(self, xs, params: dict, buffers: dict, dtype, device=None):
        """The counterpart on input tensors `xs`, parameter tensors `params` and buffer arrays
        `buffers` (manual names and layouts), in `dtype`; returns (its result as it is, the buffers
        after the call in torch's layout, as NumPy)."""
        import torch

        values = {self.torch_names[n]: self.to_layout(n, p) for n, p in params.items() if n in self.torch_names}
        values.update(layouts.pack(self.groups, params))
        if self.fixed:
            shapes = {n: tuple(p.shape) for n, p in self.module.named_parameters()}
            values.update({n: t.to(device) for n, t in layouts.fixed_tensors(self.fixed, shapes, dtype).items()})
        args = xs if self.input_map is None else self.input_map(*xs)
        args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
        if not self.is_module:
            try:
                return self.module(*args, **values), {}
            except TypeError as e:
                if "positional argument" not in str(e) or self.input_map is not None:
                    raise
                keywords = f" and the parameters {sorted(values)} by keyword" if values else ""
                raise TypeError(f"{self.name} was called with {len(args)} tensor{'s' * (len(args) != 1)} (the array "
                                f"inputs, in order){keywords}: arguments that are not arrays (a dict of options) go to "
                                f"the forward alone; close over them, or map the inputs with torch_inputs ({e})") from None
        module = copy.deepcopy(self.module).to(device, dtype)
        if self.training is not None:
            module.train(self.training)
        tensors = {self.buffer_names[n]: self.to_layout(n, torch.tensor(b, dtype=dtype if usage.is_float(b) else None,
                                                                        device=device))
                   for n, b in buffers.items()}
        out = torch.func.functional_call(module, {**values, **tensors}, args)
        half = (torch.float16, torch.bfloat16)  # NumPy has no bfloat16: those come back in float64
        return out, {n: tensors[t].detach().to("cpu", torch.float64 if tensors[t].dtype in half else None).numpy().copy()
                     for n, t in self.buffer_names.items()}
