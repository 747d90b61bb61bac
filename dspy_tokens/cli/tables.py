"""Plain-text tables for the CLI and the demo (no dependency, aligned columns)."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable, Sequence


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return f"${value:.6f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(headers: Sequence[str], rows: Iterable[Sequence], title: str | None = None) -> str:
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells] or ["(no rows)"]
    return "\n".join(out)


def _numeric(text: str) -> bool:
    return text.lstrip("$-").replace(",", "").replace(".", "").isdigit()
