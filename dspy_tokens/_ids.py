"""The one rule for ids (Discord snowflakes and any other 64-bit id): ``0 <= id < 2**63``, given as an int or a
string of ASCII digits ("42" is 42). Booleans, floats, negative and larger numbers are refused."""

from __future__ import annotations

from .errors import ConfigurationError

MAX_ID = 2**63  # the BIGINT columns are signed 64-bit


def parse_id(value: object) -> int:
    """``value`` as an id (a Discord snowflake, say), or ``ValueError`` saying why not. The one rule every id
    that dspy-tokens accepts follows: ``0 <= id < 2**63``, an int or a string of ASCII digits."""
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_ID:
        raise ValueError(f"must be a 64-bit non-negative integer id (0 <= id < 2**63), got {value!r}")
    return value


def optional_id(value: object) -> int | None:
    """:func:`parse_id`, with ``None`` passed through (no id)."""
    return None if value is None else parse_id(value)


def checked_id(source: str, name: str, value: object) -> int | None:
    """:func:`optional_id`, or a :class:`ConfigurationError` naming where the id came from."""
    try:
        return optional_id(value)
    except ValueError:
        raise ConfigurationError(source, name, value, "must be a 64-bit non-negative integer id or None") from None
