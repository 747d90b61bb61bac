"""Limit rules from models.json, and their windows (pure: no database).

Windows: ``*_limit`` and ``*_cost_limit`` are rolling over ``time_window_days`` at one-hour resolution (usage
leaves the window at the end of the hour in which it becomes ``time_window_days`` old); ``daily_*`` reset at
00:00 UTC, ``monthly_cost_limit`` on the 1st at 00:00 UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from ..config import Config
from ..store.units import PICO, SCOPE_GLOBAL, SCOPE_GUILD, SCOPE_USER, hour_of, moment_of_hour, to_pico

ROLLING, DAY, MONTH = "rolling", "day", "month"  # window kinds
TOKENS, COST = "tokens", "cost"  # metrics
_SCOPE_OF_KEY = {"user": SCOPE_USER, "guild": SCOPE_GUILD, "global": SCOPE_GLOBAL, "daily": SCOPE_GLOBAL,
                 "monthly": SCOPE_GLOBAL}
FLAT_KEYS = ("user_limit", "guild_limit", "global_limit", "user_cost_limit", "guild_cost_limit",
             "global_cost_limit", "daily_token_limit", "daily_cost_limit", "monthly_cost_limit")


def rolling_start_hour(days: int, now: datetime) -> int:
    """The first hour inside a rolling window of ``days`` at ``now``: usage leaves at the end of the hour in which
    it becomes ``days`` old."""
    return hour_of(now) - 24 * days


def rolling_window_start(days: int, now: datetime) -> datetime:
    return moment_of_hour(rolling_start_hour(days, now))


@dataclass(frozen=True)
class Rule:
    key: str  # the models.json setting, e.g. "user_limit" or "models[gpt-4o].user_limit"
    scope: str  # whose usage: user, guild or global
    metric: str
    limit: int  # tokens, or picodollars for cost rules
    window: str
    days: int = 0
    model: str | None = None  # per-model rule: counts only this configured model

    @property
    def limit_value(self) -> int | Decimal:
        return self.limit if self.metric == TOKENS else Decimal(self.limit) / PICO

    def scope_id(self, user_id: int | None, guild_id: int | None) -> int:
        """The counter scope id this rule reads for a request (0 for the global scope)."""
        return {SCOPE_USER: user_id, SCOPE_GUILD: guild_id}.get(self.scope, 0) or 0

    def start_hour(self, now: datetime) -> int:
        """The first hour inside the window at ``now``."""
        if self.window == ROLLING:
            return rolling_start_hour(self.days, now)
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
        return moment_of_hour(hour + 1) + timedelta(days=self.days)


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
    return rules
