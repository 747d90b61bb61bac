"""Tables for the CLI and the demo, drawn by ``rich``: on a terminal they fit its width and are coloured; piped
or redirected they are plain text (no colour, no wrapping, so ``grep`` and ``cut`` see whole cells).

Honours ``NO_COLOR``, ``FORCE_COLOR`` and ``COLUMNS`` as rich does. ``rich`` is imported on first use, so the
CLI's ``--help`` does not pay for it.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Iterable, Sequence

PIPED_WIDTH = 100_000  # no wrapping when piped: a table is as wide as its widest row


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


def _numeric(text: str) -> bool:
    return text.lstrip("$-").replace(",", "").replace(".", "").isdigit()


def _right_aligned(text: str) -> bool:
    return _numeric(text) or text.startswith("$") or text in ("-", "unknown")


def _narrowest(headers, cells, right, text_width: int = 8) -> int:
    """The narrowest the table can be with every number whole: numeric columns as wide as their widest cell or
    header, text columns folded to ``text_width``, two spaces between columns."""
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    return sum(w if numeric else min(w, text_width) for w, numeric in zip(widths, right)) + 2 * (len(headers) - 1)


def _style(value, text: str) -> str | None:
    if isinstance(value, Decimal) or text.startswith("$"):
        return "green"
    if text in ("unknown", "REFUSED", "yes") or text.endswith(" unpriced"):
        return "yellow"
    return "dim" if value is None else None


def render_table(headers: Sequence[str], rows: Iterable[Sequence], title: str | None = None) -> str:
    """The table as text for ``click.echo``: numbers right-aligned, ``None`` as ``-``, money as ``$0.000123``.
    When stdout is a terminal, sized to it and coloured; when it is a pipe or a file, plain."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stdout = Console()  # only asked about the real stdout: a terminal? how wide? colours allowed?
    terminal = stdout.is_terminal
    values = [list(row) for row in rows]
    cells = [[format_cell(v) for v in row] for row in values]
    plain = box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)  # a dashed rule under the header
    table = Table(box=box.SIMPLE_HEAD if terminal else plain, show_edge=False, pad_edge=False, collapse_padding=True,
                  header_style="bold cyan" if terminal else None, show_lines=False)
    right = [bool(cells) and all(_right_aligned(r[i]) for r in cells) for i in range(len(headers))]
    # On a terminal, text columns wrap first so numbers stay whole on one line; when even the numbers alone do not
    # fit, every cell folds (never cut). Piped, nothing wraps.
    fold_all = terminal and _narrowest(headers, cells, right) > stdout.width
    for header, numeric in zip(headers, right):
        table.add_column(header, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=not terminal or (numeric and not fold_all))
    for raw, row in zip(values, cells):
        table.add_row(*(Text(text, style=_style(value, text) or "") for value, text in zip(raw, row)))
    if not cells:
        table.add_row(*(["(no rows)"] + [""] * (len(headers) - 1)))
    out = io.StringIO()
    console = Console(file=out, width=stdout.width if terminal else PIPED_WIDTH, force_terminal=terminal,
                      # rich names the colour system it detected with a name Console accepts
                      color_system=stdout.color_system if terminal else None,  # type: ignore[arg-type]
                      no_color=stdout.no_color,
                      highlight=False)
    if title:  # above the table, not as its title: rich would wrap a title to the table's width
        console.print(Text(title, style="bold" if terminal else ""))
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())
