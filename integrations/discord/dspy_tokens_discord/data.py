"""Every number the Discord layer shows, read from the tracker's database.

All functions here are **blocking** (database reads): call them through ``asyncio.to_thread`` — the cog does.
They use the core's report methods (``tracker.summary/breakdown/top``, served from rollup tables: fast at
millions of rows) and turn the results into the small frozen dataclasses below, which the embeds format.
Rankings are by tokens everywhere (the core's breakdowns order by cost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

log = logging.getLogger("dspy_tokens_discord")

ZERO = Decimal(0)
FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class Totals:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = ZERO
    unpriced_calls: int = 0  # calls whose cost is unknown (no price or no usage reported); not in cost_usd
    active_users: int = 0


@dataclass(frozen=True)
class Group:
    """One line of a ranking or breakdown: ``key`` is a user/guild id, a model or feature name, or a date."""

    key: int | str | date | None
    total_tokens: int = 0
    cost_usd: Decimal = ZERO
    calls: int = 0


@dataclass(frozen=True)
class CallRow:
    created_at: datetime
    total_tokens: int | None
    feature: str | None
    model: str
    cost_usd: Decimal | None
    cache_hit: bool = False
    error: str | None = None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- helpers -------------------------------------------------------------------------------------------
def _usage(tracker):
    tracker.store.ensure_schema()
    tracker.store.db.connect(reuse_if_open=True)
    return tracker.store.models.TokenUsage


def _int(value) -> int:
    return int(value or 0)


def flush(tracker, timeout: float = FLUSH_SECONDS) -> bool:
    """Wait (briefly) until calls already made are committed, so a user sees the request they just made."""
    try:
        return tracker.flush(timeout)
    except Exception:  # a stopped writer: show what is stored
        log.debug("flush before reading usage failed", exc_info=True)
        return False


# -- totals --------------------------------------------------------------------------------------------
def _totals_of(found) -> Totals:
    return Totals(calls=found.calls, prompt_tokens=found.prompt_tokens, completion_tokens=found.completion_tokens,
                  cached_tokens=found.cached_tokens, reasoning_tokens=found.reasoning_tokens,
                  total_tokens=found.total_tokens, cost_usd=found.cost_usd, unpriced_calls=found.unknown_cost_calls,
                  active_users=found.active_users)


def summary(tracker, *, since: datetime | None, until: datetime | None = None, user_id: int | None = None,
            guild_id: int | None = None) -> Totals:
    """Calls, tokens by kind, known cost, unpriced calls and active users over ``[since, until)``."""
    return _totals_of(tracker.summary(since=since, until=until, user_id=user_id, guild_id=guild_id))


# -- rankings and breakdowns ---------------------------------------------------------------------------
def _group_of(found) -> Group:
    return Group(found.key, found.total_tokens, found.cost_usd, found.calls)


def _as_date(value) -> date | None:
    if value is None or isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value)[:10])


def _ordered(groups: list[Group], by: str, limit: int | None) -> list[Group]:
    """Day: oldest first. Otherwise most tokens first (ties by key), calls without a user/guild left out."""
    if by == "day":
        groups = sorted((Group(_as_date(g.key), g.total_tokens, g.cost_usd, g.calls) for g in groups),
                        key=lambda g: g.key or date.min)
    else:
        if by in ("user", "guild"):
            groups = [g for g in groups if g.key is not None]
        groups = sorted(groups, key=lambda g: (-g.total_tokens, g.key is None, str(g.key)))
    return groups[:limit] if limit is not None else groups


def breakdown(tracker, by: str, *, since: datetime | None, until: datetime | None = None,
              user_id: int | None = None, guild_id: int | None = None, limit: int | None = None) -> list[Group]:
    """Usage grouped ``by`` user, guild, model, feature or day; most tokens first (``day``: oldest first)."""
    if by not in ("user", "guild", "model", "feature", "day"):
        raise ValueError(f"cannot break usage down by {by!r}")
    filters = dict(since=since, until=until, user_id=user_id, guild_id=guild_id)
    if by in ("user", "guild") and limit is not None:
        found = tracker.top(limit, by="tokens", scope=by, **filters)
    else:  # the core orders breakdowns by cost: take them all, rank by tokens here
        found = tracker.breakdown(by, **filters)
    return _ordered([_group_of(g) for g in found], by, limit)


def top(tracker, by: str = "user", *, since: datetime | None, until: datetime | None = None,
        guild_id: int | None = None, limit: int = 10) -> list[Group]:
    """The ``limit`` biggest spenders (``by`` user or guild), by tokens."""
    return breakdown(tracker, by, since=since, until=until, guild_id=guild_id, limit=limit)


def per_day(tracker, *, since: datetime, until: datetime | None = None, user_id: int | None = None,
            guild_id: int | None = None) -> list[Group]:
    """One group per UTC day from ``since`` to ``until`` (default now), days without usage included as 0."""
    until = until or utcnow()
    found = {g.key: g for g in breakdown(tracker, "day", since=since, until=until, user_id=user_id,
                                          guild_id=guild_id)}
    out, day, last = [], since.astimezone(timezone.utc).date(), (until - timedelta(microseconds=1)).date()
    while day <= last:
        out.append(found.get(day, Group(day)))
        day += timedelta(days=1)
    return out


def recent_calls(tracker, *, user_id: int, guild_id: int | None = None, limit: int = 10) -> list[CallRow]:
    """The user's last ``limit`` calls, newest first (the seed's "recent activity")."""
    u = _usage(tracker)
    query = u.select(u.created_at, u.total_tokens, u.feature, u.model, u.cost_usd, u.cache_hit, u.error)
    query = query.where(u.user_id == user_id) if guild_id is None else \
        query.where(u.user_id == user_id, u.guild_id == guild_id)
    query = query.order_by(u.created_at.desc(), u.id.desc()).limit(limit)
    return [CallRow(r.created_at, r.total_tokens, r.feature, r.model, r.cost_usd, bool(r.cache_hit), r.error)
            for r in query]


def limit_status(tracker, user_id: int | None, guild_id: int | None, role_ids=()):
    """The tracker's decision for the smallest request (1 token): every applicable rule with used, limit and
    remaining; a rule used up exactly counts as exceeded, with the time it frees up."""
    return tracker.check(user_id, guild_id, estimate=1, role_ids=tuple(role_ids))
