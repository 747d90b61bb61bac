"""The query parameters every report call shares (period or range, filters), and the dashboard's periods."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from fastapi import HTTPException, Query

from dspy_tokens.reports import parse_period

#: The dashboard's period choices: whole UTC days, so every day of the chart is one complete bar.
DASHBOARD_PERIODS = {"today": "Today", "7d": "7 days", "30d": "30 days", "month": "This month", "custom": "Custom"}
PERIOD_HELP = ("today, week, month (UTC calendar periods), all, or a rolling length such as 7d or 24h; "
               "since/until replace it")


def parse_time(name: str, value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (00:00 UTC) or an ISO 8601 time (naive = UTC)."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name}={value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Scope:
    """Which calls a report is about: ``period`` or ``since``/``until``, and the filters."""

    period: str | None = "month"
    since: datetime | None = None
    until: datetime | None = None
    filters: dict = field(default_factory=dict)

    @property
    def range(self) -> dict:
        return {"period": None if self.since is not None else self.period, "since": self.since, "until": self.until}

    @property
    def label(self) -> str | None:
        return self.period if self.since is None else "custom"


def scope(period: str | None = Query("month", description=PERIOD_HELP),
          since: str | None = Query(None, description="start, UTC, inclusive (YYYY-MM-DD or ISO 8601)"),
          until: str | None = Query(None, description="end, UTC, exclusive"),
          user_id: str | None = Query(None, description="only this user id"),
          guild_id: str | None = Query(None, description="only this guild (server) id"),
          feature: str | None = None, model: str | None = None) -> Scope:
    """FastAPI dependency: the shared parameters, validated (a bad value is a 422 that says why)."""
    if period in ("", "all"):
        period = None
    if period is not None:
        try:
            parse_period(period)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    filters = {k: v for k, v in (("user_id", user_id), ("guild_id", guild_id), ("feature", feature),
                                 ("model", model)) if v not in (None, "")}
    return Scope(period, parse_time("since", since), parse_time("until", until), filters)


def dashboard_scope(period: str, since: str | None, until: str | None, filters: dict,
                    now: datetime | None = None) -> tuple[Scope, str]:
    """The dashboard's choice as a Scope of whole UTC days: "7d" is today and the six days before; "custom" takes
    dates and includes ``until``'s day. Returns the scope and the choice actually used."""
    now = now or datetime.now(timezone.utc)
    midnight = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "custom":
        start, end = parse_time("since", since), parse_time("until", until)
        if start is None:
            raise HTTPException(422, "a custom period needs a start date")
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
        end = None if end is None else end.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        if end is not None and end <= start:
            raise HTTPException(422, "the end date is before the start date")
        return Scope(None, start, end, filters), "custom"
    if period in ("7d", "30d"):
        days = int(period[:-1])
        return Scope(None, midnight - timedelta(days=days - 1), None, filters), period
    if period not in ("today", "month"):
        period = "today"
    return Scope(period, None, None, filters), period
