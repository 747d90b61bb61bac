"""The one statement a limit decision reads: reservations, window sums, the scopes' overrides and reset baselines,
and for rolling windows the hour whose leaving lets a request fit — parts of one ``UNION ALL``, each row tagged.

A window part counts from its start hour, or from the scope's usage reset when that is later (``reset=True``; the
reset hour is read in the same statement, so the start and the baselines always come from one snapshot). A window
part given a :class:`Freeing` also runs a running sum over its hourly counters: the earliest hour at which the usage
counted so far (oldest first) covers ``used + held + need - limit``, for the request's estimate and for 1 — when
that hour leaves the window the request fits (``None``: it never does by usage leaving alone).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

HoldKey = tuple  # (scope, scope_id, model | None)
WindowKey = tuple  # (scope, scope_id, model | None, start_hour)
ScopeKey = tuple  # (scope, scope_id)
COLUMNS = ("tokens", "cost_pusd", "unpriced_calls", "calls")
OVERRIDE, BASELINE = -1, -2  # tags of the rows that are not one part's scalar aggregate
# Who takes the AS MATERIALIZED hint (SQLite since 3.35; without it a named subquery may be computed per use).
_MATERIALIZED = {"sqlite": sqlite3.sqlite_version_info >= (3, 35), "postgresql": True, "mysql": False}


@dataclass(frozen=True)
class Freeing:
    """Ask when ``need`` (and 1) fits under ``limit`` again in a rolling window, counting what ``held`` holds."""

    column: str  # tokens, cost_pusd or calls
    limit: int
    need: int
    held: HoldKey


@dataclass(frozen=True)
class WindowRead:
    """A window's sums; with ``freeing``, its freeing hours instead (read the sums with another)."""

    key: WindowKey
    reset: bool = True  # count from the scope's usage reset when it is inside the window
    freeing: Freeing | None = None


@dataclass
class Reading:
    """What one statement read. ``used`` is keyed by the window key asked for (its nominal start hour)."""

    reserved: dict = field(default_factory=dict)  # hold key -> (tokens, cost_pusd, calls) not yet committed
    used: dict = field(default_factory=dict)  # (window key, reset) -> (tokens, cost_pusd, unpriced_calls, calls)
    overrides: dict = field(default_factory=dict)  # scope key -> override row (dict; "baselines" with a reset)
    frees: dict = field(default_factory=dict)  # (window key, Freeing, need) -> hour | None

    def _reset(self, key: WindowKey) -> dict | None:
        row = self.overrides.get(key[:2])
        return row if row is not None and row["reset_hour"] is not None and row["reset_hour"] >= key[3] else None

    def start(self, key: WindowKey) -> int:
        """The hour a window key is counted from: the scope's reset hour when it falls inside the window."""
        row = self._reset(key)
        return key[3] if row is None else row["reset_hour"]

    def baseline(self, key: WindowKey) -> tuple | None:
        """The reset hour's baseline to subtract from the window (None: no reset inside it, or nothing kept)."""
        row = self._reset(key)
        return None if row is None else row.get("baselines", {}).get(key[2] or "")


class Statement:
    """Builds the statement for one dialect (``p``: the driver's parameter mark) and decodes its rows."""

    def __init__(self, dialect: str, p: str, expiry: str, expiry_args: list, hold_columns: dict):
        self.dialect, self.p = dialect, p
        self.expiry, self.expiry_args, self.hold_columns = expiry, expiry_args, hold_columns
        self.int_null = f"CAST(NULL AS {'SIGNED' if dialect == 'mysql' else 'BIGINT'})"
        self.text_null = f"CAST(NULL AS {'CHAR' if dialect == 'mysql' else 'TEXT'})"

    def build(self, held: list[HoldKey], windows: list[WindowRead], scopes: list[ScopeKey]) -> tuple[str, list]:
        parts: list[tuple[str, list]] = []
        for key in held:
            values, source, args = self._held(key)
            parts.append((f"SELECT {len(parts)}, {values}, {self._nulls(2)} {source}", args))
        # Each window's sums once, as a named subquery: its part selects them, its freeing parts test them.
        sums: dict[tuple, tuple[str, list]] = {}
        for window in windows:
            if (window.key, window.reset) not in sums:
                source, args = self._counters(window.key, window.reset)
                columns = ", ".join(f"COALESCE(SUM({c}), 0) AS {c}" for c in COLUMNS)
                sums[(window.key, window.reset)] = (f"SELECT {columns} {source}", args)
        names = {k: f"w{i}" for i, k in enumerate(sums)}
        for window in windows:
            parts.append(self._window(len(parts), window, names[(window.key, window.reset)]))
        if scopes:
            parts += self._overrides(scopes)
        hint = "MATERIALIZED " if _MATERIALIZED[self.dialect] else ""  # computed once, however often it is read
        ctes = ", ".join(f"{names[k]} AS {hint}({sql})" for k, (sql, _) in sums.items())
        params = [a for _, args in sums.values() for a in args] + [a for _, args in parts for a in args]
        return (f"WITH {ctes} " if ctes else "") + " UNION ALL ".join(sql for sql, _ in parts), params

    def decode(self, rows, held: list[HoldKey], windows: list[WindowRead]) -> Reading:
        out, baselines = Reading(), []
        for row in rows:
            tag = int(row[0])
            if tag == OVERRIDE:
                out.overrides[(row[7], int(row[1]))] = {
                    "scope": row[7], "scope_id": int(row[1]), "tokens": _int(row[2]), "cost_pusd": _int(row[3]),
                    "requests": _int(row[4]), "reset_hour": _int(row[5]), "bypass": bool(row[6]), "window": row[8]}
            elif tag == BASELINE:
                baselines.append(row)
            elif tag < len(held):
                out.reserved[held[tag]] = (int(row[1]), int(row[2]), int(row[4]))
            else:
                window = windows[tag - len(held)]
                if window.freeing is None:
                    out.used[(window.key, window.reset)] = tuple(int(v) for v in row[1:5])
                else:
                    out.frees[(window.key, window.freeing, window.freeing.need)] = _int(row[5])
                    out.frees[(window.key, window.freeing, 1)] = _int(row[6])
        for scope, sid, model, tokens, cost, unpriced, calls in ((r[7], int(r[1]), r[8], *r[2:6]) for r in baselines):
            row = out.overrides.get((scope, sid))
            if row is not None and row["reset_hour"] is not None:
                row.setdefault("baselines", {})[model] = (int(tokens), int(cost), int(unpriced), int(calls))
        for row in out.overrides.values():
            if row["reset_hour"] is not None:
                row.setdefault("baselines", {})
        return out

    # -- parts -----------------------------------------------------------------------------------------------
    def _nulls(self, count: int, text: int = 2) -> str:
        return ", ".join([self.int_null] * count + [self.text_null] * text)

    def _held(self, key: HoldKey) -> tuple[str, str, list]:
        """``t, c, z, n``: tokens, cost_pusd, 0, calls still held (not yet committed) by live reservations of
        ``key``; the FROM clause; its parameters."""
        scope, scope_id, model = key
        p, where, args = self.p, self.expiry, list(self.expiry_args)
        column = self.hold_columns.get(scope)
        if column is not None:
            where += f" AND {column} = {p}"
            args.append(scope_id)
        if model is not None:
            where += f" AND model = {p}"
            args.append(model)
        left = "COALESCE(SUM(CASE WHEN {0} > committed_{0} THEN {0} - committed_{0} ELSE 0 END), 0)"
        return (f"{left.format('tokens')} AS t, {left.format('cost_pusd')} AS c, 0 AS z, {left.format('calls')} AS n",
                f"FROM token_reservations WHERE {where}", args)

    def _start(self, key: WindowKey, reset: bool) -> tuple[str, list]:
        scope, scope_id, _, start = key
        if not reset:
            return self.p, [start]
        p = self.p
        return (f"COALESCE((SELECT reset_hour FROM token_limit_overrides WHERE scope = {p} AND scope_id = {p} "
                f"AND reset_hour >= {p}), {p})"), [scope, scope_id, start, start]

    def _counters(self, key: WindowKey, reset: bool) -> tuple[str, list]:
        scope, scope_id, model, _ = key
        p = self.p
        table, extra, args = "token_usage_counters", "", [scope, scope_id]
        if model is not None:
            table, extra, args = "token_usage_model_counters", f" AND model = {p}", [scope, scope_id, model]
        start, start_args = self._start(key, reset)
        return f"FROM {table} WHERE scope = {p} AND scope_id = {p}{extra} AND hour >= {start}", args + start_args

    def _window(self, tag: int, window: WindowRead, sums: str) -> tuple[str, list]:
        f = window.freeing
        if f is None:
            return f"SELECT {tag}, {', '.join(COLUMNS)}, {self._nulls(2)} FROM {sums}", []
        if f.column not in ("tokens", "cost_pusd", "calls"):
            raise ValueError(f"unknown counter column {f.column!r}")
        p = self.p
        source, args = self._counters(window.key, window.reset)
        held_sums, held_source, held_args = self._held(f.held)
        held_column = {"tokens": "t", "cost_pusd": "c", "calls": "n"}[f.column]
        held = f"(SELECT {held_column} FROM (SELECT {held_sums} {held_source}) h)"
        base, base_args = self._baseline(window.key, f.column)
        total = f"(SELECT {f.column} FROM {sums})"
        # Run only when the larger need does not fit (a constant condition, tested before the scan): a request
        # that fits pays nothing more than these small lookups.
        gate = f"CASE WHEN {total} > {base} THEN {total} - {base} ELSE 0 END + {held} + {p} > {p}"
        gate_args = base_args + base_args + held_args + [max(f.need, 1), f.limit]
        running = (f"SELECT hour, SUM({f.column}) OVER (ORDER BY hour ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT "
                   f"ROW) AS run {source} AND {gate}")
        used = "CASE WHEN k.total > k.base THEN k.total - k.base ELSE 0 END"
        hour = "MIN(CASE WHEN w.run >= " + used + " + k.held + {0} - {1} THEN w.hour END)"
        sql = (f"SELECT {tag}, 0, 0, 0, 0, {hour.format(p, p)}, {hour.format(1, p)}, {self._nulls(0)} "
               f"FROM ({running}) w CROSS JOIN (SELECT {held} AS held, {base} AS base, {total} AS total) k")
        # Parameters in the order they appear.
        return sql, [f.need, f.limit, f.limit] + args + gate_args + held_args + base_args

    def _baseline(self, key: WindowKey, column: str) -> tuple[str, list]:
        """The reset baseline of ``column`` to subtract when the scope's reset hour is inside the window, else 0."""
        scope, scope_id, model, start = key
        p = self.p
        return (f"COALESCE((SELECT b.{column} FROM token_limit_reset_baselines b JOIN token_limit_overrides o ON "
                f"o.scope = b.scope AND o.scope_id = b.scope_id WHERE o.scope = {p} AND o.scope_id = {p} AND "
                f"o.reset_hour >= {p} AND b.model = {p}), 0)"), [scope, scope_id, start, model or ""]

    def _overrides(self, scopes: list[ScopeKey]) -> list[tuple[str, list]]:
        p = self.p
        where = " OR ".join([f"(scope = {p} AND scope_id = {p})"] * len(scopes))
        args = [v for key in scopes for v in key]
        window = "`window`" if self.dialect == "mysql" else '"window"'  # a reserved word
        overrides = (f"SELECT {OVERRIDE}, scope_id, tokens, cost_pusd, requests, reset_hour, CASE WHEN bypass THEN 1 "
                     f"ELSE 0 END, scope, {window} FROM token_limit_overrides WHERE {where}")
        baselines = (f"SELECT {BASELINE}, scope_id, tokens, cost_pusd, unpriced_calls, calls, 0, scope, model "
                     f"FROM token_limit_reset_baselines WHERE {where}")
        return [(overrides, args), (baselines, list(args))]


def _int(value) -> int | None:
    return None if value is None else int(value)
