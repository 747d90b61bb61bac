"""The driver boundary: opening a database from a URL, transactions, and the one classification of errors."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from pathlib import Path

import peewee
from playhouse import db_url

from ..errors import ConfigurationError, StorageConflict, StorageError, StorageRejected, StorageUnavailable
from ._errors import CONFLICT, REJECTED, driver_verdict, is_database_error

DEFAULT_URL = "sqlite:///dspy_tokens.db"
ENV_VAR = "DSPY_TOKENS_DATABASE_URL"
SQLITE_PRAGMAS = {  # in this order: the busy timeout must hold before switching a fresh file to WAL
    "busy_timeout": 5000,  # wait for a lock instead of failing with "database is locked"
    "journal_mode": "wal",  # readers never block the writer; other processes keep working
    "synchronous": "normal",  # durable at WAL checkpoints; ~20k commits/s instead of ~1.4k
}
#: scheme prefix -> (driver modules Peewee can use, the extra that installs one)
DRIVERS = {"postgres": (("psycopg2", "psycopg"), "postgres"), "mysql": (("pymysql", "MySQLdb"), "mysql")}
EXAMPLES = "sqlite:///usage.db, postgresql://user@host:5432/db or mysql://user@host:3306/db"


def resolve_url(url: str | None = None) -> str:
    """The URL to open: ``url``, else ``$DSPY_TOKENS_DATABASE_URL``, else the default; a bare path (no
    ``scheme://``, e.g. ``usage.db`` or ``/var/lib/bot/usage.db``) is a SQLite file."""
    url = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{url}"


def open_database(url: str | None = None) -> peewee.Database:
    """A Peewee database for ``url`` (any ``playhouse.db_url`` scheme). Does not connect yet."""
    url = resolve_url(url)
    check_url(url)
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
        raise ConfigurationError("database", "URL", redact(url),
                                 f"is not usable ({exc}); expected e.g. {EXAMPLES}") from exc


def check_url(url: str) -> None:
    """Refuse, with the fix, a URL that could only ever fail or silently lose rows (checked before connecting)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("sqlite"):
        parsed = db_url.urlparse(url)
        if parsed.netloc:  # sqlite://x.db: "x.db" is read as a host, and the database becomes in-memory
            raise ConfigurationError("database", "URL", redact(url),
                                     f"names no file (a SQLite URL has three slashes): use "
                                     f"sqlite:///{parsed.netloc}{parsed.path} for a relative path or "
                                     "sqlite:////absolute/path.db")
        path = db_url.parse(url).get("database")
        if not path or path == ":memory:":
            raise ConfigurationError("database", "URL", redact(url),
                                     "is an in-memory SQLite database, which cannot be shared by the writer thread "
                                     "(each thread would see its own empty database); use a file: "
                                     "sqlite:///usage.db")
        return
    for prefix, (modules, extra) in DRIVERS.items():
        if scheme.startswith(prefix) and not any(_importable(m) for m in modules):
            raise ConfigurationError("database", "URL", redact(url),
                                     f"needs the {modules[0]} driver, which is not installed: "
                                     f"pip install 'dspy-tokens[{extra}]'")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


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


@contextlib.contextmanager
def storage_errors():
    """Re-raise driver and Peewee errors as a classified :class:`StorageError`; other errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if not is_database_error(exc):
            raise
        raise classify(exc) from exc


def classified(fn):
    """Decorate a method so the database errors it raises leave as a classified :class:`StorageError`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with storage_errors():
            return fn(*args, **kwargs)
    return wrapper


def classify(exc: BaseException) -> StorageError:
    """The one classification of a failed operation, from the driver's own signal (see :mod:`._errors`)."""
    if isinstance(exc, StorageError):
        return exc
    kind, message = driver_verdict(exc)
    return {CONFLICT: StorageConflict, REJECTED: StorageRejected}.get(kind, StorageUnavailable)(message)
