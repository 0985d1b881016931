"""The precisions the referee judges, and the bounds of a result computed in one of them.

A precision is named by its dtype's name: "float64", "float32", "float16", "bfloat16" (torch's,
NumPy's and JAX's dtypes map to these). Low precision (float16, bfloat16) is judged by the rule of
``compare.check.tolerances`` (LOW_FACTOR, LOW_FLOOR): the hand-written result's error against the
float64 truth at most LOW_FACTOR times the error the counterpart's own autograd makes in the same
dtype, or LOW_FLOOR unit roundoffs; float32 keeps its own bound (``tolerances.float32_bounds``).
"""

from __future__ import annotations

import math

import numpy as np

from compare.check import tolerances
from compare.check.findings import Note, PrecisionError
from compare.check.measure import measure

# Machine epsilon (the distance from 1 to the next number) of each precision.
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}
HALF = ("float16", "bfloat16")


def name_of(dtype) -> str:
    """The precision of a torch, NumPy or JAX dtype ("bfloat16"), or "" when it is not a float."""
    text = str(dtype).removeprefix("torch.")
    return text if text in EPS else ""


def unit_roundoff(name: str) -> float:
    """u = eps/2: |fl(x) − x| ≤ u·|x| (bfloat16: 2^-8 = 3.9e-3, float16: 2^-11 = 4.9e-4)."""
    return EPS[name] / 2


def lowest(names) -> str:
    """The least precise of several precisions ("float64" for none)."""
    return max(names, key=EPS.__getitem__, default="float64")


def dtype_fix(got: str, expected: str, cast: str) -> str:
    """How to give a gradient its tensor's precision `expected` instead of `got`: casting down
    rounds once, which the bounds allow; casting up keeps the less precise arithmetic's rounding,
    which the bounds of the more precise one reject (a float32 result of a float64 tensor: ~1e-8)."""
    if EPS[got] > EPS[expected]:
        return (f"compute in {expected}: a {got} result cast back with {cast} keeps {got}'s rounding, which "
                f"{expected}'s bounds reject")
    return f"compute in it, or cast the result with {cast}"


def rounded(a: np.ndarray, name: str) -> np.ndarray:
    """`a` rounded to precision `name`: float32/float64 arrays as they are; the half precisions as
    float64 arrays holding the rounded values (NumPy has no bfloat16), converted exactly later."""
    if name in ("float32", "float64"):
        return np.asarray(a).astype(name)
    import torch

    t = torch.from_numpy(np.asarray(a, np.float64).copy())
    return t.to(getattr(torch, name)).to(torch.float64).numpy()


def bounds(name: str, rel_noise: float, elem_noise: float) -> tuple[float, float]:
    """(relative, elementwise) bounds of a result in precision `name` against the float64 truth or
    another run, given autograd's own error in that precision (`rel_noise`, `elem_noise`)."""
    if name not in HALF:
        return tolerances.float32_bounds(rel_noise, elem_noise)
    floor = tolerances.LOW_FLOOR * unit_roundoff(name)
    return max(tolerances.LOW_FACTOR * rel_noise, floor), max(tolerances.LOW_FACTOR * elem_noise, floor)


def pairs(name: str, rounding, exact, precise: bool = True) -> list:
    """The pairs of analytic witnesses compared in a check in precision `name`, with their bounds:
    float64 the two sides; float32 each side and the float64 referee; the half precisions also the
    hand-written result against the truth (torch64), the pair whose error is set against autograd's.
    Without `precise` (a kernel that runs in no float64) only the low-precision pairs."""
    if name == "float64":
        return [("manual", "torch", exact)]
    if name not in HALF and precise:
        return [("manual", "torch", rounding), ("manual", "manual64", rounding), ("manual64", "torch64", exact)]
    both = [("manual", "torch64", rounding), ("manual", "torch", rounding)]
    return both + ([("manual", "manual64", rounding), ("manual64", "torch64", exact)] if precise else [])


def errors(runs: dict, label: str, values_of) -> tuple:
    """(the hand-written side's Agreement with the truth, autograd's) for one tensor."""
    values = {w: values_of(run)[label] for w, run in runs.items() if label in values_of(run)}
    ours = measure(values["manual"], values["torch64"], 0, label, math.inf, math.inf)
    theirs = measure(values["torch"], values["torch64"], 0, label, math.inf, math.inf)
    return ours, theirs


def spread(name: str, first: list, again: list) -> str:
    """How far two runs of a half-precision forward at one point differ, in words, where they are not
    bit-identical but within the precision's rounding floor (a kernel with atomics sums in another
    order at each run); "" otherwise (identical, another precision, or farther: not rounding)."""
    if name not in HALF or all(np.array_equal(a, b) for a, b in zip(first, again)):
        return ""
    floor = tolerances.LOW_FLOOR * unit_roundoff(name)
    worst = [measure(a, b, 0, "output", floor, floor) for a, b in zip(first, again)]
    if not all(w.ok for w in worst):
        return ""
    return (f"two runs at the same point differ by up to {max(w.rel_err for w in worst):.2g} relative (not "
            f"bit-deterministic: atomics or another summation order); within {name} rounding, so a second "
            "run is checked too (manual~rerun), held to the same bounds")


def notes(name: str, runs: dict, spread_text: str = "") -> list[Note]:
    """The report's notes on the bounds of a check in precision `name` (not float64); for the half
    precisions, each gradient's error and autograd's, and their ratio."""
    if name not in HALF:
        return [Note("float32", f"float32: manual and torch are held to max({tolerances.FLOAT32_REL:g}, "
                     f"{tolerances.NOISE_FACTOR} x torch's own distance from torch64) per tensor; "
                     "the derivation is judged in float64 (manual64, torch64, fd, dir)")]
    judged = "in float64 (manual64, torch64, fd, dir)" if "manual64" in runs else \
        f"in {name} alone (your code has no float64 run)"
    lines = [f"{name}: the truth is autograd in float64 on float64 copies of the rounded inputs (torch64); "
             f"manual is held to max({tolerances.LOW_FACTOR} x torch's error against it, "
             f"{tolerances.LOW_FLOOR}u) per tensor; the derivation is judged {judged}"]
    floor = tolerances.LOW_FLOOR * unit_roundoff(name)
    out = [Note("precision", line) for line in lines + [spread_text] * bool(spread_text)]
    for label in runs["manual"].grads:
        ours, theirs = errors(runs, label, lambda run: run.grads)
        out.append(PrecisionError(label, name, (ours.rel_err, ours.elem_rel), (theirs.rel_err, theirs.elem_rel),
                                  tolerances.LOW_FACTOR, floor))
    return out
