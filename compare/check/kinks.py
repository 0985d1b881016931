"""Elements where the hand-written forward is not differentiable, judged as such rather than
against torch's convention.

At a kink (an input exactly at a ReLU's 0, a tie in a max, common with integer or zero-padded
data such as MNIST's pixels) the derivative is not defined: the one-sided differences
(⟨g, f(θ + h·eₖ)⟩ − ⟨g, f(θ)⟩)/h and (⟨g, f(θ)⟩ − ⟨g, f(θ − h·eₖ)⟩)/h differ by a jump that
stays as h halves, where a smooth function's differ by about h·f″ (``tolerances.KINK_JUMP``,
``KINK_STABLE``). Any value between the two is some convention's (torch's gradient is 0 at a
ReLU's 0, goes to the first of a pooling window's tied maxima and is split evenly among those of
``torch.max``; a hand-written one may take 1 or the last), so a gradient that differs from torch's
only there is no mistake.

Tried when a tensor's comparisons disagree, at the elements where two witnesses differ (manual and
torch anywhere, either against fd at the coordinates it took), when they are no more than fd's
coordinates (four forwards each). The tensor's comparisons are then taken again: each pair of
analytic witnesses (at its own bounds) and fd on the other elements, dir along the random direction
with the kinks left out (left out itself where fd sampled the tensor: its direction then crosses
kinks no difference located), and the exact witnesses' values at the kinks against the interval
between the one-sided differences. They replace the tensor's comparisons only when every one of
them agrees; otherwise the comparisons stand as they were, with a note counting the kinks.

Where several kinks meet along one coordinate (weights all 0 under a ReLU, an element tied in two
overlapping pooling windows) a convention's value can lie outside that interval: torch's own value
outside it widens it to its mirror (``meeting``), and an element where yours lies outside it and
autograd just beside θ finds a third region (``beside``) is not judged, with a note. The interval
holds each element alone; how a tie's gradient is shared (each tied element taking the whole of
it, where the shares of a max's ties add up to it) shows only along the kinks together (``ties``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from compare.check import fd, tolerances
from compare.check.findings import Note
from compare.check.measure import measure
from compare.check.report import Comparison
from compare.check.witnesses import pair

# One-sided differences cost four forwards per element: they are taken at most at as many elements
# as fd took coordinates, or this many where fd sampled fewer.
MIN_AFFORDED = 256
# Where more elements differ than that, a first look at this many of them (a mistake rather than a
# convention shows in the first) before an even sample of MIN_AFFORDED.
FIRST_LOOK = 8
# Where yours lies outside the interval: autograd just beside the kinks, at up to this many points
# θ + (h/4)·v (v uniform in [−1, 1] on every element), till every such element shows a region that
# is neither side's. An element tied with 7 in one pooling window and 5 in another wins one
# window alone at about 1 point in 10; 128 points miss that with odds of 1 in 10⁶.
BESIDE_SAMPLES = 128
# With no jump, a hidden kink shows as soon as two points beside θ differ: the middle of a median's
# tie of 7 is one point in 7, missed by 32 points with odds below 1 in 100; a wrong torch gradient at
# a smooth point (a counterpart that is not your function) costs 32 of its runs, not 128.
HIDDEN_SAMPLES = 32


class Sides(NamedTuple):
    """The one-sided derivatives at some elements (step h/2), their error, and which are kinks."""

    kink: np.ndarray
    right: np.ndarray
    left: np.ndarray
    slack: np.ndarray

    @property
    def low(self) -> np.ndarray:
        return np.minimum(self.right, self.left) - self.slack

    @property
    def high(self) -> np.ndarray:
        return np.maximum(self.right, self.left) + self.slack


def _flat(runs, witness: str, label: str) -> np.ndarray:
    """`witness`'s gradient for `label`, flat, in float64."""
    return np.asarray(runs[witness].grads[label], np.float64).reshape(-1)


def find(numeric, label: str, coords: np.ndarray) -> Sides:
    """The ``Sides`` at the flat indices `coords` of `label`: where the forward has a kink, and
    the one-sided derivatives there (with their error)."""
    t, evaluate, g, h = numeric.referee.tensors[label], numeric.referee.evaluate, numeric.g, numeric.h
    r1, l1, e1 = fd.one_sided(t, coords, evaluate, g, h)
    r2, l2, e2 = fd.one_sided(t, coords, evaluate, g, h / 2)
    jump1, jump2 = r1 - l1, r2 - l2
    scale = max(float(np.abs(r1).max(initial=0)), float(np.abs(l1).max(initial=0)), tolerances.TINY)
    own = np.maximum(np.abs(r1), np.abs(l1))  # a kink of a small gradient is as much a kink
    kink = (np.abs(jump1) > tolerances.KINK_JUMP * own + tolerances.NOISE_FACTOR * (e1 + e2)) & \
           (np.abs(jump1 - jump2) <= tolerances.KINK_STABLE * np.abs(jump1))
    # One-sided differences err by ~h·f″/2 (first order): what the step h/2 changed bounds it.
    slack = tolerances.FINITE_DIFF_ELEM * scale + e2 + np.abs(r1 - r2) + np.abs(l1 - l2)
    return Sides(kink, r2, l2, slack)


def meeting(low, high, autograd):
    """(low, high) widened where autograd's own value lies outside the one-sided interval, and
    where that is so.

    That happens where several kinks meet along one coordinate: a weight w exactly 0 puts every
    unit's input w·xᵦ exactly at ReLU's 0, and φ(t) = s·t + Σᵦ aᵦ·relu(t·xᵦ) has the one-sided
    slopes r = s + Σ_{xᵦ>0} aᵦxᵦ and l = s + Σ_{xᵦ<0} aᵦxᵦ, while a convention c at every kink
    gives s + c·Σᵦ aᵦxᵦ: torch's c = 0 gives s, outside [l, r] when the xᵦ differ in sign, and
    c = 1 its mirror l + r − s about the central difference. Any value from autograd's to its
    mirror is some convention's; at a lone kink both lie in [l, r] and nothing changes."""
    mirror = low + high - autograd
    outside = (autograd < low) | (autograd > high)
    return (np.minimum.reduce([low, autograd, mirror]), np.maximum.reduce([high, autograd, mirror]), outside)


def _again(numeric, runs, label, mine, exact, kink, low, high, unjudged, hidden) -> list[Comparison]:
    """The tensor's comparisons `mine` with its kinks judged on their own: each pair of analytic
    witnesses on the other elements, at the bounds it had; fd likewise on the other coordinates
    taken; dir along u with the kinks left out where every coordinate was differenced (all kinks
    known), else not at all (u crosses kinks no difference located); the exact witnesses at the
    kinks against the one-sided interval, but for those `unjudged` (``beside``). dir is left out too
    where a `hidden` kink was found (its tie's other elements look smooth one by one). A pair whose
    witness is not in `runs` (a rerun, another analytic witness) stays as it was."""
    t, coords = numeric.referee.tensors[label], numeric.coords[label]
    shape, off, on = t.shape, np.flatnonzero(~kink), np.flatnonzero(kink & ~unjudged)
    flat = {w: _flat(runs, w, label) for w in runs}
    values, rounding = numeric.fd[label]  # at coords
    fd_error = tolerances.difference_error(rounding, fd.truncation(values, numeric.at_2h(label, ("fd",))[0]))
    taken = np.flatnonzero(~kink[coords])  # positions in coords off the kinks
    whole = len(coords) == t.size and not hidden
    u = np.where(kink, 0.0, numeric.u[label].reshape(-1)) if whole else np.zeros(t.size)
    if u.any():
        value, dir_rounding = fd.direction(t, u.reshape(shape), numeric.referee.evaluate, numeric.g, numeric.h)
        value_2h, _ = fd.direction(t, u.reshape(shape), numeric.referee.evaluate, numeric.g, 2 * numeric.h)
        dir_error = tolerances.difference_error(dir_rounding, float(fd.truncation(value, value_2h)))
    out = []
    for c in mine:  # a pair left with no element (every one at a kink) is left out, never an agreement
        if c.a not in flat or (c.b not in flat and c.b not in ("fd", "dir")):
            out.append(c)
        elif (c.b == "fd" and not len(taken)) or (c.b == "dir" and not u.any()) or not len(off):
            continue
        elif c.b == "fd":
            a = flat[c.a][coords[taken]]
            out.append(pair(label, shape, c.a, "fd", a, values[taken],
                             tolerances.finite_difference_bounds(a, values[taken], fd_error[taken]), coords[taken]))
        elif c.b == "dir":
            along = np.array([float(np.dot(flat[c.a], u))])
            agr = measure(along, np.array([value]), 0, label,
                          *tolerances.finite_difference_bounds(along, [value], [dir_error]))
            out.append(Comparison(label, tuple(shape), c.a, "dir", agr, (), int(not agr.ok), 1))
        else:
            bounds = (c.agreement.allowed, c.agreement.elem_allowed)
            out.append(pair(label, shape, c.a, c.b, flat[c.a][off], flat[c.b][off], bounds, off))
    for w in exact * bool(len(on)):  # inside the interval: equal to its clip, else as far from it as it is outside
        v = flat[w][on]
        out.append(pair(label, shape, w, "one-sided", v, np.clip(v, low[on], high[on]),
                         (tolerances.FINITE_DIFF_REL, tolerances.FINITE_DIFF_ELEM), on))
    return out


def _interval(numeric, runs, label, coords, exact):
    """``find``'s Sides at `coords` and their (low, high), widened by ``meeting`` about the autograd
    witness's values (the second exact witness, where it is torch's), and how many kinks that
    widened."""
    sides = find(numeric, label, coords)
    if not exact[1].startswith("torch"):
        return sides, sides.low, sides.high, 0
    autograd = _flat(runs, exact[1], label)[coords]
    low, high, outside = meeting(sides.low, sides.high, autograd)
    return sides, low, high, int((outside & sides.kink).sum())


def beside(numeric, rerun, label: str, coords: np.ndarray, sides: Sides, samples: int = 0) -> np.ndarray:
    """Where several kinks meet along the coordinate, at the flat indices `coords` (``find``'s
    `sides` there): just beside θ the derivative takes a value other than its two one-sided ones
    (where no one-sided difference jumps: two values at all).

    At a lone kink the space beside θ has two sides, and the derivative there is the one-sided
    derivative of the side it lies on. Where kinks meet (an element tied in two overlapping pooling
    windows, a weight 0 under a ReLU over a batch), moving every element a little splits them, and
    beside θ the derivative is the sum of some of their parts: dA alone, say, where r = dA + dB and
    l = 0. A convention taken at each kink alone gives such values too, so [l, r] does not bound
    them. Autograd's gradient (`rerun`, torch's run with `label` replaced) at up to BESIDE_SAMPLES
    points θ + (h/4)·v, v uniform in [−1, 1] on every element: no tie is left there, so it is the
    derivative of the region beside θ that the point lies in."""
    t, h = numeric.referee.tensors[label], numeric.h
    rng = np.random.default_rng(len(coords))
    scale = max(float(np.abs(sides.right).max(initial=0)), float(np.abs(sides.left).max(initial=0)), tolerances.TINY)
    off = 2 * sides.slack + tolerances.FINITE_DIFF_ELEM * scale  # θ moved by h/4: within the sides' own change
    met = np.zeros(len(coords), bool)
    least, most = np.full(len(coords), np.inf), np.full(len(coords), -np.inf)
    for _ in range(samples or BESIDE_SAMPLES):
        moved = t + (h / 4) * rng.uniform(-1, 1, t.shape)
        a = np.asarray(rerun({label: moved}).grads[label], np.float64).reshape(-1)[coords]
        least, most = np.minimum(least, a), np.maximum(most, a)
        # At a kink: a third value. With no jump: two values at all (a smooth point has one, even
        # where torch's function is not yours: a forward reading a private copy of a parameter).
        met |= np.where(sides.kink, (np.abs(a - sides.right) > off) & (np.abs(a - sides.left) > off),
                        most - least > off)
        if met.all():
            break
    return met


def _unjudged(numeric, rerun, label, where, sides, low, high, flat, kink) -> tuple[np.ndarray, bool]:
    """The elements not judged (of the tensor, flat), marking in `kink` those found beside θ alone,
    and whether there were any of those (a hidden kink).

    At a kink where yours or torch's lies outside the interval: a mistake at a lone kink, or a
    convention where several meet (``beside``). Where no one-sided difference jumps and torch's own
    value is not the derivative, the point may be no smooth one all the same: at the middle of a
    median's three-way tie, moving one tied element leaves the median where it is on both sides,
    while moving the three moves it, and torch's one-hot gradient is one region's. ``beside`` tells
    that from a torch gradient that is wrong at a smooth point (the derivative beside θ is then the
    one-sided one, wherever θ is moved)."""
    unjudged, found = np.zeros(kink.size, bool), False
    if rerun is None:
        return unjudged, found
    off = np.any([(a[where] < low) | (a[where] > high) for a in flat], axis=0)
    hidden = ~sides.kink & ((flat[-1][where] < sides.low) | (flat[-1][where] > sides.high))
    if hidden.any():  # torch's hints at a hidden kink: then at yours too (its tie's other elements)
        hidden = ~sides.kink & np.any([(a[where] < sides.low) | (a[where] > sides.high) for a in flat], axis=0)
    for look, samples in ((sides.kink & off, BESIDE_SAMPLES), (hidden, HIDDEN_SAMPLES)):
        if look.any():
            seen = where[look][beside(numeric, rerun, label, where[look], Sides(*(a[look] for a in sides)), samples)]
            kink[seen] = unjudged[seen] = True
            found = found or (samples == HIDDEN_SAMPLES and len(seen) > 0)
    return unjudged, found


def _held(numeric, title: str, shape, w: str, parts: list, count: int) -> Comparison | None:
    """⟨yours, u⟩ along u = 1 at some kinks (`parts`: (tensor, u, yours' sum, torch's sum, their
    slack) per tensor, moved together) held to the one-sided derivatives along u, or None where
    torch's sum lies outside them too (nothing to hold yours to)."""
    ts, us = [p[0] for p in parts], [p[1] for p in parts]
    r1, l1, _ = fd.one_sided_along(ts, us, numeric.referee.evaluate, numeric.g, numeric.h)
    r2, l2, e2 = fd.one_sided_along(ts, us, numeric.referee.evaluate, numeric.g, numeric.h / 2)
    slack = sum(p[4] for p in parts) + e2 + abs(r1 - r2) + abs(l1 - l2)
    low, high = min(r2, l2) - slack, max(r2, l2) + slack
    if not low <= sum(p[3] for p in parts) <= high:
        return None  # kinks that do not add up for torch either
    mine = sum(p[2] for p in parts)
    agr = measure(np.array([mine]), np.array([min(max(mine, low), high)]), 0, title,
                  tolerances.FINITE_DIFF_REL, tolerances.FINITE_DIFF_ELEM)
    return Comparison(title, tuple(shape), w, "ties", agr, (), int(not agr.ok), count)


def _part(t, where, along, yours, autograd, sides) -> tuple:
    """`_held`'s part of one tensor: u = `along` (a weight per element of `where`: 1, −1 or 0)."""
    u = np.zeros(t.size)
    u[where] = along
    return (t, u.reshape(t.shape), float(np.dot(yours, along)), float(np.dot(autograd, along)),
            float(np.dot(sides.slack, np.abs(along))))


def _sets(sides, yours, autograd, unjudged: bool) -> list[np.ndarray]:
    """Weights u along which yours must add up (1 where a kink is moved up, −1 down): the kinks
    where yours takes the right one-sided derivative; the left one; a share strictly between them
    that is not torch's (none where an element was left unjudged); and the first two at once, the
    right ones moved up and the left ones down, which keeps z in relu(x0 + x1) where yours is
    (g, 0): each side's own derivative added up, whatever the kinks' structure."""
    jumps = sides.kink & (np.abs(sides.right - sides.left) > 2 * sides.slack)
    at = [jumps & (np.abs(yours - end) <= sides.slack) for end in (sides.right, sides.left)]
    shares = jumps & ~at[0] & ~at[1] & (np.abs(yours - autograd) > sides.slack) if not unjudged else at[0] & False
    both = (at[0] * 1.0 - at[1] * 1.0) * (at[0].any() and at[1].any())
    return [at[0] * 1.0, at[1] * 1.0, shares * 1.0, both]


def ties(numeric, runs, label, exact, where, sides, unjudged: bool) -> list[Comparison]:
    """Whether yours add up where kinks act together, as at a tie.

    The one-sided interval holds each element alone: at a tie of max(a, b) either may take the
    whole gradient, but not both (nor neither): moved together by h, max(a, b) moves by h once.
    So at the kinks where yours takes a whole one-sided derivative (the right one, then the left),
    and at those where it takes a share strictly between them (a split tie, 1/2 at a ReLU's 0),
    u = 1 there: ⟨yours, u⟩ is held to the one-sided derivatives along u, wherever torch's
    ⟨torch, u⟩ lies between them (kinks that act on their own add up exactly; where kinks meet,
    as along weights all 0, conventions need not, and torch's sum then tells us so). Shares are
    summed only where no element of the tensor was left unjudged: a tie of which one element was
    left out no longer adds up."""
    if not exact[1].startswith("torch"):
        return []
    t = numeric.referee.tensors[label]
    autograd = _flat(runs, exact[1], label)[where]
    out = []
    for w in exact[:1]:
        yours = _flat(runs, w, label)[where]
        for along in _sets(sides, yours, autograd, unjudged):
            on = along != 0
            if on.sum() < 2 or np.array_equal(yours[on], autograd[on]):
                continue  # too few to add up, or torch's own values
            held = _held(numeric, label, t.shape, w, [_part(t, where, along, yours, autograd, sides)], int(on.sum()))
            out += [held] if held is not None else []
    return out


def together(numeric, runs, exact, judged: list) -> list[Comparison]:
    """``ties`` across tensors: the kinks where yours takes a whole one-sided derivative (the right
    one, then the left) in every tensor `judged` ((label, where, sides) of those whose kinks held
    on their own), moved together. A tie between two tensors (np.maximum(a, b) at a == b) shares
    its gradient between them, and one kink (relu(x·W + b) at 0) is one convention's in all its
    tensors: dW taken with z > 0 and db with z ≥ 0 do not add up along a direction that keeps z."""
    if not exact[1].startswith("torch") or len(judged) < 2:
        return []
    w, out = exact[0], []
    for side in (0, 1, 3):
        parts, labels, count = [], [], 0
        for label, where, sides in judged:
            yours = _flat(runs, w, label)[where]
            autograd = _flat(runs, exact[1], label)[where]
            along = _sets(sides, yours, autograd, True)[side]
            if along.any():
                parts.append(_part(numeric.referee.tensors[label], where, along, yours, autograd, sides))
                labels.append(label)
                count += int((along != 0).sum())
        if len(parts) >= 2 and not all(np.isclose(p[2], p[3]) for p in parts):
            held = _held(numeric, " and ".join(labels), (), w, parts, count)
            out += [held] if held is not None else []
    return out


MEETING = (" At {} of them torch's own value lies outside that interval, the sign that several kinks meet along "
           "the coordinate (a weight or input exactly 0 puts many units' inputs at a threshold at once): there any "
           "value from torch's to its mirror about the central difference is some convention's, and a mistake in "
           "the formula can hide; check also where nothing is exactly 0.")
UNJUDGED = ("{}: {} of its {} elements, where yours or torch's lies outside the one-sided interval, are not "
            "judged: beside them the derivative takes values other than the one-sided ones (several kinks meet "
            "there, or a kink no coordinate alone shows, as at a median's tie), and any way of adding up their "
            "parts is some convention's; a mistake there cannot be seen at this input: check also at inputs "
            "without exact ties or zeros")


TOGETHER = ("{}: each tensor's kinks add up on their own, but not together (manual~ties): a tie between "
            "tensors (np.maximum(a, b) at a == b) given whole to both or to neither, or one kink's derivative "
            "taken with two conventions (dW with z > 0, db with z >= 0); take one convention for every tensor")


def _sampled(numeric, runs, label, where, exact, afforded, rerun) -> list[Note]:
    """Too many differing elements to take one by one: an evenly spaced sample of them, and a note
    (the comparisons stand) when every one sampled sits at a kink with yours inside its interval
    or where several kinks meet (``beside``), which tells a convention at kinks from a mistake."""
    mine = _flat(runs, exact[0], label)
    for n in (FIRST_LOOK, afforded):  # a mistake shows at once: eight elements before the whole sample
        sample = where[np.linspace(0, len(where) - 1, n).astype(int)]
        sides, low, high, _ = _interval(numeric, runs, label, sample, exact)
        inside = (mine[sample] >= low) & (mine[sample] <= high)
        if sides.kink.all() and not inside.all() and rerun is not None:
            inside[~inside] = beside(numeric, rerun, label, sample[~inside], Sides(*(a[~inside] for a in sides)))
        if not (sides.kink.all() and inside.all()):
            return []
    return [Note("kinks", f"{label}: the {len(where)} elements where two witnesses differ are too many to take "
                 f"one by one; all {len(sample)} of an even sample of them sit at kinks of your forward (a jump "
                 "between the one-sided differences that stays as the step halves), and yours lie between the "
                 "one-sided derivatives there, or where several kinks meet: likely another convention than "
                 "torch's at exact zeros or ties rather than a mistake. Not judged: the comparisons stand; check "
                 "on inputs without them, or take torch's convention")]


def _note(label, kinks, where, met, again, tied, sampled) -> Note:
    """The "kinks" note for `label`: how many of the `where` differing elements sit at kinks, what
    was held to what there, and what could not be judged."""
    said = (f"{label}: {kinks} of the {where} elements where two witnesses differ sit at kinks of your forward "
            "(one-sided differences that differ by a jump that stays as the step halves: an input exactly at a "
            "threshold, a tie in a max), where the derivative is not defined.")
    met = MEETING.format(met) if met else ""
    if not all(c.ok for c in again):
        return Note("kinks", f"{said}{met} The disagreement is not explained by them alone: compared as always.")
    together = (", and where yours takes a whole one-sided derivative at several, to the one-sided derivatives "
                "along them together" if tied else "")
    held = (f"{said} There yours and torch's are held to the interval between the one-sided derivatives (any "
            f"value in it is some convention's), not to each other{together}.{met}")
    if not all(c.ok for c in tied):
        return Note("kinks", f"{held} Each lies in its interval, but they do not add up (manual~ties): a tie's "
                    "gradient given whole to each of the tied elements, or to none of them; give it to one (the "
                    "first, as np.argmax and torch do) or split it evenly among them.")
    dropped = (" dir is left out (its direction crosses kinks that no difference along one coordinate "
               "locates)." if sampled else "")
    return Note("kinks", f"{held} The other elements are compared as always.{dropped}")


def judge(numeric, runs, comparisons: list, exact, rerun=None) -> tuple[list, list[Note]]:
    """`comparisons` with the tensors whose disagreement lies at kinks of the forward taken again
    (``_again``), and a note per tensor with kinks; `rerun` ({label: values}) -> the autograd
    witness's Run with those values (``beside``), or None."""
    if not hasattr(numeric, "fd"):  # no numeric witness (a half-precision kernel): nothing to tell kinks by
        return comparisons, []
    failing = {c.tensor for c in comparisons if not c.ok}
    notes, judged = [], []
    for label, t in numeric.referee.tensors.items():
        coords = numeric.coords[label]
        if label not in failing or coords is None:
            continue
        # Kinks matter only where a pair differs: the one-sided differences are taken there alone,
        # for at most as many elements as fd took (else the comparisons stand, with a sample's note).
        flat = [_flat(runs, w, label) for w in exact]
        values = numeric.fd[label][0]
        peak = max(*(float(np.abs(a).max(initial=0)) for a in [*flat, values]), tolerances.TINY)
        differ = np.abs(flat[0] - flat[1]) > tolerances.elementwise_rel(np.float64) * peak
        for a in flat:
            differ[coords[np.abs(a[coords] - values) > tolerances.FINITE_DIFF_ELEM * peak]] = True
        where = np.flatnonzero(differ)
        afforded = max(len(coords), MIN_AFFORDED)
        if len(where) > afforded:
            notes += _sampled(numeric, runs, label, where, exact, afforded, rerun)
            continue
        if not len(where):
            continue
        kink, low, high = np.zeros(t.size, bool), np.full(t.size, np.nan), np.full(t.size, np.nan)
        sides, low[where], high[where], met = _interval(numeric, runs, label, where, exact)
        kink[where] = sides.kink
        unjudged, hidden = _unjudged(numeric, rerun, label, where, sides, low[where], high[where], flat, kink)
        if not kink.any():
            continue
        again = _again(numeric, runs, label, [c for c in comparisons if c.tensor == label], exact, kink, low, high,
                       unjudged, hidden)
        held = all(c.ok for c in again)
        tied = ties(numeric, runs, label, exact, where, sides, bool(unjudged.any())) if held else []
        if held:
            at = [i for i, c in enumerate(comparisons) if c.tensor == label]
            comparisons = comparisons[:at[0]] + again + tied + [c for c in comparisons[at[0]:] if c.tensor != label]
        notes.append(_note(label, int(kink.sum()), len(where), met, again, tied, len(coords) < t.size or hidden))
        if held and all(c.ok for c in tied):
            judged.append((label, where, sides))
        if held and unjudged.any():
            notes.append(Note("not judged", UNJUDGED.format(label, int(unjudged.sum()), t.size)))
    across = together(numeric, runs, exact, judged)
    notes += [Note("kinks", TOGETHER.format(c.tensor)) for c in across if not c.ok]
    return comparisons + across, notes
