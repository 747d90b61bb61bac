"""The per-day chart, rendered off-screen from the core's ``Group`` objects: readable in Discord's light and dark
themes, labelled, with a cost series, and narrow bars for a short period."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from dspy_tokens_discord.charts import COST, PNG_MAGIC, TEXT, THEME_BACKGROUNDS, TOKENS, usage_chart, usage_figure
from PIL import Image

from dspy_tokens import Group


def days(n: int, cost: bool = True) -> list[Group]:
    return [Group(by="day", key=date(2024, 1, 1) + timedelta(days=i), total_tokens=(i + 1) * 1500,
                  cost_usd=Decimal(i + 1) / 1000 if cost else Decimal(0)) for i in range(n)]


def luminance(colour: str) -> float:
    channels = [int(colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_chart_is_a_transparent_png():
    """The chart renders off-screen to PNG bytes with a transparent background (it takes Discord's own)."""
    png = usage_chart(days(30))
    assert png.getvalue().startswith(PNG_MAGIC) and len(png.getvalue()) > 1000
    image = Image.open(png).convert("RGBA")
    width, height = image.size
    assert all(image.getpixel(corner)[3] == 0 for corner in ((0, 0), (width - 1, 0), (0, height - 1)))


@pytest.mark.parametrize("theme", sorted(THEME_BACKGROUNDS))
def test_every_colour_reads_on_both_themes(theme):
    """Text and axes, the token bars, the cost line and the white labels inside bars keep at least 3:1 contrast
    (WCAG's bar for graphics and large text) against Discord's light and dark backgrounds."""
    background = THEME_BACKGROUNDS[theme]
    for colour in (TEXT, TOKENS, COST):
        assert contrast(colour, background) >= 3, (colour, theme)
    assert contrast("#FFFFFF", TOKENS) >= 3


def test_axes_are_labelled_and_cost_is_a_series():
    """Tokens are bars on a left axis labelled "tokens"; cost is a line, one point per day, on a right axis
    labelled "cost (USD)"; the days are the x labels."""
    figure = usage_figure(days(7))
    tokens_axis, cost_axis = figure.axes
    assert tokens_axis.get_ylabel() == "tokens" and cost_axis.get_ylabel() == "cost (USD)"
    assert [p.get_height() for p in tokens_axis.patches] == [(i + 1) * 1500 for i in range(7)]
    [line] = cost_axis.get_lines()
    assert list(line.get_ydata()) == [(i + 1) / 1000 for i in range(7)]
    assert [t.get_text() for t in tokens_axis.get_xticklabels()] == [f"01-{i:02d}" for i in range(1, 8)]


def test_without_known_costs_there_is_no_cost_axis():
    """Days whose cost is unknown or zero draw no cost line (never a flat "$0" that looks like free usage)."""
    figure = usage_figure(days(5, cost=False))
    assert len(figure.axes) == 1


def test_today_is_a_narrow_labelled_bar_not_the_whole_chart():
    """A one-day period draws one bar at the width it would have in a week, centred, with its value on it."""
    figure = usage_figure(days(1))
    axis = figure.axes[0]
    [bar] = axis.patches
    low, high = axis.get_xlim()
    assert bar.get_width() / (high - low) < 0.1
    assert abs((bar.get_x() + bar.get_width() / 2) - (low + high) / 2) < 1e-9
    assert "1.5k" in [t.get_text() for t in axis.texts]
