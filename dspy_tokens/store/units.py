"""The store's units: money as integer picodollars, time as hour/day/month buckets since the Unix epoch (UTC),
and the measures every aggregate keeps."""

from __future__ import annotations

import functools
import hashlib
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_UP, Decimal

PICO = 10**12  # aggregates keep money as integer picodollars: exact sums on every backend, SQLite included
EPOCH = date(1970, 1, 1)

SCOPE_USER, SCOPE_GUILD, SCOPE_GLOBAL = "user", "guild", "global"
SCOPE_CHANNEL, SCOPE_FEATURE = "channel", "feature"
COUNTER_SCOPES = (SCOPE_GLOBAL, SCOPE_USER, SCOPE_GUILD, SCOPE_CHANNEL, SCOPE_FEATURE)
#: What reports group and filter by, besides "global". The rollups keep each alone; the daily cube combines the
#: first four (a request type with another dimension is read from the raw rows).
DIMENSIONS = ("user", "guild", "model", "feature", "request_type")
CUBE_DIMENSIONS = DIMENSIONS[:4]
#: ``metadata:<key>`` groups and filters by one usage_context metadata key: only the raw rows know it.
METADATA_PREFIX = "metadata:"
#: Rollup scope names that differ from their dimension's (``scope`` columns hold at most 8 characters).
ROLLUP_SCOPES = {"request_type": "request"}
GRAIN_HOUR, GRAIN_DAY, GRAIN_MONTH = "h", "d", "m"  # the buckets of token_usage_rollups (epoch hours/days, months)
#: The rollup dimensions also kept per hour (a range's partial days are read from them): few keys per hour. Per
#: user and per guild an hour holds about as many keys as rows, which would add a sixth to the writer's upserts and
#: half the rollup rows for no faster read: those partial days are read from the raw rows.
HOUR_DIMENSIONS = ("global", "model", "feature", "request_type")
HOUR_SCOPES = tuple(ROLLUP_SCOPES.get(d, d) for d in HOUR_DIMENSIONS)  # their rollup scope names
NO_ID = -1  # user_id/guild_id of calls without one, in the daily cube (real ids are >= 0)

#: What every report aggregate holds, in this order. ``unpriced_calls``: answered calls (no error) whose cost is
#: unknown; the report API calls them ``unknown_cost_calls``. ``estimated_calls``: calls whose tokens were counted
#: by our tokenizer because the provider reported none (their tokens are in the token measures too).
MEASURES = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
            "cost_pusd", "unpriced_calls", "cache_hits", "errors", "estimated_calls")
TOKEN_MEASURES = MEASURES[1:6]
#: The subset the hourly limit counters keep (indexes into MEASURES: calls, total_tokens, cost_pusd, unpriced).
COUNTER_MEASURES = ("calls", "tokens", "cost_pusd", "unpriced_calls")
COUNTER_OF_MEASURES = (0, 3, 6, 7)


def stored_time(value: datetime, sqlite: bool):
    """The stored form of a UTC-aware time: naive UTC; fixed-width text with microseconds on SQLite (so text
    order is time order)."""
    if value.tzinfo is not timezone.utc:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; pass a UTC-aware datetime")
        value = value.astimezone(timezone.utc)
    naive = value.replace(tzinfo=None)
    return naive.isoformat(" ", "microseconds") if sqlite else naive  # isoformat: ~5x faster than strftime


@functools.lru_cache(maxsize=4096)
def feature_scope_id(feature: str) -> int:
    """The counter scope id of a feature name: a stable 63-bit hash (counters key scopes by integer)."""
    return int.from_bytes(hashlib.blake2b(feature[:100].encode(), digest_size=8).digest(), "big") >> 1


def to_pico(usd: Decimal | int | str) -> int:
    return int((Decimal(usd) * PICO).to_integral_value(ROUND_HALF_UP))


def usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def moment_of_hour(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, timezone.utc)


def day_of(moment: datetime) -> int:
    return (moment.astimezone(timezone.utc).date() - EPOCH).days


def month_of(moment: datetime | date) -> int:
    if isinstance(moment, datetime):
        moment = moment.astimezone(timezone.utc)
    return moment.year * 12 + moment.month - 1


def date_of_day(day: int) -> date:
    return date.fromordinal(EPOCH.toordinal() + day)


def midnight_of_day(day: int) -> datetime:
    return datetime.combine(date_of_day(day), time(), timezone.utc)


def day_of_month(month: int) -> int:
    """The first day (epoch days) of a month bucket."""
    return (date(month // 12, month % 12 + 1, 1) - EPOCH).days
