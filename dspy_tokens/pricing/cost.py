"""A call's cost from its token counts and its rate card: disjoint buckets, each at its own rate."""

from __future__ import annotations

from decimal import Decimal

from ..capture.usage import TokenCounts
from .rates import Rates


def compute_cost(counts: TokenCounts, rates: Rates) -> Decimal | None:
    """Input: uncached text, cache reads, 5-minute and 1-hour cache writes, audio and image tokens (all inside
    ``prompt``); output: visible text, reasoning and audio tokens (inside ``completion``); plus a per-request
    price. Nothing is counted twice; None when prompt or completion is unknown."""
    if counts.prompt is None or counts.completion is None:
        return None
    cached, written, written_1h = counts.cached or 0, counts.cache_write or 0, counts.cache_write_1h or 0
    audio_in, image_in = counts.audio_input or 0, counts.image_input or 0
    reasoning, audio_out = counts.reasoning or 0, counts.audio_output or 0
    text_in = max(counts.prompt - cached - written - audio_in - image_in, 0)
    text_out = max(counts.completion - reasoning - audio_out, 0)
    return (text_in * rates.input + cached * rates.cache_read + (written - written_1h) * rates.cache_write
            + written_1h * rates.cache_write_1h + audio_in * rates.audio_input + image_in * rates.image_input
            + text_out * rates.output + reasoning * rates.reasoning + audio_out * rates.audio_output
            + rates.per_request)
