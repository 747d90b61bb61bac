"""From an observed call to the :class:`~dspy_tokens.store.UsageRow` stored for it (runs on the intake thread)."""

from __future__ import annotations

import logging
import re
from typing import Any

from ..capture import ObservedCall, TokenCounts, is_cache_hit, normalize_usage
from ..pricing import SOURCE_UNKNOWN, PriceBook
from ..store import TEXT_LIMITS, UsageRow
from .estimates import PREFIX, estimate

log = logging.getLogger("dspy_tokens")
call_log = logging.getLogger("dspy_tokens.calls")

SOURCE_NO_USAGE = "no_usage"
_SURROGATES = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(r"\d+")
MAX_TOLD = 1000
ALL_ZERO = "provider reported all-zero usage"
#: Models whose all-zero usage was warned about, in this process: test doubles (DSPy's DummyLM) report zeros on
#: every call, and a test suite builds a tracker per test.
_zero_told: set[str] = set()
_TEXT_COLUMNS = tuple((UsageRow._fields.index(name), name, limit) for name, limit in TEXT_LIMITS.items())


def clean_text(value: str, limit: int | None = None) -> str:
    """Text every backend can store: NUL removed (PostgreSQL refuses it), lone surrogates replaced by U+FFFD (no
    driver can encode them), cut to ``limit`` characters."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii() and _SURROGATES.search(value):
        value = _SURROGATES.sub("\ufffd", value)
    return value[:limit] if limit else value


def storable(row: UsageRow) -> UsageRow:
    """The row with every text column cleaned (:func:`clean_text`) to fit its column: provider text (a model
    name, an error message) and user text (a feature) can never make a call unstorable."""
    changes: dict[str, Any] = {}
    for index, name, limit in _TEXT_COLUMNS:
        value = row[index]
        # Short ASCII text without NUL (nearly all of it) is stored as it is: no copy made.
        if isinstance(value, str) and (len(value) > limit or "\x00" in value or not value.isascii()):
            cleaned = clean_text(value, limit)
            if cleaned != value:
                changes[name] = cleaned
    return row._replace(**changes) if changes else row


def response_model_of(entry: dict) -> str | None:
    model = entry.get("response_model")
    if not model:
        response = entry.get("response")
        if isinstance(response, dict):  # decision clients (TypeSafe) keep the answer as a plain dict
            model = response.get("model")
        else:
            model = getattr(response, "model", None) if not isinstance(response, tuple) else None
    return str(model) if model else None


def service_tier_of(entry: dict) -> str | None:
    """The tier the provider says it served: ``response.service_tier`` (LiteLLM engine) or the raw answer's
    ``service_tier`` (DSPy's native engine keeps it in ``provider_data``)."""
    response = entry.get("response")
    tier = response.get("service_tier") if isinstance(response, dict) else getattr(response, "service_tier", None)
    if tier is None and not isinstance(response, (dict, tuple, list)):
        raw = getattr(response, "provider_data", None)
        tier = raw.get("service_tier") if isinstance(raw, dict) else None
    return str(tier) if isinstance(tier, str) and tier else None


class RowBuilder:
    """Prices and normalises observed calls into rows; ``configure`` swaps the prices (``reload_config``)."""

    def __init__(self, prices: PriceBook, log_calls: bool = False, estimate_usage: bool = True):
        self.prices, self.log_calls, self.estimate_usage = prices, log_calls, estimate_usage
        self._told: set[tuple[str, str]] = set()  # (model, problem without its numbers) already warned about
        self.listeners: list = []  # called with each row built (tracker.on_row); a failing one is logged

    def _report(self, call: ObservedCall, problem: str) -> None:
        """A provider's usage problem: a warning the first time per model and kind (a provider that always sends
        the same inconsistency would otherwise log every call), then debug lines."""
        kind = (call.model, _DIGITS.sub("N", problem))
        first = kind not in self._told and len(self._told) < MAX_TOLD
        self._told.add(kind)
        if problem == ALL_ZERO:
            first = call.model not in _zero_told and len(_zero_told) < MAX_TOLD
            _zero_told.add(call.model)
        log.log(logging.WARNING if first else logging.DEBUG, "dspy-tokens: call %s: %s%s", call.call_uuid, problem,
                " (further such calls of this model are logged at debug level)" if first else "")

    def configure(self, prices: PriceBook, log_calls: bool, estimate_usage: bool = True) -> None:
        self.prices, self.log_calls, self.estimate_usage = prices, log_calls, estimate_usage

    def build(self, call: ObservedCall) -> UsageRow:
        entry = call.entry
        cache_hit = estimated = False
        response_model = None
        if entry is None:
            counts = TokenCounts()
        else:
            response_model = response_model_of(entry)
            cache_hit = is_cache_hit(entry)
            counts = TokenCounts.zero() if cache_hit else normalize_usage(entry.get("usage"),
                                                                             service_tier_of(entry))
            if counts.problem:
                self._report(call, counts.problem)
            if not counts.reported and self.estimate_usage and call.error is None:
                guessed = estimate(call.model, entry)
                estimated = guessed is not None
                counts = guessed or counts
        if counts.reported:
            try:
                cost = self.prices.cost(counts, call.model, response_model, cache_hit=cache_hit)
                cost_usd, cost_source, price_version = (cost.usd, (PREFIX + cost.source)[:20] if estimated
                                                        else cost.source, cost.price_version)
            except Exception:  # a pricing bug must not lose the call: keep its tokens, the cost is unknown
                log.exception("dspy-tokens: could not price call %s (model %r); its cost is stored as unknown",
                              call.call_uuid, call.model)
                cost_usd, cost_source, price_version = None, SOURCE_UNKNOWN, None
        else:
            cost_usd, cost_source, price_version = None, SOURCE_NO_USAGE, None
        who = call.attribution
        row = UsageRow(
            call_uuid=call.call_uuid, session_id=call.session_id, call_index=call.call_index,
            user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id, feature=who.feature,
            module=call.module, model=call.model, response_model=response_model,
            prompt_tokens=counts.prompt, completion_tokens=counts.completion, total_tokens=counts.total,
            cached_tokens=counts.cached, reasoning_tokens=counts.reasoning, cost_usd=cost_usd,
            cost_source=cost_source, cache_hit=cache_hit, usage_reported=counts.reported and not estimated,
            error=call.error,
            latency_ms=call.latency_ms, created_at=call.created_at, request_type=call.request_type,
            metadata=who.metadata, usage_estimated=estimated,
            cache_write_tokens=counts.cache_write if counts.reported else None,
            audio_tokens=counts.audio if counts.reported else None, service_tier=counts.service_tier,
            price_version=price_version)
        row = storable(row)
        if self.log_calls:
            log_row(row)
        for listener in self.listeners:
            try:
                listener(row)
            except Exception:
                log.exception("dspy-tokens: a row listener (%r) failed; the row is recorded all the same", listener)
        return row


def log_row(row: UsageRow) -> None:
    """One line per call: ``[Token Usage] feature | model | In: 245 Out: 89 | Cost: $0.00009 | 1234ms``."""
    cost = "unknown" if row.cost_usd is None else f"${row.cost_usd:.5f}"
    tokens_in = "?" if row.prompt_tokens is None else row.prompt_tokens
    tokens_out = "?" if row.completion_tokens is None else row.completion_tokens
    extra = " (cache hit)" if row.cache_hit else (f" (error: {row.error})" if row.error else "")
    call_log.info("[Token Usage] %s | %s | In: %s Out: %s | Cost: %s | %sms%s", row.feature or "-",
                  row.model, tokens_in, tokens_out, cost, row.latency_ms, extra)
