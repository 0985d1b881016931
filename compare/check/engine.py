"""The witnesses of a subject (``compare.check.subjects``), run and compared pair by pair.

1. Determinism: two forwards at the base point (and a second copy of the layer) must agree, on
   both sides; otherwise no gradient can be judged and the report says so instead.
2. One upstream gradient per output, g ~ N(0, 1) rounded to the output's dtype (seeded).
3. Analytic witnesses: manual and torch (float32 inputs: also manual64 and torch64); outputs,
   buffers after the forward, and every gradient compared.
4. Numeric witnesses, of the hand-written forward in float64 (``compare.fd``): fd, coordinate by
   coordinate within a budget, and dir, along a random direction, against each exact analytic
   witness.
5. Findings for what failed: which side the finite differences support (``blame``), and what
   kind of mistake each failing hand-written gradient is (``diagnose``).
6. On request, the self-test: the standard wrong variants of the hand-written gradients through
   the same comparisons, reusing every run that does not read them (``selftest``).
"""

from __future__ import annotations

import math

import numpy as np

from compare import fd, tolerances
from compare.agreement import count_differing, measure
from compare.check.report import Comparison, Report

# fd costs two forward passes per coordinate. A tensor gets every coordinate while 2·size forward
# passes stay within FD_BUDGET evaluated elements (a forward pass counted as the size of its
# outputs and of every tensor it reads), else a seeded sample of at most FD_SAMPLES coordinates,
# else (fewer than MIN_SAMPLES affordable: ~1M-element tensors) none: dir stands in.
FD_SAMPLES = 256
FD_BUDGET = 10_000_000
MIN_SAMPLES = 8


def output_labels(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output {i}" for i in range(n)]


def pair(label: str, shape, a: str, b: str, A, B, bounds, coords=None) -> Comparison:
    """Compare A (witness a) with B (witness b) within bounds (relative, elementwise); `coords`:
    the flat indices of the tensor that A and B were taken at."""
    agr = measure(A, B, 0, label, *bounds)
    index = agr.worst_index
    if coords is not None and len(coords):
        index = tuple(int(i) for i in np.unravel_index(coords[index[0]], shape))
    return Comparison(label, tuple(shape), a, b, agr, index, count_differing(A, B, agr), int(np.size(A)))


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


def probe(subject) -> tuple[list, str]:
    """(the hand-written outputs at the base point, why no verdict can be given or "")."""
    dtype = np.float32 if subject.float32 else np.float64
    first, again, other = subject.forwards_at_base()
    where = _differs(first, again, dtype) or _differs(first, other, dtype)
    if where:
        return first, (f"the hand-written forward is not deterministic: two forwards at the same point differ "
                       f"({where}); gradients cannot be checked against a function that changes between calls: "
                       "draw random numbers (a dropout mask) once, or create the parameters before the check")
    gs = [np.zeros(y.shape, y.dtype) for y in first]
    torch_a, torch_b = subject.torch(False, gs).outputs, subject.torch(False, gs).outputs
    where = _differs(torch_a, torch_b, dtype)
    if where:
        return first, (f"the torch counterpart is not deterministic: two calls at the same point differ ({where}); "
                       "a module that draws random numbers in training mode (nn.Dropout) gives another output at "
                       "every call: give a function with the random draws fixed, or the module in eval mode")
    return first, ""


# ------------------------------------------------------------------------------ the witnesses


def analytic(subject, gs) -> dict:
    """{witness: Run} of manual and torch (and manual64, torch64 for float32 inputs)."""
    runs = {"manual": subject.manual(False, gs), "torch": subject.torch(False, gs)}
    if subject.float32:
        gs64 = [g.astype(np.float64) for g in gs]
        runs["manual64"], runs["torch64"] = subject.manual(True, gs64), subject.torch(True, gs64)
    return runs


def _values(run, kind: str) -> dict:
    """label -> array of one kind of tensor in a Run: outputs, buffers or gradients."""
    if kind == "output":
        return dict(zip(output_labels(len(run.outputs)), run.outputs))
    if kind == "buffer":
        return {f"buffer {n}": b for n, b in run.buffers.items()}
    return run.grads


def compare_analytic(subject, runs) -> list[Comparison]:
    """Outputs, buffers and gradients between the analytic witnesses. float32 pairs may differ by
    float32 rounding, which grows with the conditioning of the function: they are held to
    ``tolerances.float32_bounds`` of how far torch's own float32 result is from float64."""
    exact = (tolerances.gradient_rel(np.float64), tolerances.elementwise_rel(np.float64))
    out = []
    for kind in ("output", "buffer", "grad"):
        per_witness = {w: _values(run, kind) for w, run in runs.items()}
        for label in per_witness["manual"]:
            values = {w: v[label] for w, v in per_witness.items()}
            pairs = [("manual", "torch", exact)]
            if subject.float32:
                noise = measure(values["torch"], values["torch64"], 0, label, math.inf, math.inf)
                rounding = tolerances.float32_bounds(noise.rel_err, noise.elem_rel)
                pairs = [("manual", "torch", rounding), ("manual", "manual64", rounding),
                         ("manual64", "torch64", exact)]
            out += [pair(label, values[a].shape, a, b, values[a], values[b], bounds) for a, b, bounds in pairs]
    return out


class Numeric:
    """fd and dir of every differentiated tensor, on the hand-written forward in float64."""

    def __init__(self, subject, gs, rng: np.random.Generator, h: float, fd_samples: int, fd_budget: int):
        self.referee, self.h = subject.referee(), h
        self.g = np.concatenate([np.asarray(g, np.float64).reshape(-1) for g in gs])
        cost = self.g.size + sum(t.size for t in self.referee.tensors.values())
        self.u, self.coords, self.fd, self.dir, self.twice = {}, {}, {}, {}, {}
        for label, t in self.referee.tensors.items():
            self.u[label] = rng.standard_normal(t.shape)
            self.coords[label] = fd.choose(t.size, fd_budget // (2 * max(cost, 1)), fd_samples, MIN_SAMPLES, rng)
            if self.coords[label] is not None:
                self.fd[label] = fd.coordinates(t, self.coords[label], self.referee.evaluate, self.g, h)
            self.dir[label] = fd.direction(t, self.u[label], self.referee.evaluate, self.g, h)

    def at_2h(self, label: str):
        """(fd values, dir value) of `label` with the step 2h, taken once: from them
        ``compare.fd.truncation`` estimates the differences' truncation error."""
        if label not in self.twice:
            t, coords, evaluate = self.referee.tensors[label], self.coords[label], self.referee.evaluate
            values = None if coords is None else fd.coordinates(t, coords, evaluate, self.g, 2 * self.h)[0]
            self.twice[label] = values, fd.direction(t, self.u[label], evaluate, self.g, 2 * self.h)[0]
        return self.twice[label]

    def _compare(self, label, grads, exact, widen: bool) -> list[Comparison]:
        """Each exact witness against fd and dir of one tensor; with `widen`, the differences' own
        error includes their truncation, estimated from the step 2h."""
        t, coords, out = self.referee.tensors[label], self.coords[label], []
        fd_2h, dir_2h = self.at_2h(label) if widen else (None, None)
        if coords is not None:
            values, rounding = self.fd[label]
            error = rounding + 3 * fd.truncation(values, fd_2h) if widen else rounding
            for w in exact:
                at = grads[w].reshape(-1)[coords]
                bounds = tolerances.finite_difference_bounds(at, values, error)
                out.append(pair(label, t.shape, w, "fd", at, values, bounds, coords))
        value, rounding = self.dir[label]
        error = rounding + 3 * float(fd.truncation(value, dir_2h)) if widen else rounding
        for w in exact:
            along = np.array([float(np.dot(grads[w].reshape(-1), self.u[label].reshape(-1)))])
            bounds = tolerances.finite_difference_bounds(along, [value], [error])
            agr = measure(along, np.array([value]), 0, label, *bounds)
            out.append(Comparison(label, tuple(t.shape), w, "dir", agr, (), int(not agr.ok), 1))
        return out

    def compare(self, runs, exact, labels=None) -> tuple[list[Comparison], list[str]]:
        """Each exact witness against fd and dir (of `labels`, default every tensor); notes on
        coverage and on tensors the forward ignores.

        FINITE_DIFF_REL assumes the truncation error h²·f‴/6 small against the derivative, which
        fails where the derivative cancels to almost nothing while f‴ does not: a comparison that
        fails is taken a second time with the truncation estimated from a second step 2h."""
        out, coverage, notes = [], [], []
        for label in self.referee.tensors if labels is None else labels:
            t = self.referee.tensors[label]
            grads = {w: np.asarray(runs[w].grads[label], np.float64) for w in exact}
            coords = self.coords[label]
            first = self._compare(label, grads, exact, widen=False)
            if all(c.ok for c in first):
                out += first
            else:
                again = self._compare(label, grads, exact, widen=True)
                out += again
                if sum(c.ok for c in again) > sum(c.ok for c in first):
                    notes.append(f"note: {label}: the finite differences' truncation error, estimated from a second "
                                 "step "
                                 f"2h, exceeded FINITE_DIFF_REL's allowance and was allowed for")
            value, rounding = self.dir[label]
            coverage.append(f"{label} {'-' if coords is None else len(coords)}/{t.size}")
            if value == 0 and rounding == 0 and any(np.any(d) for d in grads.values()):
                notes.append(f"note: moving {label} did not change the output at all; forward must read it from the "
                             "array checked (a parameter: the array in layer.params)")
        head = f"fd coordinates: {', '.join(coverage)}"
        if any(c is None for c in self.coords.values()):
            head += " ('-': too large for per-coordinate differences; dir stands in)"
        return out, [head, *notes]


# ------------------------------------------------------------------------------ the check


def draws(seed: int) -> np.random.Generator:
    """The generator of g, the directions and the fd coordinates: a child of ``seed``'s
    SeedSequence, not ``default_rng(seed)`` itself, whose first draws users take for their inputs
    (``x = default_rng(0).standard_normal(shape)``). A g equal to x is a point where a normalising
    layer's VJP cancels to rounding noise, and no relative bound holds there."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _notes(subject, runs) -> list[str]:
    """What the hand-written side wrote into its arguments (each witness had its own copy, so every
    witness saw the same values), and what was not compared."""
    seen = dict.fromkeys(n for w in ("manual", "manual64") if w in runs for n in runs[w].notes)
    notes = [f"note: {n} (each witness had its own copy: all saw the same values)" for n in seen]
    counters = getattr(subject, "unmatched_buffers", [])
    if counters:
        notes.append(f"note: the module's integer buffers {', '.join(counters)} are not compared (counters the "
                     "layer need not hold)")
    return notes


def check(subject, seed: int, h: float, fd_samples: int, fd_budget: int, self_test: bool = False) -> Report:
    """Every witness of every tensor of `subject`, compared pair by pair, with the findings: which
    side is the suspect (``blame``) and what kind of mistake it is (``diagnose``); with
    `self_test`, the standard wrong variants of the hand-written gradients through the same
    comparisons (``selftest``)."""
    from compare.check import blame, diagnose, selftest

    rng = draws(seed)
    first, refusal = probe(subject)
    if refusal:
        tested = selftest.not_run("the check gave no verdict") if self_test else None
        return Report(subject.title, [], [], refusal=refusal, self_test=tested)
    gs = [np.asarray(rng.standard_normal(y.shape)).astype(y.dtype) for y in first]
    runs = analytic(subject, gs)
    comparisons = compare_analytic(subject, runs)
    exact = ("manual64", "torch64") if subject.float32 else ("manual", "torch")
    numeric = Numeric(subject, gs, rng, h, fd_samples, fd_budget)
    more, coverage = numeric.compare(runs, exact)
    comparisons += more
    notes = _notes(subject, runs) + coverage
    if subject.float32:
        notes.append(f"float32: manual and torch are held to max({tolerances.FLOAT32_REL:g}, "
                     f"{tolerances.NOISE_FACTOR} x torch's own distance from torch64) per tensor; "
                     "the derivation is judged in float64 (manual64, torch64, fd, dir)")
    failed = any(not c.ok for c in comparisons)
    findings = blame.findings(subject, numeric, runs, comparisons, exact) if failed else []
    reruns = diagnose.Reruns(subject, gs, seed, runs)
    diagnoses = diagnose.diagnose(subject, comparisons, exact, findings, reruns) if failed else {}
    findings += [d.line() for d in diagnoses.values()]
    tested = selftest.run(subject, runs, numeric, comparisons, exact, reruns) if self_test else None
    shapes = ", ".join(str(g.shape) for g in gs)
    title = (f"{subject.title}: {'float32' if subject.float32 else 'float64'}, seed {seed}, "
             f"g of shape{'s' * (len(gs) > 1)} {shapes}")
    return Report(title, comparisons, notes, findings, self_test=tested, diagnoses=diagnoses)
