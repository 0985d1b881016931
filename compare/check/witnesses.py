"""The witnesses of a subject's gradients and how each pair is compared: the analytic ones (the
hand-written pass and autograd, float32 inputs also in float64) tensor by tensor, and the numeric
ones (``Numeric``: fd coordinate by coordinate, dir along a random direction) on the hand-written
forward in float64."""

from __future__ import annotations

import math

import numpy as np

from compare.check import fd, precision, tolerances
from compare.check.findings import Note
from compare.check.measure import count_differing, measure
from compare.check.report import Comparison

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


# ------------------------------------------------------------------------------ the witnesses


def analytic(subject, gs) -> dict:
    """{witness: Run} of manual and torch (and manual64, torch64 for float32 inputs)."""
    runs = {"manual": subject.manual(False, gs), "torch": subject.torch(False, gs)}
    if subject.float32:
        gs64 = [g.astype(np.float64) for g in gs]
        runs["torch64"] = subject.torch(True, gs64)
        if not getattr(subject, "half_only", ""):  # a kernel that runs in no float64 has no manual64
            runs["manual64"] = subject.manual(True, gs64)
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
            rounding = None
            if subject.float32:
                noise = measure(values["torch"], values["torch64"], 0, label, math.inf, math.inf)
                rounding = precision.bounds(subject.precision, noise.rel_err, noise.elem_rel)
            pairs = precision.pairs(subject.precision, rounding, exact, "manual64" in values)
            out += [pair(label, values[a].shape, a, b, values[a], values[b], bounds) for a, b, bounds in pairs]
    return out


def compare_more(runs, more: dict, exact: tuple[str, str]) -> list[Comparison]:
    """Other analytic witnesses (`more`: {witness: {tensor: gradient}}, in float64) between the
    exact pair, at the float64 bounds: exact[0] ~ witness and witness ~ exact[1] per tensor."""
    bounds = (tolerances.gradient_rel(np.float64), tolerances.elementwise_rel(np.float64))
    out = []
    for name, grads in more.items():
        for label, g in grads.items():
            a, b = (np.asarray(runs[w].grads[label], np.float64) for w in exact)
            out += [pair(label, g.shape, exact[0], name, a, g, bounds),
                    pair(label, g.shape, name, exact[1], g, b, bounds)]
    return out


def rerun(subject, runs: dict, again) -> list[Comparison]:
    """A second hand-written run of a half-precision kernel that is not bit-deterministic, against
    the first: each tensor held to the precision's bounds (``precision.bounds`` of autograd's error)."""
    out = []
    for kind in ("output", "grad"):
        first, second, noise = _values(runs["manual"], kind), _values(again, kind), _values(runs["torch"], kind)
        truth = _values(runs["torch64"], kind)
        for label, a in first.items():
            agr = measure(noise[label], truth[label], 0, label, math.inf, math.inf)
            bounds = precision.bounds(subject.precision, agr.rel_err, agr.elem_rel)
            out.append(pair(label, a.shape, "manual", "rerun", a, second[label], bounds))
    return out


class LeftOut:
    """No numeric witness: the hand-written forward runs in no float64 (``half_only``), and finite
    differences of a half-precision forward would measure its rounding, not its derivative."""

    def __init__(self, reason: str):
        self.reason, self.u, self.coords = reason, {}, {}

    def compare(self, runs, exact, labels=None) -> tuple[list[Comparison], list]:
        return [], [Note("coverage", f"fd and dir left out: {self.reason}; your result is judged against the float64 "
                                     "truth (torch64) alone")]


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

    def at_2h(self, label: str, kinds=("fd", "dir")):
        """(fd values, dir value) of `label` with the step 2h (of `kinds`, None for the others),
        each taken once: from them ``compare.check.fd.truncation`` estimates the differences'
        truncation error."""
        t, coords, evaluate = self.referee.tensors[label], self.coords[label], self.referee.evaluate
        if "fd" in kinds and (label, "fd") not in self.twice:  # two forwards per coordinate: only when asked
            self.twice[(label, "fd")] = None if coords is None else \
                fd.coordinates(t, coords, evaluate, self.g, 2 * self.h)[0]
        if "dir" in kinds and (label, "dir") not in self.twice:
            self.twice[(label, "dir")] = fd.direction(t, self.u[label], evaluate, self.g, 2 * self.h)[0]
        return self.twice.get((label, "fd")), self.twice.get((label, "dir"))

    def _compare(self, label, grads, exact, widen=()) -> list[Comparison]:
        """Each exact witness against fd and dir of one tensor; for the kinds in `widen` ("fd",
        "dir"), the differences' own error includes their truncation, estimated from the step 2h."""
        t, coords, out = self.referee.tensors[label], self.coords[label], []
        fd_2h, dir_2h = self.at_2h(label, widen)
        if coords is not None:
            values, rounding = self.fd[label]
            error = tolerances.difference_error(rounding, fd.truncation(values, fd_2h)) if "fd" in widen else rounding
            for w in exact:
                at = grads[w].reshape(-1)[coords]
                bounds = tolerances.finite_difference_bounds(at, values, error)
                out.append(pair(label, t.shape, w, "fd", at, values, bounds, coords))
        value, rounding = self.dir[label]
        error = tolerances.difference_error(rounding, float(fd.truncation(value, dir_2h))) if "dir" in widen \
            else rounding
        for w in exact:
            along = np.array([float(np.dot(grads[w].reshape(-1), self.u[label].reshape(-1)))])
            bounds = tolerances.finite_difference_bounds(along, [value], [error])
            agr = measure(along, np.array([value]), 0, label, *bounds)
            out.append(Comparison(label, tuple(t.shape), w, "dir", agr, (), int(not agr.ok), 1))
        return out

    def compare(self, runs, exact, labels=None) -> tuple[list[Comparison], list[Note]]:
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
            first = self._compare(label, grads, exact)
            if all(c.ok for c in first):
                out += first
            else:
                again = self._compare(label, grads, exact, widen={c.b for c in first if not c.ok})
                out += again
                if sum(c.ok for c in again) > sum(c.ok for c in first):
                    notes.append(Note("truncation", f"{label}: the finite differences' truncation error, estimated "
                                      "from a second step 2h, exceeded FINITE_DIFF_REL's allowance and was allowed for"))
            value, rounding = self.dir[label]
            coverage.append(f"{label} {'-' if coords is None else len(coords)}/{t.size}")
            if value == 0 and rounding == 0 and any(np.any(d) for d in grads.values()):
                notes.append(Note("unmoved", f"moving {label} did not change the output at all; forward must read it "
                                  "from the array checked (a parameter: the array in layer.params)"))
        head = f"fd coordinates: {', '.join(coverage)}"
        if any(c is None for c in self.coords.values()):
            head += " ('-': too large for per-coordinate differences; dir stands in)"
        return out, [Note("coverage", head), *notes]
