"""``crosscheck bench --resume DIR``: go on with an earlier run, in a new directory.

A full grid takes one to two hours on a small machine, and a machine that slows down now and then
leaves some points marked ``!``. Resuming keeps every point of DIR's bench.json whose figures all
stood (and the epoch figure, if it stood) and measures the others, and the points an interrupted
run never reached, with DIR's own options. Each point's implementations are still timed together,
interleaved, so every ratio comes from one stretch of time; the point records when it was measured.
DIR itself is left as it is: the run goes to a new directory (--out, or runs/bench-<timestamp>).
A point is kept only if the same code on the same libraries timed it (``code_fingerprint``, recorded
with each point): after a change to a step, the timing, the rule for figures or a library's version,
the earlier figures would not compare.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from compare.bench import config, machine
from compare.errors import UsageError

# The options that define a run: with --resume they come from the run, never from the command line.
RUN_OPTIONS = ("archs", "batches", "dtype", "threads", "max_processes", "device", "breakdown", "no_compile",
               "no_jax", "no_epoch", "quick")


# What a figure times and how it is judged. grid (how many processes, in which order) is left out:
# it decides how a figure is pinned down, not what it means.
TIMED = ("manual", "torch_ref", "compare.spin", "compare.bench.steps", "compare.bench.yardstick", "compare.bench.floor",
         "compare.bench.worker", "compare.bench.timing", "compare.bench.reliability")


def code_fingerprint() -> str:
    """The first 12 hex digits of a SHA-256 over the source of the ``TIMED`` modules and packages
    (found, not imported) and the installed library versions (``machine.versions``): the same for
    two points exactly when the same code, on the same libraries, timed and judged them."""
    digest = hashlib.sha256(json.dumps(machine.versions(), sort_keys=True).encode())
    for name in TIMED:
        spec = importlib.util.find_spec(name)
        files = ([spec.origin] if not spec.submodule_search_locations
                 else sorted(str(f) for d in spec.submodule_search_locations for f in Path(d).rglob("*.py")))
        for file in files:
            digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:12]


def _error(path, what: str) -> UsageError:
    return UsageError(f"argument --resume: {what} (got {str(path)!r})")


def load(path: Path) -> dict:
    """The bench.json in `path` (a run directory, or the file) -> the report; UsageError saying
    what is wrong when it is missing, unreadable or not a bench table's report."""
    file = path / "bench.json" if path.is_dir() else path
    if not file.is_file():
        raise _error(path, "a crosscheck bench run directory is expected, with its bench.json; none found")
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(path, f"its bench.json cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(report, dict) or not {"config", "points", "machine"} <= set(report):
        raise _error(path, "its bench.json is not a crosscheck bench report")
    return report


def check_options(args) -> None:
    """UsageError when a run-defining option is given with --resume (the run's own options are used)."""
    given = [f"--{name.replace('_', '-')}" for name in RUN_OPTIONS if getattr(args, name, None) not in (None, False)]
    if given:
        raise UsageError(f"argument --resume: the run goes on with its own options; leave out {', '.join(given)}")


def settings(report: dict, path: Path, out: Path | None) -> config.Settings:
    """The earlier run's settings from its bench.json's config; UsageError when it ran on another CPU
    (its kept figures would not compare with new ones)."""
    c = report["config"]
    try:
        archs = [config.parse_arch(a) for a in c["archs"]]
        timing = config.Timing(**c["timing"])
        epoch = report.get("epoch")
        epoch_images = c.get("epoch_images", (epoch or {}).get("images", 0))
        s = config.Settings(archs, list(c["batches"]), c["dtype"], int(c["threads"]), dict(c["skipped"]),
                            int(epoch_images), timing, out, c.get("device", "cpu"))
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise _error(path, f"its bench.json's config is incomplete ({type(e).__name__}: {e})") from None
    then, now = report["machine"].get("cpu"), machine.host(s.threads)["cpu"]
    if then != now:
        raise _error(path, f"that run was measured on {then}, this machine is {now}: its figures do not compare")
    return s


def _stood(figure: dict) -> bool:
    return bool(figure.get("reliability", {}).get("reliable"))


def _stands(figure: dict, code: str) -> bool:
    return _stood(figure) and figure.get("code") == code


def standing(report: dict, code: str) -> dict[tuple[str, int], dict]:
    """(arch, batch) -> the earlier run's point, for each point whose figures all stood and which
    this `code` (``code_fingerprint``) timed: a point timed by other code would not compare."""
    return {(p["arch"], p["batch"]): p for p in report["points"] if _stands(p, code)}


def standing_epoch(report: dict, code: str) -> dict | None:
    """The earlier run's epoch figure if it stood and this `code` timed it, else None."""
    epoch = report.get("epoch")
    return epoch if epoch and _stands(epoch, code) else None


def other_code(report: dict, code: str) -> int:
    """How many of the earlier run's figures (points, epoch) stood but were timed by other code."""
    figures = report["points"] + [report["epoch"]] * bool(report.get("epoch"))
    return sum(_stood(f) and f.get("code") != code for f in figures)
