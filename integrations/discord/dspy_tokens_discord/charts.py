"""Usage-per-day chart as a PNG in memory (matplotlib's Agg canvas; no pyplot, no display, thread-safe).

Readable in Discord's light and dark themes alike: the background is transparent and every colour keeps a contrast
of at least 3:1 (WCAG's bar for graphics and large text) against both theme backgrounds. Tokens are bars on the
left axis, the cost a line on the right one; a short period (``today``) keeps narrow bars with their values
written on them instead of one bar across the whole chart.

Rendering takes tens of milliseconds: the cog calls :func:`usage_chart` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from dspy_tokens import Group

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Discord's message backgrounds, light and dark theme: the chart must read on both.
THEME_BACKGROUNDS = {"light": "#FFFFFF", "dark": "#313338"}
TEXT = "#868A92"  # a grey halfway in luminance between the two backgrounds: ~3.5:1 on each
TOKENS = "#727CF5"  # a lighter Discord blurple
COST = "#CC7F1F"  # amber
MIN_SLOTS = 7  # fewer days than this are drawn at the width of a week, centred
LABELLED_BARS = 10  # up to this many bars carry their value


def _compact(value: float, _pos=None) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}"


def _dollars(value: float, _pos=None) -> str:
    if value == 0:
        return "$0"
    digits = 2 if abs(value) >= 1 else 4 if abs(value) >= 0.01 else 6
    return f"${value:,.{digits}f}".rstrip("0").rstrip(".")


def usage_figure(days: Sequence[Group], *, title: str = "Tokens and cost per day (UTC)") -> Figure:
    """The chart as a matplotlib ``Figure``: ``total_tokens`` per day as bars (left axis, "tokens"), ``cost_usd``
    as a line (right axis, "cost (USD)") when any day has a known cost. ``days`` are core
    :class:`dspy_tokens.Group` objects whose ``key`` is a ``date``."""
    fig = Figure(figsize=(8, 3.4), dpi=120)
    FigureCanvasAgg(fig)
    fig.patch.set_alpha(0)
    ax = fig.add_subplot()
    ax.patch.set_alpha(0)
    n = len(days)
    x = range(n)
    tokens = [g.total_tokens for g in days]
    bars = ax.bar(x, tokens, width=0.6, color=TOKENS, label="tokens", zorder=2)
    pad = max(0, MIN_SLOTS - n) / 2
    ax.set_xlim(-0.5 - pad, n - 0.5 + pad)
    labels = [g.key.strftime("%m-%d") if g.key else "?" for g in days]
    step = max(1, n // 10)
    ax.set_xticks(range(0, n, step), labels[::step])
    ax.set_ylabel("tokens", color=TEXT)
    ax.yaxis.set_major_formatter(FuncFormatter(_compact))
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.set_ylim(bottom=0, top=max(tokens, default=0) * 1.18 or 1)
    if n <= LABELLED_BARS:  # inside a bar (white on blurple reads in both themes; the cost line runs near the
        tall = max(tokens, default=0) * 0.2  # tops), or above a short one
        ax.bar_label(bars, labels=[_compact(t) if t >= tall else "" for t in tokens], color="white", fontsize=9,
                     label_type="center")
        ax.bar_label(bars, labels=[_compact(t) if t < tall else "" for t in tokens], color=TEXT, fontsize=9,
                     padding=2)
    ax.grid(axis="y", color=TEXT, alpha=0.35, linewidth=0.6, zorder=0)
    handles: list[Any] = [bars]
    costs = [float(g.cost_usd) for g in days]
    if any(costs):
        money = ax.twinx()
        (line,) = money.plot(x, costs, color=COST, marker="o", markersize=4, linewidth=2, label="cost (USD)",
                             zorder=3)
        money.set_ylabel("cost (USD)", color=TEXT)
        money.yaxis.set_major_formatter(FuncFormatter(_dollars))
        money.yaxis.set_major_locator(MaxNLocator(5))
        money.set_ylim(bottom=0, top=max(costs) * 1.18)
        _style(money)
        handles.append(line)
    _style(ax)
    ax.set_title(title, color=TEXT, fontsize=12, fontweight="bold", loc="left")
    ax.legend(handles=handles, loc="upper right", frameon=False, labelcolor=TEXT, fontsize=9, ncols=2,
              bbox_to_anchor=(1, 1.16))
    fig.tight_layout()
    return fig


def _style(ax) -> None:
    ax.tick_params(colors=TEXT, labelcolor=TEXT, labelsize=9)
    for side, spine in ax.spines.items():
        spine.set_color(TEXT)
        spine.set_visible(side in ("bottom", "left", "right") and (side != "right" or ax.get_ylabel() != "tokens"))


def usage_chart(days: Sequence[Group], *, title: str = "Tokens and cost per day (UTC)") -> io.BytesIO:
    """:func:`usage_figure` as a PNG with a transparent background; the buffer is rewound."""
    buffer = io.BytesIO()
    usage_figure(days, title=title).savefig(buffer, format="png", transparent=True)
    buffer.seek(0)
    return buffer
