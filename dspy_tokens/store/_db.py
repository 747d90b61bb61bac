"""The driver boundary: opening a database from a URL, transactions, and the one classification of errors."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import peewee
from playhouse import db_url

from ..errors import StorageConflict, StorageError, StorageRejected, StorageUnavailable

DEFAULT_URL = "sqlite:///dspy_tokens.db"
ENV_VAR = "DSPY_TOKENS_DATABASE_URL"
SQLITE_PRAGMAS = {  # in this order: the busy timeout must hold before switching a fresh file to WAL
    "busy_timeout": 5000,  # wait for a lock instead of failing with "database is locked"
    "journal_mode": "wal",  # readers never block the writer; other processes keep working
    "synchronous": "normal",  # durable at WAL checkpoints; ~20k commits/s instead of ~1.4k
}
# DB-API exception classes (the same names in sqlite3, psycopg2, pymysql and Peewee's wrappers).
_UNAVAILABLE = {"OperationalError", "InterfaceError", "InternalError"}
_REJECTED = {"IntegrityError", "DataError"}
_CONFLICT_MARKERS = ("deadlock", "could not serialize", "lock wait timeout", "database is locked")
_DATABASE_ERRORS = {"DatabaseError", "InterfaceError", "PeeweeException"}  # DB-API roots, and Peewee's


def resolve_url(url: str | None = None) -> str:
    """The URL to open: ``url``, else ``$DSPY_TOKENS_DATABASE_URL``, else the default; a bare path (no
    ``scheme://``, e.g. ``usage.db`` or ``/var/lib/bot/usage.db``) is a SQLite file."""
    url = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{url}"


def open_database(url: str | None = None) -> peewee.Database:
    """A Peewee database for ``url`` (any ``playhouse.db_url`` scheme). Does not connect yet."""
    url = resolve_url(url)
    scheme = url.split(":", 1)[0].lower()
    options: dict = {}
    if scheme.startswith("sqlite"):
        options["pragmas"] = SQLITE_PRAGMAS
        options["timeout"] = 5
        path = db_url.parse(url).get("database")
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif scheme.startswith("postgres"):
        options["connect_timeout"] = 5
    elif scheme.startswith("mysql"):
        options.update(connect_timeout=5, charset="utf8mb4")
    try:
        return db_url.connect(url, **options)
    except Exception as exc:
        raise ValueError(f"database URL {redact(url)!r} is not usable ({exc}); expected e.g. "
                         "sqlite:///usage.db, postgresql://user@host:5432/db or mysql://user@host:3306/db") from exc


def sqlite_path(url: str | None = None) -> Path | None:
    """The file of a SQLite URL (None for other databases and for in-memory SQLite)."""
    url = resolve_url(url)
    if not url.lower().startswith("sqlite"):
        return None
    path = db_url.parse(url).get("database")
    return Path(path).expanduser() if path and path != ":memory:" else None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = db_url.urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def dialect(db: peewee.Database) -> str:
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgresql"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    raise ValueError(f"unsupported database {type(db).__name__}; use SQLite, PostgreSQL or MySQL/MariaDB")


def write_transaction(db: peewee.Database):
    """A transaction that takes the write lock up front on SQLite (a DEFERRED one fails under contention)."""
    if isinstance(db, peewee.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


def is_database_error(exc: BaseException) -> bool:
    """Raised by a driver or by Peewee (not by our own code)."""
    return bool({cls.__name__ for cls in type(exc).__mro__} & _DATABASE_ERRORS)


@contextlib.contextmanager
def storage_errors(reachable=None):
    """Re-raise driver and Peewee errors as a classified :class:`StorageError`; other errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if not is_database_error(exc):
            raise
        raise classify(exc, reachable) from exc


def classified(fn):
    """Decorate a method so the database errors it raises leave as a classified :class:`StorageError`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with storage_errors():
            return fn(*args, **kwargs)
    return wrapper


def is_conflict(exc: BaseException) -> bool:
    """Deadlock, serialization failure or lock wait: the transaction may succeed if retried at once."""
    if isinstance(exc, StorageConflict):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def classify(exc: BaseException, reachable=None) -> StorageError:
    """The :class:`StorageError` for a failed operation; ``reachable()`` (a ping) is asked only when the kind
    of error cannot tell whether the database or the data is at fault."""
    if isinstance(exc, StorageError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    message = f"{type(exc).__name__}: {exc}"
    if is_conflict(exc):
        return StorageConflict(message)
    if names & _UNAVAILABLE:
        return StorageUnavailable(message)
    if names & _REJECTED:
        return StorageRejected(message)
    if reachable is not None and not reachable():
        return StorageUnavailable(message)
    return StorageRejected(message)
