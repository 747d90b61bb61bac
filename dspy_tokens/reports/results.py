"""What reports return: exact ``Decimal`` money, UTC-aware times, ``to_dict()`` ready for JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Callable, TypedDict

from ..store.units import usd


def decimal_text(value: Decimal) -> str:
    """``Decimal`` as plain positional text without trailing zeros: 0.000045, 12, 0."""
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def to_json_value(value: Any) -> Any:
    """Money as a decimal string, times and dates as ISO 8601; everything else unchanged."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


#: Fields holding 64-bit ids: written as strings (a JSON number loses digits past 2**53).
ID_FIELDS = frozenset({"id", "user_id", "guild_id", "channel_id", "scope_id"})
#: The ids a pseudonym replaces (row ids are not about anyone).
PERSON_IDS = frozenset({"user_id", "guild_id", "channel_id"})
#: Read-only properties written beside a dataclass's fields when it has them (LimitDecision.remaining).
JSON_PROPERTIES = ("remaining",)


def json_ready(value: Any, *, pseudonym: Callable[[str, int], str] | None = None) -> Any:
    """The one JSON shape of report results, for every front end: ids as strings, money as decimal strings,
    times ISO 8601 UTC, dates ISO; dataclasses (``Summary``, ``Group``, ``LimitDecision``, ``CleanupResult``,
    ``WriterStats`` ...) as objects of their fields, dicts (``CallRecord``) and lists recursively. A group's
    ``key`` is an id string for user/guild breakdowns, a date for days, ``[day, key]`` for ``("day", dim)``.

    ``pseudonym(column, id) -> str`` (e.g. :class:`~dspy_tokens.reports.pseudonyms.Pseudonyms`) replaces user,
    guild and channel ids, including group keys; row ids stay."""
    return _shaped(value, None, pseudonym)


def _shaped(value: Any, name: str | None, pseudonym: Callable[[str, int], str] | None) -> Any:
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        if name not in ID_FIELDS:
            return value
        return pseudonym(name, value) if pseudonym is not None and name in PERSON_IDS else str(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: _shaped(v, k, pseudonym) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shaped(v, None, pseudonym) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _shaped(getattr(value, f.name), f.name, pseudonym) for f in fields(value)}
        if isinstance(value, Group):
            out["by"] = list(value.by) if isinstance(value.by, tuple) else value.by
            out["key"] = _group_key(value.by, value.key, pseudonym)
        for prop in JSON_PROPERTIES:
            if isinstance(getattr(type(value), prop, None), property):
                out[prop] = _shaped(getattr(value, prop), prop, pseudonym)
        return out
    raise TypeError(f"json_ready cannot shape {type(value).__name__} values ({value!r})")


def _group_key(by: Any, key: Any, pseudonym: Callable[[str, int], str] | None) -> Any:
    if isinstance(by, tuple):
        return [_shaped(key[0], None, pseudonym), _group_key(by[1], key[1], pseudonym)]
    return _shaped(key, f"{by}_id" if by in ("user", "guild") else None, pseudonym)


@dataclass(frozen=True)
class Totals:
    """Usage of a set of calls. ``cost_usd`` covers the priced calls only; ``unknown_cost_calls`` counts the
    answered calls whose price is unknown (never counted as $0); failed calls are in ``errors``;
    ``estimated_calls`` are the calls whose provider reported no usage, counted by our tokenizer instead (their
    estimated tokens and cost are in the totals: ``estimated_calls`` says how many calls are estimates)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unknown_cost_calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    estimated_calls: int = 0

    @property
    def cost_complete(self) -> bool:
        """True when every answered call had a known price."""
        return self.unknown_cost_calls == 0

    def to_dict(self) -> dict:
        """JSON-ready (:func:`json_ready`): money as a decimal string, times as ISO 8601, id keys as strings."""
        shaped: dict = json_ready(self)
        return shaped


@dataclass(frozen=True)
class Summary(Totals):
    """:class:`Totals` of a period, plus how many distinct users made calls in it. ``until`` None: open."""

    active_users: int = 0
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Group(Totals):
    """One line of a breakdown: ``key`` is a user/guild id (int), a model or feature name, a ``date`` or a
    session id; ``None`` groups calls without one. Sessions also carry their first and last call times. A
    ``("day", dimension)`` breakdown has that pair as ``by`` and ``(date, key)`` pairs as keys."""

    by: str | tuple[str, str] = ""
    key: Any = None
    first_at: datetime | None = None
    last_at: datetime | None = None


@dataclass(frozen=True)
class CleanupResult:
    """What :meth:`Reports.cleanup` deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    rows: int
    counters_cutoff: datetime
    counter_rows: int
    batches: int
    dry_run: bool
    hour_rollup_rows: int = 0  # hour buckets of the rollups deleted with the rows of their hours

    def to_dict(self) -> dict:
        return {k: to_json_value(v) for k, v in asdict(self).items()}


class CallRecord(TypedDict):
    """One stored call, as :meth:`Reports.session` and :meth:`Reports.recent_calls` return it."""

    id: int
    call_uuid: str
    session_id: str
    call_index: int
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    feature: str | None
    module: str | None
    model: str
    response_model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: Decimal | None
    cost_source: str
    cache_hit: bool
    usage_reported: bool
    error: str | None
    latency_ms: int | None
    created_at: datetime
    request_type: str
    metadata: dict[str, str | int | float] | None
    usage_estimated: bool


def totals_fields(values: list[int]) -> dict:
    """Constructor arguments of :class:`Totals` from store measures (MEASURES order)."""
    calls, prompt, completion, total, cached, reasoning, pico, unpriced, hits, errors, estimated = values
    return dict(calls=calls, prompt_tokens=prompt, completion_tokens=completion, total_tokens=total,
                cached_tokens=cached, reasoning_tokens=reasoning, cost_usd=usd(pico), unknown_cost_calls=unpriced,
                cache_hits=hits, errors=errors, estimated_calls=estimated)
