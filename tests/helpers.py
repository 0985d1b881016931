"""Helpers for tests that meet the tool the way a user does: through the command line."""

import subprocess
import sys


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
    with np.errstate(invalid="ignore"):
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
