"""The storage layer: the only package that holds SQL or Peewee queries. It takes plain values and keys, never
rules, prices or DSPy objects, and every failure leaves it as a :class:`~dspy_tokens.StorageError`.

Public for operators and importers: :class:`Store` (``Store(url).write_batch([...])``), :class:`UsageRow`,
:data:`ROW_COLUMNS` and :data:`EXPORT_COLUMNS`.
"""

from ._db import DEFAULT_URL, ENV_VAR, redact, resolve_url, sqlite_path
from .engine import Store
from .rows import EXPORT_COLUMNS, ROW_COLUMNS, UsageRow
from .schema import TEXT_LIMITS

__all__ = ["DEFAULT_URL", "ENV_VAR", "EXPORT_COLUMNS", "ROW_COLUMNS", "Store", "TEXT_LIMITS", "UsageRow", "redact",
           "resolve_url", "sqlite_path"]
