"""The docs stay true to the code: every link of docs/derivation.md to a line of source points at
the function or name it cites (or, for a link named `# comment`, at the line with that comment)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[`([^`]+)`\]\((\.\./[^)#]+)#L(\d+)\)")


def test_derivation_links_point_at_their_definitions():
    text = (ROOT / "docs" / "derivation.md").read_text()
    links = LINK.findall(text)
    assert len(links) > 20
    wrong = []
    for name, path, line in links:
        source = (ROOT / "docs" / path).resolve().read_text().splitlines()
        target = source[int(line) - 1]
        short = name.split(".")[-1].rstrip("()")
        if name.startswith("# "):  # a link to a commented line of code: the comment must be there
            if name not in target:
                wrong.append(f"{name} -> {path}#L{line}: {target.strip()!r}")
        elif not re.search(rf"(def|class)\s+{re.escape(short)}\b|^\s*{re.escape(short)}\s*=", target):
            wrong.append(f"{name} -> {path}#L{line}: {target.strip()!r}")
    assert not wrong, "stale links in docs/derivation.md:\n" + "\n".join(wrong)
