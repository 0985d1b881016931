"""The referee's words: every finding of ``compare.check.findings`` rendered here, and only here,
one fact per line (as ``torch.testing``'s mismatch message); aligned columns for the table."""

from __future__ import annotations

import math
from typing import Sequence

from compare.check.findings import (BuffersDiffer, Diagnosis, Failure, Float32Only, ForwardsDiffer, Note,
                                    OutputsDiffer, PrecisionError, Suspect)


def format_table(rows: Sequence[Sequence[str]], align: str = "r") -> str:
    """Text columns, two spaces apart, each as wide as its widest cell.

    Args:
        rows: the header row first, then the data rows; every cell a str.
        align: one character per column, "l" (left) or "r" (right), or one character for all.
    Returns:
        the table, one line per row, without trailing spaces.
    """
    n = max(len(r) for r in rows)
    align = align * n if len(align) == 1 else align
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(n)]
    just = [str.ljust if a == "l" else str.rjust for a in align]
    return "\n".join("  ".join(j(cell, w) for cell, w, j in zip(r, widths, just)).rstrip() for r in rows)


# ------------------------------------------------------------------------------ a failing comparison


def head(f: Failure) -> str:
    """"parameter W (3, 4): manual vs torch"."""
    return f"{f.tensor}{f' {tuple(f.shape)}' if f.shape else ''}: {f.witnesses[0]} vs {f.witnesses[1]}"


def _measure(m) -> str:
    name = m.name if m.name != "elementwise error" else "elementwise error (greatest difference / greatest magnitude)"
    return f"{name} {m.value:.3g} {'<=' if m.ok else '>'} allowed {m.bound:.2g}"


def facts(f: Failure) -> list[str]:
    """The facts of one comparison, each a line: the measures (failing first) against their
    bounds, how many elements differ, the greatest difference with its index and both values, the
    cosine similarity."""
    a, b = f.witnesses
    g = f.greatest
    if f.problem:
        return [f.problem]
    if not (math.isfinite(g.ours) and math.isfinite(g.theirs)):
        return [f"non-finite value at index {g.index} ({a} {g.ours:.6g}, {b} {g.theirs:.6g})"]
    if f.what == "direction":
        return [f"along a random direction u, <{a}, u> = {g.ours:.6g} but the central difference gives "
                f"{g.theirs:.6g}", *map(_measure, f.measures)]
    if f.what == "ties":
        return [f"along u = ±1 at the {f.compared} kinks where yours takes a whole one-sided derivative or a share "
                f"of one (1 where it moves up, −1 down), <{a}, u> = {g.ours:.6g} but the one-sided derivatives of "
                f"your forward along u give {g.theirs:.6g}: moved together these kinks do not add up (a tie, or one "
                "kink shared by several elements), where each convention's do",
                *map(_measure, f.measures)]
    lines = [_measure(m) for m in sorted(f.measures, key=lambda m: m.ok)]
    if f.differ is not None:
        elem = next(m.bound for m in f.measures if m.name == "elementwise error")
        lines.append(f"{f.differ} of {f.compared} {f.what} differ by more than {elem:.2g} of the greatest "
                     f"magnitude {f.peak:.3g}")
    return lines + [f"greatest absolute difference {g.diff:.3g} at index {g.index} ({a} {g.ours:.6g}, "
                    f"{b} {g.theirs:.6g})", f"cosine similarity {f.cosine:.6f}"]


def one_line(f: Failure) -> str:
    """The comparison on one line (the training loop's per-parameter message)."""
    return f"{head(f)}: {'; '.join(facts(f))}"


def failure(f: Failure, indent: str = "  ") -> list[str]:
    """The comparison, its head on one line and each fact on a line of its own below it."""
    return [indent + head(f), *(indent + "  " + x for x in facts(f))]


# ------------------------------------------------------------------------------ the findings


def _suspect(s: Suspect) -> str:
    own = f"the differences' own error is about {s.error:.1g}"
    if s.side == "counterpart":
        return (f"suspect: the torch counterpart, for {s.tensor}: the torch counterpart disagrees with finite "
                f"differences of your forward (relative distance {s.counterpart:.2g}; {own}); your backward "
                f"agrees with them ({s.yours:.2g})")
    if s.side == "own forward":
        return (f"for {s.tensor}: your backward is the derivative of your own forward (finite differences of it "
                f"agree, {s.yours:.2g}; {own}) and torch's gradient is not ({s.counterpart:.2g}), as the two forwards "
                "differ: the check cannot tell which forward is right")
    if s.side == "yours":
        return (f"suspect: your backward, for {s.tensor}: finite differences of your forward agree with the torch "
                f"counterpart ({s.counterpart:.2g}) and not with your backward (relative distance {s.yours:.2g}; "
                f"{own})")
    if s.side == "both":
        return (f"suspect: both sides, for {s.tensor}: finite differences of your forward agree neither with your "
                f"backward ({s.yours:.2g}) nor with the torch counterpart ({s.counterpart:.2g}; {own}): if the "
                "outputs differ, the two compute different functions; else the forward may not be smooth here (a "
                "kink or a threshold within the step) or read state the check cannot move")
    return (f"no suspect for {s.tensor}: finite differences of your forward lie within their own error (about "
            f"{s.error:.1g}) of both your backward ({s.yours:.2g}) and the torch counterpart ({s.counterpart:.2g}), "
            "so they cannot tell which is right at this precision")


def _forwards(f: ForwardsDiffer) -> str:
    def which(labels):
        return "every gradient" if len(labels) == len(f.tensors) else ", ".join(labels) if labels else "no gradient"

    where = "the counterpart's layouts (torch_params, torch_inputs, torch_outputs), " if f.layer else "torch_fn's "
    return (f"the outputs differ (above: where and by how much); your backward agrees with finite differences of "
            f"your forward for {which(f.yours)}; torch's gradient agrees with finite differences of the torch "
            f"forward for {which(f.counterpart)}. Where both hold, the two forwards compute different functions and "
            f"the check cannot tell which is right: compare your forward with its formula, and look at {where}"
            "constants and defaults")


def _note(n: Note) -> str:
    if n.kind in ("coverage", "float32", "precision", "forward only"):
        return n.text
    if n.kind == "wrote":
        return f"note: {n.text} (each witness had its own copy: all saw the same values)"
    return f"note: {n.text}"


def _precision(p: PrecisionError) -> str:
    """"input z: error against the float64 truth 0.0015 (elementwise 0.0026); autograd's in bfloat16
    0.0021 (elementwise 0.0044): 0.73x what autograd makes in bfloat16 (elementwise 0.59x); ..."."""
    (yr, ye), (ar, ae), (rr, re) = p.yours, p.autograd, p.ratio
    return (f"{p.tensor}: error against the float64 truth {yr:.2g} (elementwise {ye:.2g}); autograd's in "
            f"{p.precision} {ar:.2g} (elementwise {ae:.2g}): {rr:.2g}x what autograd makes in {p.precision} "
            f"(elementwise {re:.2g}x); allowed {p.factor:g}x, or {p.floor:.2g}")


_LINES = {
    PrecisionError: _precision,
    Suspect: _suspect,
    ForwardsDiffer: _forwards,
    OutputsDiffer: lambda f: ("the two forwards differ at the same point: the check cannot tell which is right; look "
                              "at the forward and at how the counterpart is set up (its mode, constants and defaults)"),
    BuffersDiffer: lambda f: (f"the buffers {', '.join(f.buffers)} differ after one forward from the same values: "
                              "the forward updates its state by another rule than the counterpart (the momentum, a "
                              "biased or unbiased variance, what is averaged)"),
    Float32Only: lambda f: ("the derivation agrees in float64; the float32 run is farther from it than float32 "
                            "rounding allows: look for a cancellation, or a constant or intermediate kept in float32"),
    Diagnosis: lambda d: f"diagnosis: {d.tensor}: {d.text}",
    Note: _note,
}


def line(finding) -> str:
    """One finding (a ``Suspect``, ``Diagnosis``, ``Note``, ...) in words."""
    return _LINES[type(finding)](finding)


def failures(failed: Sequence[Failure], findings: Sequence) -> list[str]:
    """Each failing tensor: its comparisons, one fact per line, then its suspect and diagnosis;
    then the findings of no one tensor (the outputs, the buffers, float32)."""
    lines, tensors = [], list(dict.fromkeys(f.tensor for f in failed))
    for tensor in tensors:
        for f in failed:
            if f.tensor == tensor:
                lines += failure(f)
        lines += ["    " + line(x) for x in findings if getattr(x, "tensor", None) == tensor]
    return lines + [line(x) for x in findings if getattr(x, "tensor", None) not in tensors]
