"""Hand-derived code as it is most often written, checked without glue: the (out, cache) style of
course assignments, and losses that return their gradient.

    out, cache = affine_forward(x, w, b)             dx, dw, db = affine_backward(dout, cache)
    h, c, cache = lstm_step_forward(x, h0, c0, Wx, Wh, b)     (several outputs, the cache last)
    loss, dx = softmax_loss(x, y)

``check_forward_backward(forward, backward, counterpart, *args, **kwargs)`` calls
``forward(*args, **kwargs)``: every float array of ``args`` is checked (named from forward's
signature), integer and bool arrays pass unchanged, and every other argument (a stride, a
``conv_param`` or ``bn_param`` dict) is passed through as it is. ``backward(*douts, cache)``
returns one gradient per array argument in order (integer ones and ``constant=`` ones may be
left out). The arrays named in ``params=``, or, with a ``torch.nn.Module`` counterpart, those that
``torch_params`` maps (a module parameter's own name too), are the counterpart's parameters; the
rest are its inputs, in order. It is a thin layer over ``check_layer``: ``CacheLayer`` holds the
pair as the layer protocol, and every option of ``check_layer`` applies.

A dict argument with a ``"mode"`` of ``"train"`` or ``"test"`` (the course convention) sets the
counterpart's mode, and ``training=`` sets that ``"mode"``; a key of such a dict that names a float
buffer of the module (``running_mean``) is the layer's buffer, compared after the forward. A
forward that returns no cache (``None``: test mode of a layer that only trains), or no
``backward``, gets the forward and the buffers checked alone (``compare.check.forward_only``).

``check_loss(loss_fn, counterpart, x, *rest)``: ``loss, dx = loss_fn(x, *rest)`` against
``counterpart(x, *rest)``, a scalar tensor; the other arguments (labels, a regression target, a
mask) are data, held constant.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from compare.check import tolerances, usage
from compare.check.engine import FD_BUDGET, FD_SAMPLES, check
from compare.check.forward_only import NoBackward
from compare.check.report import Report
from compare.check.subjects import FunctionSubject, LayerSubject

MODES = {"train": True, "test": False}


class CacheLayer:
    """The layer protocol over forward(*args) -> (*outs, cache) and backward(*douts, cache) -> one
    gradient per array argument. `slots`: per positional argument ("input", i), ("param", name) or
    ("pass", value); `kwargs` passed through; `grad_slots`: the arguments backward returns, in order.
    """

    def __init__(self, forward, backward, slots, params, kwargs, grad_slots, buffer_keys):
        self._forward, self._backward, self._slots, self._kwargs = forward, backward, slots, kwargs
        self.params, self.grads, self._grad_slots, self._buffer_keys = params, {}, grad_slots, buffer_keys
        self._cache, self._called = None, False

    def _dicts(self) -> list:
        values = [v for kind, v in self._slots if kind == "pass"] + list(self._kwargs.values())
        return [v for v in values if isinstance(v, dict)]

    @property
    def buffers(self) -> dict:
        """{key: array} of the dict arguments' keys that name the module's float buffers, read at
        each call (a forward may rebind them: ``bn_param["running_mean"] = ...``)."""
        return {key: d[key] for d in self._dicts() for key in self._buffer_keys if key in d}

    @property
    def training(self):
        modes = [d["mode"] for d in self._dicts() if d.get("mode") in MODES]
        return MODES[modes[0]] if modes else None

    @training.setter
    def training(self, value):
        for d in self._dicts():
            if d.get("mode") in MODES:
                d["mode"] = "train" if value else "test"

    def forward(self, *xs):
        args = [xs[v] if kind == "input" else self.params[v] if kind == "param" else v for kind, v in self._slots]
        result = self._forward(*args, **self._kwargs)
        who = usage.callable_name(self._forward)
        if not isinstance(result, tuple) or len(result) < 2:
            raise TypeError(f"{who} returned {type(result).__name__}; expected (out, cache) or (out1, out2, ..., cache): "
                            "the (out, cache) style (check_layer takes a layer object instead)")
        *outs, self._cache = result
        self._called = True
        return outs[0] if len(outs) == 1 else tuple(outs)

    def backward(self, *douts):
        if self._backward is None:
            raise NoBackward("no backward given")
        if self._called and self._cache is None:
            raise NoBackward(f"{usage.callable_name(self._forward)} returned no cache (None)")
        who = usage.callable_name(self._backward)
        result = self._backward(*douts, self._cache)
        every = self._grad_slots
        some = [s for s in every if s[3]]  # the differentiated arrays alone
        many = len(result) if isinstance(result, (tuple, list)) else 1
        slots = every if many == len(every) else some if many == len(some) else None
        if slots is None:
            raise ValueError(f"{who} returned {many} gradient{'s' * (many != 1)}; expected one per array argument of "
                             f"the forward ({', '.join(s[2] for s in every)}), in order (integer and constant ones "
                             "may be left out)")
        grads = list(result) if isinstance(result, (tuple, list)) else [result]
        dxs = {}
        for (kind, key, _, _), d in zip(slots, grads):
            if kind == "param":
                self.grads[key] = d
            else:
                dxs[key] = d
        return tuple(dxs.get(i) for i in range(sum(k == "input" for k, _ in self._slots)))


def _layer_class(forward, names: list[str]):
    """A CacheLayer subclass whose forward has the signature (self, *names) and whose name is the
    forward's, so that the report names the inputs and the layer as the user wrote them."""

    def named_forward(self, *xs):
        return CacheLayer.forward(self, *xs)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    named_forward.__signature__ = inspect.Signature(params)
    title = getattr(forward, "__name__", "forward").replace("<", "").replace(">", "")
    return type(title, (CacheLayer,), {"forward": named_forward})


def _param_names(args, names, params, counterpart, torch_params) -> set:
    import torch

    if params is not None:
        return set(params)
    if not isinstance(counterpart, torch.nn.Module):
        return set()
    mapped = {n for key in (torch_params or {}) for n in (key if isinstance(key, tuple) else (key,))}
    own = {n for n, _ in counterpart.named_parameters()}
    return {n for n, a in zip(names, args) if isinstance(a, np.ndarray) and (n in mapped or n in own)}


def cache_layer(forward, backward, counterpart, args, kwargs, params=None, torch_params=None, constant=()):
    """(the CacheLayer of forward and backward, its inputs) for ``check_layer``."""
    import torch

    for f, what in ((forward, "forward"),) + (((backward, "backward"),) if backward is not None else ()):
        if not callable(f):
            raise TypeError(f"{what} must be callable; got {type(f).__name__}")
    arrays = [k for k, v in kwargs.items() if isinstance(v, np.ndarray)]
    if arrays:
        raise TypeError(f"the arrays {arrays} are given by keyword; give every array positionally, in the forward's "
                        "order (keyword arguments pass through unchanged)")
    names = usage.positional_names(forward, len(args))
    chosen = _param_names(args, names, params, counterpart, torch_params)
    unknown = sorted(set(chosen) - {n for n, a in zip(names, args) if isinstance(a, np.ndarray)})
    if unknown or set(constant) - set(names):
        raise ValueError(f"params/constant name {sorted(unknown or set(constant) - set(names))}, which are not array "
                         f"arguments of {usage.callable_name(forward)} ({', '.join(names)})")
    slots, layer_params, inputs, input_names, grad_slots = [], {}, [], [], []
    for n, a in zip(names, args):
        if not isinstance(a, np.ndarray):
            slots.append(("pass", a))
            continue
        differentiated = usage.is_float(a) and n not in constant
        if n in chosen:
            layer_params[n] = a
            slots.append(("param", n))
            grad_slots.append(("param", n, n, differentiated))
        else:
            slots.append(("input", len(inputs)))
            grad_slots.append(("input", len(inputs), n, differentiated))
            inputs.append(a)
            input_names.append(n)
    if not inputs:
        raise TypeError(f"{usage.callable_name(forward)} is given no input array (every array is a parameter); "
                        "name the counterpart's parameters in params= or torch_params")
    buffer_keys = {n for n, b in counterpart.named_buffers() if b.is_floating_point()} \
        if isinstance(counterpart, torch.nn.Module) else set()
    layer = _layer_class(forward, input_names)(forward, backward, slots, layer_params, kwargs, grad_slots,
                                               buffer_keys)
    return layer, inputs


def check_forward_backward(forward, backward, counterpart, *args, params=None, constant=(), torch_params=None,
                           torch_inputs=None, torch_outputs=None, torch_fixed=None, training=None, seed: int = 0,
                           h: float = tolerances.FD_STEP, fd_samples: int = FD_SAMPLES, fd_budget: int = FD_BUDGET,
                           name: str | None = None, self_test: bool = False, **kwargs) -> Report:
    """Check an (out, cache) pair: ``forward(*args, **kwargs) -> (out, cache)`` (or several outputs
    then the cache) and ``backward(*douts, cache)`` -> one gradient per array argument, against a
    torch counterpart and finite differences (the module docstring).

    Args:
        forward, backward: the pair (backward None: the forward and the buffers alone).
        counterpart: a ``torch.nn.Module`` or a function of torch tensors, as for ``check_layer``.
        args: the forward's positional arguments: arrays (checked) and anything else (passed).
        params: the array arguments that are the counterpart's parameters (default: those that
            torch_params maps, or that carry a module parameter's name).
        constant: float array arguments held constant (data, not variables): not differentiated.
        torch_params, torch_inputs, torch_outputs, torch_fixed, training, seed, h, fd_samples,
            fd_budget, name, self_test: as for ``check_layer``.
        kwargs: the forward's keyword arguments, passed unchanged.
    Returns:
        a Report (``report.ok``, ``print(report)``, ``report.assert_ok()``).
    """
    layer, inputs = cache_layer(forward, backward, counterpart, args, kwargs, params, torch_params,
                                       tuple(constant))
    if training is None:
        training = layer.training
    title = name or (f"check_forward_backward({usage.callable_name(forward)}, "
                     f"{usage.callable_name(backward) if backward else None}, {_counterpart_name(counterpart)})")
    subject = LayerSubject(layer, counterpart, tuple(inputs), torch_params, torch_inputs, torch_outputs, training,
                           title, torch_fixed=torch_fixed)
    hold_constant(subject, constant)
    if backward is None:
        subject.forward_only = "no backward given"
    return check(subject, seed, h, fd_samples, fd_budget, self_test)


def check_loss(loss_fn, counterpart, x, *rest, seed: int = 0, h: float = tolerances.FD_STEP,
               fd_samples: int = FD_SAMPLES, fd_budget: int = FD_BUDGET, name: str | None = None,
               self_test: bool = False) -> Report:
    """Check ``loss, dx = loss_fn(x, *rest)`` against ``counterpart(x, *rest)`` (a scalar tensor, e.g.
    ``torch.nn.functional.cross_entropy``) and finite differences; the other arguments (labels, a
    regression target, a mask) are data, held constant."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    who = usage.callable_name(loss_fn)

    def split(*xs):
        result = loss_fn(*xs)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"{who} returned {type(result).__name__}; expected (loss, dx)")
        return result

    @functools.wraps(loss_fn)
    def loss(*xs):
        return split(*xs)[0]

    def vjp(g, *xs):
        return (np.asarray(g) * np.asarray(split(*xs)[1]), *[None] * (len(xs) - 1))

    title = name or f"check_loss({who}, {_counterpart_name(counterpart)})"
    subject = FunctionSubject(loss, vjp, counterpart, (x, *rest), title)
    hold_constant(subject, subject.names[1:])
    return check(subject, seed, h, fd_samples, fd_budget, self_test)


def _counterpart_name(counterpart) -> str:
    import torch

    return repr(counterpart) if isinstance(counterpart, torch.nn.Module) else usage.callable_name(counterpart)


def hold_constant(subject, names) -> None:
    """Float inputs named in `names` are data: not differentiated, not perturbed (the report says so)."""
    names = set(names)
    subject.constant = [lab.removeprefix("input ") for lab, a, d in zip(subject.input_labels, subject.pristine,
                                                                         subject.differentiable)
                        if d and lab.removeprefix("input ") in names]
    subject.differentiable = [d and lab.removeprefix("input ") not in names
                              for lab, d in zip(subject.input_labels, subject.differentiable)]
