"""Budget alerts before the wall: each (rule, scope id, window period, threshold) fires once, in every process.

Crossings are detected at each decision (``check()``, ``guard()``, ``@enforce_limits``): the decision already
holds each applicable rule's ``used + reserved`` against its limit, so no extra read is needed, and usage tracked
without a guard alerts at the scope's next check at the latest. The database deduplicates (of the processes
that see a crossing, the one that records it first fires); each process also remembers what it has seen fired,
so a scope sitting at 90% costs no further round trips. A rolling window's period is its length, counted from the epoch (a 30-day rule
alerts at most once per 30 days per threshold); a calendar window's period is its day or month.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from ..config import AlertSettings, Config
from ..store.units import SCOPE_CHANNEL, SCOPE_FEATURE, SCOPE_GUILD, SCOPE_USER, feature_scope_id, hour_of
from .decision import LimitDecision
from .request import Request
from .rules import ROLLING, Rule
from .webhook import WebhookSender

log = logging.getLogger("dspy_tokens")


@dataclass(frozen=True)
class BudgetAlert:
    """A limit crossed a threshold: ``used`` (committed + reserved) of ``limit`` in the rule's unit (tokens or
    requests as ``int``, dollars as ``Decimal``), in the window that started at ``window_start``."""

    rule: str
    scope: str
    scope_id: int
    threshold: float
    used: int | Decimal
    limit: int | Decimal
    metric: str
    window_start: datetime
    webhook_url: str | None = None
    discord_channel_id: int | None = None

    @property
    def percent(self) -> int:
        return round(self.threshold * 100)

    def text(self) -> str:
        unit = "" if self.metric == "cost" else f" {self.metric}"
        amount = (lambda v: f"${v:,.2f}") if self.metric == "cost" else (lambda v: f"{v:,}")
        who = "everyone" if self.scope == "global" else f"{self.scope} {self.scope_id}"
        return (f"Budget alert: {who} has used {self.percent}% of `{self.rule}` — {amount(self.used)} of "
                f"{amount(self.limit)}{unit} since {self.window_start:%Y-%m-%d %H:%M} UTC.")


def _scope_id(scope: str, request: Request) -> int:
    if scope == SCOPE_FEATURE:
        return feature_scope_id(request.feature) if request.feature else 0
    return {SCOPE_USER: request.user_id, SCOPE_GUILD: request.guild_id,
            SCOPE_CHANNEL: request.channel_id}.get(scope) or 0


class Alerts:
    """Told of every decision; claims each newly crossed threshold in the store and delivers what it won."""

    def __init__(self, ledger, config: Config, rules: list[Rule], sender: WebhookSender | None = None):
        self.ledger, self.config = ledger, config
        self.rules = {rule.key: rule for rule in rules}
        self.hooks: list[Callable[[BudgetAlert], None]] = []
        self.sender = sender or WebhookSender()
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()

    @property
    def wanted(self) -> bool:
        return bool(self.config.alerts) or any(rule.alerts for rule in self.rules.values())

    def on_alert(self, fn: Callable[[BudgetAlert], None]) -> None:
        self.hooks.append(fn)

    def settings(self, rule_key: str | None) -> AlertSettings | None:
        rule = self.rules.get(rule_key or "")
        return rule.alerts if rule is not None and rule.alerts is not None else self.config.alerts

    def observe(self, request: Request, decision: LimitDecision) -> None:
        """Never raises: an alert that cannot be recorded is logged, and the caller's request goes on."""
        if decision.bypassed or not decision.rules:
            return
        try:
            for ruled in decision.rules:
                self._observe_rule(request, ruled)
        except Exception as exc:
            log.error("dspy-tokens: a budget alert could not be recorded (%s: %s)", type(exc).__name__, exc)

    def _observe_rule(self, request: Request, d: LimitDecision) -> None:
        settings = self.settings(d.rule)
        if settings is None or not settings.thresholds or not d.limit or d.window_start is None:
            return
        reached = d.used + d.reserved
        crossed = [t for t in settings.thresholds if reached >= Decimal(str(t)) * d.limit]
        if not crossed:
            return
        scope_id = _scope_id(d.scope or "", request)
        period = self._period(d, d.window_start)
        now = datetime.now(timezone.utc)
        for threshold in crossed:
            key = (d.rule, scope_id, period, f"{threshold:g}")
            with self._lock:
                if key in self._seen:
                    continue
                self._seen.add(key)
            if self.ledger.claim(*key, now):
                self.deliver(BudgetAlert(d.rule or "", d.scope or "", scope_id, threshold, reached, d.limit,
                                         d.metric, d.window_start, settings.webhook_url,
                                         settings.discord_channel_id))

    def _period(self, d: LimitDecision, window_start: datetime) -> int:
        rule = self.rules.get(d.rule or "")
        start = hour_of(window_start)
        if d.window == ROLLING and rule is not None and rule.window_hours:
            now = start + rule.window_hours  # the decision's own clock
            return now - now % rule.window_hours
        return start

    def deliver(self, alert: BudgetAlert) -> None:
        log.warning("dspy-tokens: %s", alert.text())
        for hook in list(self.hooks):
            try:
                hook(alert)
            except Exception:
                log.exception("dspy-tokens: an on_alert hook failed for %s", alert.rule)
        if alert.webhook_url:
            self.sender.post(alert.webhook_url, alert.text())

    def close(self, timeout: float = 5.0) -> None:
        self.sender.close(timeout)
