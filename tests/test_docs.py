"""The docs stay true to the code: every link of docs/derivation.md to a line of source points at
the function or name it cites (or, for a link named `# comment`, at the line with that comment);
a link named `Class.method` points at that method inside that class.

After moving code, `python tests/test_docs.py --fix` re-points the links."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "derivation.md"
LINK = re.compile(r"\[`([^`]+)`\]\((\.\./[^)#]+)#L(\d+)\)")


def matches(name: str, line: str) -> bool:
    if name.startswith("# "):
        return name in line
    short = re.escape(name.split(".")[-1].rstrip("()"))
    return bool(re.search(rf"(def|class)\s+{short}\b|^\s*{short}\s*=", line))


def in_class(name: str, lines: list[str], number: int) -> bool:
    """For `Class.method`: line `number` (1-based) lies in the body of `class Class`; else True."""
    owner = name.split(".")[0] if "." in name and not name.startswith("# ") else ""
    if not owner[:1].isupper():
        return True
    classes = [m.group(1) for line in lines[:number - 1] if (m := re.match(r"class\s+(\w+)", line))]
    return bool(classes) and classes[-1] == owner


def points_at(name: str, lines: list[str], number: int) -> bool:
    return matches(name, lines[number - 1]) and in_class(name, lines, number)


def source(path: str) -> list[str]:
    return (DOC.parent / path).resolve().read_text().splitlines()


def test_derivation_links_point_at_their_definitions():
    links = LINK.findall(DOC.read_text())
    assert len(links) > 20
    wrong = [f"{name} -> {path}#L{line}: {source(path)[int(line) - 1].strip()!r}"
             for name, path, line in links if not points_at(name, source(path), int(line))]
    assert not wrong, "stale links in docs/derivation.md (run python tests/test_docs.py --fix):\n" + "\n".join(wrong)


def fix() -> None:
    def repoint(m):
        name, path, _ = m.groups()
        lines = source(path)
        hits = [i for i in range(1, len(lines) + 1) if points_at(name, lines, i)]
        if len(hits) != 1:
            print(f"cannot re-point {name} in {path}: {len(hits)} candidates", file=sys.stderr)
            return m.group(0)
        return f"[`{name}`]({path}#L{hits[0]})"

    DOC.write_text(LINK.sub(repoint, DOC.read_text()))


if __name__ == "__main__" and sys.argv[1:] == ["--fix"]:
    fix()
