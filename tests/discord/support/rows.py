"""Stored calls with Discord ids, seeded through the writer's own path (``tests.support.rows.insert``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from dspy_tokens.store import ROW_COLUMNS
from tests.discord.support.harness import CHANNEL_ID, GUILD_ID
from tests.support.rows import insert, seed_row


def usage_row(*, user_id=None, guild_id=GUILD_ID, tokens=100, prompt=None, completion=None, cached=0, reasoning=0,
              cost="0.001", model="openai/gpt-4o-mini", feature="ask", created_at=None, channel_id=CHANNEL_ID,
              session_id=None, error=None) -> dict:
    """One stored call in the test server, with every column of ``ROW_COLUMNS``."""
    prompt = tokens * 3 // 4 if prompt is None else prompt
    completion = tokens - prompt if completion is None else completion
    row = seed_row(
        call_uuid=uuid.uuid4().hex, session_id=session_id or uuid.uuid4().hex, call_index=0, user_id=user_id,
        guild_id=guild_id, channel_id=channel_id, feature=feature, module="Predict", model=model,
        response_model=None, prompt_tokens=prompt, completion_tokens=completion, total_tokens=tokens,
        cached_tokens=cached, reasoning_tokens=reasoning, cost_usd=None if cost is None else Decimal(cost),
        cost_source="config" if cost else "unknown", cache_hit=False, usage_reported=True, error=error,
        latency_ms=10, created_at=created_at or datetime.now(timezone.utc))
    assert set(row) == set(ROW_COLUMNS)
    return row


def seed(tracker, *rows: dict) -> None:
    """Store ``rows`` in the tracker's database (a Store of our own on its URL, never the tracker's)."""
    insert(tracker.database_url, list(rows))
