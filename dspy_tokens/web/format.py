"""Numbers as people read them on the dashboard (the exact values stay in ``data-*`` attributes and the API)."""

from __future__ import annotations

from decimal import Decimal

from dspy_tokens.reports import decimal_text


def number(value: int) -> str:
    return f"{value:,}"


def compact(value: float) -> str:
    """12, 1.2k, 3.4M."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def money(value: Decimal, axis: bool = False) -> str:
    """$1,234 · $12.35 · $0.0002715 (four significant digits below a dollar); exact digits are in the API."""
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    digits = 2 if axis else 4
    text = f"{value:.{digits}g}" if value >= Decimal("0.0001") else format(value.normalize(), "f")
    if "e" in text.lower():
        text = format(Decimal(text), "f")
    return "$" + (decimal_text(Decimal(text)) if not axis else text)
