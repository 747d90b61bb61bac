"""What limits read and hold: window sums over the hourly counters, reservations, and per-scope lock rows.

Keys are plain values, never rules: a *hold key* ``(scope, scope_id, model)`` selects reservations, a *window key*
``(scope, scope_id, model, start_hour)`` sums counters from ``start_hour`` on (``model`` None: every model). What
one decision reads is one statement (:meth:`LimitWindows.read`, built in :mod:`.reading`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
import weakref
from datetime import timedelta
from typing import Sequence

from ._db import classified, storage_errors, write_transaction
from ._sql import db_now_sql
from .reading import Reading, ScopeKey, Statement, WindowRead
from .units import SCOPE_CHANNEL, SCOPE_FEATURE, SCOPE_GUILD, SCOPE_USER

HoldKey = tuple  # (scope, scope_id, model | None)
HOLD_COLUMNS = {SCOPE_USER: "user_id", SCOPE_GUILD: "guild_id", SCOPE_CHANNEL: "channel_id",
                SCOPE_FEATURE: "feature_id"}
WindowKey = tuple  # (scope, scope_id, model | None, start_hour)


class LimitWindows:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self._prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> statement names

    @contextlib.contextmanager
    def transaction(self):
        """The deciding transaction: takes the write lock up front on SQLite."""
        with storage_errors(), write_transaction(self.db):
            yield

    @property
    def needs_lock_rows(self) -> bool:
        """SQLite's ``BEGIN IMMEDIATE`` already serialises writers; the others lock a row per scope."""
        return self.store.dialect != "sqlite"

    @classified
    def create_locks(self, keys: list[tuple[str, int]]) -> None:
        """Lock rows are created outside the deciding transaction (autocommit), so it only ever locks rows."""
        p = self.db.param
        mysql = self.store.dialect == "mysql"
        sql = (f"{'INSERT IGNORE INTO' if mysql else 'INSERT INTO'} token_limit_locks (scope, scope_id) "
               f"VALUES ({p}, {p}){'' if mysql else ' ON CONFLICT DO NOTHING'}")
        for key in keys:
            self.db.execute_sql(sql, key)

    @classified
    def lock(self, keys: list[tuple[str, int]]) -> None:
        """``SELECT ... FOR UPDATE`` the lock rows, always in the same (sorted) order: no lock-order deadlocks."""
        p = self.db.param
        for key in sorted(keys):
            self.db.execute_sql(f"SELECT scope FROM token_limit_locks WHERE scope = {p} AND scope_id = {p} "
                                "FOR UPDATE", key)

    def _expiry(self, now, p: str) -> tuple[str, list]:
        """``expires_at > <now>``: the caller's ``now`` if given (tests, replays), else the database's clock."""
        if now is None:
            return f"expires_at > {db_now_sql(self.store.dialect)}", []
        return f"expires_at > {p}", [self.store.stored_time(now)]

    @classified
    def hold(self, ids: dict, model, tokens: int, cost_pusd: int, now, ttl_seconds: int) -> str:
        """Insert a reservation (and drop expired ones); returns its id. ``ids``: user_id, guild_id, channel_id,
        feature_id. Times are the database's unless ``now`` is given."""
        p, kind = self.db.param, self.store.dialect
        expired, args = self._expiry(now, p)
        self.db.execute_sql("DELETE FROM token_reservation_calls WHERE reservation_id IN (SELECT id FROM "
                            f"token_reservations WHERE NOT ({expired}))", args)
        self.db.execute_sql(f"DELETE FROM token_reservations WHERE NOT ({expired})", args)
        rid = uuid.uuid4().hex
        if now is None:
            created, expires, times = db_now_sql(kind), db_now_sql(kind, p), [ttl_seconds]
        else:
            created, expires = p, p
            times = [self.store.stored_time(now), self.store.stored_time(now + timedelta(seconds=ttl_seconds))]
        self.db.execute_sql(
            "INSERT INTO token_reservations (id, user_id, guild_id, channel_id, feature_id, model, tokens, cost_pusd, "
            f"calls, committed_tokens, committed_cost_pusd, committed_calls, created_at, expires_at) VALUES "
            f"({', '.join([p] * 9)}, 0, 0, 0, {created}, {expires})",
            [rid, ids.get("user_id"), ids.get("guild_id"), ids.get("channel_id"), ids.get("feature_id"), model,
             tokens, cost_pusd, 1, *times])
        return rid

    @classified
    def held(self, reservation_id: str) -> tuple[int, int, int] | None:
        """A live reservation's (tokens, cost_pusd, calls) as held now, or None when it is gone."""
        p = self.db.param
        row = self.db.execute_sql("SELECT tokens, cost_pusd, calls FROM token_reservations WHERE id = "
                                  f"{p}", [reservation_id]).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    @classified
    def top_up(self, reservation_id: str, call_uuid: str, tokens: int, cost_pusd: int, calls: int,
               ttl_seconds: int) -> bool:
        """Raise a reservation to hold at least these totals, keep it alive another ``ttl_seconds`` (database
        clock), and note that ``call_uuid`` belongs to it. False when the reservation is gone."""
        p = self.db.param
        done = self.db.execute_sql(
            f"UPDATE token_reservations SET tokens = CASE WHEN tokens < {p} THEN {p} ELSE tokens END, "
            f"cost_pusd = CASE WHEN cost_pusd < {p} THEN {p} ELSE cost_pusd END, "
            f"calls = CASE WHEN calls < {p} THEN {p} ELSE calls END, "
            f"expires_at = {db_now_sql(self.store.dialect, p)} WHERE id = {p}",
            [tokens, tokens, cost_pusd, cost_pusd, calls, calls, ttl_seconds, reservation_id]).rowcount
        if done:
            self.db.execute_sql(f"INSERT INTO token_reservation_calls (call_uuid, reservation_id) VALUES ({p}, {p})",
                                [call_uuid, reservation_id])
        return bool(done)

    @classified
    def read(self, held: list[HoldKey], windows: list[WindowRead], now, scopes: Sequence[ScopeKey] = ()) -> Reading:
        """Everything a decision reads, in ONE statement (one round trip, one snapshot, so a run settling meanwhile
        is never counted zero times): the active reservations per hold key (not yet committed), the counter sums
        per window, the override rows and reset baselines of ``scopes``, and the freeing hours asked for (see
        :mod:`.reading`)."""
        expiry, expiry_args = self._expiry(now, self.db.param)
        statement = Statement(self.store.dialect, self.db.param, expiry, expiry_args, HOLD_COLUMNS)
        sql, params = statement.build(held, list(windows), list(scopes))
        return statement.decode(self._query(sql, params), held, list(windows))

    @classified
    def usage_by_hour(self, window: WindowKey, column: str) -> list[tuple[int, int]]:
        """(hour, amount) of the window's hours with usage, oldest first; ``column`` is tokens or cost_pusd."""
        if column not in ("tokens", "cost_pusd", "calls"):
            raise ValueError(f"unknown counter column {column!r}")
        scope, scope_id, model, start = window
        p = self.db.param
        table, extra, params = "token_usage_counters", "", [scope, scope_id, start]
        if model is not None:
            table, extra, params = "token_usage_model_counters", f" AND model = {p}", [scope, scope_id, model, start]
        cursor = self.db.execute_sql(
            f"SELECT hour, {column} FROM {table} WHERE scope = {p} AND scope_id = {p}{extra} AND hour >= {p} "
            f"AND {column} > 0 ORDER BY hour", params)
        return [(int(hour), int(amount)) for hour, amount in cursor.fetchall()]

    def _query(self, sql: str, params: list) -> list[tuple]:
        """Run the window query; on PostgreSQL as a prepared statement (planning it costs more than running it)."""
        if self.store.dialect != "postgresql":
            return self.db.execute_sql(sql, params).fetchall()
        connection = self.db.connection()
        prepared = self._prepared.setdefault(connection, set())
        name = "dspy_tokens_window_" + hashlib.sha1(sql.encode()).hexdigest()[:16]
        cursor = self.db.cursor()
        if name not in prepared:
            numbers = iter(range(1, len(params) + 1))
            numbered = re.sub(r"%s", lambda _: f"${next(numbers)}", sql)
            cursor.execute(f"PREPARE {name} AS {numbered}")
            prepared.add(name)
        cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
        return cursor.fetchall()
