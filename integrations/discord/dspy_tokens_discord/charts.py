"""Usage-per-day chart as a PNG in memory (matplotlib's Agg canvas; no pyplot, no display, thread-safe).

Rendering takes tens of milliseconds: the cog calls :func:`usage_chart` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from dspy_tokens import Group

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _compact(value: float, _pos=None) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}"


def usage_chart(days: Sequence[Group], *, title: str = "Tokens per day (UTC)") -> io.BytesIO:
    """A bar chart of ``total_tokens`` per day (core :class:`dspy_tokens.Group`, ``key`` a ``date``); the buffer is
    rewound."""
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = [g.key.strftime("%m-%d") if g.key else "?" for g in days]
    values = [g.total_tokens for g in days]
    ax.bar(range(len(values)), values, color="#5865F2")
    step = max(1, len(labels) // 10)
    ax.set_xticks(range(0, len(labels), step), labels[::step])
    ax.yaxis.set_major_formatter(FuncFormatter(_compact))
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return buffer
