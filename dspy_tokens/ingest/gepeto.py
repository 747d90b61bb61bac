"""A row of GePeTo's token manager (``token_usage``: Discord ids, session, call index, three token counts, model,
a naive local ISO ``timestamp``) as a :class:`~dspy_tokens.store.UsageRow`."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone, tzinfo
from typing import Any

from .._ids import optional_id
from ..capture import TokenCounts
from ..pricing import SOURCE_UNKNOWN, PriceBook
from ..store import UsageRow
from .rows import SOURCE_NO_USAGE

#: The namespace of the ``call_uuid`` of imported GePeTo rows (uuid5 of the row's identity): fixed forever, so
#: importing the same rows again finds them stored.
GEPETO_NAMESPACE = uuid.UUID("7d0c6a52-3f0e-5b8e-9a51-6b3c1d2e4f60")
IMPORT_SOURCE_PREFIX = "import:"


def gepeto_call_uuid(raw: dict[str, Any]) -> str:
    """A ``call_uuid`` from what identifies the call in GePeTo's table: its id (when the table has one), session,
    call index, timestamp text, who, and model. The zone given at import is not part of it, so a second import
    with another ``--timezone`` still adds nothing."""
    identity = "|".join("" if raw.get(c) is None else str(raw[c]) for c in (
        "id", "session_id", "call_index", "timestamp", "user_id", "guild_id", "channel_id", "model"))
    return str(uuid.uuid5(GEPETO_NAMESPACE, identity))


def gepeto_time(value: Any, zone: tzinfo | None) -> datetime:
    """GePeTo's ``timestamp`` in UTC: the token manager's are naive local times (DSPy's
    ``datetime.now().isoformat()``), read in ``zone``, which they need; a time that carries an offset keeps it. An
    ambiguous local time (the hour repeated when summer time ends) is read as the first."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be ISO 8601 text, got {value!r}")
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        if zone is None:
            raise ValueError(f"timestamp {value!r} is a local time without a zone: give the zone of the bot's "
                             "host with --timezone (e.g. Europe/Berlin, or UTC)")
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(timezone.utc)


def _count(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"token count must be an integer, got {value!r}")
    return int(value)


def gepeto_row(raw: dict[str, Any], zone: tzinfo | None, prices: PriceBook) -> UsageRow:
    """The row dspy-tokens stores for one GePeTo row. GePeTo kept no cost, cache or error information: the cost is
    priced now (``cost_source`` ``import:models.json`` / ``import:price_map``, or ``unknown``)."""
    call_uuid = gepeto_call_uuid(raw)
    try:
        prompt, completion = _count(raw["prompt_tokens"]), _count(raw["completion_tokens"])
        total = _count(raw["total_tokens"])
        if total is None and prompt is not None and completion is not None:
            total = prompt + completion
        created_at = gepeto_time(raw["timestamp"], zone)
        who = {c: optional_id(raw.get(c)) for c in ("user_id", "guild_id", "channel_id")}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"GePeTo row {raw.get('id', '')} (session {raw.get('session_id')!r}): {exc}") from None
    model = str(raw["model"] or "unknown")
    reported = prompt is not None and completion is not None
    cost_usd, cost_source = None, SOURCE_NO_USAGE
    if reported:
        cost = prices.cost(TokenCounts(prompt, completion, total, reported=True), model)
        cost_usd = cost.usd
        cost_source = SOURCE_UNKNOWN if cost.usd is None else IMPORT_SOURCE_PREFIX + cost.source
    session = raw.get("session_id")
    return UsageRow(
        call_uuid=call_uuid, session_id=call_uuid if session in (None, "") else str(session),
        call_index=int(raw.get("call_index") or 0), user_id=who["user_id"], guild_id=who["guild_id"],
        channel_id=who["channel_id"], feature=None, module=None, model=model, response_model=None,
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, cached_tokens=None,
        reasoning_tokens=None, cost_usd=cost_usd, cost_source=cost_source, cache_hit=False, usage_reported=reported,
        error=None, latency_ms=None, created_at=created_at)
