"""Every table, as Peewee models. ``bind_models(db)`` gives classes bound to one database, so several trackers
(and tests) can use different databases in one process.

=============================  =========================================  ==========================================
table                          key                                        holds
=============================  =========================================  ==========================================
``token_usage``                ``id`` (``call_uuid`` unique)              one row per LM call (:class:`UsageRow`)
``token_usage_counters``       (scope, scope_id, hour)                    hourly calls/tokens/cost for limits
``token_usage_model_counters`` (scope, scope_id, model, hour)             the same per configured model
``token_usage_daily``          (day, user_id, guild_id, model, feature)   the daily cube of every measure
``token_usage_rollups``        (grain, scope, bucket, scope_key)          per-scope totals per UTC day and month
``token_reservations``         ``id``                                     tokens/dollars held by guarded runs
``token_limit_locks``          (scope, scope_id)                          rows ``SELECT ... FOR UPDATE`` locks
``token_reservation_calls``    ``call_uuid``                              the reservation each guarded call is in
``token_limit_overrides``      (scope, scope_id)                          run-time limits, bypasses, usage resets
``token_limit_reset_baselines`` (scope, scope_id, model)                  the reset hour's usage before a reset
``token_limit_changes``        ``id``                                     the audit trail of run-time changes
``token_alerts_sent``          (rule, scope_id, period, threshold)        each budget alert, fired once
``token_limit_refusals``       (scope, metric, model, feature)            guarded runs refused, all time
``dspy_tokens_migrations``     ``version``                                applied schema versions
=============================  =========================================  ==========================================

Counter scopes are ``user``, ``guild`` and ``global`` (scope_id 0). Rollup scopes add ``model`` and ``feature``;
their key is the id as decimal text or the name, ``''`` for calls without one (-1 / ``''`` in the daily cube).
Buckets are integers (see :mod:`~dspy_tokens.store.units`). Text compares exactly on every backend (MySQL/MariaDB
tables are ``utf8mb4_bin``, see :mod:`~dspy_tokens.store.collation`). The daily cube and the rollups are never pruned by
retention: they are what survives of old usage.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import peewee as pw

from .collation import table_options
from .units import stored_time


class UTCDateTimeField(pw.DateTimeField):
    """Stored as naive UTC (fixed-width text with microseconds on SQLite, so text order is time order);
    always read back as a UTC-aware ``datetime``."""

    field_type = "DATETIME"

    def db_value(self, value):
        if value is None:
            return None
        return stored_time(value, isinstance(self.model._meta.database, pw.SqliteDatabase))

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value

    def get_modifiers(self):
        # MySQL's DATETIME drops microseconds unless asked; the others ignore the precision argument.
        return [6]


class TokenUsage(pw.Model):
    id = pw.BigAutoField()
    call_uuid = pw.CharField(max_length=36, unique=True)
    session_id = pw.CharField(max_length=64)
    call_index = pw.IntegerField()
    user_id = pw.BigIntegerField(null=True)
    guild_id = pw.BigIntegerField(null=True)
    channel_id = pw.BigIntegerField(null=True)
    feature = pw.CharField(max_length=100, null=True)
    module = pw.CharField(max_length=255, null=True)
    model = pw.CharField(max_length=200)
    response_model = pw.CharField(max_length=200, null=True)
    prompt_tokens = pw.BigIntegerField(null=True)
    completion_tokens = pw.BigIntegerField(null=True)
    total_tokens = pw.BigIntegerField(null=True)
    cached_tokens = pw.BigIntegerField(null=True)
    reasoning_tokens = pw.BigIntegerField(null=True)
    cost_usd = pw.DecimalField(max_digits=24, decimal_places=12, null=True, auto_round=True)
    cost_source = pw.CharField(max_length=20)
    cache_hit = pw.BooleanField(default=False)
    usage_reported = pw.BooleanField(default=True)
    error = pw.TextField(null=True)
    latency_ms = pw.IntegerField(null=True)
    created_at = UTCDateTimeField()
    request_type = pw.CharField(max_length=20, default="chat")
    metadata = pw.TextField(null=True)  # JSON text (compact, keys sorted); read with each dialect's JSON functions
    usage_estimated = pw.BooleanField(default=False)
    cache_write_tokens = pw.BigIntegerField(null=True)  # inside prompt_tokens
    audio_tokens = pw.BigIntegerField(null=True)  # audio in and out, inside prompt and completion tokens
    service_tier = pw.CharField(max_length=32, null=True)
    price_version = pw.CharField(max_length=64, null=True)

    class Meta:
        table_name = "token_usage"
        indexes = (
            (("user_id", "created_at"), False),
            (("guild_id", "created_at"), False),
            (("session_id", "call_index"), False),
            (("created_at",), False),
        )


#: The longest text each ``token_usage`` string column holds (characters); ``error`` is TEXT, bounded by us.
TEXT_LIMITS: dict[str, int] = {
    **{f.name: f.max_length for f in TokenUsage._meta.sorted_fields if isinstance(f, pw.CharField)},
    "error": 2000,
}


class _Counter(pw.Model):
    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()  # 0 for the global scope
    hour = pw.BigIntegerField()  # hours since the Unix epoch, UTC
    calls = pw.BigIntegerField(default=0)
    tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)


class UsageCounter(_Counter):
    """Per-scope hourly totals, written in the same transaction as the rows they count: a limit reads a rolling
    window as at most ``24 × days + 1`` rows, whatever the number of calls."""

    class Meta:
        table_name = "token_usage_counters"
        primary_key = pw.CompositeKey("scope", "scope_id", "hour")


class ModelUsageCounter(_Counter):
    """Like :class:`UsageCounter`, per configured model too: serves per-model limits."""

    model = pw.CharField(max_length=200)

    class Meta:
        table_name = "token_usage_model_counters"
        primary_key = pw.CompositeKey("scope", "scope_id", "model", "hour")


class _Measures(pw.Model):
    calls = pw.BigIntegerField(default=0)
    prompt_tokens = pw.BigIntegerField(default=0)
    completion_tokens = pw.BigIntegerField(default=0)
    total_tokens = pw.BigIntegerField(default=0)
    cached_tokens = pw.BigIntegerField(default=0)
    reasoning_tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)
    cache_hits = pw.BigIntegerField(default=0)
    errors = pw.BigIntegerField(default=0)
    estimated_calls = pw.BigIntegerField(default=0)


class DailyUsage(_Measures):
    day = pw.IntegerField()
    user_id = pw.BigIntegerField()  # NO_ID when the call had none
    guild_id = pw.BigIntegerField()
    model = pw.CharField(max_length=200)
    feature = pw.CharField(max_length=100)  # '' when the call had none

    class Meta:
        table_name = "token_usage_daily"
        primary_key = pw.CompositeKey("day", "user_id", "guild_id", "model", "feature")
        indexes = ((("user_id", "day"), False), (("guild_id", "day"), False))


class UsageRollup(_Measures):
    grain = pw.CharField(max_length=1)
    scope = pw.CharField(max_length=8)
    scope_key = pw.CharField(max_length=200)
    bucket = pw.IntegerField()

    class Meta:
        table_name = "token_usage_rollups"
        # Clustered by bucket (SQLite WITHOUT ROWID, InnoDB): top-N scans one bucket's keys in order;
        # the index serves one user/guild/model/feature over a range of buckets.
        primary_key = pw.CompositeKey("grain", "scope", "bucket", "scope_key")
        indexes = ((("grain", "scope", "scope_key", "bucket"), False),)


class Reservation(pw.Model):
    """Tokens (and dollars) held by a guarded run until its real usage is committed, or until it expires."""

    id = pw.CharField(max_length=32, primary_key=True)
    user_id = pw.BigIntegerField(null=True)
    guild_id = pw.BigIntegerField(null=True)
    model = pw.CharField(max_length=200, null=True)
    tokens = pw.BigIntegerField()
    cost_pusd = pw.BigIntegerField()
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()
    channel_id = pw.BigIntegerField(null=True)
    feature_id = pw.BigIntegerField(null=True)  # units.feature_scope_id of the run's feature
    calls = pw.BigIntegerField(default=1)  # LM calls held (request limits)
    committed_tokens = pw.BigIntegerField(default=0)  # of the run's calls already committed (they count as used)
    committed_cost_pusd = pw.BigIntegerField(default=0)
    committed_calls = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "token_reservations"
        indexes = ((("user_id", "expires_at"), False), (("guild_id", "expires_at"), False),
                   (("expires_at",), False))


class LimitLock(pw.Model):
    """One row per limited scope; ``SELECT ... FOR UPDATE`` on it serialises reservations across processes."""

    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()

    class Meta:
        table_name = "token_limit_locks"
        primary_key = pw.CompositeKey("scope", "scope_id")


class ReservationCall(pw.Model):
    """Which reservation an LM call of a guarded run belongs to: committing the call moves its usage from the
    reservation's hold to ``used`` (``committed_*``), so a run is never counted twice."""

    call_uuid = pw.CharField(max_length=36, primary_key=True)
    reservation_id = pw.CharField(max_length=32, index=True)

    class Meta:
        table_name = "token_reservation_calls"


class LimitOverride(pw.Model):
    """A limit set at run time for one scope (``tracker.set_limit``), a bypass, or a usage reset."""

    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()
    tokens = pw.BigIntegerField(null=True)
    cost_pusd = pw.BigIntegerField(null=True)
    requests = pw.BigIntegerField(null=True)
    window = pw.CharField(max_length=8, null=True)
    bypass = pw.BooleanField(default=False)
    reset_hour = pw.BigIntegerField(null=True)  # usage before the reset stops counting (see ResetBaseline)
    updated_at = UTCDateTimeField()
    updated_by = pw.CharField(max_length=100, null=True)

    class Meta:
        table_name = "token_limit_overrides"
        primary_key = pw.CompositeKey("scope", "scope_id")


class ResetBaseline(pw.Model):
    """What the reset hour's counters held at the reset: subtracted while that hour is in a window."""

    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()
    model = pw.CharField(max_length=200)  # '' for every model
    calls = pw.BigIntegerField(default=0)
    tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "token_limit_reset_baselines"
        primary_key = pw.CompositeKey("scope", "scope_id", "model")


class LimitChange(pw.Model):
    """The audit trail of run-time limit changes."""

    id = pw.BigAutoField()
    changed_at = UTCDateTimeField()
    changed_by = pw.CharField(max_length=100, null=True)
    action = pw.CharField(max_length=16)
    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()
    detail = pw.TextField()

    class Meta:
        table_name = "token_limit_changes"
        indexes = ((("scope", "scope_id", "id"), False),)


class AlertSent(pw.Model):
    """One row per alert fired: the key makes each (rule, scope id, window period, threshold) fire once."""

    rule = pw.CharField(max_length=190)
    scope_id = pw.BigIntegerField()
    period = pw.BigIntegerField()  # the window's start hour
    threshold = pw.CharField(max_length=12)
    sent_at = UTCDateTimeField()

    class Meta:
        table_name = "token_alerts_sent"
        primary_key = pw.CompositeKey("rule", "scope_id", "period", "threshold")


class LimitRefusal(pw.Model):
    """How many guarded runs a limit refused, by the refusing rule's scope and metric and the run's model and
    feature ('' for none): bounded labels for ``/metrics``, the same in every process."""

    scope = pw.CharField(max_length=8)
    metric = pw.CharField(max_length=8)
    model = pw.CharField(max_length=200)
    feature = pw.CharField(max_length=100)
    refusals = pw.BigIntegerField(default=0)
    last_refused_at = UTCDateTimeField()

    class Meta:
        table_name = "token_limit_refusals"
        primary_key = pw.CompositeKey("scope", "metric", "model", "feature")


class SchemaMigration(pw.Model):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=100)
    applied_at = UTCDateTimeField()

    class Meta:
        table_name = "dspy_tokens_migrations"


BASE_MODELS = (TokenUsage, UsageCounter, ModelUsageCounter, DailyUsage, UsageRollup, Reservation, LimitLock,
               ReservationCall, LimitOverride, ResetBaseline, LimitChange, AlertSent, LimitRefusal, SchemaMigration)
_CLUSTERED = (DailyUsage, UsageRollup)  # stored in primary-key order on SQLite too (WITHOUT ROWID), as InnoDB does


def bind_models(db: pw.Database) -> SimpleNamespace:
    """Subclasses of every model bound to ``db``, e.g. ``bind_models(db).TokenUsage.select()``."""
    bound = {}
    for base in BASE_MODELS:
        options = {"database": db, "table_name": base._meta.table_name, **table_options(db)}
        if base in _CLUSTERED:
            options["without_rowid"] = isinstance(db, pw.SqliteDatabase)
        meta = type("Meta", (), options)
        bound[base.__name__] = type(base.__name__, (base,), {"Meta": meta, "__module__": __name__})
    return SimpleNamespace(**bound)
