"""What a check found, as data a program reads: each failing comparison (``Failure``, with its
``Measure``s and ``Greatest`` difference), which side finite differences point at (``Suspect``),
what kind of mistake a failing gradient is (``Diagnosis``), what else the failures show
(``ForwardsDiffer``, ``OutputsDiffer``, ``BuffersDiffer``, ``Float32Only``) and what the reader should know that is no
failure (``Note``; ``PrecisionError``, a half-precision gradient's error and autograd's). The words are ``compare.check.text``'s; nothing here is parsed back from them.
"""

from __future__ import annotations

import dataclasses

# Which side finite differences of the hand-written forward support (``Suspect.side``).
SIDES = ("yours", "counterpart", "both", "neither", "own forward")


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure of a comparison against its bound: "relative error", "elementwise error" (the
    greatest difference over the greatest magnitude) or "along a random direction"."""

    name: str
    value: float
    bound: float
    ok: bool


@dataclasses.dataclass(frozen=True)
class Greatest:
    """Where two witnesses differ most: the index in the tensor (() along a direction), the
    value of each witness there (`ours`: the first of the pair, `theirs`: the second) and |ours − theirs|."""

    index: tuple
    ours: float
    theirs: float
    diff: float


@dataclasses.dataclass(frozen=True)
class Failure:
    """One comparison out of bounds.

    tensor, shape: what was compared ("parameter W", (3, 4));  witnesses: the pair, e.g.
    ("manual", "torch") or ("manual64", "fd");  measures: every ``Measure``, failing or not;
    greatest: a ``Greatest`` (None where the values are not comparable);  differ, compared: how
    many compared elements (or fd coordinates) differ beyond the elementwise bound, of how many
    (None along a direction);  what: "elements", "coordinates" or "direction";  peak: the
    greatest magnitude of the two;  cosine: their cosine similarity;  problem: why they could not
    be compared at all ("shapes differ: ..."), or "".
    """

    tensor: str
    shape: tuple
    witnesses: tuple
    measures: tuple
    greatest: Greatest | None
    differ: int | None
    compared: int
    what: str = "elements"
    peak: float = float("nan")
    cosine: float = float("nan")
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class Suspect:
    """Which side finite differences of the hand-written forward support for one tensor.

    side: "yours" (the hand-written backward is the suspect), "counterpart" (the torch
    counterpart's gradient is not that of the function: softplus above its threshold), "both"
    (the differences agree with neither) or "neither" (they agree with both within their own
    error, so they cannot tell) or "own forward" (your backward is your forward's derivative and
    torch's is not, but the two forwards differ by more than finite differences resolve: no
    evidence against either);  yours, counterpart: each side's relative distance from the
    differences;  error: the differences' own relative error.
    """

    tensor: str
    side: str
    yours: float
    counterpart: float
    error: float


@dataclasses.dataclass(frozen=True)
class ForwardsDiffer:
    """The outputs differ: `yours` are the tensors whose hand-written gradient finite differences
    of your forward support, `counterpart` those whose torch gradient finite differences of the
    torch forward support, of `tensors` (every differentiated one); `layer`: the counterpart is a
    layer's (check_layer: its layouts may differ), else check_function's torch_fn."""

    yours: tuple
    counterpart: tuple
    tensors: tuple
    layer: bool = True


@dataclasses.dataclass(frozen=True)
class OutputsDiffer:
    """A forward-only check (no backward to judge): the outputs differ at the same point, and
    nothing tells which forward is right."""

    outputs: tuple


@dataclasses.dataclass(frozen=True)
class BuffersDiffer:
    """State after one forward differs from the counterpart's: the buffers' names."""

    buffers: tuple


@dataclasses.dataclass(frozen=True)
class Float32Only:
    """The derivation agrees in float64 (manual64, torch64, fd, dir) and only the float32 run of
    `tensors` is farther from it than float32 rounding allows."""

    tensors: tuple


@dataclasses.dataclass(frozen=True)
class PrecisionError:
    """One gradient of a check in a half precision (float16, bfloat16): its error against the float64
    truth (autograd in float64 on float64 copies of the rounded inputs), the error the counterpart's
    own autograd makes in the same precision, each (relative, elementwise), and the rule: allowed
    `factor` times autograd's, or `floor` (``compare.check.precision``)."""

    kind = "precision"  # read among the notes, as a Note's kind (not a field)
    tensor: str
    precision: str
    yours: tuple  # (relative, elementwise) error against the truth
    autograd: tuple
    factor: float
    floor: float

    @property
    def ratio(self) -> tuple:
        """(relative, elementwise): yours / autograd's (inf where autograd was exact and yours not)."""
        return tuple(y / a if a > 0 else (1.0 if y == 0 else float("inf")) for y, a in zip(self.yours, self.autograd))


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """One failing tensor's kind of mistake (``compare.check.diagnose``).

    tensor: "input x", "parameter W";  kind: "constant factor", "sign error", "transpose",
    "layout", "wrong axis", "wrong reduction", "extra reduction", "local derivative missing",
    "g ignored", "not linear in g", "g mis-broadcast", "mask", "zero", "non-zero", "non-finite",
    those of ``compare.check.patterns`` ("flipped mask", "repeated indices dropped", "kernel
    flipped", "kernel not flipped", "missing mean terms", "accumulation cut short"), "tie shared" (a
    tie's gradient given whole to each tied element; value: yours over the function's move), "float32 precision" (a gradient
    computed in float32 and cast back fails float64's bounds within float32's) or "no simple pattern";  text: what fits, with the number that shows it;  value: that number
    (the factor c, the permutation, the axes, the count of elements), or None.
    """

    tensor: str
    kind: str
    text: str
    value: object = None


@dataclasses.dataclass(frozen=True)
class Note:
    """What the reader should know that is no failure. kind: "wrote" (the hand-written code wrote
    into an argument; `text` says which: "backward wrote into dy"), "counters" (integer buffers
    not compared), "coverage" (the fd coordinates taken), "truncation" (the fd truncation was
    allowed for), "unmoved" (moving a tensor did not change the output) or "float32" (how the
    float32 witnesses are held), "precision" (the half-precision bounds, each gradient's error and
    autograd's), "constant" (float inputs held constant), "fixed" (counterpart parameters held
    fixed), "kinks" (elements where the forward is not differentiable, ``compare.check.kinks``),
    "not judged" (elements at kinks where no value can be told wrong) or "forward only" (no
    backward was checked, and why)."""

    kind: str
    text: str
