"""The per-day chart, rendered off-screen from the core's ``Group`` objects."""

from __future__ import annotations

from datetime import date, timedelta

from dspy_tokens_discord.charts import PNG_MAGIC, usage_chart

from dspy_tokens import Group


def test_chart_is_a_png():
    """The per-day chart renders off-screen to PNG bytes."""
    days = [Group(by="day", key=date(2024, 1, 1) + timedelta(days=i), total_tokens=i * 1500) for i in range(30)]
    png = usage_chart(days).getvalue()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
