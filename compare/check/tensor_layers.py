"""A layer on tensors (torch, CPU or CUDA; JAX; NumPy float16) in any precision, for check_layer
and check_model: ``TensorLayerView`` puts the layer protocol on the float64 arrays the witnesses
see over the user's layer, and ``TensorLayerSubject`` is the ``LayerSubject`` of that view, in the
precision of the layer's tensors (``compare.check.tensors`` converts; ``compare.check.precision``
bounds).
"""

from __future__ import annotations

import copy
import functools

import numpy as np

from compare.check import precision, usage
from compare.check.subjects import LayerSubject
from compare.check.tensors import (Adapter, _torch, below_float64, changed, gradient_array, is_tensor, results, to_numpy,
                                   upstream)


def fresh(v):
    """A copy of a tensor (torch: detached, on its device) or array, for the next layer's input."""
    if hasattr(v, "detach"):
        return v.detach().clone()
    return np.array(v) if isinstance(v, np.ndarray) else v


def holds_tensors(layer) -> bool:
    """A layer whose parameters are tensors (torch or JAX) or NumPy float16 arrays."""
    params = getattr(layer, "params", None)
    return isinstance(params, dict) and any(is_tensor(p) for p in params.values())


def _retyped(obj, precise: bool):
    """A deep copy of a layer on tensors; with `precise`, every float tensor (and NumPy float16 array)
    it holds, and every such dtype attribute, in float64, on the same device, sharing kept."""
    from compare.check.copies import _reachable

    torch = _torch()
    originals = list(_reachable(obj, set())) if precise else []
    memo = {id(t): t.detach().to(torch.float64).clone() for t in originals
            if isinstance(t, torch.Tensor) and t.is_floating_point()}
    memo.update({id(a): a.astype(np.float64) for a in originals if isinstance(a, np.ndarray) and a.dtype == np.float16})
    memo[id(memo)] = originals
    try:
        clone = copy.deepcopy(obj, memo)
    except Exception as e:
        raise TypeError(f"{type(obj).__name__} cannot be copied (copy.deepcopy: {type(e).__name__}: {e}); the check "
                        "runs every witness on a copy of it") from None
    if precise:
        for part in _reachable(clone, set()):
            value = vars(part).get("dtype") if hasattr(part, "__dict__") else None
            if isinstance(value, torch.dtype) and value.is_floating_point:
                part.dtype = torch.float64
            elif isinstance(value, (np.dtype, type)) and value is not None and np.dtype(value) == np.float16:
                part.dtype = np.dtype(np.float64)
    return clone


class TensorLayerView:
    """The layer protocol on NumPy float64 arrays over a layer on tensors: each call converts its
    arrays to the layer's tensors (its dtype and device, or float64 for the referee), and what the
    layer's code wrote into a tensor it was handed is copied back into the array, so that the
    check sees the write. ``params`` are float64 arrays read into the layer's own parameter
    tensors at every forward (the finite differences perturb them in place)."""

    def __init__(self, layer, params: dict, adapters: dict, precise: bool):
        self.layer, self.adapters, self.precise = layer, adapters, precise
        self.params = {n: np.array(a) for n, a in params.items()}
        self.grads = {}
        self.torch_names = getattr(layer, "torch_names", None)
        self.inputs = None  # Adapters of the inputs, set by the subject
        if getattr(layer, "buffers", None):
            self.buffers = {n: to_numpy(b, f"buffer {n}", False) for n, b in layer.buffers.items()}

    @property
    def training(self):
        return self.layer.training

    @training.setter
    def training(self, value):
        self.layer.training = value

    def _sync_params(self) -> None:
        """The float64 arrays' values into the layer's own parameters, in place (exact: they hold
        values of the parameter's precision, or the referee's float64)."""
        for n, a in self.params.items():
            p = self.layer.params[n]
            if isinstance(p, np.ndarray):
                np.copyto(p, a, casting="unsafe")
            else:
                with _torch().no_grad():
                    p.copy_(_torch().from_numpy(a))

    def _write_back(self, arrays, tensors) -> None:
        for a, t in zip(arrays, tensors):
            if a is not None and t is not None and changed(a, t):
                np.copyto(a, to_numpy(t, "", False))

    def forward(self, *xs):
        self._sync_params()
        ts = [ad.user(x, self.precise) for ad, x in zip(self.inputs, xs)]
        ys = self.layer.forward(*ts)
        self._write_back(xs, ts)
        self._write_back(self.params.values(), self.layer.params.values())
        if getattr(self.layer, "buffers", None):
            self.buffers = {n: to_numpy(b, f"buffer {n}", False) for n, b in self.layer.buffers.items()}
        outs = results(ys, f"{type(self.layer).__name__}.forward", self.precise)
        return outs[0] if not isinstance(ys, (tuple, list)) else tuple(outs)

    def backward(self, *dys):
        adapters = list(self.inputs) + list(self.adapters.values())  # the first float one's kind and device
        ts = [upstream(adapters, g, "float64" if self.precise else name) for g, name in zip(dys, self.out_precisions)]
        dxs = self.layer.backward(*ts)
        self._write_back(dys, ts)
        self._write_back(self.params.values(), self.layer.params.values())
        grads, name = getattr(self.layer, "grads", None), type(self.layer).__name__
        self.grads = grads if not isinstance(grads, dict) else \
            {n: None if g is None else gradient_array(g, self._precision(self.adapters.get(n)), f"{name}.grads[{n!r}]")
             for n, g in grads.items()}
        many = isinstance(dxs, (tuple, list))
        dxs = list(dxs) if many else [dxs]
        adapters = list(self.inputs) + [None] * (len(dxs) - len(self.inputs))  # too many: usage says so later
        out = [None if d is None else gradient_array(d, self._precision(ad), f"{name}.backward's dx"
                                                     + (f" for input {i}" if many else ""))
               for i, (d, ad) in enumerate(zip(dxs, adapters))]
        return tuple(out) if many else out[0]

    def _precision(self, adapter) -> str | None:
        """The precision a gradient of the tensor of `adapter` must have in this run (None: any, for
        a tensor that is not differentiated)."""
        if adapter is None or not adapter.precision:
            return None
        return "float64" if self.precise else adapter.precision


class TensorLayerSubject(LayerSubject):
    """check_layer's subject for a layer on tensors: the ``LayerSubject`` of its ``TensorLayerView``,
    in the precision of its tensors (the lowest of them)."""

    def __init__(self, layer, counterpart, x, *args, **kwargs):
        xs = list(x) if isinstance(x, (tuple, list)) else [x]
        usage.check_protocol(layer)
        self.user_layer = layer
        self.in_adapters = [Adapter(v, f"input {i}") for i, v in enumerate(xs)]
        self.param_adapters = {n: Adapter(p, f"parameter {n}") for n, p in layer.params.items()}
        for n, ad in self.param_adapters.items():
            if not ad.precision:
                raise TypeError(f"parameter {n} has dtype {ad.dtype}; expected a float tensor")
        arrays = [ad.array(v, f"input {i}") for i, (ad, v) in enumerate(zip(self.in_adapters, xs))]
        params = {n: ad.array(p, f"parameter {n}") for (n, ad), p in zip(self.param_adapters.items(),
                                                                          layer.params.values())}
        self.out_precisions = None
        super().__init__(self._view(_retyped(layer, False), params, False), counterpart, tuple(arrays), *args,
                         **kwargs)
        self.name = type(layer).__name__
        self.input_labels = [f"input {n}" for n in usage.positional_names(layer.forward, len(xs))]
        self.names = [lab.removeprefix("input ") for lab in self.input_labels]
        if kwargs.get("name") is None and not (len(args) > 4 and args[4]):
            self.title = f"check_layer({self.name}, {counterpart if self.side.is_module else self.counterpart_name})"

    def _view(self, layer, params, precise):
        view = TensorLayerView(layer, params, self.param_adapters, precise)
        view.inputs, view.out_precisions = self.in_adapters, self.out_precisions or []
        return view

    @property
    def float32(self) -> bool:
        return self.precision != "float64"

    @property
    def precision(self) -> str:
        names = [a.precision for a in self.in_adapters if a.precision]
        return precision.lowest(names + [a.precision for a in self.param_adapters.values()])

    def rounded(self, i: int, g: np.ndarray) -> np.ndarray:
        return precision.rounded(np.asarray(g, np.float64), self.out_precisions[i])

    @functools.cached_property
    def half_only(self) -> str:
        """Why the code runs in no float64 (``below_float64``), or ""."""
        return below_float64(self)

    def copy_layer(self, precise: bool):
        view = self._view(_retyped(self.user_layer, precise), self.params, precise)
        if self.training is not None:
            view.training = self.training
        return view

    def forward(self, precise: bool, layer=None) -> list[np.ndarray]:
        layer = self.copy_layer(precise) if layer is None else layer
        layer._sync_params()
        ts = [ad.user(x, precise) for ad, x in zip(self.in_adapters, self.inputs(precise))]
        ys = layer.layer.forward(*ts)
        outs = ys if isinstance(ys, (tuple, list)) else [ys]
        if self.out_precisions is None:
            self.out_precisions = [precision.name_of(y.dtype) or "float64" for y in outs]
        return results(ys, f"{self.name}.forward", precise)

    def torch_dtype(self, precise: bool):
        return getattr(_torch(), "float64" if precise else self.precision)

    def _numpy(self, t):
        return to_numpy(t, "", False)

    @property
    def device(self):
        return next((ad.device for ad in self.in_adapters if ad.kind == "torch" and ad.precision), None) or \
            next((ad.device for ad in self.param_adapters.values() if ad.kind == "torch"), None)
