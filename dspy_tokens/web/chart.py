"""The daily chart as server-side SVG: one bar per day, stacked by model. Every bar and segment carries its
numbers as ``data-*`` attributes (exact decimals for cost), so what is drawn can be checked against the reports."""

from __future__ import annotations

import math
from decimal import Decimal
from html import escape

from dspy_tokens.reports import decimal_text

from .format import compact, money
from .views import DailySeries

PALETTE = ("#4f7cff", "#20b07a", "#f0a330", "#e5566d", "#9b6cff", "#17a6c4", "#c7678f", "#8b919a")
WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 30


def colors(models: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (an axis maximum)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-12):
            return step * power
    return 10 * power


def _value(group, metric: str):
    return group.total_tokens if metric == "tokens" else group.cost_usd


def _text(value, metric: str) -> str:
    return str(value) if metric == "tokens" else decimal_text(Decimal(value))


def _label(value: float, metric: str) -> str:
    return compact(value) if metric == "tokens" else money(Decimal(str(value)), axis=True)


def stacked_bars(series: DailySeries, metric: str, palette: dict[str, str]) -> str:
    """An ``<svg>`` for ``metric`` ("tokens" or "cost")."""
    days = series.days
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((float(_value(series.totals[d], metric)) for d in days if d in series.totals), default=0.0)
    top = nice_ceiling(peak)
    out = [f'<svg class="chart chart-{metric}" data-metric="{metric}" data-days="{len(days)}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{"Tokens" if metric == "tokens" else "Cost"} '
           f'per day, stacked by model" preserveAspectRatio="none">']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="axis" x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(_label(value, metric))}</text>')
    if not days:
        out.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">No calls in this '
                   'period</text></svg>')
        return "".join(out)
    step = plot_w / len(days)
    width = max(1.0, min(step * 0.72, 48.0))
    every = max(1, math.ceil(len(days) / 12))
    for i, day in enumerate(days):
        x = LEFT + step * i + (step - width) / 2
        total = series.totals.get(day)
        value = _value(total, metric) if total is not None else 0
        calls = total.calls if total is not None else 0
        out.append(f'<g class="bar" data-day="{day.isoformat()}" data-value="{_text(value, metric)}" '
                   f'data-calls="{calls}">')
        base: float = TOP + plot_h
        for model in series.models:
            part = series.parts.get((day, model))
            if part is None:
                continue
            amount = _value(part, metric)
            height = plot_h * float(amount) / top
            if height <= 0:
                continue
            base -= height
            shown = f"{amount:,}" if metric == "tokens" else money(amount)
            out.append(f'<rect class="segment" data-model="{escape(model)}" data-value="{_text(amount, metric)}" '
                       f'x="{x:.2f}" y="{base:.2f}" width="{width:.2f}" height="{height:.2f}" '
                       f'fill="{palette[model]}"><title>{day.isoformat()} · {escape(model)}: {shown}</title></rect>')
        out.append("</g>")
        if i % every == 0:
            out.append(f'<text class="axis" x="{x + width / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
                       f'{day:%b %d}</text>')
    out.append("</svg>")
    return "".join(out)
