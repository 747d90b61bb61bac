"""``Limiter``: decides whether a request may run, from the rules and one read of the store — policy only.

Every rule reads the hourly counters (at most ``24 × days + 1`` rows per rule, whatever the size of
``token_usage``) plus the active reservations of in-flight guarded runs. A guarded run reserves its estimate in
the same transaction that decides, under a per-scope lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL/MySQL:
``SELECT ... FOR UPDATE`` on a lock row), so concurrent requests — in any process sharing the database — cannot
all pass a check that only one of them fits. The background writer deletes the reservation in the same
transaction that commits the run's real usage; a reservation left by a crashed process expires after
``reservation_ttl_seconds``. A request is admitted only if, for every rule, ``used + reserved + estimate <=
limit``. Cost rules count only calls with a known price.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

from .._ids import checked_id
from ..capture.context import configured_model
from ..config import Bypasses, Config
from ..errors import StorageConflict
from ..pricing import PriceBook
from ..store import Store
from ..store.units import PICO, SCOPE_GUILD, SCOPE_USER, to_pico
from .decision import LimitDecision
from .messages import describe
from .rules import ROLLING, TOKENS, Rule, rules_from_config

log = logging.getLogger("dspy_tokens")

MAX_ATTEMPTS = 8


def _amount(metric: str, value: int) -> int | Decimal:
    return value if metric == TOKENS else (Decimal(value) / PICO).normalize()


class Limiter:
    """Evaluates the rules against one store. ``check`` reads; ``reserve`` decides and holds atomically."""

    def __init__(self, store: Store, config: Config, bypasses: Bypasses, prices: PriceBook):
        self.store, self.config, self.bypasses, self.prices = store, config, bypasses, prices
        self.rules = rules_from_config(config)
        self.windows = store.windows

    # -- public ------------------------------------------------------------------------------------
    def check(self, user_id=None, guild_id=None, *, model=None, estimate=None, role_ids=(), now=None) -> LimitDecision:
        return self._decide(user_id, guild_id, model, estimate, role_ids, now, reserve=False)

    def reserve(self, user_id=None, guild_id=None, *, model=None, estimate=None, role_ids=(), now=None) -> LimitDecision:
        return self._decide(user_id, guild_id, model, estimate, role_ids, now, reserve=True)

    def estimate_for(self, model: str | None, estimate: int | None) -> int:
        if estimate is not None:
            if isinstance(estimate, bool) or not isinstance(estimate, int) or estimate < 0:
                raise ValueError(f"estimate must be a non-negative number of tokens, got {estimate!r}")
            return estimate
        entry = self.config.model_entry(model)
        if entry is not None and entry.max_tokens:
            return entry.max_tokens
        return self.config.default_estimate_tokens

    def cost_estimate_pusd(self, model: str | None, tokens: int) -> int:
        """Dollars to hold for ``tokens``: priced at the model's dearer rate (an upper bound), 0 if unpriced."""
        found = self.prices.rates(model) if model else None
        price = found[0] if found else None
        if price is None or price.input is None or price.output is None:
            return 0
        return to_pico(tokens * max(price.input, price.output))

    # -- evaluation --------------------------------------------------------------------------------
    def _applicable(self, user_id, guild_id, model) -> list[Rule]:
        out = []
        for rule in self.rules:
            if rule.scope == SCOPE_USER and user_id is None or rule.scope == SCOPE_GUILD and guild_id is None:
                continue
            if rule.model is not None and (model is None or not self._same_model(rule.model, model)):
                continue
            out.append(rule)
        return out

    def _same_model(self, rule_model: str, model: str) -> bool:
        entry = self.config.model_entry(model)
        return model == rule_model or (entry is not None and entry.model_id == rule_model)

    def _decide(self, user_id, guild_id, model, estimate, role_ids, now, reserve) -> LimitDecision:
        # The ids usage_context accepts ("42" is user 42), validated before any database work.
        user_id = checked_id("usage_context", "user_id", user_id)
        guild_id = checked_id("usage_context", "guild_id", guild_id)
        mode = self.config.enforcement
        now = now or datetime.now(timezone.utc)
        if self.bypasses.covers(user_id, guild_id, role_ids):
            return LimitDecision(True, bypassed=True, enforcement=mode, message="Unlimited: this user or server "
                                 "is on the bypass list.")
        if model is None:
            model = configured_model()
        rules = self._applicable(user_id, guild_id, model)
        if not rules:
            return LimitDecision(True, enforcement=mode)
        tokens = self.estimate_for(model, estimate)
        cost = self.cost_estimate_pusd(model, tokens)
        try:
            self.store.connect()
            if reserve and mode == "enforce":
                decision = self._reserve(rules, user_id, guild_id, model, tokens, cost, now, mode)
            else:
                decision = self._evaluate(rules, user_id, guild_id, tokens, cost, now, mode)
        except StorageConflict:  # the database works but stays contended: refusing is safer than overshooting
            self.store.reset_connection()
            return LimitDecision(False, enforcement=mode, exceeded=True,
                                 message="Too many requests at once; please try again in a moment.")
        except Exception as exc:
            self.store.reset_connection()
            return self._unavailable(exc, mode)
        if decision.exceeded and mode == "warn":
            log.warning("dspy-tokens (warn mode): would refuse user=%s guild=%s: %s", user_id, guild_id,
                        decision.message)
        return decision

    def _reserve(self, rules, user_id, guild_id, model, tokens, cost, now, mode) -> LimitDecision:
        """Decide and hold in one transaction; a deadlock between racing reservers is retried, not an outage."""
        keys = sorted({(r.scope, r.scope_id(user_id, guild_id)) for r in rules}) if self.windows.needs_lock_rows \
            else []
        self.windows.create_locks(keys)
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.windows.transaction():
                    self.windows.lock(keys)
                    decision = self._evaluate(rules, user_id, guild_id, tokens, cost, now, mode)
                    if decision.allowed:
                        rid = self.windows.hold(user_id, guild_id, model, tokens, cost, now,
                                                self.config.reservation_ttl_seconds)
                        decision = replace(decision, reservation_id=rid)
                    return decision
            except StorageConflict:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: Exception, mode: str) -> LimitDecision:
        log.error("dspy-tokens: usage limits could not be checked (%s: %s); %s", type(exc).__name__, exc,
                  "allowing the request (fail_open)" if self.config.fail_open else "refusing the request")
        if self.config.fail_open or mode != "enforce":
            return LimitDecision(True, enforcement=mode, warning=True,
                                 message="Usage limits could not be checked; the request was allowed.")
        return LimitDecision(False, enforcement=mode, exceeded=True,
                             message="Usage limits cannot be checked right now; please try again in a moment.")

    @staticmethod
    def _window_key(rule: Rule, user_id, guild_id, now) -> tuple:
        return rule.scope, rule.scope_id(user_id, guild_id), rule.model, rule.start_hour(now)

    def _rolling_reset(self, rule: Rule, window: tuple, must_free: int) -> datetime | None:
        """When enough of the oldest usage has left the window to fit the request (None: never by itself)."""
        freed = 0
        for hour, amount in self.windows.usage_by_hour(window, "tokens" if rule.metric == TOKENS else "cost_pusd"):
            freed += amount
            if freed >= must_free:
                return rule.leaves_window(hour)
        return None

    def _evaluate(self, rules, user_id, guild_id, tokens, cost, now, mode) -> LimitDecision:
        held_keys = sorted({(r.scope, r.scope_id(user_id, guild_id), r.model) for r in rules}, key=str)
        window_keys = sorted({self._window_key(r, user_id, guild_id, now) for r in rules}, key=str)
        reserved, window_sums = self.windows.read(held_keys, window_keys, now)
        results = []
        for rule in rules:
            key = self._window_key(rule, user_id, guild_id, now)
            used_tokens, used_cost, unpriced = window_sums[key]
            held_tokens, held_cost = reserved[(rule.scope, rule.scope_id(user_id, guild_id), rule.model)]
            used, held, need = ((used_tokens, held_tokens, tokens) if rule.metric == TOKENS
                                else (used_cost, held_cost, cost))
            exceeded = used + held + need > rule.limit
            resets_at = None
            if exceeded and need <= rule.limit:
                resets_at = (self._rolling_reset(rule, key, used + held + need - rule.limit)
                             if rule.window == ROLLING else rule.calendar_reset(now))
            results.append((rule, exceeded, used, held, need, unpriced, resets_at))
        refusing = [r for r in results if r[1]]
        # Report the refusing rule (the one freeing up last), else the rule closest to its limit.
        if refusing:
            chosen = max(refusing, key=lambda r: r[6] or datetime.max.replace(tzinfo=timezone.utc))
        else:
            chosen = max(results, key=lambda r: (r[2] + r[3] + r[4]) / r[0].limit if r[0].limit else 1.0)
        decisions = [self._decision(r, mode, now) for r in results]
        main = decisions[results.index(chosen)]
        return replace(main, others=tuple(d for d in decisions if d is not main))

    def _decision(self, result, mode, now) -> LimitDecision:
        rule, exceeded, used, held, need, unpriced, resets_at = result
        soft = rule.limit > 0 and (used + held + need) >= self.config.soft_limit_ratio * rule.limit
        allowed = not exceeded or mode != "enforce"
        decision = LimitDecision(
            allowed=allowed, scope=rule.scope, rule=rule.key, metric=rule.metric,
            used=_amount(rule.metric, used), reserved=_amount(rule.metric, held), limit=rule.limit_value,
            requested=_amount(rule.metric, need), resets_at=resets_at, window=rule.window,
            window_start=rule.window_start(now), warning=soft or (exceeded and mode == "warn"),
            exceeded=exceeded, enforcement=mode, unknown_cost_calls=unpriced)
        return replace(decision, message=describe(decision, rule))
