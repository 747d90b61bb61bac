"""One pass over a batch of rows gives every aggregate written in the same transaction as the rows.

Each row is summed into its hour cell (hour, user, guild, model, feature) with :func:`measures_of`, the one place
the counting rules live; the hourly limit counters, the daily cube and the hour/day/month rollups are then sums
of cells, so a batch from a few users, models and features costs little more than one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import add
from typing import Iterable

from .units import (
    COUNTER_OF_MEASURES,
    GRAIN_DAY,
    GRAIN_HOUR,
    GRAIN_MONTH,
    HOUR_DIMENSIONS,
    HOUR_SCOPES,
    MEASURES,
    NO_ID,
    ROLLUP_SCOPES,
    SCOPE_CHANNEL,
    SCOPE_FEATURE,
    SCOPE_GLOBAL,
    SCOPE_GUILD,
    SCOPE_USER,
    date_of_day,
    feature_scope_id,
    hour_of,
    month_of,
    to_pico,
)

WIDTH = len(MEASURES)


def measures_of(row) -> tuple[int, ...]:
    """A row's :data:`~dspy_tokens.store.units.MEASURES`. Unreported token counts (NULL) count 0; a call is
    *unpriced* when it was answered (no error) but its cost is unknown: cost sums and limits cannot see it."""
    cost, error = row.cost_usd, row.error
    return (1, row.prompt_tokens or 0, row.completion_tokens or 0, row.total_tokens or 0, row.cached_tokens or 0,
            row.reasoning_tokens or 0, to_pico(cost) if cost is not None else 0,
            1 if cost is None and error is None else 0, 1 if row.cache_hit else 0, 1 if error is not None else 0,
            1 if getattr(row, "usage_estimated", False) else 0)


def _add(target: dict, key: tuple, values) -> None:
    acc = target.get(key)
    target[key] = list(values) if acc is None else list(map(add, acc, values))


@dataclass
class Deltas:
    """What one batch adds to each aggregate table: key -> measures."""

    counters: dict = field(default_factory=dict)  # (scope, scope_id, hour) -> COUNTER_MEASURES
    model_counters: dict = field(default_factory=dict)  # (scope, scope_id, model, hour) -> COUNTER_MEASURES
    daily: dict = field(default_factory=dict)  # (day, user_id, guild_id, model, feature) -> MEASURES
    rollups: dict = field(default_factory=dict)  # (grain, scope, bucket, scope_key) -> MEASURES

    def merge(self, other: "Deltas") -> None:
        for name in ("counters", "model_counters", "daily", "rollups"):
            target = getattr(self, name)
            for key, values in getattr(other, name).items():
                _add(target, key, values)


def deltas(rows: Iterable, rollups: bool = True) -> Deltas:
    """Sum ``rows`` (objects with the :class:`~dspy_tokens.store.UsageRow` fields) into every aggregate."""
    cells: dict[tuple, list[int]] = {}
    for row in rows:
        _add(cells, (hour_of(row.created_at), row.user_id, row.guild_id, row.model, row.feature or "",
                     row.channel_id, getattr(row, "request_type", None) or "chat"), measures_of(row))
    out = Deltas()
    daily: dict[tuple, list[int]] = {}
    for (hour, user, guild, model, feature, channel, request_type), values in cells.items():
        counted = [values[i] for i in COUNTER_OF_MEASURES]
        scopes = [(SCOPE_GLOBAL, 0)]
        if user is not None:
            scopes.append((SCOPE_USER, user))
        if guild is not None:
            scopes.append((SCOPE_GUILD, guild))
        if channel is not None:
            scopes.append((SCOPE_CHANNEL, channel))
        if feature:
            scopes.append((SCOPE_FEATURE, feature_scope_id(feature)))
        for scope, scope_id in scopes:
            _add(out.counters, (scope, scope_id, hour), counted)
            _add(out.model_counters, (scope, scope_id, model, hour), counted)
        if rollups:  # the request type is not in the cube: its rollups come from the cells
            keys = {"global": "", "model": model, "feature": feature, "request_type": request_type}
            for dim, scope in zip(HOUR_DIMENSIONS, HOUR_SCOPES):
                _add(out.rollups, (GRAIN_HOUR, scope, hour, keys[dim]), values)
            day = hour // 24
            _add(out.rollups, (GRAIN_DAY, ROLLUP_SCOPES["request_type"], day, request_type), values)
            _add(out.rollups, (GRAIN_MONTH, ROLLUP_SCOPES["request_type"], month_of(date_of_day(day)), request_type),
                 values)
            _add(daily, (day, NO_ID if user is None else user, NO_ID if guild is None else guild, model, feature),
                 values)
    out.daily = daily
    for (day, user, guild, model, feature), values in out.daily.items():
        month = month_of(date_of_day(day))
        for scope, key in ((SCOPE_GLOBAL, ""), (SCOPE_USER, "" if user == NO_ID else str(user)),
                           (SCOPE_GUILD, "" if guild == NO_ID else str(guild)), ("model", model),
                           ("feature", feature)):
            _add(out.rollups, (GRAIN_DAY, scope, day, key), values)
            _add(out.rollups, (GRAIN_MONTH, scope, month, key), values)
    return out
