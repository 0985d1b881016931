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
