"""Every number the Discord layer shows, read from the tracker's database.

All functions here are **blocking** (database reads): call them through ``asyncio.to_thread`` — the cog does.
They use the core's report methods (``tracker.summary/breakdown/top``, served from rollup tables: fast at
millions of rows) when the installed dspy-tokens has them, and otherwise aggregate ``TokenUsage`` rows with
Peewee. Either way the result is one of the small frozen dataclasses below, so formatting never depends on the
source. Rankings are by tokens everywhere (the core's breakdowns order by cost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from peewee import fn

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


def _where(model, since, until, user_id=None, guild_id=None):
    conds = []
    if since is not None:
        conds.append(model.created_at >= since)
    if until is not None:
        conds.append(model.created_at < until)
    if user_id is not None:
        conds.append(model.user_id == user_id)
    if guild_id is not None:
        conds.append(model.guild_id == guild_id)
    return conds


def _filtered(query, conds):
    return query.where(*conds) if conds else query


def _int(value) -> int:
    return int(value or 0)


def _money(value) -> Decimal:
    if value is None:
        return ZERO
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _field(obj, *names, default=None):
    """The first of ``names`` found on ``obj`` as an attribute or a mapping key."""
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


_unfit: set[str] = set()


def _report(tracker, method: str, *args, **kwargs):
    """``tracker.<method>(...)`` when the core has report methods (dspy_tokens.reports); None when it has not, or
    when it rejects our call (another signature): the caller then runs its own Peewee query."""
    report = getattr(tracker, method, None)
    if not callable(report):
        return None
    try:
        return report(*args, **kwargs)
    except TypeError:
        if method not in _unfit:
            _unfit.add(method)
            log.warning("tracker.%s does not accept %s; using the built-in query instead", method,
                        ", ".join(kwargs), exc_info=True)
        return None


def flush(tracker, timeout: float = FLUSH_SECONDS) -> bool:
    """Wait (briefly) until calls already made are committed, so a user sees the request they just made."""
    try:
        return tracker.flush(timeout)
    except Exception:  # a stopped writer: show what is stored
        log.debug("flush before reading usage failed", exc_info=True)
        return False


# -- totals --------------------------------------------------------------------------------------------
def _totals_of(obj) -> Totals:
    return Totals(
        calls=_int(_field(obj, "calls")),
        prompt_tokens=_int(_field(obj, "prompt_tokens")),
        completion_tokens=_int(_field(obj, "completion_tokens")),
        cached_tokens=_int(_field(obj, "cached_tokens")),
        reasoning_tokens=_int(_field(obj, "reasoning_tokens")),
        total_tokens=_int(_field(obj, "total_tokens")),
        cost_usd=_money(_field(obj, "cost_usd")),
        unpriced_calls=_int(_field(obj, "unknown_cost_calls", "unpriced_calls")),
        active_users=_int(_field(obj, "active_users")),
    )


def summary(tracker, *, since: datetime | None, until: datetime | None = None, user_id: int | None = None,
            guild_id: int | None = None) -> Totals:
    """Calls, tokens by kind, known cost, unpriced calls and active users over ``[since, until)``."""
    found = _report(tracker, "summary", since=since, until=until, user_id=user_id, guild_id=guild_id)
    if found is not None:
        return _totals_of(found)
    u = _usage(tracker)
    unpriced = fn.SUM(u.cost_usd.is_null(True) & u.error.is_null(True))
    query = u.select(fn.COUNT(u.id), fn.SUM(u.prompt_tokens), fn.SUM(u.completion_tokens), fn.SUM(u.cached_tokens),
                     fn.SUM(u.reasoning_tokens), fn.SUM(u.total_tokens), fn.SUM(u.cost_usd), unpriced,
                     fn.COUNT(u.user_id.distinct()))
    row = _filtered(query, _where(u, since, until, user_id, guild_id)).tuples().get()
    calls, prompt, completion, cached, reasoning, total, cost, unpriced_calls, users = row
    return Totals(_int(calls), _int(prompt), _int(completion), _int(cached), _int(reasoning), _int(total),
                  _money(cost), _int(unpriced_calls), _int(users))


# -- rankings and breakdowns ---------------------------------------------------------------------------
def _group_of(obj, key) -> Group:
    return Group(key, _int(_field(obj, "total_tokens")), _money(_field(obj, "cost_usd")), _int(_field(obj, "calls")))


def _day_expr(tracker, u):
    if tracker.store.dialect == "sqlite":  # stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC)
        return fn.SUBSTR(u.created_at, 1, 10)
    return fn.DATE(u.created_at)


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
        found = _report(tracker, "top", limit, by="tokens", scope=by, **filters)
    else:  # the core orders breakdowns by cost: take them all, rank by tokens here
        found = _report(tracker, "breakdown", by, **filters)
    if found is not None:
        return _ordered([_group_of(g, _field(g, "key")) for g in found], by, limit)

    u = _usage(tracker)
    key = {"user": u.user_id, "guild": u.guild_id, "model": u.model, "feature": u.feature,
           "day": _day_expr(tracker, u)}[by]
    tokens = fn.COALESCE(fn.SUM(u.total_tokens), 0)
    conds = _where(u, since, until, user_id, guild_id)
    if by in ("user", "guild"):
        conds.append(key.is_null(False))
    query = _filtered(u.select(key, tokens, fn.SUM(u.cost_usd), fn.COUNT(u.id)), conds).group_by(key)
    query = query.order_by(key) if by == "day" else query.order_by(tokens.desc(), key)
    if limit is not None:
        query = query.limit(limit)
    return _ordered([Group(k, _int(t), _money(c), _int(n)) for k, t, c, n in query.tuples()], by, limit)


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
    query = _filtered(u.select(u.created_at, u.total_tokens, u.feature, u.model, u.cost_usd, u.cache_hit, u.error),
                      _where(u, None, None, user_id, guild_id))
    query = query.order_by(u.created_at.desc(), u.id.desc()).limit(limit)
    return [CallRow(r.created_at, r.total_tokens, r.feature, r.model, r.cost_usd, bool(r.cache_hit), r.error)
            for r in query]


def limit_status(tracker, user_id: int | None, guild_id: int | None, role_ids=()):
    """The tracker's decision for the smallest request (1 token): every applicable rule with used, limit and
    remaining; a rule used up exactly counts as exceeded, with the time it frees up."""
    return tracker.check(user_id, guild_id, estimate=1, role_ids=tuple(role_ids))
