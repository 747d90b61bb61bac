"""A fallback instead of a refusal: a rule naming ``"fallback": "<label>"`` admits a guarded run that does not fit on
the fallback model when it fits there whole (every rule checked again for that model), binds it for the block and
records the run under it — through real DSPy programs on every backend."""

from __future__ import annotations

from decimal import Decimal

import dspy
import pytest

from dspy_tokens import TokenLimitExceeded
from tests.support.db import reservations, stored_rows
from tests.support.limits import USER, config, seed

BIG = {"label": "big", "name": "gpt-4o", "provider": "openai"}
MINI = {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}
ESTIMATE = 2_000  # gpt-4o: $0.02 at its dearer rate; gpt-4o-mini: $0.0012


def budget(fallback: str | None = None, **extra_rule) -> dict:
    """A user's daily dollar budget of one cent for the big model (optionally falling back to mini)."""
    rule = {"scope": "user", "metric": "cost_usd", "max": "0.01", "window": "1d", "calendar": True}
    if fallback:
        rule["fallback"] = fallback
    return dict(models=[BIG, MINI], limits=[rule, *([extra_rule] if extra_rule else [])])


def ask(tracker, server):
    """One guarded run of a real DSPy program on the big model."""
    with dspy.context(lm=server.lm("openai/gpt-4o"), callbacks=[tracker]):
        with tracker.guard(USER, model="big", estimate=ESTIMATE) as decision:
            dspy.Predict("question -> answer")(question="which model answers?")
    return decision


def test_without_a_fallback_the_run_is_refused(make_tracker, database_url, server):
    """The big model's estimate does not fit the budget: refused before anything is sent."""
    tracker = make_tracker(database_url, config(**budget()))
    with pytest.raises(TokenLimitExceeded) as refused:
        ask(tracker, server)
    assert refused.value.decision.fallback_model is None and server.requests == []


def test_a_run_that_does_not_fit_runs_on_the_fallback(make_tracker, database_url, server):
    """Admitted on mini: the decision says so, the request goes to mini, its row is stored under mini and the
    reservation is held under mini then settled."""
    tracker = make_tracker(database_url, config(**budget(fallback="mini")))
    decision = ask(tracker, server)
    assert decision.allowed and decision.fallback_model == "openai/gpt-4o-mini"
    assert "runs on mini instead" in decision.message
    assert decision.requested == Decimal(ESTIMATE) * Decimal("0.6") / 1_000_000  # held at mini's dearer rate
    assert [r.body["model"] for r in server.requests] == ["gpt-4o-mini"]
    [row] = stored_rows(tracker)
    assert row["model"] == "openai/gpt-4o-mini" and row["user_id"] == USER
    assert reservations(tracker) == 0


def test_a_fallback_that_does_not_fit_either_refuses(make_tracker, database_url, server):
    """mini has its own exhausted per-model rule: the run is refused with the first model's reason."""
    extra = {"scope": "user", "metric": "tokens", "max": 1_000, "window": "1d", "calendar": True, "model": "mini"}
    tracker = make_tracker(database_url, config(**budget(fallback="mini", **extra)))
    seed(tracker, dict(user_id=USER, model="openai/gpt-4o-mini", prompt_tokens=900, completion_tokens=0))
    with pytest.raises(TokenLimitExceeded) as refused:
        ask(tracker, server)
    assert refused.value.decision.fallback_model is None and refused.value.decision.metric == "cost"
    assert server.requests == [] and reservations(tracker) == 0


def test_a_run_that_fits_keeps_its_model(make_tracker, sqlite_url, server):
    """Within the budget the fallback is not used."""
    tracker = make_tracker(sqlite_url, config(**budget(fallback="mini")))
    with dspy.context(lm=server.lm("openai/gpt-4o"), callbacks=[tracker]):
        with tracker.guard(USER, model="big", estimate=100) as decision:
            dspy.Predict("question -> answer")(question="small")
    assert decision.fallback_model is None
    assert [r.body["model"] for r in server.requests] == ["gpt-4o"]
