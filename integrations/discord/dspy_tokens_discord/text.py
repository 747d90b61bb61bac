"""Numbers and Discord's size limits: tokens, money, timestamps, durations, and cutting text and embeds to fit
(title 256, description 4096, 25 fields, field name 256, value 1024, footer 2048, 6000 in total). Pure."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Sequence

import discord

TITLE_MAX, DESCRIPTION_MAX, FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, FOOTER_MAX, EMBED_MAX = (
    256, 4096, 25, 256, 1024, 2048, 6000)


def tokens(n: int | None) -> str:
    return "?" if n is None else f"{int(n):,}"


def money(value: Decimal | float | int | None) -> str:
    """``$12.34`` from one dollar up, ``$0.0070`` from $0.0001, then six decimals (``$0.000025``), ``<$0.000001``."""
    if value is None:
        return "?"
    value = Decimal(str(value))
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    if value >= Decimal("0.0001"):
        return f"${value.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"
    small = value.quantize(Decimal("0.000001"), ROUND_HALF_UP)
    return "<$0.000001" if small == 0 else f"${small:f}".rstrip("0")


def amount(metric: str, value) -> str:
    return tokens(value) if metric == "tokens" else money(value)


def unit(metric: str) -> str:
    return " tokens" if metric == "tokens" else ""


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp: every reader sees it in their own time zone (``R``: "in 3 hours")."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def duration(seconds: float) -> str:
    """``86400`` → ``24 hours``; ``604800`` → ``7 days``; ``90`` → ``90 seconds``."""
    s = int(seconds)

    def plural(n, name):
        return f"{n} {name}{'s' if n != 1 else ''}"
    if s > 86400 and s % 86400 == 0:
        return plural(s // 86400, "day")
    if s >= 3600 and s % 3600 == 0:
        return plural(s // 3600, "hour")
    if s >= 60 and s % 60 == 0:
        return plural(s // 60, "minute")
    return plural(s, "second")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def fit_lines(lines: Sequence[str], limit: int = FIELD_VALUE_MAX, empty: str = "—") -> str:
    """Join ``lines`` with newlines, keeping whole lines under ``limit`` and saying how many were left out."""
    if not lines:
        return empty
    out: list[str] = []
    for i, line in enumerate(lines):
        line = truncate(line, limit)
        rest = len(lines) - i - 1
        tail = f"\n… and {rest} more" if rest else ""
        candidate = "\n".join([*out, line])
        if len(candidate) + len(tail) <= limit:
            out.append(line)
            continue
        more = f"… and {len(lines) - i} more"
        while out and len("\n".join([*out, more])) > limit:
            out.pop()
            more = f"… and {len(lines) - len(out)} more"
        return "\n".join([*out, more])
    return "\n".join(out)


def embed_size(embed: discord.Embed) -> int:
    """What Discord counts against the 6000-character total."""
    size = len(embed.title or "") + len(embed.description or "")
    size += sum(len(f.name or "") + len(f.value or "") for f in embed.fields)
    size += len(embed.footer.text or "") + len(embed.author.name or "")
    return size


def fit(embed: discord.Embed) -> discord.Embed:
    """Enforce every embed limit: truncate each part, drop trailing fields past 25 or past 6000 in total."""
    if embed.title:
        embed.title = truncate(embed.title, TITLE_MAX)
    if embed.description:
        embed.description = truncate(embed.description, DESCRIPTION_MAX)
    fields = [(truncate(f.name or "\u200b", FIELD_NAME_MAX), truncate(f.value or "\u200b", FIELD_VALUE_MAX), f.inline)
              for f in embed.fields][:FIELDS_MAX]
    embed.clear_fields()
    for name, value, inline in fields:
        embed.add_field(name=name, value=value, inline=inline)
    if embed.footer.text:
        embed.set_footer(text=truncate(embed.footer.text, FOOTER_MAX), icon_url=embed.footer.icon_url)
    while embed_size(embed) > EMBED_MAX and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    if embed_size(embed) > EMBED_MAX and embed.description:
        over = embed_size(embed) - EMBED_MAX
        embed.description = truncate(embed.description, max(1, len(embed.description) - over))
    return embed
