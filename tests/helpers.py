"""Helpers for tests that meet the tool the way a user does: through the command line."""

import subprocess
import sys

import numpy as np

from compare.agreement import Agreement, compare_grads, param_message


def run_cli(*args, timeout=600, env=None, cwd=None):
    """Run ``python -m compare ARGS`` the way a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "compare", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def assert_one_line_error(proc, code, *needles):
    """A user error: the given exit code, one line on stderr containing every needle, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_close_bound(actual, expected, bound, msg=""):
    """Assert |actual − expected| ≤ bound elementwise (bound broadcasts; NaN never passes).

    Equal values pass (so ±inf against the same inf does). On failure the message says, like
    ``torch.testing.assert_close``, how many elements exceed their allowance, and for the greatest
    excess its index, both values, the difference and what was allowed.
    """
    import numpy as np

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{msg}shape mismatch: actual {a.shape}, expected {e.shape}"
    allowed = np.broadcast_to(np.asarray(bound, dtype=np.float64), a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - e)
        bad = ~((a == e) | (diff <= allowed))  # NaN anywhere (value or bound) lands here
        if not bad.any():
            return
        excess = np.where(bad, np.nan_to_num(diff - allowed, nan=np.inf), -np.inf)
    i = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    n, total = int(bad.sum()), a.size
    raise AssertionError(
        f"{msg}not within the error bound: {n} / {total} elements ({100 * n / total:.1f} %) exceed it; "
        f"greatest excess at index {tuple(int(j) for j in i)}: actual {float(a[i])!r}, expected {float(e[i])!r}, "
        f"|difference| {diff[i]:.6g}, allowed {allowed[i]:.6g}")


# Largest |f''| of each activation (sigmoid: 1/(6√3) ≈ 0.096, tanh: 4/(3√3) ≈ 0.77, relu: 0 off
# its kink): how far an error in ẑ moves f'(ẑ). 1 bounds all three.
MAX_SECOND_DERIVATIVE = 1.0


def gradient_bounds(weights, biases, x, y, activation, dtype=None):
    """Elementwise allowance [(bound_W, bound_b), ...] for two computations of the batch-mean
    cross-entropy gradient of an MLP (any summation order, any grouping of the chain rule).

    A first-order forward error analysis on magnitudes, every quantity in float64:
      F_l  = |f'(ẑ_l)| ⊙ (Z_l) + |z_l|,  Z_l = |z_(l−1)| @ |W_lᵀ| + |b_l| + F_(l−1) @ |W_lᵀ|, F_0 = 0
             (the error of ẑ_l and z_l is at most γ·Z_l and γ·F_l);
      D_L  = (p + onehot(y) + 2p·max_j Z_L,j) / B  (δ = (p − onehot)/B; an error ε in the logits moves p by ≤ 2p·ε);
      D_l  = (D_(l+1) @ |W_(l+1)|) ⊙ (|f'(ẑ_l)| + MAX_SECOND_DERIVATIVE·Z_l);
      bound_W_l = 2γ_K·D_lᵀ @ (|z_(l−1)| + F_(l−1)),  bound_b_l = 2γ_K·Σ_rows D_l,
    with K = B + C + 16 + Σ_l (n_in,l + 8) the roundings along the longest chain (γ_a + γ_b ≤ γ_(a+b)).

    A worst case: each layer multiplies it by ~Z (the pre-activations' magnitude, ~10 for MNIST-sized
    inputs). In float64 it stays ~1e-8 of the gradient or below (784-32-16-10); in float32 through
    three such layers it exceeds the gradient itself, so there the measured norm-wise
    ``compare.tolerances.gradient_rel`` is the check and this bound is only for one or two layers.

    Args:
        weights, biases: lists of (out, in) and (out,) arrays; x: (B, in); y: (B,) int labels.
        activation: an object with .f and .prime (prime from f's output), as manual.functional's.
        dtype: the precision of the computations (default: x's).
    """
    import numpy as np

    from compare.tolerances import gamma

    dt = np.dtype(dtype or x.dtype)
    W64 = [np.asarray(W, np.float64) for W in weights]
    b64 = [np.asarray(b, np.float64) for b in biases]
    z, z_mag, F = np.asarray(x, np.float64), np.abs(np.asarray(x, np.float64)), np.zeros(np.shape(x))
    primes, Zs, zs = [], [], [(z_mag, F)]
    for i, (W, b) in enumerate(zip(W64, b64)):
        zhat = z @ W.T + b
        Z = z_mag @ np.abs(W.T) + np.abs(b) + F @ np.abs(W.T)
        Zs.append(Z)
        if i == len(W64) - 1:
            break
        z = activation.f(zhat)
        fp = np.abs(activation.prime(z))
        F = fp * Z + np.abs(z)
        z_mag = np.abs(z)
        primes.append(fp)
        zs.append((z_mag, F))
    B, C = zhat.shape
    p = np.exp(zhat - zhat.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[np.arange(B), np.asarray(y)] = 1
    D = (p + onehot + 2 * p * Zs[-1].max(axis=1, keepdims=True)) / B
    K = B + C + 16 + sum(W.shape[1] + 8 for W in W64)
    rel = 2 * gamma(K, dt)
    bounds = []
    for i in reversed(range(len(W64))):
        mag, F = zs[i]
        bounds.append((rel * (D.T @ (mag + F)), rel * D.sum(axis=0)))
        if i:
            D = (D @ np.abs(W64[i])) * (primes[i - 1] + MAX_SECOND_DERIVATIVE * Zs[i - 1])
    return bounds[::-1]


# ------------------------------------------------------------------ activations' own rounding

# Transcendental functions: NumPy's own accuracy tests allow exp, log and tanh at most 4 ulp
# (float32 log; float64 exp and log 1 ulp, tanh 2: numpy/_core/tests/data/umath-validation-set-*.csv),
# torch's vectorised CPU kernels (SLEEF, "u10") 1 ulp. One ulp of y is at most 2u·|y|.
LIBM_ULPS = 4


def libm_rel(dtype="float64") -> float:
    """Relative error of one exp, log or tanh in `dtype`: 2·LIBM_ULPS·u."""
    from compare.tolerances import unit_roundoff

    return 2 * LIBM_ULPS * unit_roundoff(dtype)


def forward_rel(name: str, dtype="float64") -> float:
    """Relative error of one computation of the activation: σ = 1/(1 + e^(−x)) the exp's, then the
    add (≤ u relative to 1 + e) and the reciprocal (u); tanh the library's; relu exact."""
    from compare.tolerances import unit_roundoff

    return {"sigmoid": libm_rel(dtype) + 2 * unit_roundoff(dtype), "tanh": libm_rel(dtype), "relu": 0.0}[name]


def prime_error(name: str, f, dtype="float64"):
    """|error| (array of f's shape) of one computation of f' from a stored f that is itself within
    r = forward_rel: σ' = (1 − s)s: r·s² + (r + 2u)·|σ'| (s's error through both factors, two
    roundings); tanh' = 1 − t²: (2r + u)·t² + u·|tanh'|; relu' exact."""
    import numpy as np

    from compare.tolerances import unit_roundoff

    f = np.asarray(f, dtype=np.float64)
    r, u = forward_rel(name, dtype), unit_roundoff(dtype)
    if name == "sigmoid":
        return r * f * f + (r + 2 * u) * np.abs((1 - f) * f)
    if name == "tanh":
        return (2 * r + u) * f * f + u * np.abs(1 - f * f)
    return np.zeros_like(f)


# ------------------------------------------------------------------ the reference on any array library

# manual/ computes in the library of the arrays it is given: NumPy, torch tensors (CPU, no autograd),
# and array-api-strict's arrays, which hold the standard's API and nothing more, so that a NumPy-only
# call inside manual/ fails or hands back a NumPy array (which ``from_library`` refuses).
ARRAY_LIBRARIES = ("numpy", "torch", "array_api_strict")


def in_library(lib: str, a):
    """NumPy array `a` as an array of `lib` (a copy; torch: a CPU tensor, requires_grad off);
    anything that is not a NumPy array as it is."""
    import numpy as np

    if not isinstance(a, np.ndarray) or lib == "numpy":
        return a
    if lib == "torch":
        import torch

        return torch.asarray(a.copy())
    import array_api_strict

    return array_api_strict.asarray(a)


def from_library(lib: str, result):
    """A result of manual/ computed on `lib`'s arrays, as NumPy (tuples and lists element by
    element, floats and None as they are), after asserting that each array is one of `lib`'s."""
    import numpy as np
    from array_api_compat import is_array_api_obj

    if isinstance(result, (tuple, list)):
        return type(result)(from_library(lib, r) for r in result)
    if not is_array_api_obj(result):
        return result
    got = type(result).__module__.split(".")[0]
    assert got == lib, f"manual/ handed back a {got} array ({type(result).__name__}) for {lib} inputs"
    if lib == "torch":
        assert not result.requires_grad and result.device.type == "cpu"
        return result.numpy()
    return np.asarray(result)


def run_in(lib: str, fn, *args, **kwargs):
    """fn(*args, **kwargs) with every NumPy argument given as an array of `lib` (``in_library``),
    the result back as NumPy (``from_library``)."""
    return from_library(lib, fn(*(in_library(lib, a) for a in args), **kwargs))


def library(lib: str):
    """The module of array library `lib` (numpy, torch, array_api_strict), for ``Stack.to``."""
    import importlib

    return importlib.import_module(lib)


def net_in(lib: str, net):
    """A copy of the NumPy net (``manual.mlp.Stack`` or ``MLP``) computing in `lib` (CPU)."""
    import copy

    twin = copy.deepcopy(net)
    return twin if lib == "numpy" else twin.to(library(lib))


class DenseInOut:
    """y = x W + b with W held as (in, out), the transpose of nn.Linear's weight: a layer in another layout."""

    def __init__(self, W, b):
        self.params, self.grads = {"W": W, "b": b}, {}

    @classmethod
    def random(cls, n_in, n_out, rng, dtype="float64"):
        return cls(rng.standard_normal((n_in, n_out)).astype(dtype), rng.standard_normal(n_out).astype(dtype))

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        self.grads["W"], self.grads["b"] = self.x.T @ dy, dy.sum(axis=0)
        return dy @ self.params["W"].T


# ------------------------------------------------------------------ two nets' gradients, asserted


class AgreementError(AssertionError):
    """Two gradients disagree. ``failures`` holds the Agreement of each failing parameter."""

    def __init__(self, failures: list[Agreement], names=("manual", "torch"), context: str = "", grads=None):
        self.failures = failures
        self.names = names
        self.context = context
        lines = []
        for agr in failures:
            arrays = None
            if grads is not None and not agr.note:
                j = 0 if agr.param == "W" else 1
                arrays = (np.asarray(grads[0][agr.layer - 1][j]), np.asarray(grads[1][agr.layer - 1][j]))
            lines.append(param_message(agr, names, arrays))
        first = failures[0]
        head = (f"gradients disagree ({names[0]} vs {names[1]}){' at ' + context if context else ''}: "
                f"layer {first.layer} {first.param}")
        others = len(failures) - 1
        head += f" and {others} more parameter{'s' * (others > 1)}" if others else ""
        super().__init__(head + "\n  " + "\n  ".join(lines))


def assert_grads_agree(grads_a, grads_b, allowed: float, names=("manual", "torch"), context: str = "",
                       elem_allowed: float | None = None):
    """Compare and raise AgreementError naming every failing layer and parameter.

    Returns the list of Agreements when all pass.
    """
    agreements = compare_grads(grads_a, grads_b, allowed, elem_allowed)
    failures = [agr for agr in agreements if not agr.ok]
    if failures:
        raise AgreementError(failures, names, context, grads=(grads_a, grads_b))
    return agreements


def load_example(name: str):
    """examples/<name>.py loaded by path, as a user's own file would be."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
