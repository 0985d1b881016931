"""The forward and the buffers alone, where a layer has no backward to check: evaluation mode of a
layer that only trains (a batch norm whose ``forward`` in test mode keeps no cache), or an
(out, cache) forward that returns no cache.

The outputs and the buffers after one forward are compared between the analytic witnesses as in a
full check (``compare.check.witnesses.compare_analytic``, the same bounds); no gradient is, and
the report says so in its first note, with the reason.
"""

from __future__ import annotations

import numpy as np

from compare.check.findings import BuffersDiffer, Note, OutputsDiffer
from compare.check.report import Report
from compare.check.witnesses import compare_analytic


class NoBackward(Exception):
    """The layer has no backward at this point (its message says why): check the forward alone."""


def _without_grads(run):
    run.grads = {}
    return run


def check(subject, first: list, seed: int, reason: str) -> Report:
    """The outputs and buffers of `subject`'s witnesses compared, `first` the hand-written outputs at
    the base point (the determinism probe's)."""
    gs = [np.zeros(y.shape, y.dtype) for y in first]
    runs = {"manual": subject.manual(False, gs, backward=False), "torch": _without_grads(subject.torch(False, gs))}
    if subject.float32:
        gs64 = [g.astype(np.float64) for g in gs]
        runs["manual64"] = subject.manual(True, gs64, backward=False)
        runs["torch64"] = _without_grads(subject.torch(True, gs64))
    comparisons = compare_analytic(subject, runs)
    notes = [Note("forward only", f"forward only: {reason}; the outputs and the buffers are compared, no gradient is "
                  "checked")]
    findings = []
    outputs = tuple(dict.fromkeys(c.tensor for c in comparisons if not c.ok and c.tensor.startswith("output")))
    if outputs:
        findings.append(OutputsDiffer(outputs))
    buffers = sorted({c.tensor.removeprefix("buffer ") for c in comparisons if not c.ok and c.tensor.startswith("buffer")})
    if buffers:
        findings.append(BuffersDiffer(tuple(buffers)))
    title = f"{subject.title}: {'float32' if subject.float32 else 'float64'}, seed {seed}, forward only"
    return Report(title, comparisons, notes, findings)
