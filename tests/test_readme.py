"""README.md as a newcomer meets it: short, in the order they need, every doc page one click away,
and every command and code block in it running as shown, from a clone and from an installed wheel."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAX_LINES = 200


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of `text` whose info string is `language` ("" for a bare fence)."""
    found, current, info = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                if info == language:
                    found.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return found


def test_the_readme_is_short_in_order_and_links_every_doc_page():
    assert len(README.splitlines()) <= MAX_LINES
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == ["Check your own derivation", "Commands", "How it works", "Documentation"]
    first = README.split("\n## ", 1)[0]  # what it is, the two commands, what `make run` prints
    assert "make run" in first and "make test" in first and "PASS: " in first and "docs/loss_curves.png" in first
    links = set(re.findall(r"\]\(([^)#]+)\)", README))
    assert all((ROOT / link).exists() for link in links), [link for link in links if not (ROOT / link).exists()]
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= links, pages - links


def test_every_option_the_readme_names_exists_and_every_command_parses():
    from compare.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    known = {s for p in (parser, *commands.values()) for a in p._actions for s in a.option_strings}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", README))
    assert named <= known, named - known
    for span in re.findall(r"`(crosscheck [^`]*)`", README):
        words = span.split()[1:]
        if words and words[0] in commands and not any(w.isupper() for w in words):
            parser.parse_args(words)  # exits (SystemExit) on an unknown option or a bad value
    targets = set(re.findall(r"^(\w+):", (ROOT / "Makefile").read_text(), re.M))
    for command in re.findall(r"^make (\w+)", "\n".join(blocks(README, "bash")), re.M):
        assert command in targets


def derivation_test_file(directory: Path) -> Path:
    path = directory / "test_my_derivations.py"
    (code,) = blocks(section("Check your own derivation"), "python")
    path.write_text(code)
    return path


def assert_runs_as_quoted(proc):
    assert "1 failed, 3 passed" in proc.stdout, proc.stdout + proc.stderr
    quoted = blocks(section("Check your own derivation"), "")[-1].splitlines()
    shown = [line for line in quoted if line.startswith("E ") and "…" not in line]  # "…": lines left out
    assert len(shown) >= 4
    for line in shown:  # up to the values, which carry rounding in their last digits
        head = re.split(r" \(|: relative error| = ", line)[0]
        assert head in proc.stdout, (head, proc.stdout)


def test_the_derivation_example_runs_as_quoted(tmp_path):
    derivation_test_file(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_derivations.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_runs_as_quoted(proc)


@pytest.mark.slow
def test_a_wheel_installed_outside_the_clone_gives_crosscheck_and_the_check_api(tmp_path):
    """`pip install .` (not editable): the wheel, built from the package sources alone, installed
    without dependencies into a venv that sees this environment's packages; from a directory
    outside the clone, `crosscheck --help` works and the README's example runs as quoted."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("manual", "torch_ref", "compare"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    python = sys.executable
    subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("mlp_crosscheck-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    installed = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "--python", str(installed), "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=600)
    site = subprocess.run([str(installed), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test-environment.pth").write_text("\n".join(sorted(ours)) + "\n")  # torch, numpy, pytest
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(installed), "-c", "import compare, manual; print(compare.__file__, manual.__file__)"],
                           cwd=outside, capture_output=True, text=True, env=env, timeout=300)
    assert where.returncode == 0 and all(path.startswith(str(venv)) for path in where.stdout.split()), where
    help_text = subprocess.run([str(venv / "bin" / "crosscheck"), "--help"], cwd=outside, capture_output=True,
                               text=True, env=env, timeout=300)
    assert help_text.returncode == 0 and "commands:" in help_text.stdout and "train" in help_text.stdout
    derivation_test_file(outside)
    proc = subprocess.run([str(installed), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_derivations.py"],
                          cwd=outside, capture_output=True, text=True, env=env, timeout=600)
    assert_runs_as_quoted(proc)
