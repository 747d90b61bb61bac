"""Limits changed at run time (``tracker.set_limit/clear_limit/reset_usage/set_bypass``), stored in the database
and read at every decision, so a change made in one process holds in every other at its next check.

An override's limit for a scope and metric replaces the configured rules of that scope and metric (per-model
rules stay) for that one scope id. A bypass lets the scope's requests through. A usage reset makes usage before
it stop counting toward limits; reports and history keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .._ids import checked_id
from ..config import Config
from ..errors import ConfigurationError
from ..store.units import (
    COUNTER_SCOPES,
    SCOPE_CHANNEL,
    SCOPE_FEATURE,
    SCOPE_GLOBAL,
    SCOPE_GUILD,
    SCOPE_USER,
    feature_scope_id,
    hour_of,
    moment_of_hour,
    to_pico,
    usd,
)
from .request import Request
from .rules import COST, REQUESTS, TOKENS, Rule, window_of

SOURCE = "tracker.set_limit"
_WINDOWS = "a window such as \"30d\", \"24h\", \"7d\" or \"1mo\" (a calendar month)"


@dataclass(frozen=True)
class LimitOverride:
    """What is overridden for one scope: limits (None: the configured rules apply), bypass, last usage reset."""

    scope: str
    scope_id: int
    tokens: int | None = None
    cost_usd: Decimal | None = None
    requests: int | None = None
    window: str | None = None
    bypass: bool = False
    reset_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True)
class LimitChange:
    """One entry of the audit trail: who did what to which scope, when, with the values set."""

    id: int
    changed_at: datetime
    changed_by: str | None
    action: str  # set, clear, reset, bypass
    scope: str
    scope_id: int
    detail: dict


@dataclass
class Applied:
    """What the overrides say about one request (``Limiter.decide`` reads it). Usage resets are not here: the
    decision's own reading applies them (:class:`dspy_tokens.store.reading.Reading`)."""

    bypassed: bool = False
    rules: list[Rule] = field(default_factory=list)

    def apply(self, rules: list[Rule]) -> list[Rule]:
        replaced = {(r.scope, r.metric) for r in self.rules}
        return [r for r in rules if r.scope_only is not None or r.model is not None
                or (r.scope, r.metric) not in replaced]


def scope_key(scope: str, scope_id: int | str | None) -> tuple[str, int]:
    """A validated (scope, scope_id); a feature is given by name, the global scope has id 0."""
    if scope not in COUNTER_SCOPES:
        raise ConfigurationError(SOURCE, "scope", scope, f"must be one of {', '.join(COUNTER_SCOPES)}")
    if scope == SCOPE_GLOBAL:
        if scope_id not in (None, 0, "0", ""):
            raise ConfigurationError(SOURCE, "scope_id", scope_id, "must be 0 or left out for the global scope")
        return scope, 0
    if scope == SCOPE_FEATURE:
        if not scope_id:
            raise ConfigurationError(SOURCE, "scope_id", scope_id, "must name the feature")
        return scope, feature_scope_id(str(scope_id))
    sid = checked_id(SOURCE, "scope_id", scope_id)
    if sid is None:
        raise ConfigurationError(SOURCE, "scope_id", scope_id, f"must be the {scope}'s id")
    return scope, sid


class Overrides:
    def __init__(self, store, config: Config):
        self.store = store
        self.config = config

    # -- read at every decision ----------------------------------------------------------------------
    @staticmethod
    def scopes(request: Request) -> list[tuple[str, int]]:
        """The (scope, scope_id) keys whose overrides concern ``request``."""
        ids = {SCOPE_USER: request.user_id, SCOPE_GUILD: request.guild_id, SCOPE_CHANNEL: request.channel_id,
               SCOPE_FEATURE: feature_scope_id(request.feature) if request.feature else None, SCOPE_GLOBAL: 0}
        return [(s, i) for s, i in ids.items() if i is not None]

    def read(self, request: Request) -> Applied:
        """The overrides of ``request``'s scopes, read in one statement of their own."""
        return self.applied(self.store.windows.read([], [], None, self.scopes(request)).overrides)

    def applied(self, rows: dict) -> Applied:
        """What the override rows (of :meth:`scopes`, as a decision's reading holds them) say."""
        out = Applied()
        for (scope, sid), row in sorted(rows.items()):
            out.bypassed = out.bypassed or bool(row["bypass"])
            window, hours = window_of(row["window"] or f"{self.config.time_window_days}d", False)
            for metric, column in ((TOKENS, "tokens"), (COST, "cost_pusd"), (REQUESTS, "requests")):
                if row[column] is not None:
                    out.rules.append(Rule(f"override[{scope} {sid}].{metric}", scope, metric, int(row[column]),
                                          window, hours // 24, hours=hours or None, scope_only=sid))
        return out

    def get(self, scope: str, scope_id: int | str | None = None) -> LimitOverride | None:
        key = scope_key(scope, scope_id)
        self.store.ensure_schema()
        row = self.store.overrides.row(key)
        if row is None:
            return None
        return LimitOverride(scope, key[1], row["tokens"], usd(row["cost_pusd"]) if row["cost_pusd"] is not None
                             else None, row["requests"], row["window"], bool(row["bypass"]),
                             moment_of_hour(row["reset_hour"]) if row["reset_hour"] is not None else None,
                             row["updated_at"], row["updated_by"])

    # -- changes -------------------------------------------------------------------------------------
    def set_limit(self, scope, scope_id, *, tokens=None, cost_usd=None, requests=None, window=None, by=None) -> LimitChange:
        key = scope_key(scope, scope_id)
        values: dict[str, Any] = {}
        if tokens is not None:
            values["tokens"] = _count("tokens", tokens)
        if requests is not None:
            values["requests"] = _count("requests", requests)
        if cost_usd is not None:
            try:
                dollars = Decimal(str(cost_usd))
            except InvalidOperation:
                dollars = Decimal(-1)
            if not dollars.is_finite() or dollars < 0:
                raise ConfigurationError(SOURCE, "cost_usd", cost_usd, "must be a dollar amount >= 0, e.g. 5 or 0.50")
            values["cost_pusd"] = to_pico(dollars)
        if window is not None:
            values["window"] = _window(window)
        if not values:
            raise ConfigurationError(SOURCE, "limit", None, "give tokens=, cost_usd=, requests= or window=")
        detail = {k if k != "cost_pusd" else "cost_usd": str(usd(v)) if k == "cost_pusd" else v
                  for k, v in values.items()}
        return self._change(key, "set", values, by, detail)

    def clear_limit(self, scope, scope_id, *, by=None) -> LimitChange:
        return self._change(scope_key(scope, scope_id), "clear", dict.fromkeys(("tokens", "cost_pusd", "requests",
                                                                         "window")), by, {})

    def reset_usage(self, scope, scope_id, *, by=None, now: datetime | None = None) -> LimitChange:
        now = now or datetime.now(timezone.utc)
        return self._change(scope_key(scope, scope_id), "reset", {}, by, {"before": now.isoformat()}, now=now,
                     reset_hour=hour_of(now))

    def set_bypass(self, scope, scope_id, on: bool = True, *, by=None) -> LimitChange:
        return self._change(scope_key(scope, scope_id), "bypass", {"bypass": bool(on)}, by, {"on": bool(on)})

    def changes(self, scope=None, scope_id=None, *, limit: int = 20) -> list[LimitChange]:
        if scope is not None and scope not in COUNTER_SCOPES:
            raise ConfigurationError(SOURCE, "scope", scope, f"must be one of {', '.join(COUNTER_SCOPES)}")
        sid = scope_key(scope, scope_id)[1] if scope is not None and (scope_id is not None
                                                                       or scope == SCOPE_GLOBAL) else None
        self.store.ensure_schema()
        return [LimitChange(r["id"], r["changed_at"], r["changed_by"], r["action"], r["scope"], r["scope_id"],
                            r["detail"]) for r in self.store.overrides.changes(scope, sid, limit=limit)]

    def _change(self, key, action, values, by, detail, *, now=None, reset_hour=None) -> LimitChange:
        by, now = None if by is None else str(by)[:100], now or datetime.now(timezone.utc)
        change_id = self.store.overrides.change(*key, action, values, by=by, now=now, detail=detail,
                                                reset_hour=reset_hour)
        return LimitChange(change_id, now, by, action, key[0], key[1], detail)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(SOURCE, name, value, "must be a whole number >= 0")
    return value


def _window(value: str) -> str:
    text = str(value).strip().lower()
    try:
        if text != "1mo":
            number = int(text[:-1])
            if text[-1] not in "dh" or number < 1 or number > (3650 if text[-1] == "d" else 87600):
                raise ValueError(text)
            text = f"{number}{text[-1]}"
    except (ValueError, IndexError):
        raise ConfigurationError(SOURCE, "window", value, f"must be {_WINDOWS}") from None
    return text
