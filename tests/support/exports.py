"""Reading exports back, to check that what was written is what was stored."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

INT_COLUMNS = {"id", "call_index", "user_id", "guild_id", "channel_id", "prompt_tokens", "completion_tokens",
               "total_tokens", "cached_tokens", "reasoning_tokens", "latency_ms", "cache_write_tokens", "audio_tokens"}


def read_csv_export(text: str | io.TextIOBase) -> list[dict]:
    """Parse a CSV export back into typed rows (ints, bools, Decimal costs, aware datetimes, None for empty)."""
    stream = io.StringIO(text) if isinstance(text, str) else text
    rows = []
    for record in csv.DictReader(stream):
        row: dict = {}
        for column, text_value in record.items():
            if text_value == "":
                row[column] = None
            elif column in INT_COLUMNS:
                row[column] = int(text_value) if text_value.lstrip("-").isdigit() else text_value  # anonymized
            elif column in ("cache_hit", "usage_reported", "usage_estimated"):
                row[column] = text_value == "true"
            elif column == "cost_usd":
                row[column] = Decimal(text_value)
            elif column == "created_at":
                row[column] = datetime.fromisoformat(text_value)
            else:
                row[column] = text_value
        rows.append(row)
    return rows
