"""The witnesses of a subject (``compare.check.subjects``), run and compared pair by pair.

1. Determinism: two forwards at the base point (and a second copy of the layer) must agree, on
   both sides; otherwise no gradient can be judged and the report says so instead.
2. One upstream gradient per output, g ~ N(0, 1) rounded to the output's dtype (seeded).
3. Analytic witnesses: manual and torch (float32 inputs: also manual64 and torch64); outputs,
   buffers after the forward, and every gradient compared.
4. Numeric witnesses, of the hand-written forward in float64 (``compare.check.fd``): fd, coordinate by
   coordinate within a budget, and dir, along a random direction, against each exact analytic
   witness.
5. Findings for what failed: which side the finite differences support (``blame``), and what
   kind of mistake each failing hand-written gradient is (``diagnose``).
6. On request, the self-test: the standard wrong variants of the hand-written gradients through
   the same comparisons, reusing every run that does not read them (``selftest``).
"""

from __future__ import annotations

import numpy as np

from compare.check import blame, diagnose, forward_only, kinks, layouts, precision, selftest, tolerances
from compare.check.findings import Note
from compare.check.measure import measure
from compare.check.report import NOTHING, Report
from compare.check.witnesses import (FD_BUDGET, FD_SAMPLES, LeftOut, Numeric, analytic,  # noqa: F401
                                     compare_analytic, compare_more, output_labels, rerun)

# ------------------------------------------------------------------------------ determinism


def _differs(a: list, b: list, dtype) -> str:
    """Where two forwards' outputs differ beyond rounding, in words ("" when they agree)."""
    bound = tolerances.gradient_rel(dtype)
    for label, ya, yb in zip(output_labels(len(a)), a, b):
        agr = measure(ya, yb, 0, label, bound, tolerances.elementwise_rel(dtype))
        if not agr.ok:
            return (f"{label}: greatest difference {agr.max_abs:.3g} at index {agr.worst_index} "
                    f"({agr.a_value:.6g} then "
                    f"{agr.b_value:.6g}), relative error {agr.rel_err:.3g}")
    return ""


def probe(subject) -> tuple[list, str, str]:
    """(the hand-written outputs at the base point, why no verdict can be given or "", how far two
    runs of a half-precision forward differ where they are not bit-identical, or "")."""
    dtype = np.float32 if subject.float32 else np.float64
    first, again, other = subject.forwards_at_base()
    spread = precision.spread(subject.precision, first, again) or precision.spread(subject.precision, first, other)
    where = "" if spread else _differs(first, again, dtype) or _differs(first, other, dtype)
    if where:
        fix = ("draw random numbers (a dropout mask) once, or create the parameters before the check"
               if hasattr(subject, "layer") else "draw random numbers (a dropout mask) once, outside the function, "
               "and pass them in as an input")
        return first, (f"the hand-written forward is not deterministic: two forwards at the same point differ "
                       f"({where}); gradients cannot be checked against a function that changes between calls: "
                       f"{fix}; state carried from one call to the next (a recurrent cell that keeps h, a step "
                       "counter) changes the forward too: pass that state in as an input, or reset it at the start "
                       "of forward"), ""
    gs = [np.zeros(y.shape, y.dtype) for y in first]
    torch_a, torch_b = subject.torch(False, gs).outputs, subject.torch(False, gs).outputs
    where = _differs(torch_a, torch_b, dtype)
    if where:
        return first, (f"the torch counterpart is not deterministic: two calls at the same point differ ({where}); "
                       "a module that draws random numbers in training mode (nn.Dropout) gives another output at "
                       "every call: give a function with the random draws fixed, or the module in eval mode"), ""
    return first, "", spread


def nothing_to_compare(subject, outputs=None) -> str:
    """Why the check would compare nothing, or "": every differentiated tensor (float inputs and
    parameters) has 0 elements, or every output has (then every gradient is zero, whatever the
    derivation). A check that compared nothing cannot have failed, so it must not pass."""
    sizes = {lab: a.size for lab, a, d in zip(subject.input_labels, subject.pristine, subject.differentiable) if d}
    sizes.update({f"parameter {n}": p.size for n, p in subject.params.items()})
    empty = [lab for lab, n in sizes.items() if n == 0]
    if outputs is not None and all(y.size == 0 for y in outputs):
        labels = output_labels(len(outputs))
        return (f"{NOTHING} ({' and '.join(labels)} {'has' if len(labels) == 1 else 'have'} 0 elements: every "
                "gradient of an empty output is zero, whatever the derivation); give inputs with elements")
    if sizes and len(empty) == len(sizes):
        return (f"{NOTHING} ({' and '.join(empty)} {'has' if len(empty) == 1 else 'have'} 0 elements); give inputs "
                "with elements")
    return ""


# ------------------------------------------------------------------------------ the check


def draws(seed: int) -> np.random.Generator:
    """The generator of g, the directions and the fd coordinates: a child of ``seed``'s
    SeedSequence, not ``default_rng(seed)`` itself, whose first draws users take for their inputs
    (``x = default_rng(0).standard_normal(shape)``). A g equal to x is a point where a normalising
    layer's VJP cancels to rounding noise, and no relative bound holds there."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _notes(subject, runs) -> list[Note]:
    """What the hand-written side wrote into its arguments (each witness had its own copy, so every
    witness saw the same values), and what was not compared."""
    seen = dict.fromkeys(n for w in ("manual", "manual64") if w in runs for n in runs[w].notes)
    notes = [Note("wrote", n) for n in seen]
    held = getattr(subject, "constant", [])
    if held:
        notes.append(Note("constant", f"{', '.join(held)} held constant (data, not differentiated)"))
    if getattr(subject, "fixed", None):
        notes.append(layouts.fixed_note(subject.fixed))
    counters = getattr(subject, "unmatched_buffers", [])
    if counters:
        notes.append(Note("counters", f"the module's integer buffers {', '.join(counters)} are not compared "
                          "(counters the layer need not hold)"))
    return notes


def check(subject, seed: int, h: float, fd_samples: int, fd_budget: int, self_test: bool = False,
          others: dict | None = None) -> Report:
    """Every witness of every tensor of `subject`, compared pair by pair, with the findings: which
    side is the suspect (``blame``) and what kind of mistake it is (``diagnose``); with
    `self_test`, the standard wrong variants of the hand-written gradients through the same
    comparisons (``selftest``); `others`, {witness: function of the upstream gradients (float64) ->
    {tensor: gradient}}: other analytic witnesses, each compared with the exact pair
    (``witnesses.compare_more``)."""
    rng = draws(seed)
    refusal = nothing_to_compare(subject)
    if not refusal:
        first, refusal, spread = probe(subject)
        refusal = refusal or nothing_to_compare(subject, first)
    if refusal:
        tested = selftest.not_run("the check gave no verdict") if self_test else None
        return Report(subject.title, [], [], refusal=refusal, self_test=tested)
    if getattr(subject, "forward_only", ""):
        return forward_only.check(subject, first, seed, subject.forward_only)
    gs = [subject.rounded(i, np.asarray(rng.standard_normal(y.shape)).astype(y.dtype)) for i, y in enumerate(first)]
    try:
        runs = analytic(subject, gs)
    except forward_only.NoBackward as e:
        return forward_only.check(subject, first, seed, str(e))
    comparisons = compare_analytic(subject, runs)
    if spread:  # not bit-deterministic: a second run, held to the precision's bounds like the first
        comparisons += rerun(subject, runs, subject.manual(False, gs))
    exact = ("manual64", "torch64") if subject.float32 else ("manual", "torch")
    half_only = getattr(subject, "half_only", "")
    if half_only:  # the user's code runs in no float64: its low-precision run is the one to judge
        exact = ("manual", "torch64")
    numeric = LeftOut(half_only) if half_only else Numeric(subject, gs, rng, h, fd_samples, fd_budget)
    gs64 = [np.asarray(g, np.float64) for g in gs]
    comparisons += compare_more(runs, {w: f(gs64) for w, f in (others or {}).items()}, exact)
    more, coverage = numeric.compare(runs, exact)
    comparisons += more
    if any(not c.ok for c in comparisons):  # at a kink torch's gradient is a convention, not the reference
        precise = exact[1].endswith("64")
        comparisons, at_kinks = kinks.judge(numeric, runs, comparisons, exact,
                                            lambda replace: subject.torch(precise, gs64 if precise else gs, replace))
        coverage += at_kinks
    notes = _notes(subject, runs) + coverage
    if subject.float32:
        notes += precision.notes(subject.precision, runs, spread)
    failed = any(not c.ok for c in comparisons)
    findings = blame.findings(subject, numeric, runs, comparisons, exact) if failed else []
    reruns = diagnose.Reruns(subject, gs, seed, runs)
    findings += diagnose.diagnose(subject, comparisons, exact, findings, reruns).values() if failed else []
    tested = selftest.run(subject, runs, numeric, comparisons, exact, reruns) if self_test else None
    shapes = ", ".join(str(g.shape) for g in gs)
    title = (f"{subject.title}: {subject.precision}, seed {seed}, "
             f"g of shape{'s' * (len(gs) > 1)} {shapes}")
    return Report(title, comparisons, notes, findings, self_test=tested)
