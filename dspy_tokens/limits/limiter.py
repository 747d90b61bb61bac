"""``Limiter``: decides whether a request may run, from the rules and one read of the store — policy only.

Every rule reads the hourly counters (at most one row per hour of its window, whatever the size of
``token_usage``) plus the active reservations of in-flight guarded runs. A guarded run reserves its estimate in
the same transaction that decides, under a per-scope lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL/MySQL:
``SELECT ... FOR UPDATE`` on a lock row), so concurrent requests — in any process sharing the database — cannot
all pass a check that only one of them fits. Reservations expire on the database's clock. The background writer
moves a run's committed calls out of its reservation and deletes it in the transaction that commits the run's
last usage; a reservation left by a crashed process expires after ``reservation_ttl_seconds``. A request is
admitted only if, for every enforced rule, ``used + reserved + estimate <= limit``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from ..capture.context import configured_lm, configured_model
from ..config import Bypasses, Config
from ..errors import StorageConflict, StorageUnavailable
from ..pricing import PriceBook
from ..store import Store
from ..store.units import to_pico
from . import evaluate
from .alerts import Alerts
from .decision import LimitDecision
from .estimate import output_cap, prompt_tokens
from .request import Request
from .rules import Rule, rules_from_config

log = logging.getLogger("dspy_tokens")

MAX_ATTEMPTS = 8


class Limiter:
    """Evaluates the rules against one store. ``check`` reads; ``reserve`` decides and holds atomically."""

    def __init__(self, store: Store, config: Config, bypasses: Bypasses, prices: PriceBook, overrides=None):
        self.store, self.config, self.bypasses, self.prices = store, config, bypasses, prices
        self.rules = rules_from_config(config)
        self.windows = store.windows
        self.overrides = overrides  # run-time limits (limits.overrides.Overrides), read at every decision
        self.alerts: Alerts | None = None  # told of every decision's rules

    # -- public ------------------------------------------------------------------------------------
    def check(self, user_id=None, guild_id=None, *, channel_id=None, feature=None, model=None, estimate=None,
              prompt=None, role_ids=(), now=None) -> LimitDecision:
        request = Request.of(user_id, guild_id, channel_id, feature, model, role_ids)
        return self.decide(request, estimate, prompt, now, reserve=False)

    def reserve(self, user_id=None, guild_id=None, *, channel_id=None, feature=None, model=None, estimate=None,
                prompt=None, role_ids=(), now=None) -> LimitDecision:
        request = Request.of(user_id, guild_id, channel_id, feature, model, role_ids)
        return self.decide(request, estimate, prompt, now, reserve=True)

    def model_key(self, model: str | None) -> str | None:
        """The one string a model is counted under: a configured model's provider/name, whether it was named by
        its label, its bare name or in full (reservations and per-model rules must agree)."""
        entry = self.config.model_entry(model)
        return entry.model_id if entry is not None else model

    def estimate_for(self, model: str | None, estimate: int | None, prompt=None) -> tuple[int, str]:
        """(tokens, how they were sized); see :attr:`LimitDecision.estimate_source`."""
        if estimate is not None:
            if isinstance(estimate, bool) or not isinstance(estimate, int) or estimate < 0:
                raise ValueError(f"estimate must be a non-negative number of tokens, got {estimate!r}")
            return estimate, "given"
        entry = self.config.model_entry(model)
        cap = entry.max_tokens if entry is not None and entry.max_tokens else None
        counted = prompt_tokens(model, prompt)
        if counted is not None:
            return counted + (cap or output_cap(configured_lm(), self.config.default_estimate_tokens)), "prompt"
        if cap:
            return cap, "max_tokens"
        return self.config.default_estimate_tokens, "default"

    def cost_estimate_pusd(self, model: str | None, tokens: int) -> int:
        """Dollars to hold for ``tokens``: priced at the model's dearer rate (an upper bound), 0 if unpriced."""
        found = self.prices.rates(model) if model else None
        price = found[0] if found else None
        if price is None or price.input is None or price.output is None:
            return 0
        return to_pico(tokens * max(price.input, price.output))

    # -- deciding ----------------------------------------------------------------------------------
    def applicable(self, request: Request, extra: Sequence[Rule] = ()) -> list[Rule]:
        out = []
        for rule in [*self.rules, *extra]:
            if not rule.applies_to(request.user_id, request.guild_id, request.channel_id, request.feature):
                continue
            if rule.model is not None and rule.model != request.model:
                continue
            out.append(rule)
        return out

    def decide(self, request: Request, estimate, prompt, now, reserve: bool) -> LimitDecision:
        mode = self.config.enforcement
        if self.bypasses.covers(request.user_id, request.guild_id, request.role_ids):
            return LimitDecision(True, bypassed=True, enforcement=mode, message="Unlimited: this user or server "
                                 "is on the bypass list.")
        request = request.on(self.model_key(request.model or configured_model()))
        tokens, source = self.estimate_for(request.model, estimate, prompt)  # a bad estimate= is the caller's error
        try:
            self.store.connect()
            overrides = self.overrides.read(request) if self.overrides is not None else None
            if overrides is not None and overrides.bypassed:
                return LimitDecision(True, bypassed=True, enforcement=mode,
                                     message="Unlimited: an administrator turned limits off here.")
            rules = overrides.apply(self.applicable(request, overrides.rules)) if overrides is not None \
                else self.applicable(request)
            if not rules:
                return LimitDecision(True, enforcement=mode)
            ask = evaluate.Ask(request, rules, tokens, self.cost_estimate_pusd(request.model, tokens), source,
                               now or datetime.now(timezone.utc), now, mode, self.config.soft_limit_ratio,
                               overrides.resets if overrides is not None else {})
            if reserve and mode == "enforce":
                decision = self._reserve(ask)
            else:
                decision = evaluate.decide(self.windows, ask, self.cost_estimate_pusd)
        except StorageConflict:  # the database works but stays contended: refusing is safer than overshooting
            self.store.reset_connection()
            return LimitDecision(False, enforcement=mode, exceeded=True,
                                 message="Too many requests at once; please try again in a moment.")
        except StorageUnavailable as exc:
            self.store.reset_connection()
            return self._unavailable(exc, mode)
        except Exception as exc:  # not an outage: a bug or bad data must never let everyone through
            self.store.reset_connection()
            log.exception("dspy-tokens: usage limits could not be evaluated (%s); refusing the request", exc)
            if mode != "enforce":
                return LimitDecision(True, enforcement=mode, warning=True,
                                     message="Usage limits could not be evaluated; the request was allowed.")
            return LimitDecision(False, enforcement=mode, exceeded=True,
                                 message="Usage limits could not be evaluated; please tell an administrator.")
        if decision.exceeded and mode == "warn":
            log.warning("dspy-tokens (warn mode): would refuse user=%s guild=%s: %s", request.user_id,
                        request.guild_id, decision.message)
        if self.alerts is not None:
            self.alerts.observe(request, decision)
        return decision

    def _reserve(self, ask: evaluate.Ask) -> LimitDecision:
        """Decide and hold in one transaction; a deadlock between racing reservers is retried, not an outage."""
        keys = evaluate.lock_keys(ask) if self.windows.needs_lock_rows else []
        self.windows.create_locks(keys)
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.windows.transaction():
                    self.windows.lock(keys)
                    decision = evaluate.decide(self.windows, ask, self.cost_estimate_pusd)
                    if decision.allowed:
                        rid = self.windows.hold(ask.request.hold_ids, ask.request.model, ask.sized_tokens,
                                                ask.sized_cost, ask.store_now, self.config.reservation_ttl_seconds)
                        decision = replace(decision, reservation_id=rid, hold_tokens=ask.sized_tokens)
                    return decision
            except StorageConflict:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def top_up(self, request: Request, reservation_id: str, call_id: str, model: str | None, total: int, extra: int,
               calls: int, strict: bool) -> LimitDecision:
        """Before an LM call of a guarded run: may the run hold ``total`` tokens (``extra`` more than now)? The
        hold is raised (and ``call_id`` tied to the reservation) unless a strict run is refused."""
        request = request.on(self.model_key(model) or request.model)
        cost = self.cost_estimate_pusd(request.model, total)
        try:
            self.store.connect()
            rules = self.applicable(request)
            ask = evaluate.Ask(request, rules, extra, self.cost_estimate_pusd(request.model, extra), "given",
                               datetime.now(timezone.utc), None, self.config.enforcement,
                               self.config.soft_limit_ratio)
            keys = evaluate.lock_keys(ask) if self.windows.needs_lock_rows else []
            self.windows.create_locks(keys)
            with self.windows.transaction():
                self.windows.lock(keys)
                decision = evaluate.decide(self.windows, ask, self.cost_estimate_pusd) if rules and (
                    extra or any(r.metric == "requests" for r in rules)) else LimitDecision(True)
                if decision.allowed or not strict:
                    self.windows.top_up(reservation_id, call_id, total, cost, calls,
                                        self.config.reservation_ttl_seconds)
            return decision
        except StorageUnavailable as exc:
            self.store.reset_connection()
            return self._unavailable(exc, self.config.enforcement)
        except Exception as exc:
            self.store.reset_connection()
            log.exception("dspy-tokens: a guarded run's reservation could not be topped up (%s)", exc)
            return LimitDecision(not strict, exceeded=strict, message="Usage limits could not be evaluated.")

    def _unavailable(self, exc: Exception, mode: str) -> LimitDecision:
        log.error("dspy-tokens: usage limits could not be checked (%s: %s); %s", type(exc).__name__, exc,
                  "allowing the request (fail_open)" if self.config.fail_open else "refusing the request")
        if self.config.fail_open or mode != "enforce":
            return LimitDecision(True, enforcement=mode, warning=True,
                                 message="Usage limits could not be checked; the request was allowed.")
        return LimitDecision(False, enforcement=mode, exceeded=True,
                             message="Usage limits cannot be checked right now; please try again in a moment.")
