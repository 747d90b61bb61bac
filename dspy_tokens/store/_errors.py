"""What a failed database operation says about itself: the database's *state* (keep the data, retry later),
*contention* between writers (retry now), or the *data* of a row (reject that row).

Read from the driver's own signal — PostgreSQL's SQLSTATE, MySQL's error number, SQLite's result code or
message — and not from the exception's class: batches run on the driver's raw cursor (so the error is a
``psycopg2``/``pymysql``/``sqlite3`` one, not Peewee's), and DB-API classes do not say whose fault it was
(PostgreSQL's read-only transaction is an ``InternalError``, a revoked grant a ``ProgrammingError``). Anything
not positively a data error is the database's state: rows are kept, never rejected because of it.
"""

from __future__ import annotations

from typing import Iterator

UNAVAILABLE, CONFLICT, REJECTED = "unavailable", "conflict", "rejected"

# PostgreSQL SQLSTATEs (Appendix A of its manual).
PG_CONFLICT = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout, NOWAIT)
    "23505",  # unique_violation: a concurrent writer stored the same call first; the retry skips it
}
PG_REJECTED_CLASSES = {
    "22",  # data exception: NUL in text, untranslatable character, value out of range, bad datetime...
    "23",  # integrity constraint violation (NOT NULL, CHECK, foreign key)
    "54",  # program limit exceeded (a value too large for an index row)
}
# Every other class is the database's state: 08 connection, 25006 read-only transaction, 53 insufficient
# resources (disk full, out of memory, too many connections), 57 canceled (statement_timeout) or shutting down,
# 58 system/I-O error, 42 privileges or a missing table, 3D missing database, XX internal error.

# MySQL/MariaDB error numbers.
MYSQL_CONFLICT = {
    1205,  # ER_LOCK_WAIT_TIMEOUT (innodb_lock_wait_timeout, lock_wait_timeout on a table lock)
    1213,  # ER_LOCK_DEADLOCK
    1062,  # ER_DUP_ENTRY: a concurrent writer stored the same call first
    3572,  # ER_LOCK_NOWAIT
}
MYSQL_REJECTED = {
    1048,  # ER_BAD_NULL_ERROR
    1264,  # ER_WARN_DATA_OUT_OF_RANGE
    1265,  # WARN_DATA_TRUNCATED
    1292,  # ER_TRUNCATED_WRONG_VALUE
    1300,  # ER_INVALID_CHARACTER_STRING
    1366,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (incorrect string value)
    1367,  # ER_ILLEGAL_VALUE_FOR_TYPE
    1406,  # ER_DATA_TOO_LONG
    1452,  # ER_NO_REFERENCED_ROW_2
    1690,  # ER_DATA_OUT_OF_RANGE
    3140,  # ER_INVALID_JSON_TEXT
    3819,  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025,  # ER_CONSTRAINT_FAILED (MariaDB CHECK)
}
# Every other number is the server's state: 2002/2003/2006/2013/2055 connection, 1040/1203 too many connections,
# 1290/1792/1836 read-only, 1114/1021 table or disk full, 1969/3024/1317 statement timeout or killed,
# 1142 privileges, 1146 missing table.

# SQLite result codes (Python 3.11+ exposes them as sqlite_errorname); older Pythons: the message.
SQLITE_CONFLICT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
SQLITE_REJECTED = {"SQLITE_CONSTRAINT", "SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE"}
SQLITE_CONFLICT_TEXT = ("database is locked", "database table is locked", "unique constraint failed")
SQLITE_REJECTED_TEXT = ("constraint failed", "string or blob too big", "datatype mismatch", "too large")
# SQLite's "attempt to write a readonly database", "database or disk is full", "disk I/O error", "unable to open
# database file", "no such table" are the database's state.

# Raised while binding a row's values, before the server sees them: NUL in a string for psycopg2, a lone
# surrogate for every driver, an int too large for SQLite. The row's data, whatever the class.
VALUE_ERRORS = (UnicodeError, ValueError, TypeError, ArithmeticError)
_DB_API_REJECTED = {"IntegrityError", "DataError"}
_DATABASE_ERRORS = {"DatabaseError", "InterfaceError", "PeeweeException"}  # DB-API roots, and Peewee's
MAX_MESSAGE = 500


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, then what caused it (Peewee's wrappers keep the driver's error as the context; an error
    raised while rolling back keeps the one that made the transaction fail)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _code(exc: BaseException):
    """(driver, code) for an exception that carries a driver signal, else None."""
    module = type(exc).__module__.split(".")[0]
    if module in ("psycopg2", "psycopg"):
        code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
        return ("postgresql", code) if code else None
    if module == "pymysql" and exc.args and isinstance(exc.args[0], int) and exc.args[0]:
        return "mysql", exc.args[0]
    if module == "sqlite3":
        return "sqlite", getattr(exc, "sqlite_errorname", None)
    return None


def _verdict(driver: str, code, exc: BaseException) -> str:
    if driver == "postgresql":
        if code in PG_CONFLICT:
            return CONFLICT
        return REJECTED if code[:2] in PG_REJECTED_CLASSES else UNAVAILABLE
    if driver == "mysql":
        return CONFLICT if code in MYSQL_CONFLICT else REJECTED if code in MYSQL_REJECTED else UNAVAILABLE
    if code:  # sqlite, by result code
        if code in SQLITE_CONFLICT:
            return CONFLICT
        return REJECTED if code in SQLITE_REJECTED or code.startswith("SQLITE_CONSTRAINT") else UNAVAILABLE
    text = str(exc).lower()
    if any(marker in text for marker in SQLITE_CONFLICT_TEXT):
        return CONFLICT
    return REJECTED if any(marker in text for marker in SQLITE_REJECTED_TEXT) else UNAVAILABLE


def _message(exc: BaseException, code=None) -> str:
    text = " ".join(str(exc).split())
    label = f"{type(exc).__name__} [{code}]" if code else type(exc).__name__
    return f"{label}: {text}"[:MAX_MESSAGE]


def driver_verdict(exc: BaseException) -> tuple[str, str]:
    """(UNAVAILABLE | CONFLICT | REJECTED, a one-line message naming the driver's error and code)."""
    chain = list(_chain(exc))
    for link in reversed(chain):  # the deepest: a failed rollback must not hide what made it fail
        found = _code(link)
        if found is not None:
            return _verdict(found[0], found[1], link), _message(link, found[1])
    for link in chain:
        if isinstance(link, VALUE_ERRORS) and not is_database_error(link):
            return REJECTED, _message(link)
    for link in chain:  # a driver error without a code (e.g. "connection already closed")
        if {cls.__name__ for cls in type(link).__mro__} & _DB_API_REJECTED:
            return REJECTED, _message(link)
    return UNAVAILABLE, _message(chain[-1] if len(chain) > 1 else exc)


def is_database_error(exc: BaseException) -> bool:
    """Raised by a driver or by Peewee (not by our own code)."""
    return bool({cls.__name__ for cls in type(exc).__mro__} & _DATABASE_ERRORS)
