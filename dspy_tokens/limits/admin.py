"""Run-time limit management behind ``tracker.set_limit`` / ``clear_limit`` / ``reset_usage`` / ``set_bypass`` /
``limit_changes``: the arguments checked (a bad one is a ``ValueError`` that says which and why), then one
transaction that changes the scope and writes its audit entry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .._ids import parse_id
from ..config.schema import MAX_WINDOW_DAYS, WINDOW
from ..store import Store
from ..store.units import SCOPE_GLOBAL, hour_of, to_pico, usd
from .overrides import SCOPES

MAX_BY = 100  # the audit trail's changed_by column


@dataclass(frozen=True)
class LimitChange:
    """One entry of the audit trail: who (``changed_by``, as given with ``by=``) did what (``action``: set, clear,
    reset, bypass; ``detail``: the values) to which scope, when (UTC)."""

    id: int
    changed_at: datetime
    changed_by: str | None
    action: str
    scope: str
    scope_id: int
    detail: dict


def _scope(scope: Any, scope_id: Any) -> tuple[str, int]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    try:
        sid = parse_id(scope_id if scope_id is not None or scope != SCOPE_GLOBAL else 0)
    except ValueError as exc:
        raise ValueError(f"scope_id {exc}") from None
    if scope == SCOPE_GLOBAL and sid != 0:
        raise ValueError(f"the global scope has scope_id 0, got {scope_id!r}")
    return scope, sid


def _count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be a whole number >= 0 (0 refuses everything), got {value!r}")
    return value


def _dollars(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        if isinstance(value, (bool, float)):
            raise InvalidOperation
        amount = Decimal(str(value).strip()) if isinstance(value, (str, int, Decimal)) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0 or amount >= 10**9:
        raise ValueError(f"cost_usd must be US dollars >= 0 as a decimal string or Decimal (e.g. \"12.50\"), "
                         f"got {value!r}")
    return amount


def _window(value: Any) -> str | None:
    if value is None:
        return None
    match = WINDOW.match(value) if isinstance(value, str) else None
    if match is None or (match["days"] and int(match["days"]) > MAX_WINDOW_DAYS) or (
            match["hours"] and int(match["hours"]) > 24 * MAX_WINDOW_DAYS):
        raise ValueError(f"window must be a rolling \"<n>d\" or \"<n>h\" (up to {MAX_WINDOW_DAYS} days), or "
                         f"\"1mo\" (the calendar month), got {value!r}")
    return value


def _by(by: Any) -> str | None:
    if by is None:
        return None
    text = str(by).strip()[:MAX_BY]
    return text or None


class LimitAdmin:
    def __init__(self, store: Store):
        self.store = store

    def _change(self, entry: dict) -> LimitChange:
        return LimitChange(**entry)

    def set_limit(self, scope: Any, scope_id: Any, *, tokens: Any = None, cost_usd: Any = None,
                  requests: Any = None, window: Any = None, by: Any = None) -> LimitChange:
        key = _scope(scope, scope_id)
        values: dict[str, Any] = {"tokens": _count("tokens", tokens), "requests": _count("requests", requests)}
        dollars = _dollars(cost_usd)
        values["cost_pusd"] = None if dollars is None else to_pico(dollars)
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            raise ValueError("set_limit needs tokens, cost_usd or requests (clear_limit removes limits)")
        if window is not None:
            values["window"] = _window(window)
        detail = {k: (str(usd(v)) if k == "cost_pusd" else v) for k, v in values.items()}
        detail = {("cost_usd" if k == "cost_pusd" else k): v for k, v in detail.items()}
        self.store.connect()
        return self._change(self.store.overrides.set_limits(key, values, now=_now(), by=_by(by), detail=detail))

    def clear_limit(self, scope: Any, scope_id: Any, *, by: Any = None) -> LimitChange:
        key = _scope(scope, scope_id)
        self.store.connect()
        return self._change(self.store.overrides.clear_limits(key, now=_now(), by=_by(by), detail={}))

    def reset_usage(self, scope: Any, scope_id: Any, *, by: Any = None) -> LimitChange:
        key = _scope(scope, scope_id)
        now = _now()
        self.store.connect()
        return self._change(self.store.overrides.reset(key, hour_of(now), now=now, by=_by(by),
                                                       detail={"from": now.isoformat()}))

    def set_bypass(self, scope: Any, scope_id: Any, on: Any = True, *, by: Any = None) -> LimitChange:
        key = _scope(scope, scope_id)
        if not isinstance(on, bool):
            raise ValueError(f"on must be true or false, got {on!r}")
        self.store.connect()
        return self._change(self.store.overrides.set_bypass(key, on, now=_now(), by=_by(by), detail={"on": on}))

    def changes(self, scope: Any = None, scope_id: Any = None, limit: int = 50) -> list[LimitChange]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be a whole number from 1 to 10000, got {limit!r}")
        key = None
        if scope is not None and scope_id is not None:
            key = _scope(scope, scope_id)
        elif scope is not None:
            _scope(scope, 0 if scope == SCOPE_GLOBAL else 1)
        elif scope_id is not None:
            raise ValueError("scope_id needs a scope")
        self.store.connect()
        return [self._change(e) for e in self.store.overrides.changes(key, scope, limit)]


def _now() -> datetime:
    return datetime.now(timezone.utc)
