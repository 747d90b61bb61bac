"""What limits read and hold: window sums over the hourly counters, reservations, and per-scope lock rows.

Keys are plain values, never rules: a *hold key* ``(scope, scope_id, model)`` selects reservations, a *window key*
``(scope, scope_id, model, start_hour)`` sums counters from ``start_hour`` on (``model`` None: every model).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
import weakref
from datetime import timedelta

from ._db import classified, storage_errors, write_transaction
from ._sql import db_now_sql
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
    def read(self, held: list[HoldKey], windows: list[WindowKey], now) -> tuple[dict, dict]:
        """Active reservations per hold key -> (tokens, cost_pusd, calls) not yet committed, and counter sums per
        window key -> (tokens, cost_pusd, unpriced_calls, calls), in ONE statement: one round trip and one
        snapshot, so a run settling meanwhile is never counted zero times."""
        p = self.db.param
        parts, params = [], []
        expiry, expiry_args = self._expiry(now, p)
        left = "CASE WHEN {0} > committed_{0} THEN {0} - committed_{0} ELSE 0 END"
        for scope, scope_id, model in held:
            where, args = expiry, list(expiry_args)
            column = HOLD_COLUMNS.get(scope)
            if column is not None:
                where += f" AND {column} = {p}"
                args.append(scope_id)
            if model is not None:
                where += f" AND model = {p}"
                args.append(model)
            parts.append(f"SELECT COALESCE(SUM({left.format('tokens')}), 0), COALESCE(SUM({left.format('cost_pusd')}), "
                         f"0), 0, COALESCE(SUM({left.format('calls')}), 0) FROM token_reservations WHERE {where}")
            params += args
        for scope, scope_id, model, start in windows:
            table, extra, args = "token_usage_counters", "", [scope, scope_id, start]
            if model is not None:
                table, extra, args = "token_usage_model_counters", f" AND model = {p}", [scope, scope_id, model, start]
            parts.append(f"SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_pusd), 0), "
                         f"COALESCE(SUM(unpriced_calls), 0), COALESCE(SUM(calls), 0) FROM {table} "
                         f"WHERE scope = {p} AND scope_id = {p}{extra} AND hour >= {p}")
            params += args
        # One row per part; the parts are scalar aggregates, so UNION ALL keeps their order on every backend.
        sql = " UNION ALL ".join(f"SELECT * FROM ({part}) AS q{i}" for i, part in enumerate(parts))
        rows = [tuple(int(v) for v in row) for row in self._query(sql, params)]
        reserved = {key: (rows[i][0], rows[i][1], rows[i][3]) for i, key in enumerate(held)}
        used = {key: rows[len(held) + i] for i, key in enumerate(windows)}
        return reserved, used

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
