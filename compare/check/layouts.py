"""How a layer's parameters become its torch counterpart's: renamed, transformed, packed several into
one, or, for a parameter the layer does not have, fixed.

``torch_params`` entries, keyed by the layer's name:

    "W": "weight"                                   renamed
    "W": lambda W: W.T                              transformed (the same name)
    "W": ("weight", lambda W: W.T)                  both
    ("Wq", "Wk", "Wv"): ("in_proj_weight", lambda q, k, v: torch.cat([q.T, k.T, v.T]))
                                                    several of the layer's packed into one of torch's

Every transform is a function on torch tensors, so autograd carries the gradient of torch's packed
tensor back to each of the layer's arrays: no inverse is ever written. ``gates`` reorders the four
gate blocks of a recurrent weight (a course's i, f, o, g to ``nn.LSTM``'s i, f, g, o).

``torch_fixed`` names the counterpart's parameters that the layer lacks and the value each is held
at (``{"bias_hh": 0.0}``: ``nn.LSTMCell``'s second bias, where the layer has one bias): a constant
of torch's side, never a witness's tensor, and said so in the report.
"""

from __future__ import annotations

from compare.check.findings import Note


def parse(mapping: dict) -> tuple[dict, dict]:
    """({name: (torch name, transform or None)}, {(names, ...): (torch name, transform)}) from a
    merged ``torch_names`` / ``torch_params`` dict; one TypeError line for an entry of another form."""
    singles, groups = {}, {}
    for key, spec in mapping.items():
        if isinstance(key, tuple):
            if not (key and all(isinstance(n, str) for n in key) and isinstance(spec, tuple) and len(spec) == 2
                    and isinstance(spec[0], str) and callable(spec[1])):
                raise TypeError(f"torch_params[{key!r}] packs several of the layer's parameters into one of torch's: "
                                "it must be (torch name, function of the tensors in that order); "
                                f"got {spec!r}")
            groups[key] = spec
        elif isinstance(spec, str):
            singles[key] = (spec, None)
        elif callable(spec):
            singles[key] = (key, spec)
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and callable(spec[1]):
            singles[key] = spec
        else:
            raise TypeError(f"torch_params[{key!r}] must be a torch name, a transform (a function of the tensor), or "
                            f"(torch name, transform); got {spec!r}")
    packed = [n for names in groups for n in names]
    twice = sorted({n for n in packed if packed.count(n) > 1 or n in singles})
    if twice:
        raise ValueError(f"torch_params maps {twice} more than once; each of the layer's parameters goes to one of "
                         "torch's (a packed entry lists it once)")
    return singles, groups


def label(names: tuple) -> str:
    """What a report calls a packed group: "Wq+Wk+Wv"."""
    return "+".join(names)


def pack(groups: dict, tensors: dict) -> dict:
    """{torch name: the packed tensor} of every group, from {layer name: tensor}."""
    return {torch_name: f(*(tensors[n] for n in names)) for names, (torch_name, f) in groups.items()}


def fixed_tensors(fixed: dict, shapes: dict, dtype) -> dict:
    """{torch name: a constant tensor of its shape} from ``torch_fixed`` ({torch name: a number or an
    array of the parameter's shape})."""
    import torch

    out = {}
    for name, value in fixed.items():
        t = torch.as_tensor(value, dtype=dtype)
        out[name] = t.expand(shapes[name]).clone() if t.ndim == 0 else t.clone()
    return out


def fixed_note(fixed: dict) -> Note:
    """The report's note on the counterpart's fixed parameters."""
    said = ", ".join(f"{n} at {v:g}" if isinstance(v, (int, float)) else f"{n} at the array given"
                     for n, v in fixed.items())
    return Note("fixed", f"the counterpart's {said}, held fixed (torch_fixed: parameters the layer does not have; "
                "not compared, no gradient)")


def check_fixed(fixed: dict, theirs: dict) -> None:
    """One ValueError line for a fixed name the module lacks or a value of another shape."""
    import torch

    for name, value in fixed.items():
        if name not in theirs:
            raise ValueError(f"torch_fixed names {name!r}, which the counterpart's parameters ({list(theirs)}) do not "
                             "hold")
        shape = tuple(torch.as_tensor(value).shape)
        if shape not in ((), tuple(theirs[name])):
            raise ValueError(f"torch_fixed[{name!r}] has shape {shape}; expected a number or the parameter's shape "
                             f"{tuple(theirs[name])}")


def gates(t, order: str = "ifog", to: str = "ifgo", axis: int = 0):
    """`t` with its four gate blocks along `axis` reordered from `order` to `to` (letters i, f, g, o):
    a course's LSTM weight (i, f, o, g) to ``nn.LSTM``'s (i, f, g, o). Works on tensors (autograd
    carries the gradient back through it)."""
    import torch

    if sorted(order) != sorted(to) or len(set(order)) != len(order):
        raise ValueError(f"gates: {order!r} and {to!r} must be orders of the same gate letters")
    if t.shape[axis] % len(order):
        raise ValueError(f"gates: axis {axis} of shape {tuple(t.shape)} does not split into {len(order)} gate blocks")
    blocks = dict(zip(order, torch.chunk(t, len(order), dim=axis)))
    return torch.cat([blocks[k] for k in to], dim=axis)
