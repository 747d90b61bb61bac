"""Text keys compare exactly: "Chat", "chat" and "chät" are three models, features or sessions, never one.

SQLite (BINARY) and PostgreSQL (deterministic collations) already compare text byte for byte. MySQL and MariaDB
compare with the database's default collation, usually case- and accent-insensitive (``utf8mb4_general_ci``,
``utf8mb4_0900_ai_ci``, ``uca1400_ai_ci``): a ``GROUP BY model`` or an upsert keyed by model then merges rows
that differ only in case or accents. Every table of ours is therefore created, and migrated to, ``utf8mb4_bin``.
"""

from __future__ import annotations

import peewee as pw

CHARSET = "utf8mb4"
BINARY = "utf8mb4_bin"


def table_options(db: pw.Database) -> dict:
    """Meta options that make a table created on ``db`` compare its text exactly (none needed off MySQL)."""
    if isinstance(db, pw.MySQLDatabase):
        return {"table_settings": [f"DEFAULT CHARSET={CHARSET}", f"COLLATE={BINARY}"]}
    return {}


def inexact_tables(db: pw.Database, tables: list[str]) -> list[str]:
    """Those of ``tables`` that have a text column (or a table default) compared other than byte for byte."""
    if not isinstance(db, pw.MySQLDatabase) or not tables:
        return []
    marks = ", ".join([db.param] * len(tables))
    found = db.execute_sql(
        "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = DATABASE() "
        f"AND table_name IN ({marks}) AND collation_name IS NOT NULL AND collation_name <> {db.param} "
        "UNION SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
        f"AND table_name IN ({marks}) AND table_collation <> {db.param}",
        [*tables, BINARY, *tables, BINARY]).fetchall()
    named = {row[0].lower() for row in found}
    return [t for t in tables if t.lower() in named]


def make_exact(db: pw.Database, tables: list[str]) -> list[str]:
    """Convert every text column (and the default for columns added later) of ``tables`` to ``utf8mb4_bin``;
    returns the tables converted. Converting never collides: keys unique case-insensitively are unique
    byte for byte. Aggregates keyed by text must then be rebuilt, since their merged rows stay merged."""
    converted = inexact_tables(db, tables)
    for table in converted:
        db.execute_sql(f"ALTER TABLE {table} CONVERT TO CHARACTER SET {CHARSET} COLLATE {BINARY}")
    return converted
