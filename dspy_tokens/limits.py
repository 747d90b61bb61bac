"""Usage limits: rules from models.json, checked before the LLM runs, exact under concurrency, O(1) in rows.

Every rule reads the hourly counters (at most ``24 × days + 1`` rows per rule, whatever the size of
``token_usage``) plus the active reservations of in-flight guarded runs. A guarded run reserves its estimate in
the same transaction that decides, under a per-scope lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL/MySQL:
``SELECT ... FOR UPDATE`` on a lock row), so concurrent requests — in any process sharing the database — cannot
all pass a check that only one of them fits. The background writer deletes the reservation in the same
transaction that commits the run's real usage; a reservation left by a crashed process expires after
``reservation_ttl_seconds``.

Windows: ``*_limit`` and ``*_cost_limit`` are rolling over ``time_window_days`` at one-hour resolution (usage
leaves the window at the end of the hour in which it becomes ``time_window_days`` old); ``daily_*`` reset at
00:00 UTC, ``monthly_cost_limit`` on the 1st at 00:00 UTC. A request is admitted only if, for every rule,
``used + reserved + estimate <= limit``. Cost rules count only calls with a known price: calls of an unpriced
model count against token rules but their dollars are unknown (``decision.unpriced_calls`` says how many).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
import uuid
import weakref
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .config import Bypasses, Config
from .context import _snowflake
from .counters import hour_of, to_pico
from .db import write_transaction
from .pricing import PriceBook
from .schema import PICO, SCOPE_GLOBAL, SCOPE_GUILD, SCOPE_USER

log = logging.getLogger("dspy_tokens")

MAX_ATTEMPTS = 8
ROLLING, DAY, MONTH = "rolling", "day", "month"
TOKENS, COST = "tokens", "cost"
_SCOPE_OF_KEY = {"user": SCOPE_USER, "guild": SCOPE_GUILD, "global": SCOPE_GLOBAL, "daily": SCOPE_GLOBAL,
                 "monthly": SCOPE_GLOBAL}


@dataclass(frozen=True)
class Rule:
    key: str  # the models.json setting, e.g. "user_limit" or "models[gpt-4o].user_limit"
    scope: str
    metric: str
    limit: int  # tokens, or picodollars for cost rules
    window: str
    days: int = 0
    model: str | None = None  # per-model override: counts only this configured model

    @property
    def limit_value(self) -> int | Decimal:
        return self.limit if self.metric == TOKENS else Decimal(self.limit) / PICO


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

    for key in ("user_limit", "guild_limit", "global_limit", "user_cost_limit", "guild_cost_limit",
                "global_cost_limit", "daily_token_limit", "daily_cost_limit", "monthly_cost_limit"):
        add(key, getattr(config, key))
    for entry in config.models:
        for key, value in entry.limits.items():
            add(key, value, model=entry.model_id, prefix=f"models[{entry.label}].")
    return rules


@dataclass(frozen=True)
class LimitDecision:
    """The answer to "may this request run?", with the numbers to explain it.

    ``scope``/``rule``/``used``/``limit`` describe the refusing rule, or — when allowed — the rule closest to its
    limit (``None`` when no rule applies). Cost amounts are ``Decimal`` dollars.
    """

    allowed: bool
    scope: str | None = None
    rule: str | None = None
    metric: str = TOKENS
    used: int | Decimal = 0
    reserved: int | Decimal = 0
    limit: int | Decimal | None = None
    requested: int | Decimal = 0
    resets_at: datetime | None = None
    window: str | None = None
    message: str = "No usage limits apply."
    warning: bool = False  # soft threshold reached, or over the limit in "warn" mode
    exceeded: bool = False  # a rule refuses (even if "warn"/"off" lets the request through)
    enforcement: str = "enforce"
    bypassed: bool = False
    unpriced_calls: int = 0
    reservation_id: str | None = None
    others: tuple["LimitDecision", ...] = field(default=(), repr=False)  # every other applicable rule

    @property
    def remaining(self) -> int | Decimal | None:
        if self.limit is None:
            return None
        return max(self.limit - self.used - self.reserved, 0 if self.metric == TOKENS else Decimal(0))

    @property
    def ratio(self) -> float:
        if not self.limit:
            return 0.0
        return float((self.used + self.reserved) / self.limit)


def _window_start(rule: Rule, now: datetime) -> int:
    if rule.window == ROLLING:
        return hour_of(now) - 24 * rule.days
    if rule.window == DAY:
        return hour_of(now.replace(hour=0, minute=0, second=0, microsecond=0))
    return hour_of(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def _calendar_reset(rule: Rule, now: datetime) -> datetime:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if rule.window == DAY:
        return midnight + timedelta(days=1)
    first = midnight.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)


def _amount(metric: str, value: int) -> int | Decimal:
    return value if metric == TOKENS else (Decimal(value) / PICO).normalize()


class Limiter:
    """Evaluates the rules against one store. ``check`` reads; ``reserve`` decides and holds atomically."""

    def __init__(self, store, config: Config, bypasses: Bypasses, prices: PriceBook):
        self.store, self.config, self.bypasses, self.prices = store, config, bypasses, prices
        self.rules = rules_from_config(config)
        self._prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> statement names

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
        if not found:
            return 0
        price = found[0]
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
        user_id, guild_id = _snowflake("user_id", user_id), _snowflake("guild_id", guild_id)
        mode = self.config.enforcement
        now = now or datetime.now(timezone.utc)
        if self.bypasses.covers(user_id, guild_id, role_ids):
            return LimitDecision(True, bypassed=True, enforcement=mode, message="Unlimited: this user or server "
                                 "is on the bypass list.")
        if model is None:
            model = _configured_model()
        rules = self._applicable(user_id, guild_id, model)
        if not rules:
            return LimitDecision(True, enforcement=mode)
        tokens = self.estimate_for(model, estimate)
        cost = self.cost_estimate_pusd(model, tokens)
        db = self.store.db
        try:
            self.store.ensure_schema()
            db.connect(reuse_if_open=True)
            if reserve and mode == "enforce":
                decision = self._reserve(rules, user_id, guild_id, model, tokens, cost, now, mode)
            else:
                decision = self._evaluate(rules, user_id, guild_id, tokens, cost, now, mode)
        except Exception as exc:
            self.store.reset_connection()
            if _is_conflict(exc):  # the database works but stays contended: refusing is safer than overshooting
                return LimitDecision(False, enforcement=mode, exceeded=True,
                                     message="Too many requests at once; please try again in a moment.")
            return self._unavailable(exc, mode)
        if decision.exceeded and mode == "warn":
            log.warning("dspy-tokens (warn mode): would refuse user=%s guild=%s: %s", user_id, guild_id,
                        decision.message)
        return decision

    def _reserve(self, rules, user_id, guild_id, model, tokens, cost, now, mode) -> LimitDecision:
        """Decide and hold in one transaction; a deadlock between racing reservers is retried, not an outage."""
        keys = self._lock_keys(rules, user_id, guild_id)
        self._create_locks(keys)
        for attempt in range(MAX_ATTEMPTS):
            try:
                with write_transaction(self.store.db):
                    self._lock(keys)
                    decision = self._evaluate(rules, user_id, guild_id, tokens, cost, now, mode)
                    if decision.allowed:
                        decision = replace(decision, reservation_id=self._hold(user_id, guild_id, model, tokens,
                                                                               cost, now))
                    return decision
            except Exception as exc:
                if attempt == MAX_ATTEMPTS - 1 or not _is_conflict(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))

    def _unavailable(self, exc: Exception, mode: str) -> LimitDecision:
        log.error("dspy-tokens: usage limits could not be checked (%s: %s); %s", type(exc).__name__, exc,
                  "allowing the request (fail_open)" if self.config.fail_open else "refusing the request")
        if self.config.fail_open or mode != "enforce":
            return LimitDecision(True, enforcement=mode, warning=True,
                                 message="Usage limits could not be checked; the request was allowed.")
        return LimitDecision(False, enforcement=mode, exceeded=True,
                             message="Usage limits cannot be checked right now; please try again in a moment.")

    def _lock_keys(self, rules: list[Rule], user_id, guild_id) -> list[tuple[str, int]]:
        if self.store.dialect == "sqlite":
            return []  # BEGIN IMMEDIATE already serialises writers
        return sorted({(r.scope, {SCOPE_USER: user_id, SCOPE_GUILD: guild_id}.get(r.scope, 0)) for r in rules})

    def _create_locks(self, keys) -> None:
        """Lock rows are created outside the deciding transaction (autocommit), so it only ever locks rows."""
        db, p = self.store.db, self.store.db.param
        ignore = "INSERT IGNORE INTO" if self.store.dialect == "mysql" else "INSERT INTO"
        conflict = "" if self.store.dialect == "mysql" else " ON CONFLICT DO NOTHING"
        for scope, scope_id in keys:
            db.execute_sql(f"{ignore} token_limit_locks (scope, scope_id) VALUES ({p}, {p}){conflict}",
                           (scope, scope_id))

    def _lock(self, keys) -> None:
        db, p = self.store.db, self.store.db.param
        for scope, scope_id in keys:  # always in the same order: no lock-order deadlocks
            db.execute_sql(f"SELECT scope FROM token_limit_locks WHERE scope = {p} AND scope_id = {p} FOR UPDATE",
                           (scope, scope_id))

    def _hold(self, user_id, guild_id, model, tokens, cost, now) -> str:
        reservation = self.store.models.Reservation
        reservation.delete().where(reservation.expires_at <= now).execute()
        rid = uuid.uuid4().hex
        reservation.insert(id=rid, user_id=user_id, guild_id=guild_id, model=model, tokens=tokens, cost_pusd=cost,
                           created_at=now,
                           expires_at=now + timedelta(seconds=self.config.reservation_ttl_seconds)).execute()
        return rid

    def _read(self, rules, user_id, guild_id, now) -> tuple[dict, dict]:
        """Active reservations per (scope, model) and window sums per counter query, in ONE statement: one
        round trip, and one snapshot, so a run settling meanwhile is never counted zero times."""
        p = self.store.db.param
        parts, params = [], []
        held_keys = sorted({(r.scope, r.model) for r in rules}, key=str)
        expires = self.store.models.Reservation.expires_at.db_value(now)
        for scope, model in held_keys:
            where, args = f"expires_at > {p}", [expires]
            if scope in (SCOPE_USER, SCOPE_GUILD):
                where += f" AND {scope}_id = {p}"
                args.append(user_id if scope == SCOPE_USER else guild_id)
            if model is not None:
                where += f" AND model = {p}"
                args.append(model)
            parts.append(f"SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_pusd), 0), 0 "
                         f"FROM token_reservations WHERE {where}")
            params += args
        used_keys = sorted({self._counter_key(r, user_id, guild_id, now) for r in rules}, key=str)
        for scope, scope_id, model, start in used_keys:
            table, extra, args = "token_usage_counters", "", [scope, scope_id, start]
            if model is not None:
                table, extra, args = "token_usage_model_counters", f" AND model = {p}", [scope, scope_id, model, start]
            parts.append(f"SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_pusd), 0), "
                         f"COALESCE(SUM(unpriced_calls), 0) FROM {table} "
                         f"WHERE scope = {p} AND scope_id = {p}{extra} AND hour >= {p}")
            params += args
        # One row per part; the parts are scalar aggregates, so UNION ALL keeps their order on every backend.
        sql = " UNION ALL ".join(f"SELECT * FROM ({part}) AS q{i}" for i, part in enumerate(parts))
        rows = [tuple(int(v) for v in row) for row in self._query(sql, params)]
        held = {key: rows[i][:2] for i, key in enumerate(held_keys)}
        used = {key: rows[len(held_keys) + i] for i, key in enumerate(used_keys)}
        return held, used

    def _query(self, sql: str, params: list) -> list[tuple]:
        """Run the window query; on PostgreSQL as a prepared statement (planning it costs more than running it)."""
        db = self.store.db
        if self.store.dialect != "postgresql":
            return db.execute_sql(sql, params).fetchall()
        connection = db.connection()
        prepared = self._prepared.setdefault(connection, set())
        name = "dspy_tokens_window_" + hashlib.sha1(sql.encode()).hexdigest()[:16]
        cursor = db.cursor()
        if name not in prepared:
            numbered = re.sub(r"%s", lambda _, n=iter(range(1, len(params) + 1)): f"${next(n)}", sql)
            cursor.execute(f"PREPARE {name} AS {numbered}")
            prepared.add(name)
        cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
        return cursor.fetchall()

    @staticmethod
    def _counter_key(rule: Rule, user_id, guild_id, now) -> tuple:
        scope_id = {SCOPE_USER: user_id, SCOPE_GUILD: guild_id}.get(rule.scope, 0)
        return rule.scope, scope_id, rule.model, _window_start(rule, now)

    def _rolling_reset(self, rule: Rule, scope_id: int, start_hour: int, must_free: int, now: datetime):
        """When enough of the oldest usage has left the window to fit the request (None: never by itself)."""
        db, p = self.store.db, self.store.db.param
        column = "tokens" if rule.metric == TOKENS else "cost_pusd"
        table, extra, params = "token_usage_counters", "", [rule.scope, scope_id, start_hour]
        if rule.model is not None:
            table, extra = "token_usage_model_counters", f" AND model = {p}"
            params.insert(2, rule.model)
        freed = 0
        for hour, amount in db.execute_sql(
                f"SELECT hour, {column} FROM {table} WHERE scope = {p} AND scope_id = {p}{extra} AND hour >= {p} "
                f"AND {column} > 0 ORDER BY hour", params):
            freed += int(amount)
            if freed >= must_free:
                return datetime.fromtimestamp((int(hour) + 1) * 3600, timezone.utc) + timedelta(days=rule.days)
        return None

    def _evaluate(self, rules, user_id, guild_id, tokens, cost, now, mode) -> LimitDecision:
        reserved, window_sums = self._read(rules, user_id, guild_id, now)
        results = []
        for rule in rules:
            key = self._counter_key(rule, user_id, guild_id, now)
            _, scope_id, _, start = key
            used_tokens, used_cost, unpriced = window_sums[key]
            held_tokens, held_cost = reserved[(rule.scope, rule.model)]
            used, held, need = ((used_tokens, held_tokens, tokens) if rule.metric == TOKENS
                                else (used_cost, held_cost, cost))
            exceeded = used + held + need > rule.limit
            resets_at = None
            if exceeded:
                if rule.window == ROLLING:
                    must_free = used + held + need - rule.limit
                    resets_at = (self._rolling_reset(rule, scope_id, start, must_free, now)
                                 if need <= rule.limit else None)
                else:
                    resets_at = _calendar_reset(rule, now) if need <= rule.limit else None
            results.append((rule, exceeded, used, held, need, unpriced, resets_at))
        refusing = [r for r in results if r[1]]
        # Report the refusing rule (the one freeing up last), else the rule closest to its limit.
        if refusing:
            chosen = max(refusing, key=lambda r: r[6] or datetime.max.replace(tzinfo=timezone.utc))
        else:
            chosen = max(results, key=lambda r: (r[2] + r[3] + r[4]) / r[0].limit if r[0].limit else 1.0)
        decisions = [self._decision(r, mode, user_id, guild_id) for r in results]
        main = decisions[results.index(chosen)]
        return replace(main, others=tuple(d for d in decisions if d is not main))

    def _decision(self, result, mode, user_id, guild_id) -> LimitDecision:
        rule, exceeded, used, held, need, unpriced, resets_at = result
        soft = rule.limit > 0 and (used + held + need) >= self.config.soft_limit_ratio * rule.limit
        allowed = not exceeded or mode != "enforce"
        decision = LimitDecision(
            allowed=allowed, scope=rule.scope, rule=rule.key, metric=rule.metric,
            used=_amount(rule.metric, used), reserved=_amount(rule.metric, held), limit=rule.limit_value,
            requested=_amount(rule.metric, need), resets_at=resets_at, window=rule.window,
            warning=soft or (exceeded and mode == "warn"), exceeded=exceeded, enforcement=mode,
            unpriced_calls=unpriced)
        return replace(decision, message=describe(decision, rule))


def _is_conflict(exc: Exception) -> bool:
    """Deadlock / serialization failure / lock wait: retry the transaction."""
    text = str(exc).lower()
    return any(marker in text for marker in ("deadlock", "could not serialize", "lock wait timeout",
                                             "database is locked"))


def _configured_model() -> str | None:
    try:
        from dspy.dsp.utils.settings import settings
        lm = settings.get("lm")
        return getattr(lm, "model", None)
    except Exception:
        return None


def _fmt(metric: str, value) -> str:
    return f"{value:,}" if metric == TOKENS else f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def describe(decision: LimitDecision, rule: Rule) -> str:
    """A sentence fit to show the user."""
    who = {SCOPE_USER: "You have", SCOPE_GUILD: "This server has"}.get(decision.scope, "This bot has")
    if rule.model is not None:
        who += f" (model {rule.model})"
    unit = "tokens" if decision.metric == TOKENS else ""
    span = {ROLLING: f"in the last {rule.days} days", DAY: "today (UTC)", MONTH: "this month (UTC)"}[rule.window]
    used = _fmt(decision.metric, decision.used + decision.reserved)
    limit = _fmt(decision.metric, decision.limit)
    head = f"{who} used {used} of {limit} {unit}".replace("  ", " ").rstrip() + f" {span}"
    if not decision.exceeded:
        return f"{head}; {_fmt(decision.metric, decision.remaining)} {unit}".rstrip() + " left."
    need = _fmt(decision.metric, decision.requested)
    if decision.resets_at is None:
        when = "This request is larger than the whole limit." if decision.requested > decision.limit else \
            "Usage in flight must finish first; try again shortly."
    else:
        when = f"Enough frees up at {decision.resets_at:%Y-%m-%d %H:%M} UTC."
    return f"{head}; this request needs up to {need} more. {when}"
