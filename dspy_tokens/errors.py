"""The exceptions dspy-tokens raises. Every one derives from :class:`DspyTokensError`."""

from __future__ import annotations


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
    """Raised before a guarded run when a usage limit refuses it; carries the decision."""

    def __init__(self, decision):
        self.decision = decision
        super().__init__(getattr(decision, "message", "usage limit exceeded"))
