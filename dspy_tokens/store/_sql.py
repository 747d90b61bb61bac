"""SQL text that differs by dialect: batch inserts and upserts, and the expressions reports aggregate with."""

from __future__ import annotations

import io

from .._metadata import check_key
from .units import MEASURES, TOKEN_MEASURES


def insert_sql(dialect: str, param: str, table: str, columns: tuple[str, ...]) -> str:
    """A batch INSERT for :func:`executemany` (PostgreSQL: one ``%s`` that ``execute_values`` expands)."""
    values = "%s" if dialect == "postgresql" else f"({', '.join([param] * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"


def upsert_sql(dialect: str, param: str, table: str, key: tuple[str, ...], measures: tuple[str, ...]) -> str:
    """A batch INSERT that adds ``measures`` to an existing row with the same ``key``."""
    insert = insert_sql(dialect, param, table, (*key, *measures))
    if dialect == "mysql":
        return insert + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {c} + VALUES({c})" for c in measures)
    return (insert + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in measures))


def executemany(dialect: str, cursor, sql: str, params: list[tuple]) -> None:
    """Run a batch statement from :func:`insert_sql`/:func:`upsert_sql` in as few round trips as the driver
    allows: multi-row statements on PostgreSQL (``execute_values``) and MySQL (pymysql rewrites
    ``executemany``); SQLite has no round trips. Keys in one upsert batch must be unique."""
    if not params:
        return
    if dialect == "postgresql":
        from psycopg2.extras import execute_values
        execute_values(cursor, sql, params, page_size=1000)
    else:
        cursor.executemany(sql, params)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(rows: list[tuple]) -> str:
    """Rows in PostgreSQL's ``COPY ... FROM STDIN`` text format: NULL as ``\\N``, booleans ``t``/``f``, and
    backslash, newline, carriage return and tab escaped in text (NUL never reaches here: rows are cleaned of it)."""
    lines = []
    for row in rows:
        fields = []
        for value in row:
            if value is None:
                fields.append("\\N")
            elif value is True or value is False:
                fields.append("t" if value else "f")
            elif isinstance(value, str):
                fields.append(value.translate(_COPY_ESCAPES))
            else:
                fields.append(str(value))
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines)


def copy_rows(cursor, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert ``rows`` on PostgreSQL with ``COPY`` (one statement, no per-row parameter formatting)."""
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.StringIO(copy_text(rows)))


def pico_sql(dialect: str, column: str = "cost_usd") -> str:
    """``column`` (USD) as exact integer picodollars. On SQLite the stored value is a float: it is the double
    nearest to a 12-place decimal, so rounding ``x * 1e12`` recovers the exact integer (for calls under ~$4,000)
    and the integer SUM is then exact, unlike a float SUM quantized afterwards."""
    integer = {"sqlite": "INTEGER", "postgresql": "BIGINT", "mysql": "SIGNED"}[dialect]
    return f"CAST(ROUND({column} * 1000000000000) AS {integer})"


def raw_measures_sql(dialect: str, estimated: bool = True, named: bool = False) -> str:
    """The :data:`~dspy_tokens.store.units.MEASURES` of a group of ``token_usage`` rows, as SELECT expressions
    (the same rules as :func:`~dspy_tokens.store.aggregates.measures_of`; ``named``: each ``AS`` its measure).
    ``estimated`` False: the table predates ``usage_estimated`` (a migration before 8 rebuilding from it), none of
    its calls were estimated."""
    expressions = [
        "COUNT(*)",
        *(f"COALESCE(SUM({c}), 0)" for c in TOKEN_MEASURES),
        f"COALESCE(SUM({pico_sql(dialect)}), 0)",
        "COALESCE(SUM(CASE WHEN cost_usd IS NULL AND error IS NULL THEN 1 ELSE 0 END), 0)",
        "COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0)",
        "COALESCE(SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END), 0)",
        "COALESCE(SUM(CASE WHEN usage_estimated THEN 1 ELSE 0 END), 0)" if estimated else "0",
    ]
    return ", ".join(f"{e} AS {m}" if named else e for e, m in zip(expressions, MEASURES))


def summed_measures_sql() -> str:
    return ", ".join(f"COALESCE(SUM({c}), 0)" for c in MEASURES)


def day_sql(dialect: str, column: str = "created_at") -> str:
    """Epoch days of a stored (naive UTC) timestamp."""
    if dialect == "sqlite":  # fixed-width text 'YYYY-MM-DD HH:MM:SS.ffffff'
        return f"CAST(julianday(substr({column}, 1, 10)) - 2440587.5 AS INTEGER)"
    if dialect == "postgresql":
        return f"(CAST({column} AS DATE) - DATE '1970-01-01')"
    return f"DATEDIFF({column}, '1970-01-01')"


def hour_sql(dialect: str, column: str = "created_at") -> str:
    """Epoch hours of a stored (naive UTC) timestamp."""
    if dialect == "sqlite":
        return f"({day_sql(dialect, column)} * 24 + CAST(substr({column}, 12, 2) AS INTEGER))"
    if dialect == "postgresql":
        return f"({day_sql(dialect, column)} * 24 + CAST(EXTRACT(HOUR FROM {column}) AS INTEGER))"
    return f"({day_sql(dialect, column)} * 24 + HOUR({column}))"


def month_of_day_sql(dialect: str, column: str) -> str:
    """The month bucket of an epoch-day integer column."""
    if dialect == "sqlite":
        text = f"date({column} * 86400, 'unixepoch')"
        return f"(CAST(substr({text}, 1, 4) AS INTEGER) * 12 + CAST(substr({text}, 6, 2) AS INTEGER) - 1)"
    if dialect == "postgresql":
        moment = f"(DATE '1970-01-01' + {column})"
        return (f"(CAST(EXTRACT(YEAR FROM {moment}) AS INTEGER) * 12 "
                f"+ CAST(EXTRACT(MONTH FROM {moment}) AS INTEGER) - 1)")
    moment = f"DATE_ADD('1970-01-01', INTERVAL {column} DAY)"
    return f"(YEAR({moment}) * 12 + MONTH({moment}) - 1)"


def text_sql(dialect: str, column: str) -> str:
    return f"CAST({column} AS {'CHAR' if dialect == 'mysql' else 'TEXT'})"


def db_now_sql(dialect: str, seconds_param: str | None = None) -> str:
    """The database's current UTC time, in the stored form of times (plus ``seconds_param`` seconds): reservations
    expire on one clock, whatever the clocks of the hosts that hold them."""
    if dialect == "sqlite":
        later = f", '+' || {seconds_param} || ' seconds'" if seconds_param else ""
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now'{later})"
    if dialect == "postgresql":
        now = "(clock_timestamp() AT TIME ZONE 'UTC')"
        return f"({now} + {seconds_param} * INTERVAL '1 second')" if seconds_param else now
    return f"(UTC_TIMESTAMP(6) + INTERVAL {seconds_param} SECOND)" if seconds_param else "UTC_TIMESTAMP(6)"


def metadata_sql(dialect: str, key: str) -> str:
    """The value of one ``metadata`` key as text (NULL when absent), with each database's JSON functions. The key is
    checked against the metadata key rule (letters, digits, ``_``, ``-``), so it is safe inside the SQL text."""
    check_key(key)
    if dialect == "postgresql":
        return f"(CAST(metadata AS json) ->> '{key}')"
    if dialect == "mysql":
        return f"JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.\"{key}\"'))"
    return f"CAST(json_extract(metadata, '$.\"{key}\"') AS TEXT)"
