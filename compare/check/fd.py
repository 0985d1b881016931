"""Finite differences, the one engine every check uses: central differences coordinate by
coordinate, and along a direction, each with the bound on its own rounding error.

For a function whose outputs f(θ) (one flat float64 vector, from ``evaluate()``) depend on a
float64 tensor θ that is perturbed in place, and upstream weights g of f's shape:

    coordinate k:   (⟨g, f(θ + h·eₖ)⟩ − ⟨g, f(θ − h·eₖ)⟩) / 2h   ≈ (Jᵀg)ₖ
    direction u:    (⟨g, f(θ + h·u)⟩ − ⟨g, f(θ − h·u)⟩) / 2h     ≈ ⟨Jᵀg, u⟩

A loss is the case of one output and g = 1. Each difference is taken as ⟨g, f₊ − f₋⟩/2h, so that
outputs the step does not reach cancel exactly, and comes with its rounding bound
eps·Σ|g|(|f₊| + |f₋|)/2h over the outputs it reaches. The truncation error h²·f‴/6 is not bounded
here (FINITE_DIFF_REL in ``compare.check.tolerances`` allows for it); ``truncation`` estimates it by a
second step 2h (Richardson: the error grows as h²).
"""

from __future__ import annotations

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)


def _difference(g: np.ndarray, up: np.ndarray, down: np.ndarray, h: float) -> tuple[float, float]:
    """⟨g, up − down⟩/2h and its rounding bound eps·Σ|g|(|up| + |down|)/2h over the outputs reached."""
    with np.errstate(all="ignore"):
        d = up - down
        reached = (np.abs(up) + np.abs(down)) * (d != 0)
        return float(np.dot(g, d)) / (2 * h), EPS64 * float(np.dot(np.abs(g), reached)) / (2 * h)


def coordinates(t: np.ndarray, coords: np.ndarray, evaluate, g: np.ndarray, h: float):
    """Central differences at each flat (row-major) index of `coords` of the float64 array `t`,
    which `evaluate` reads and which is perturbed in place (any memory layout) and restored.

    Args:
        t: the tensor θ; coords: flat indices into it; evaluate: () -> f(θ), a flat float64 array;
        g: the weights of the outputs, f's shape; h: the step.
    Returns:
        (values, rounding): 1-D float64 arrays of len(coords).
    """
    values, rounding = np.empty(len(coords)), np.empty(len(coords))
    for n, k in enumerate(coords):
        up, down = _around(t, k, evaluate, h)
        values[n], rounding[n] = _difference(g, up, down, h)
    return values, rounding


def _around(t: np.ndarray, k, evaluate, h: float) -> tuple[np.ndarray, np.ndarray]:
    """f(θ + h·eₖ) and f(θ − h·eₖ), θ = t moved in place at its flat index k and restored."""
    at = np.unravel_index(int(k), t.shape)
    saved = t[at]
    try:
        t[at] = saved + h
        up = evaluate()
        t[at] = saved - h
        down = evaluate()
    finally:
        t[at] = saved
    return up, down


def one_sided(t: np.ndarray, coords: np.ndarray, evaluate, g: np.ndarray, h: float):
    """The one-sided differences at each flat index of `coords`: right ⟨g, f(θ + h·eₖ) − f(θ)⟩/h
    and left ⟨g, f(θ) − f(θ − h·eₖ)⟩/h, which agree to about h·f″ where f is smooth and differ
    by a jump that does not shrink with h at a kink (``compare.check.kinks``).

    Returns:
        (right, left, rounding): 1-D float64 arrays of len(coords); rounding bounds either one.
    """
    base = evaluate()
    right, left, rounding = (np.empty(len(coords)) for _ in range(3))
    for n, k in enumerate(coords):
        up, down = _around(t, k, evaluate, h)
        right[n], r_up = _difference(g, up, base, h / 2)  # _difference divides by 2·(h/2) = h
        left[n], r_down = _difference(g, base, down, h / 2)
        rounding[n] = max(r_up, r_down)
    return right, left, rounding


def _along(ts: list, us: list, evaluate, h: float) -> tuple[np.ndarray, np.ndarray]:
    """f(θ + h·u) and f(θ − h·u), θ = the tensors `ts` moved together in place along `us` and restored."""
    saved = [t.copy() for t in ts]
    try:
        for t, s, u in zip(ts, saved, us):
            np.add(s, h * u, out=t)
        up = evaluate()
        for t, s, u in zip(ts, saved, us):
            np.subtract(s, h * u, out=t)
        down = evaluate()
    finally:
        for t, s in zip(ts, saved):
            t[...] = s
    return up, down


def direction(t: np.ndarray, u: np.ndarray, evaluate, g: np.ndarray, h: float) -> tuple[float, float]:
    """The central difference along u (t's shape) of ⟨g, f⟩: (value, rounding bound); two
    evaluations whatever the size of t, which is restored afterwards."""
    return _difference(g, *_along([t], [u], evaluate, h), h)


def one_sided_along(ts: list, us: list, evaluate, g: np.ndarray, h: float) -> tuple[float, float, float]:
    """``one_sided`` along a direction rather than a coordinate, the tensors `ts` moved together
    along `us` (one of each shape): (right, left, rounding), three evaluations."""
    base = evaluate()
    up, down = _along(ts, us, evaluate, h)
    right, r_up = _difference(g, up, base, h / 2)
    left, r_down = _difference(g, base, down, h / 2)
    return right, left, max(r_up, r_down)


def truncation(value: np.ndarray, value_2h: np.ndarray) -> np.ndarray:
    """An estimate of the truncation error of the differences `value` (step h) from the same taken
    with step 2h: c·h² − c·4h² = −3c·h², so |value − value_2h|/3."""
    return np.abs(np.asarray(value) - np.asarray(value_2h)) / 3


def choose(size: int, affordable: float, samples: int, least: int, rng: np.random.Generator):
    """Flat indices to difference: all of them when `size` ≤ `affordable`, else a sorted sample
    without replacement of min(samples, affordable) drawn from `rng`; None when fewer than `least`
    are affordable (the directional difference then stands in)."""
    if size <= affordable:
        return np.arange(size)
    n = int(min(samples, affordable))
    return np.sort(rng.choice(size, size=n, replace=False)) if n >= least else None
