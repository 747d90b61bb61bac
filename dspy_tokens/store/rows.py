"""``UsageRow``: one LM call as stored in ``token_usage``. Its fields are the one list of the table's columns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import NamedTuple


class UsageRow(NamedTuple):
    """A row of ``token_usage`` (see the README's "What is recorded"). Token counts are ``None`` when the provider
    reported no usage (and were not estimated); ``cached_tokens`` and ``reasoning_tokens`` lie inside prompt and
    completion tokens."""

    call_uuid: str
    session_id: str
    call_index: int
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    feature: str | None
    module: str | None
    model: str
    response_model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: Decimal | None
    cost_source: str
    cache_hit: bool
    usage_reported: bool
    error: str | None
    latency_ms: int | None
    created_at: datetime  # UTC-aware
    request_type: str = "chat"  # chat, completion, responses, decision (TypeSafe), embedding
    metadata: str | None = None  # usage_context(metadata=...) as compact JSON text, keys sorted
    usage_estimated: bool = False  # the provider reported no usage: the tokens are our tokenizer's count
    cache_write_tokens: int | None = None  # inside prompt_tokens
    audio_tokens: int | None = None  # audio in + out, inside prompt and completion tokens
    service_tier: str | None = None  # as the provider reported it ("priority", "flex", "default")
    price_version: str | None = None  # which prices priced it: litellm-<version>:<map hash>[+models.json:<hash>]


ROW_COLUMNS: tuple[str, ...] = UsageRow._fields
#: What exports and session reads return: the table's id, then the row.
EXPORT_COLUMNS: tuple[str, ...] = ("id", *ROW_COLUMNS)
