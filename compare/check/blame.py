"""Which side a failure points at: finite differences of the hand-written forward as the arbiter
between the hand-written backward and autograd on the counterpart.

A witness is *supported* by the finite differences when it lies within their own error: the
rounding bound of ``compare.check.fd`` plus the truncation estimated from a second step 2h. Where the
hand-written side is supported and the torch side is not, the torch counterpart is the suspect (a
torch function whose derivative is not that of its values, such as softplus above its threshold);
where only the torch side is supported, the hand-written backward is. When the outputs themselves
differ, finite differences of the torch forward say whether torch's gradient is at least that of
its own function: then the two forwards compute different functions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compare.check import fd, tolerances
from compare.check.findings import BuffersDiffer, Float32Only, ForwardsDiffer, Suspect


def _norm(v) -> float:
    return float(np.linalg.norm(np.asarray(v, np.float64).reshape(-1)))


def _evidence(numeric, label: str, grads: list[np.ndarray]) -> list[tuple[list[float], float]]:
    """[(each witness's relative distance from the differences, their own relative error)], from
    the coordinates (when taken) and from the direction."""
    out = []
    coords = numeric.coords[label]
    if coords is not None:
        values, rounding = numeric.fd[label]
        values_2h = numeric.at_2h(label)[0]
        scale = max(_norm(values), *(_norm(w.reshape(-1)[coords]) for w in grads), tolerances.TINY)
        error = tolerances.difference_error(_norm(rounding), _norm(fd.truncation(values, values_2h))) / scale
        out.append(([_norm(w.reshape(-1)[coords] - values) / scale for w in grads], error))
    u = numeric.u[label]
    value, rounding = numeric.dir[label]
    value_2h = numeric.at_2h(label)[1]
    along = [float(np.dot(w.reshape(-1), u.reshape(-1))) for w in grads]
    scale = max(abs(value), *map(abs, along), tolerances.TINY)
    error = tolerances.difference_error(rounding, float(fd.truncation(value, value_2h))) / scale
    out.append(([abs(a - value) / scale for a in along], error))
    return out


def suspect(numeric, runs, exact, label: str) -> Suspect:
    """Which side finite differences of the hand-written forward support for `label`."""
    grads = [np.asarray(runs[w].grads[label], np.float64) for w in exact]
    evidence = _evidence(numeric, label, grads)
    supported = [all(d[i] <= e for d, e in evidence) for i in range(2)]
    d_m, d_t = (max(d[i] for d, _ in evidence) for i in range(2))
    error = max(e for _, e in evidence)
    side = {(True, False): "counterpart", (False, True): "yours", (False, False): "both"}.get(tuple(supported),
                                                                                              "neither")
    return Suspect(label, side, d_m, d_t, error)


def forwards(subject, numeric, runs, exact) -> ForwardsDiffer:
    """When the outputs differ: does each side's gradient belong to its own forward?"""
    torch_referee = subject.torch_referee()
    mine, theirs = [], []
    for label, u in numeric.u.items():
        for witness, referee, supported in ((exact[0], numeric.referee, mine), (exact[1], torch_referee, theirs)):
            value, rounding = fd.direction(referee.tensors[label], u, referee.evaluate, numeric.g, numeric.h)
            along = float(np.dot(np.asarray(runs[witness].grads[label], np.float64).reshape(-1), u.reshape(-1)))
            rel, _ = tolerances.finite_difference_bounds([along], [value], [rounding])
            if abs(along - value) <= rel * max(abs(along), abs(value), tolerances.TINY):
                supported.append(label)
    return ForwardsDiffer(tuple(mine), tuple(theirs), tuple(numeric.u), hasattr(subject, "layer"))


def findings(subject, numeric, runs, comparisons, exact) -> list:
    """What a failed check's comparisons show (``compare.check.findings`` objects)."""
    failing = {c.tensor for c in comparisons if not c.ok}
    # Where only the sum at ties fails (``compare.check.kinks.ties``), fd and dir at the kinks are no
    # evidence (central differences there are the mean of two sides); the one-sided differences
    # along the ties are, and torch's sum lay between them, or the sum would not have been judged.
    tied = {c.tensor: c for c in comparisons if not c.ok and c.b == "ties"}
    tied = {t: c for t, c in tied.items() if all(d.ok or d.b == "ties" for d in comparisons if d.tensor == t)}
    out = [suspect(numeric, runs, exact, label) if label not in tied else
           Suspect(label, "yours", tied[label].agreement.rel_err, 0.0, tied[label].agreement.allowed)
           for label in numeric.u if label in failing]
    outputs = [c for c in comparisons if not c.ok and c.tensor.startswith("output") and (c.a, c.b) == exact]
    if outputs:
        out.append(forwards(subject, numeric, runs, exact))
    if outputs and max(c.agreement.rel_err for c in outputs) > tolerances.FINITE_DIFF_REL:
        # Two different functions: torch's gradient disagreeing with your forward's differences is
        # no evidence against torch. Below what the differences resolve (softplus past torch's
        # threshold, outputs 2e-9 apart) your forward stands for torch's too, and the evidence holds.
        out = [dataclasses.replace(f, side="own forward") if isinstance(f, Suspect) and f.side == "counterpart"
               else f for f in out]
    buffers = sorted(t.removeprefix("buffer ") for t in failing if t.startswith("buffer "))
    if buffers:
        out.append(BuffersDiffer(tuple(buffers)))
    float32_only = [c for c in comparisons if not c.ok and c.a == "manual" and c.b in ("torch", "manual64")]
    if subject.float32 and float32_only and all(c.ok for c in comparisons if c.a in exact):
        out.append(Float32Only(tuple(dict.fromkeys(c.tensor for c in float32_only))))
    return out
