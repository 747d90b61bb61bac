"""The one rule for call metadata (``usage_context(metadata={...})``): a flat JSON object of at most
:data:`MAX_KEYS` keys, each of 1-64 ASCII letters, digits, ``_`` or ``-``, whose values are strings (at most
:data:`MAX_VALUE_CHARS` characters) or finite numbers; stored as compact JSON with sorted keys, at most
:data:`MAX_CHARS` characters. Reports compare and group values as text (``1`` and ``"1"`` are one group)."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any, Mapping

MAX_KEYS = 16
MAX_VALUE_CHARS = 200
MAX_CHARS = 2048
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
Value = str | int | float


def check_key(key: object) -> str:
    """``key`` if it is a valid metadata key, else ``ValueError`` naming the rule."""
    if not isinstance(key, str) or not KEY.match(key):
        raise ValueError(f"metadata keys are 1-64 ASCII letters, digits, '_' or '-', got {key!r}")
    return key


def check_value(key: str, value: object) -> Value:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"metadata[{key!r}] must be a string or a number, got {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"metadata[{key!r}] must be a finite number, got {value!r}")
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"metadata[{key!r}] is {len(value)} characters long; values hold at most "
                         f"{MAX_VALUE_CHARS}")
    return value


def checked(metadata: Mapping[str, Any]) -> dict[str, Value]:
    """``metadata`` validated (a ``ValueError`` says which key breaks which rule)."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping of names to strings or numbers, got {type(metadata).__name__}")
    found = {check_key(key): check_value(key, value) for key, value in metadata.items()}
    if len(found) > MAX_KEYS:
        raise ValueError(f"metadata has {len(found)} keys; a call holds at most {MAX_KEYS}")
    return found


def metadata_text(metadata: Mapping[str, Any]) -> str:
    """The stored form: validated, compact JSON with sorted keys, at most :data:`MAX_CHARS` characters."""
    text = json.dumps(checked(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_CHARS:
        raise ValueError(f"metadata is {len(text)} characters as JSON; a call holds at most {MAX_CHARS}")
    return text


def value_text(value: object) -> str:
    """A metadata value as reports compare it (the text each database's JSON functions give for it)."""
    checked_value = check_value("filter", value)
    return checked_value if isinstance(checked_value, str) else json.dumps(checked_value)
