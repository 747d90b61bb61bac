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
            if not (reserve and mode == "enforce"):
                decision = self._check(request, tokens, source, now, mode)
            else:
                overrides = self.overrides.read(request) if self.overrides is not None else None
                if overrides is not None and overrides.bypassed:
                    return _turned_off(mode)
                ask = self._ask(request, tokens, source, now, mode, overrides)
                if ask is None:
                    return LimitDecision(True, enforcement=mode)
                fallback = self._fallback_ask(ask, estimate, prompt, now, overrides)
                decision = self._reserve(ask, fallback)
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
        if reserve and not decision.allowed:
            self._count_refusal(request, decision)
        if decision.exceeded and mode == "warn":
            log.warning("dspy-tokens (warn mode): would refuse user=%s guild=%s: %s", request.user_id,
                        request.guild_id, decision.message)
        if self.alerts is not None:
            self.alerts.observe(request, decision)
        return decision

    def _check(self, request: Request, tokens: int, source: str, now, mode: str) -> LimitDecision:
        """A decision without a hold: the overrides, usage resets, reservations and windows of the configured rules
        in one read of the store — a second only when an override sets a limit of its own (its window was not
        known to the first)."""
        configured = self.applicable(request)
        if self.overrides is None:
            if not configured:
                return LimitDecision(True, enforcement=mode)
            return evaluate.decide(self.windows, self._ask_of(request, configured, tokens, source, now, mode),
                                   self.cost_estimate_pusd)
        ask = self._ask_of(request, configured, tokens, source, now, mode)
        found = evaluate.read(self.windows, ask, self.overrides.scopes(request))
        applied = self.overrides.applied(found[1].overrides)
        if applied.bypassed:
            return _turned_off(mode)
        rules = applied.apply(self.applicable(request, applied.rules))
        if not rules:
            return LimitDecision(True, enforcement=mode)
        if rules != configured:  # the override's rules: their windows are read now
            return evaluate.decide(self.windows, self._ask_of(request, rules, tokens, source, now, mode),
                                   self.cost_estimate_pusd)
        return evaluate.decide(self.windows, ask, self.cost_estimate_pusd, found)

    def _ask(self, request: Request, tokens: int, source: str, now, mode: str, overrides) -> evaluate.Ask | None:
        """What to decide for ``request`` (None: no rule applies)."""
        rules = overrides.apply(self.applicable(request, overrides.rules)) if overrides is not None \
            else self.applicable(request)
        return self._ask_of(request, rules, tokens, source, now, mode) if rules else None

    def _ask_of(self, request: Request, rules: list[Rule], tokens: int, source: str, now, mode: str) -> evaluate.Ask:
        return evaluate.Ask(request, rules, tokens, self.cost_estimate_pusd(request.model, tokens), source,
                            now or datetime.now(timezone.utc), now, mode, self.config.soft_limit_ratio,
                            hold_seconds=self.config.reservation_ttl_seconds)

    def _fallback_ask(self, ask: evaluate.Ask, estimate, prompt, now, overrides) -> evaluate.Ask | None:
        """The same request on the model an enforced rule names as its ``fallback`` (None: no rule names one)."""
        named = [r.fallback for r in ask.rules if r.fallback and evaluate.rule_mode(r, ask.mode) == "enforce"]
        if not named or named[0] == ask.request.model:
            return None
        request = ask.request.on(named[0])
        tokens, source = self.estimate_for(request.model, estimate, prompt)
        found = self._ask(request, tokens, source, now, ask.mode, overrides)
        # No rule counts the fallback model: an empty ask still holds the run under it, for the top-ups.
        return found or evaluate.Ask(request, [], tokens, 0, source, ask.now, now, ask.mode, ask.soft_ratio,
                                     hold_seconds=ask.hold_seconds)

    def _reserve(self, ask: evaluate.Ask, fallback: evaluate.Ask | None = None) -> LimitDecision:
        """Decide and hold in one transaction; a deadlock between racing reservers is retried, not an outage.

        A request refused by a rule that names a ``fallback`` (or cut down below its estimate by one) is held on
        the fallback model instead when it fits there whole, decided under the same locks."""
        asks = [ask] if fallback is None else [ask, fallback]
        keys = sorted({k for a in asks for k in evaluate.lock_keys(a)}) if self.windows.needs_lock_rows else []
        self.windows.create_locks(keys)
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self.windows.transaction():
                    self.windows.lock(keys)
                    decision = evaluate.decide(self.windows, ask, self.cost_estimate_pusd)
                    chosen = ask
                    if fallback is not None and _falls_back(decision, ask):
                        instead = self._on_fallback(fallback, decision)
                        if instead.allowed:
                            decision, chosen = instead, fallback
                    if decision.allowed:
                        rid = self.windows.hold(chosen.request.hold_ids, chosen.request.model, chosen.sized_tokens,
                                                chosen.sized_cost, chosen.store_now,
                                                self.config.reservation_ttl_seconds)
                        decision = replace(decision, reservation_id=rid, hold_tokens=chosen.sized_tokens)
                    return decision
            except StorageConflict:
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_fallback(self, fallback: evaluate.Ask, refused: LimitDecision) -> LimitDecision:
        """The fallback's decision (it fits only whole: never cut down), telling why the run moved."""
        model = fallback.request.model or ""
        entry = self.config.model_entry(model)
        if fallback.rules:
            decision = evaluate.decide(self.windows, fallback, self.cost_estimate_pusd)
            if not decision.allowed or decision.estimate_source == "left":
                return replace(decision, allowed=False)
        else:
            fallback.sized_tokens, fallback.sized_cost = fallback.tokens, fallback.cost
            decision = LimitDecision(True, enforcement=fallback.mode, estimate_source=fallback.source)
        note = f"{refused.message} This request runs on {entry.label if entry else model} instead."
        return replace(decision, fallback_model=model, message=note)

    def top_up(self, request: Request, reservation_id: str, call_id: str, model: str | None, total: int, extra: int,
               calls: int, strict: bool, tentative: bool = False) -> LimitDecision:
        """Before an LM call of a guarded run: may the run hold ``total`` tokens (``extra`` more than now)? The
        hold is raised (and ``call_id`` tied to the reservation) unless a strict run is refused."""
        request = request.on(self.model_key(model) or request.model)
        cost = self.cost_estimate_pusd(request.model, total)
        try:
            self.store.connect()
            found = self.overrides.read(request) if self.overrides is not None else None
            if found is None:
                rules = self.applicable(request)
            else:
                rules = [] if found.bypassed else found.apply(self.applicable(request, found.rules))
            ask = evaluate.Ask(request, rules, extra, self.cost_estimate_pusd(request.model, extra), "given",
                               datetime.now(timezone.utc), None, self.config.enforcement,
                               self.config.soft_limit_ratio, hold_seconds=self.config.reservation_ttl_seconds)
            keys = evaluate.lock_keys(ask) if self.windows.needs_lock_rows else []
            self.windows.create_locks(keys)
            with self.windows.transaction():
                self.windows.lock(keys)
                decision = evaluate.decide(self.windows, ask, self.cost_estimate_pusd) if rules and (
                    extra or any(r.metric == "requests" for r in rules)) else LimitDecision(True)
                if decision.allowed or not strict:
                    self.windows.top_up(reservation_id, call_id, total, cost, calls,
                                        self.config.reservation_ttl_seconds)
            if strict and not decision.allowed and not tentative:
                self._count_refusal(request, decision)
            return decision
        except StorageUnavailable as exc:
            self.store.reset_connection()
            return self._unavailable(exc, self.config.enforcement)
        except Exception as exc:
            self.store.reset_connection()
            log.exception("dspy-tokens: a guarded run's reservation could not be topped up (%s)", exc)
            return LimitDecision(not strict, exceeded=strict, message="Usage limits could not be evaluated.")

    def _count_refusal(self, request: Request, decision: LimitDecision) -> None:
        """Count a refused run in the database (for ``/metrics``); a failure is logged and changes nothing."""
        try:
            self.store.refusals.add((decision.scope or "", decision.metric, request.model or "",
                                     request.feature or ""))
        except Exception as exc:
            self.store.reset_connection()
            log.warning("dspy-tokens: a refusal could not be counted (%s: %s)", type(exc).__name__, exc)

    def _unavailable(self, exc: Exception, mode: str) -> LimitDecision:
        log.error("dspy-tokens: usage limits could not be checked (%s: %s); %s", type(exc).__name__, exc,
                  "allowing the request (fail_open)" if self.config.fail_open else "refusing the request")
        if self.config.fail_open or mode != "enforce":
            return LimitDecision(True, enforcement=mode, warning=True,
                                 message="Usage limits could not be checked; the request was allowed.")
        return LimitDecision(False, enforcement=mode, exceeded=True,
                             message="Usage limits cannot be checked right now; please try again in a moment.")


def _turned_off(mode: str) -> LimitDecision:
    return LimitDecision(True, bypassed=True, enforcement=mode, message="Unlimited: an administrator turned limits "
                         "off here.")


def _falls_back(decision: LimitDecision, ask: evaluate.Ask) -> bool:
    """Whether a rule naming a fallback refuses the request, or cut its estimate down to what it leaves."""
    named = {r.key for r in ask.rules if r.fallback}
    for d in decision.rules:
        if d.rule in named and d.enforcement == "enforce":
            if d.exceeded or (d.estimate_source == "left" and d.remaining is not None and d.remaining <= d.requested):
                return True
    return False
