"""What a check found: a ``Comparison`` per tensor and pair of witnesses, the ``Report`` that holds
them with the check's notes and findings (objects of ``compare.check.findings``), and
``DerivationError``, the AssertionError of ``Report.assert_ok``. Every line of text comes from
``compare.check.text``."""

from __future__ import annotations

import dataclasses

from compare.check import text
from compare.check.findings import Diagnosis, Failure, Suspect
from compare.check.measure import Agreement, failure

# The refusal of a check that would have compared nothing (empty tensors): never a PASS.
NOTHING = "nothing to compare"

# The table's columns, in this order where present.
COLUMNS = [("manual", "torch64"), ("manual", "torch"), ("manual", "manual64"), ("manual64", "torch64"), ("manual", "fd"),
           ("torch", "fd"), ("manual64", "fd"), ("torch64", "fd"), ("manual", "dir"), ("torch", "dir"),
           ("manual64", "dir"), ("torch64", "dir"), ("manual", "rerun")]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One tensor as two witnesses (`a`, `b`) see it, measured by ``compare.check.measure.measure``."""

    tensor: str  # "output", "input x", "parameter W", "buffer running_var"
    shape: tuple  # the tensor's shape
    a: str
    b: str
    agreement: Agreement
    index: tuple  # where the greatest difference is, in the tensor (() along a direction)
    differ: int  # compared elements farther apart than elem_allowed × the greatest magnitude
    compared: int  # elements compared: all, the fd coordinates, or 1 (dir)

    @property
    def ok(self) -> bool:
        return self.agreement.ok

    def failure(self) -> Failure:
        """The comparison as a ``compare.check.findings.Failure`` (its facts, whether or not it fails)."""
        what = {"fd": "coordinates", "dir": "direction", "ties": "ties"}.get(self.b, "elements")
        count = None if what == "direction" else (self.differ, self.compared)
        return failure(self.agreement, self.tensor, (self.a, self.b), count, what, self.shape, self.index)

    def message(self) -> str:
        """The comparison in words, one fact per line (``compare.check.text.failure``)."""
        return "\n".join(text.failure(self.failure(), indent=""))


class DerivationError(AssertionError):
    """A hand-written derivative disagrees with a witness (or could not be judged); ``report``
    holds everything the check found; `where` (a model's culprit) leads the message."""

    def __init__(self, report: Report, where: str = ""):
        self.report = report
        if report.refusal:
            super().__init__(f"{where}: {report.refusal}" if where else report.refusal)
            return
        first, more = report.failures[0], len(report.failures) - 1
        head = f"derivative disagrees: {first.tensor} ({first.a} vs {first.b})"
        head += f" and {more} more comparison{'s' * (more > 1)}" if more else ""
        lines = [head, *text.failures(report.failed, report.findings), "", report.table()]
        super().__init__("\n".join([where] * bool(where) + lines))


class Report:
    """What a check found.

    Attributes:
        title: what was checked, in which dtype, with which seed.
        comparisons: every ``Comparison``; ``failures`` those out of bounds.
        notes: what the reader should know and that is no failure (``findings.Note``: fd
            coverage, writes into arguments, float32 bounds).
        findings: what the failures show, as ``compare.check.findings`` objects: ``Suspect``,
            ``ForwardsDiffer``, ``BuffersDiffer``, ``Float32Only``, ``Diagnosis``.
        refusal: why no gradient verdict could be given (a forward that is not deterministic), or "".
        self_test: the injected mistakes and whether the check caught them (``self_test=True``:
            a ``compare.check.selftest.SelfTest``), or None.
    ``failed`` (a ``findings.Failure`` per failing comparison), ``suspects`` and ``diagnoses``
    ({tensor: ``Suspect`` / ``Diagnosis``}), ``ok``, ``str()`` (title, table of relative errors,
    notes, verdict, each failing tensor's facts and findings, the self-test) and ``assert_ok()``.
    """

    def __init__(self, title: str, comparisons: list[Comparison], notes: list, findings=(),
                 refusal: str = "", self_test=None):
        self.title, self.comparisons, self.notes = title, comparisons, list(notes)
        self.findings, self.refusal, self.self_test = list(findings), refusal, self_test

    @property
    def failed(self) -> list[Failure]:
        return [c.failure() for c in self.failures]

    @property
    def suspects(self) -> dict[str, Suspect]:
        """{tensor: Suspect}: which side finite differences point at, for each failing gradient."""
        return {f.tensor: f for f in self.findings if isinstance(f, Suspect)}

    @property
    def diagnoses(self) -> dict[str, Diagnosis]:
        """{tensor: Diagnosis}: the kind of mistake of each failing hand-written gradient."""
        return {f.tensor: f for f in self.findings if isinstance(f, Diagnosis)}

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.refusal and not self.failures

    def table(self) -> str:
        """Relative error per tensor (rows) and witness pair (columns); failures marked, '-' where
        a pair does not apply."""
        pairs = [p for p in COLUMNS if any((c.a, c.b) == p for c in self.comparisons)]
        pairs += [p for p in dict.fromkeys((c.a, c.b) for c in self.comparisons) if p not in COLUMNS]  # more witnesses
        cells = {(c.tensor, (c.a, c.b)): c for c in self.comparisons}
        rows = [["tensor", "shape", *(f"{a}~{b}" for a, b in pairs)]]
        for tensor, shape in dict.fromkeys((c.tensor, c.shape) for c in self.comparisons):
            row = [tensor, "x".join(map(str, shape)) or "()"]
            for pair in pairs:
                c = cells.get((tensor, pair))
                row.append("-" if c is None else _cell(c.agreement))
            rows.append(row)
        return text.format_table(rows, align="l")

    def __str__(self) -> str:
        if self.refusal:
            tested = [] if self.self_test is None else [str(self.self_test)]
            return "\n".join([self.title, *map(text.line, self.notes), f"NO VERDICT: {self.refusal}", *tested])
        n = len(self.comparisons)
        verdict = (f"PASS: all {n} comparisons agree" if self.ok
                   else f"FAIL: {len(self.failures)} of {n} comparisons disagree")
        if self.ok and any(n.kind == "not judged" for n in self.notes):
            verdict += ", but some elements were not judged (the notes say which)"
        lines = [self.title, self.table(), *map(text.line, self.notes), verdict,
                 *text.failures(self.failed, self.findings)]
        if self.self_test is not None:
            lines.append(str(self.self_test))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report {'ok' if self.ok else 'FAILED'}: {self.title}>"

    def assert_ok(self) -> Report:
        """Raise DerivationError (an AssertionError) naming every failing comparison; pytest hides
        this frame, so the failure reads as the caller's assertion."""
        __tracebackhide__ = True
        if not self.ok:
            raise DerivationError(self)
        return self


def _cell(agr: Agreement) -> str:
    """The relative error, marked when it fails; the elementwise error where only that fails."""
    if agr.failed == ["elementwise error"]:
        return f"{agr.elem_rel:.1e} FAIL (elementwise)"
    return f"{agr.rel_err:.1e}" + (" FAIL" if agr.failed else "")
