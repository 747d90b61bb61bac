"""Limit rules from models.json — its flat keys and its ``"limits": [...]`` list — and their windows (pure).

Windows: ``*_limit`` and ``*_cost_limit`` are rolling over ``time_window_days`` at one-hour resolution (usage
leaves the window at the end of the hour in which it becomes ``time_window_days`` old); ``daily_*`` reset at
00:00 UTC, ``monthly_cost_limit`` on the 1st at 00:00 UTC. A rule of the list is rolling over ``"<n>d"``/``"<n>h"``,
or a calendar day (``"1d"`` with ``"calendar": true``) or month (``"1mo"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from ..config import AlertSettings, Config, LimitSpec
from ..store.units import (
    PICO,
    SCOPE_CHANNEL,
    SCOPE_FEATURE,
    SCOPE_GLOBAL,
    SCOPE_GUILD,
    SCOPE_USER,
    feature_scope_id,
    hour_of,
    moment_of_hour,
    to_pico,
)

ROLLING, DAY, MONTH = "rolling", "day", "month"  # window kinds
TOKENS, COST, REQUESTS = "tokens", "cost", "requests"  # metrics
_METRIC_OF_SPEC = {"tokens": TOKENS, "cost_usd": COST, "requests": REQUESTS}
_SCOPE_OF_KEY = {"user": SCOPE_USER, "guild": SCOPE_GUILD, "global": SCOPE_GLOBAL, "daily": SCOPE_GLOBAL,
                 "monthly": SCOPE_GLOBAL}
FLAT_KEYS = ("user_limit", "guild_limit", "global_limit", "user_cost_limit", "guild_cost_limit",
             "global_cost_limit", "daily_token_limit", "daily_cost_limit", "monthly_cost_limit")


def rolling_start_hour(days: int, now: datetime, hours: int | None = None) -> int:
    """The first hour inside a rolling window of ``days`` (or ``hours``) at ``now``: usage leaves at the end of
    the hour in which it becomes that old."""
    return hour_of(now) - (hours if hours is not None else 24 * days)


def rolling_window_start(days: int, now: datetime) -> datetime:
    return moment_of_hour(rolling_start_hour(days, now))


@dataclass(frozen=True)
class Rule:
    key: str  # the models.json setting, e.g. "user_limit", "models[gpt-4o].user_limit" or a "limits" entry's key
    scope: str  # whose usage: user, guild, channel, feature or global
    metric: str
    limit: int  # tokens or requests, or picodollars for cost rules
    window: str
    days: int = 0
    model: str | None = None  # per-model rule: counts only this configured model (its provider/name)
    hours: int | None = None  # a rolling window in hours (None: 24 × days)
    enforcement: str | None = None  # "warn": never refuses; None: models.json's "enforcement"
    fallback: str | None = None  # the provider/name of the model a run that does not fit may use instead
    alerts: AlertSettings | None = field(default=None, compare=False)
    scope_only: int | None = None  # an override's rule: applies to this scope id only

    @property
    def window_hours(self) -> int:
        return self.hours if self.hours is not None else 24 * self.days

    @property
    def limit_value(self) -> int | Decimal:
        return self.limit if self.metric != COST else Decimal(self.limit) / PICO

    def scope_id(self, user_id: int | None, guild_id: int | None, channel_id: int | None = None,
                 feature: str | None = None) -> int:
        """The counter scope id this rule reads for a request (0 for the global scope)."""
        if self.scope == SCOPE_FEATURE:
            return feature_scope_id(feature) if feature else 0
        return {SCOPE_USER: user_id, SCOPE_GUILD: guild_id, SCOPE_CHANNEL: channel_id}.get(self.scope, 0) or 0

    def applies_to(self, user_id, guild_id, channel_id, feature) -> bool:
        """Whether a request has the id this rule counts by (a user rule needs a user...)."""
        present = {SCOPE_USER: user_id, SCOPE_GUILD: guild_id, SCOPE_CHANNEL: channel_id, SCOPE_FEATURE: feature}
        if self.scope != SCOPE_GLOBAL and present.get(self.scope) is None:
            return False
        return self.scope_only is None or self.scope_id(user_id, guild_id, channel_id, feature) == self.scope_only

    def start_hour(self, now: datetime) -> int:
        """The first hour inside the window at ``now``."""
        if self.window == ROLLING:
            return rolling_start_hour(self.days, now, self.window_hours)
        if self.window == DAY:
            return hour_of(now.replace(hour=0, minute=0, second=0, microsecond=0))
        return hour_of(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))

    def window_start(self, now: datetime) -> datetime:
        return moment_of_hour(self.start_hour(now))

    def calendar_reset(self, now: datetime) -> datetime:
        """When a calendar window starts again (daily: next 00:00 UTC; monthly: the next 1st)."""
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.window == DAY:
            return midnight + timedelta(days=1)
        return (midnight.replace(day=1) + timedelta(days=32)).replace(day=1)

    def leaves_window(self, hour: int) -> datetime:
        """When usage counted in ``hour`` leaves a rolling window."""
        return moment_of_hour(hour + 1) + timedelta(hours=self.window_hours)


def window_of(spec_window: str, calendar: bool) -> tuple[str, int]:
    """``"30d"`` → (ROLLING, 720 hours); ``"1d"`` with calendar → (DAY, 24); ``"1mo"`` → (MONTH, 0)."""
    if spec_window == "1mo":
        return MONTH, 0
    hours = int(spec_window[:-1]) * (24 if spec_window.endswith("d") else 1)
    if calendar:
        return DAY, 24
    return ROLLING, hours


def rule_of_spec(spec: LimitSpec, config: Config) -> Rule:
    metric = _METRIC_OF_SPEC[spec.metric]
    window, hours = window_of(spec.window, spec.calendar)
    model = config.model_entry(spec.model) if spec.model else None
    fallback = config.model_entry(spec.fallback) if spec.fallback else None
    limit = to_pico(spec.max) if metric == COST else int(spec.max)
    return Rule(spec.key, spec.scope, metric, limit, window, hours // 24, model.model_id if model else None,
                hours=hours, enforcement=spec.enforcement, fallback=fallback.model_id if fallback else None,
                alerts=spec.alerts)


def rules_from_config(config: Config) -> list[Rule]:
    rules: list[Rule] = []

    def add(key, value, model=None, prefix=""):
        if value is None:
            return
        metric = COST if "cost" in key else TOKENS
        window = DAY if key.startswith("daily") else MONTH if key.startswith("monthly") else ROLLING
        amount = to_pico(value) if metric == COST else int(value)
        rules.append(Rule(prefix + key, _SCOPE_OF_KEY[key.split("_")[0]], metric, amount, window,
                          config.time_window_days, model))

    for key in FLAT_KEYS:
        add(key, getattr(config, key))
    for entry in config.models:
        for key, value in entry.limits.items():
            add(key, value, model=entry.model_id, prefix=f"models[{entry.label}].")
    rules.extend(rule_of_spec(spec, config) for spec in config.limits)
    return rules
