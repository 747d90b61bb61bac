"""Row building: what the intake thread makes of an observed call (tokens, price, cost source), that a pricing
failure costs the call its price and nothing else, and the per-call log line (``log_calls``) printed per row."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timezone

import dspy
import pytest

from dspy_tokens import Config
from dspy_tokens.capture import Attribution, ObservedCall
from dspy_tokens.ingest import RowBuilder, log_row
from dspy_tokens.ingest.rows import clean_text
from dspy_tokens.pricing import PriceBook
from dspy_tokens.store import TEXT_LIMITS, UsageRow
from tests.support.db import stored_rows
from tests.support.rows import NOW, usage_row
from tests.support.wire import GPT4O_MINI, answered, hand_cost, sent, tokens


def observed(entry: dict | None, *, error: str | None = None) -> ObservedCall:
    """A finished gpt-4o-mini call as the callback hands it on, with ``entry`` as its history entry."""
    return ObservedCall(call_uuid=uuid.uuid4().hex, session_id="s", call_index=3,
                        attribution=Attribution(user_id=1, guild_id=2, channel_id=3, feature="ask"),
                        module="Predict", model="openai/gpt-4o-mini", entry=entry, error=error, latency_ms=12,
                        created_at=datetime(2025, 3, 12, 10, 30, tzinfo=timezone.utc))


# -- from an observed call to its row ----------------------------------------------------------------------------

def test_a_row_carries_the_calls_usage_attribution_and_price_map_cost():
    """An answered call becomes a UsageRow with its normalised usage, its attribution and its price-map cost."""
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 40}}
    call = observed({"usage": usage, "response_model": "gpt-4o-mini-2024-07-18"})
    row = RowBuilder(PriceBook(Config())).build(call)
    assert isinstance(row, UsageRow) and row.call_uuid == call.call_uuid and row.call_index == 3
    assert (row.user_id, row.guild_id, row.channel_id, row.feature) == (1, 2, 3, "ask")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.cached_tokens, row.reasoning_tokens) == (
        100, 20, 120, 40, 0)
    assert row.response_model == "gpt-4o-mini-2024-07-18" and row.created_at == call.created_at
    assert row.cost_source == "price_map" and row.usage_reported and not row.cache_hit
    assert row.cost_usd == hand_cost({"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 40}, GPT4O_MINI)


def test_a_call_without_an_entry_is_unreported_never_zero():
    """A failed call (no history entry) keeps its error; its tokens and cost are NULL, never 0."""
    row = RowBuilder(PriceBook(Config())).build(observed(None, error="TimeoutError: read"))
    assert row.error == "TimeoutError: read" and row.usage_reported is False
    assert (row.prompt_tokens, row.total_tokens, row.cost_usd, row.cost_source) == (None, None, None, "no_usage")


# -- a pricing failure ------------------------------------------------------------------------------------------

def test_a_pricing_failure_keeps_the_row_and_the_program_result(sqlite_tracker, server, monkeypatch, caplog):
    """A pricing bug on one call: the program's result is unchanged, that row is stored with an unknown cost, and
    the other rows are written normally."""
    import dspy_tokens.pricing.book as pricing

    real = pricing.compute_cost
    priced = []

    def broken(counts, price):  # rows are built in call order on the writer thread: break the second one
        priced.append(counts)
        if len(priced) == 2:
            raise ArithmeticError("pricing bug")
        return real(counts, price)

    monkeypatch.setattr(pricing, "compute_cost", broken)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        results = [predict(question=q).answer for q in ("one", "two two", "three three three")]
    assert results == [f"Answer to: {q}" for q in ("one", "two two", "three three three")]
    rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["created_at"])
    assert [tokens(r) for r in rows] == [sent(r) for r in answered(server)]
    assert [r["cost_usd"] is None for r in rows] == [False, True, False]
    assert rows[1]["cost_source"] == "unknown"
    assert any("pricing bug" in r.getMessage() or (r.exc_info and "pricing bug" in str(r.exc_info[1]))
               for r in caplog.records)


# -- the per-call log line ----------------------------------------------------------------------------------------

def test_log_row_prints_the_seed_format(caplog):
    """``log_calls`` prints ``[Token Usage] feature | model | In: 245 Out: 89 | Cost: $0.00009 | 1234ms``."""
    row = usage_row(NOW, prompt=245, completion=89, cost="0.00009015", feature="setup_help", model="gpt-4o-mini",
                    latency_ms=1234)
    with caplog.at_level(logging.INFO, logger="dspy_tokens.calls"):
        log_row(UsageRow(**row))
        log_row(UsageRow(**usage_row(NOW, prompt=10, completion=5, cost=None, model="acme/mystery", latency_ms=7)))
    assert caplog.messages == [
        "[Token Usage] setup_help | gpt-4o-mini | In: 245 Out: 89 | Cost: $0.00009 | 1234ms",
        "[Token Usage] - | acme/mystery | In: 10 Out: 5 | Cost: unknown | 7ms",
    ]


def test_log_calls_from_models_json_logs_each_tracked_call(make_tracker, sqlite_url, server, caplog):
    """With ``log_calls`` in models.json, each tracked call of a real DSPy program logs exactly one line."""
    tracker = make_tracker(sqlite_url, Config(log_calls=True))
    with caplog.at_level(logging.INFO, logger="dspy_tokens.calls"):
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            dspy.Predict("question -> answer")(question="hi")
        assert tracker.flush(timeout=30)
    lines = [m for m in caplog.messages if m.startswith("[Token Usage]")]
    assert len(lines) == 1
    assert re.fullmatch(r"\[Token Usage\] - \| openai/gpt-4o-mini \| In: \d+ Out: \d+ \| Cost: \$\d\.\d{5} \| \d+ms",
                        lines[0])


# -- text every backend can store ---------------------------------------------------------------------------------

class TestStorableText:
    """Provider and user text is cleaned before storage, so no string can make a call unstorable."""

    @pytest.mark.parametrize("raw, limit, clean", [
        ("gpt-4o-mini", None, "gpt-4o-mini"),
        ("bad\x00feature", None, "badfeature"),
        ("lone \ud800 surrogate \udfff", None, "lone \ufffd surrogate \ufffd"),
        ("emoji 💥 stays", None, "emoji 💥 stays"),
        ("x" * 300, 200, "x" * 200),
        ("\x00" * 5, None, ""),
    ])
    def test_clean_text(self, raw, limit, clean):
        """NUL removed, lone surrogates replaced by U+FFFD (real astral characters kept), cut to the limit."""
        assert clean_text(raw, limit) == clean
        clean.encode("utf-8")  # encodable by every driver

    def test_a_row_from_provider_text_fits_every_column(self):
        """A call whose model, response model, error and feature carry NUL, surrogates and excess length becomes
        a row whose every text fits its column and encodes."""
        call = observed({"usage": {"prompt_tokens": 5, "completion_tokens": 1},
                         "response_model": "gpt\x00-4o-mini-\ud800" + "m" * 500}, error="Boom\x00 \udc80 " + "e" * 5000)
        call.model = "openai/gpt-4o-mini\x00"
        call.attribution = Attribution(user_id=1, feature="bad\x00feature")
        row = RowBuilder(PriceBook(Config())).build(call)
        assert row.model == "openai/gpt-4o-mini" and row.feature == "badfeature"
        assert row.response_model.startswith("gpt-4o-mini-\ufffdm") and len(row.response_model) == TEXT_LIMITS[
            "response_model"]
        assert row.error.startswith("Boom \ufffd ") and len(row.error) == TEXT_LIMITS["error"]
        for name, limit in TEXT_LIMITS.items():
            value = getattr(row, name)
            assert value is None or (len(value) <= limit and "\x00" not in value and value.encode("utf-8"))
        assert row.total_tokens == 6


def test_a_provider_that_always_sends_the_same_inconsistency_warns_once(caplog):
    """Fifty calls whose total disagrees with their parts (each with other numbers): one warning for the model,
    the rest at debug level — and each row still counts prompt + completion."""
    builder = RowBuilder(PriceBook(Config()))
    with caplog.at_level(logging.DEBUG, logger="dspy_tokens"):
        rows = [builder.build(observed({"usage": {"prompt_tokens": 10 + i, "completion_tokens": 5,
                                                  "total_tokens": 999_999_999 - i}})) for i in range(50)]
    said = [r for r in caplog.records if "is not prompt_tokens + completion_tokens" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING] + [logging.DEBUG] * 49
    assert [r.total_tokens for r in rows] == [15 + i for i in range(50)]
