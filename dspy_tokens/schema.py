"""The tables, as Peewee models. ``bind_models(db)`` gives classes bound to one database, so several trackers
(and tests) can use different databases in one process."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import peewee as pw

SCOPE_USER, SCOPE_GUILD, SCOPE_GLOBAL = "user", "guild", "global"
PICO = 10**12  # counters keep money as integer picodollars: exact sums on every backend, SQLite included


class UTCDateTimeField(pw.DateTimeField):
    """Stored as naive UTC (fixed-width text with microseconds on SQLite, so text order is time order);
    always read back as a UTC-aware ``datetime``."""

    field_type = "DATETIME"

    def db_value(self, value):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{self.name}: naive datetime {value!r}; pass a UTC-aware datetime")
        naive = value.astimezone(timezone.utc).replace(tzinfo=None)
        if isinstance(self.model._meta.database, pw.SqliteDatabase):
            return naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        return naive

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

    class Meta:
        table_name = "token_usage"
        indexes = (
            (("user_id", "created_at"), False),
            (("guild_id", "created_at"), False),
            (("session_id", "call_index"), False),
            (("created_at",), False),
        )


class UsageCounter(pw.Model):
    """Per-scope hourly rollups, maintained in the same transaction as the rows they count.

    Limits read a rolling window as at most ``24 × days`` point lookups, whatever the number of rows.
    """

    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()  # 0 for the global scope
    hour = pw.BigIntegerField()  # hours since the Unix epoch, UTC
    calls = pw.BigIntegerField(default=0)
    tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "token_usage_counters"
        primary_key = pw.CompositeKey("scope", "scope_id", "hour")


class ModelUsageCounter(pw.Model):
    """Like :class:`UsageCounter`, per model too: serves per-model limit overrides from ``models.json``."""

    scope = pw.CharField(max_length=8)
    scope_id = pw.BigIntegerField()
    model = pw.CharField(max_length=200)
    hour = pw.BigIntegerField()
    calls = pw.BigIntegerField(default=0)
    tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "token_usage_model_counters"
        primary_key = pw.CompositeKey("scope", "scope_id", "model", "hour")


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


class SchemaMigration(pw.Model):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=100)
    applied_at = UTCDateTimeField()

    class Meta:
        table_name = "dspy_tokens_migrations"


BASE_MODELS = (TokenUsage, UsageCounter, ModelUsageCounter, Reservation, LimitLock, SchemaMigration)


def bind_models(db: pw.Database) -> SimpleNamespace:
    """Subclasses of every model bound to ``db``, e.g. ``bind_models(db).TokenUsage.select()``."""
    bound = {}
    for base in BASE_MODELS:
        meta = type("Meta", (), {"database": db, "table_name": base._meta.table_name})
        bound[base.__name__] = type(base.__name__, (base,), {"Meta": meta, "__module__": __name__})
    return SimpleNamespace(**bound)
