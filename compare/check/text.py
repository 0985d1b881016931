"""Text for the referee's reports: aligned columns."""

from __future__ import annotations

from typing import Sequence


def format_table(rows: Sequence[Sequence[str]], align: str = "r") -> str:
    """Text columns, two spaces apart, each as wide as its widest cell.

    Args:
        rows: the header row first, then the data rows; every cell a str.
        align: one character per column, "l" (left) or "r" (right), or one character for all.
    Returns:
        the table, one line per row, without trailing spaces.
    """
    n = max(len(r) for r in rows)
    align = align * n if len(align) == 1 else align
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(n)]
    just = [str.ljust if a == "l" else str.rjust for a in align]
    return "\n".join("  ".join(j(cell, w) for cell, w, j in zip(r, widths, just)).rstrip() for r in rows)
