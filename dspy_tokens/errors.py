"""The exceptions dspy-tokens raises. Every one derives from :class:`DspyTokensError`::

    DspyTokensError
    ├── ConfigurationError        a file, argument or URL is wrong; the message names the fix
    ├── TokenLimitExceeded        a usage limit refused a guarded run; carries the decision
    └── StorageError              the database failed (the driver's exception is the __cause__)
        ├── StorageUnavailable    its state: unreachable, timeout, lock, deadlock, read-only, full disk
        │   └── StorageConflict   contention between writers (deadlock, serialization, lock wait): retry now
        └── StorageRejected       the data itself: an integrity or data error on one row (never the state)
"""

from __future__ import annotations

from typing import Any


class DspyTokensError(Exception):
    """Base class for every error raised by dspy-tokens."""


class ConfigurationError(DspyTokensError, ValueError):
    """A configuration file or argument is invalid.

    The message names the source (file), the field, the offending value and the fix.
    """

    def __init__(self, source: str, field: str, value: object, fix: str):
        self.source, self.field, self.value, self.fix = source, field, value, fix
        super().__init__(f"{source}: {field!s} {fix}, got {value!r}")


class TokenLimitExceeded(DspyTokensError):
    """Raised before a guarded run when a usage limit refuses it; ``.decision`` is the
    :class:`~dspy_tokens.LimitDecision`."""

    def __init__(self, decision: Any):
        self.decision = decision
        super().__init__(getattr(decision, "message", "usage limit exceeded"))


class StorageError(DspyTokensError):
    """A database operation failed. The driver's (or Peewee's) exception is ``__cause__``."""

    #: True when retrying later with the same data can succeed (the database's state, not the data's fault).
    unavailable = False


class StorageUnavailable(StorageError):
    """The database cannot take the operation now: keep the data and retry."""

    unavailable = True


class StorageConflict(StorageUnavailable):
    """Writers got in each other's way (deadlock, serialization failure, lock wait): retry the transaction."""


class StorageRejected(StorageError):
    """The database answered and refused the data itself (integrity or data error)."""
