"""More classic mistakes for ``compare.check.diagnose``, each predicting the hand-written gradient m
from torch's r, the upstream gradient g, the inputs or the outputs, and held to the same bounds for
g and a second g₂ (``Evidence.holds``), never guessed:

    flipped mask          m = g − r where r = g masked: the gradient passes where it should be
                          blocked and is blocked where it should pass (a ReLU's comparison reversed)
    repeated indices      m = r except on exactly the rows whose index repeats in an integer input:
                          a scatter ``dW[ids] += g`` that keeps one occurrence (``np.add.at`` adds all)
    kernel flipped        m = r reversed along two or more axes (a convolution kernel rotated 180°)
    kernel not flipped    m = torch's gradient with another input or parameter k reversed along two
                          or three axes: an input's gradient that correlates g with the kernel as the
                          forward does, where it takes the kernel rotated by 180°
    missing mean terms    r a normalisation's gradient (summing to 0 over each slice along axes A, or
                          over groups of an axis as in a group norm: the output ignores a shift),
                          and m − r = a (the −mean(dx̂) term missing), m − r = b·x̂
                          (−x̂·mean(dx̂·x̂) missing), or m = κ·dx̂ with dx̂ = g or g ⊙ a parameter
                          (both: the statistics treated as constants); a, b, κ one per slice
    accumulation cut short   m at step t of an axis (time) = torch's gradient of g at step t
                          alone: the gradient from later steps never carried back (dh not accumulated)
    Jacobian reduction    r = y ⊙ (g − Σ_A g⊙y) (softmax, y its output) or g − eʸ Σ_A g (log-softmax)
                          and m the same with the sum over another axis A′

Each returns (kind, text, value) or None; ``diagnose`` makes the Diagnosis. ``factor`` prints a
factor with the digits that tell it from 1.
"""

from __future__ import annotations

import itertools

import numpy as np

# Per-slice coefficients are free: a slice needs this many more elements than coefficients for a
# fit to be evidence rather than arithmetic.
SPARE = 2
# Accumulation is traced step by step with one torch run per step and upstream gradient: up to
# this many steps.
MAX_STEPS = 32


def factor(c: float) -> str:
    """A factor with the digits that tell it from 1: 2, 0.5, 1 + 1e-06, 1 − 3.2e-09."""
    if c != 1 and abs(c - 1) < 1e-3:
        return f"1 {'+' if c > 1 else '−'} {abs(c - 1):.2g}"
    return f"{c:.4g}"


def _res(agr) -> str:
    return f"residual {agr.rel_err:.1g}"


def _axes(t) -> str:
    t = tuple(t)
    return f"axis {t[0]}" if len(t) == 1 else f"axes {t}"


def _passes(ev, r, g) -> np.ndarray:
    """Where r carries g rather than 0."""
    peak = max(float(np.abs(g).max(initial=0)), 1e-300)
    return np.abs(r) > ev.bounds[1] * peak


def flipped_mask(ev):
    mn, rn = ev.names
    for j, g in enumerate(ev.gs):
        if g.shape != ev.m.shape:
            continue
        masked = ev.holds(lambda i, r, gs: gs[j] * _passes(ev, r, gs[j]), of="r")
        flipped = ev.holds(lambda i, r, gs: gs[j] * ~_passes(ev, r, gs[j]))
        passing = _passes(ev, ev.r, g)
        k, n = int(passing.sum()), passing.size
        if masked is None or flipped is None or not 0 < k < n:
            continue
        where = next((f" (where {lab} {op} 0)" for lab, x in ev.inputs.items() if x.shape == g.shape
                      for op, s in ((">", x > 0), ("<", x < 0), (">=", x >= 0), ("<=", x <= 0))
                      if np.array_equal(s, passing)), "")
        return ("flipped mask", f"a flipped mask: {mn} passes the upstream gradient {ev.g_name(j)} exactly where "
                f"{rn}'s blocks it ({n - k} elements) and blocks it where {rn}'s passes it ({k} elements{where}): "
                f"the mask's comparison is reversed ({_res(flipped)})", k)


def repeated_indices(ev):
    rows = ev.m.shape[0] if ev.m.ndim else 0
    for lab, ids in ev.inputs.items():
        if not np.issubdtype(ids.dtype, np.integer) or ids.size == 0 or ids.min() < 0 or ids.max() >= rows:
            continue
        counts = np.bincount(ids.ravel(), minlength=rows)
        repeated = counts > 1
        if not repeated.any():
            continue
        wrong = [ev.differing(m, r).reshape(rows, -1).any(axis=1) for m, r, _ in ev.cases]
        if not all(np.array_equal(w, repeated) for w in wrong):
            continue
        mn, rn = ev.names
        m, r = ev.m[repeated].ravel(), ev.r[repeated].ravel()
        share = float(np.dot(m, r) / max(np.dot(r, r), 1e-300))
        return ("repeated indices dropped", f"repeated indices dropped by a scatter: the {int(repeated.sum())} rows "
                f"whose index occurs more than once in {lab} are wrong and every other row is right; on those rows "
                f"{mn} is {share:.3g} × {rn} (1/k where the k occurrences' gradients are equal): dW[ids] += g "
                "keeps one occurrence where np.add.at(dW, ids, g) adds them all", int(repeated.sum()))


def kernel_flipped(ev):
    if ev.m.shape != ev.r.shape:
        return None
    long_axes = [a for a in range(ev.r.ndim) if ev.r.shape[a] > 1]
    for k in range(2, min(len(long_axes), 5) + 1):
        for axes in itertools.combinations(long_axes, k):
            fit = ev.holds(lambda i, r, gs: np.flip(r, axes))
            if fit is not None:
                turned = "rotated by 180°, " if k == 2 else ""
                return ("kernel flipped", f"a kernel flipped along several axes: {ev.names[0]} = {ev.names[1]}'s "
                        f"gradient {turned}reversed along {_axes(axes)} ({_res(fit)})", axes)


def kernel_not_flipped(ev):
    mn, rn = ev.names
    params = {f"parameter {n}": p for n, p in ev.reruns.subject.params.items()}
    for lab, k in {**ev.inputs, **params}.items():
        k = np.asarray(k)
        if lab == ev.label or not np.issubdtype(k.dtype, np.floating):
            continue
        long_axes = [a for a in range(k.ndim) if k.shape[a] > 1]
        for n in range(2, min(len(long_axes), 3) + 1):  # a 2-D or 3-D convolution's spatial axes
            for axes in itertools.combinations(long_axes, n):
                what = (f"{lab} reversed along {_axes(axes)}", {lab: np.ascontiguousarray(np.flip(k, axes))})

                def predict(i, r, gs):
                    run = ev.reruns.torch(("g", "g2")[i], ev.precise, replace=what)
                    return np.asarray(run.grads[ev.label], np.float64)

                fit = ev.holds(predict)
                if fit is not None:
                    turned = " (rotated by 180°)" if n == 2 else ""
                    return ("kernel not flipped", f"a kernel not flipped in the backward: {mn} is {rn}'s gradient "
                            f"with {lab} reversed along {_axes(axes)}{turned}: the gradient for {ev.label} must "
                            f"correlate g with {lab} reversed along those axes (the forward's correlation turned "
                            f"around); {mn} correlates g with {lab} as the forward does ({_res(fit)})", (lab, axes))


def _project(d, basis, axes) -> np.ndarray:
    """d's projection, slice by slice along `axes`, onto the span of `basis` (mutually orthogonal
    along `axes`)."""
    out = np.zeros_like(d)
    for v in basis:
        vv = (v * v).sum(axis=axes, keepdims=True)
        out = out + np.divide((d * v).sum(axis=axes, keepdims=True), vv, out=np.zeros_like(vv), where=vv > 0) * v
    return out


def _subsets(n: int) -> list:
    return [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)] if n <= 5 else []


def _groups(shape) -> list:
    """(view shape, a, G) of `shape` with axis a split into G groups of shape[a] // G (a group
    norm's channels), G from 2 to shape[a] / 2; first (shape, None, None), the axes as they are."""
    views = [(tuple(shape), None, None)]
    for a, c in enumerate(shape):
        views += [(tuple(shape[:a]) + (g, c // g) + tuple(shape[a + 1:]), a, g) for g in range(2, c // 2 + 1)
                  if c % g == 0]
    return views


def _broadcasts(scales, shape) -> list:
    """The parameters that can scale an array of `shape` elementwise: those matching its trailing
    axes (a layer norm's γ), and vectors laid along one other axis (a batch or group norm's
    per-channel γ on NCHW)."""
    out = [p for p in scales if p.ndim < len(shape) and p.shape == shape[len(shape) - p.ndim:]]
    for p in scales:
        out += [p.reshape((-1,) + (1,) * (len(shape) - 1 - a)) for a in range(len(shape) - 1)
                if p.ndim == 1 and shape[a] == p.size > 1]
    return out


def missing_mean_terms(ev):
    scales = [np.asarray(p, np.float64) for p in [*ev.reruns.subject.params.values(), *ev.inputs.values()]
              if np.ndim(p) and np.issubdtype(np.asarray(p).dtype, np.floating)]
    for lab, x in ev.inputs.items():
        if x.shape != ev.m.shape or not np.issubdtype(x.dtype, np.floating):
            continue
        for view, split, groups in _groups(x.shape):
            for axes in _subsets(len(view)):
                if split is not None and (split in axes or split + 1 not in axes):
                    continue  # the groups' statistics: within a group (a + 1), one per group (not a)
                found = _mean_terms(ev, x.reshape(view), view, axes, scales, split, groups)
                if found is not None:
                    return found


def _mean_terms(ev, x, view, axes, scales, split, groups):
    """missing_mean_terms along `axes` of the arrays seen in the shape `view`."""
    mn, rn = ev.names
    size = int(np.prod([view[a] for a in axes]))
    if size < 2 + SPARE:
        return None

    def seen(a):
        return np.reshape(a, view)

    def back(a):
        return np.reshape(a, ev.m.shape)

    ones, xc = np.ones_like(x), x - x.mean(axis=axes, keepdims=True)
    if ev.holds(lambda i, r, gs: back(seen(r) - _project(seen(r), (ones,), axes)), of="r") is None:
        return None  # r sums to more than 0 over each slice: no normalisation's gradient along these axes
    if split is None:
        where = f"along {_axes(axes)}"
        value = axes
    else:
        within = tuple(a if a < split else a - 1 for a in axes)  # the axes of the unsplit array
        where = f"along {_axes(within)} in {groups} groups of axis {split} (a group norm)"
        value = (within, groups)
    terms = ((ones, f"the term −mean(dx̂) {where}: the mean's dependence on every element"),
             (xc, f"the term −x̂·mean(dx̂ ⊙ x̂) {where}: the variance's dependence on every element"))
    for v, words in terms:
        fit = ev.holds(lambda i, r, gs: back(seen(r) + _project(seen(ev.cases[i][0] - r), (v,), axes)))
        if fit is not None:
            return ("missing mean terms", f"a normalisation's backward missing {words} ({mn} − {rn} is "
                    f"{'constant' if v is ones else 'proportional to x − mean(x)'} in each slice, "
                    f"{_res(fit)})", value)
    for j, g in enumerate(ev.gs):
        if g.shape != ev.m.shape:
            continue
        for scale in [None, *_broadcasts(scales, g.shape)]:
            def dxhat(gs):
                return seen(gs[j] if scale is None else gs[j] * scale)
            fit = ev.holds(lambda i, r, gs: back(_project(seen(ev.cases[i][0]), (dxhat(gs),), axes)))
            if fit is not None:
                return ("missing mean terms", f"a normalisation's backward missing both terms {where}, "
                        f"−mean(dx̂) and −x̂·mean(dx̂ ⊙ x̂): {mn} is dx̂ times one number per slice, the "
                        f"statistics treated as constants ({_res(fit)})", value)
    return None


def _only_step(a: int, t: int):
    def f(g):
        out = np.zeros_like(g)
        index = [slice(None)] * g.ndim
        index[a] = t
        out[tuple(index)] = g[tuple(index)]
        return out
    return f


def accumulation_cut_short(ev):
    mn, rn = ev.names
    for j, g in enumerate(ev.gs):
        for a in range(min(g.ndim, ev.m.ndim)):
            steps = g.shape[a]
            if steps < 2 or steps > MAX_STEPS or ev.m.shape[a] != steps:
                continue
            wrong = ev.differing(ev.m, ev.r)
            if wrong.take(steps - 1, axis=a).any() or not wrong.take(0, axis=a).any():
                continue

            def predict(i, r, gs):
                which, out = ("g", "g2")[i], np.empty_like(r)
                for t in range(steps):
                    run = ev.reruns.torch(which, ev.precise, (j, f"only step {t} of axis {a}", _only_step(a, t)))
                    index = [slice(None)] * r.ndim
                    index[a] = t
                    out[tuple(index)] = np.asarray(run.grads[ev.label], np.float64)[tuple(index)]
                return out

            fit = ev.holds(predict)
            if fit is not None:
                return ("accumulation cut short", f"accumulation cut short along {_axes((a,))}: {mn} at each step is "
                        f"{rn}'s gradient from {ev.g_name(j)} at that step alone (the last step right, the "
                        f"{steps - 1} earlier wrong): the gradient from later steps is never carried back through "
                        f"the recurrence (dh not accumulated over time) ({_res(fit)})", a)


def jacobian_reduction(ev):
    mn, rn = ev.names
    for j, g in enumerate(ev.gs):
        if g.shape != ev.m.shape or g.ndim < 2:
            continue
        ys = [np.asarray(ev.reruns.torch(w, ev.precise).outputs[j], np.float64) for w in ("g", "g2")]
        forms = (("softmax", lambda y, g, a: y * (g - (g * y).sum(axis=a, keepdims=True))),
                 ("log-softmax", lambda y, g, a: g - np.exp(y) * g.sum(axis=a, keepdims=True)))
        for name, vjp in forms:
            for right in range(g.ndim):
                if ev.holds(lambda i, r, gs: vjp(ys[i], gs[j], right), of="r") is None:
                    continue
                for other in range(g.ndim):
                    fit = None if other == right else ev.holds(lambda i, r, gs: vjp(ys[i], gs[j], other))
                    if fit is not None:
                        return ("wrong axis", f"a reduction over the wrong axis inside the Jacobian: {mn} is the "
                                f"{name}'s VJP with Σ over axis {other}, {rn} with Σ over axis {right} ({_res(fit)})",
                                (other,))


ALL = (flipped_mask, repeated_indices, kernel_flipped, kernel_not_flipped, missing_mean_terms, accumulation_cut_short,
       jacobian_reduction)

