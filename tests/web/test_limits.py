"""``/api/limits`` over a real socket: the decision of the shared database, with its forecast and the committed
usage apart from what in-flight guarded runs hold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dspy
import pytest

from dspy_tokens import TokenLimitExceeded
from dspy_tokens.web import create_app
from tests.support.db import stored_rows
from tests.support.limits import USER, config
from tests.support.web import ADMIN_TOKEN, READ_TOKEN, ServedApp, client

LIMIT = 5_000
MODEL = "openai/gpt-4o-mini"
HELD = 1_000


def rules(**extra):
    return config(user_limit=LIMIT, **extra)


class TestDecision:
    def test_limits_shows_the_forecast_and_used_apart_from_reserved(self, make_tracker, database_url, server):
        """Usage of real DSPy calls made just now sets a pace, so the decision forecasts when the limit is reached
        (ISO 8601 UTC); a guarded run still open holds its estimate, shown as ``reserved``, not ``used``."""
        tracker = make_tracker(database_url, rules())
        with dspy.context(callbacks=[tracker], lm=server.lm("openai/gpt-4o-mini")):
            with tracker.guard(USER, estimate=500):
                dspy.Predict("question -> answer")(question="how long does my budget last?")
        used = sum(r["total_tokens"] for r in stored_rows(tracker))
        assert used > 0
        with ServedApp(create_app(database_url, admin_token=ADMIN_TOKEN, read_token=READ_TOKEN,
                                  config=rules())) as served, tracker.guard(USER, estimate=HELD):
            asked = datetime.now(timezone.utc)
            body = client(served, READ_TOKEN).get("/api/limits", params={"user_id": str(USER)}).json()
        assert body["allowed"] is True and body["scope"] == "user" and body["limit"] == LIMIT
        assert body["used"] == used and body["reserved"] == HELD
        assert body["remaining"] == LIMIT - used - HELD
        forecast = datetime.fromisoformat(body["forecast_exhausted_at"])
        assert forecast.utcoffset() == timedelta(0)
        # The pace is the usage of this hour and the two before it, over the time since that span began.
        pace_start = asked.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        elapsed = (asked - pace_start).total_seconds()
        expected = asked + timedelta(seconds=(LIMIT - used - HELD) * elapsed / used)
        assert abs((forecast - expected).total_seconds()) < 2 * (1 + LIMIT / used)  # 2 s of clock between us

    def test_without_usage_there_is_no_forecast(self, make_tracker, sqlite_url):
        """No recent usage, no pace: the forecast is null (not a guess)."""
        make_tracker(sqlite_url, rules())  # creates the schema
        with ServedApp(create_app(sqlite_url, read_token=READ_TOKEN, config=rules())) as served:
            body = client(served, READ_TOKEN).get("/api/limits", params={"user_id": str(USER)}).json()
        assert body["used"] == 0 and body["reserved"] == 0 and body["forecast_exhausted_at"] is None


class TestRefusalMetric:
    def test_refusals_of_two_trackers_are_summed_in_metrics_with_bounded_labels(self, make_tracker, database_url):
        """Guarded runs refused by two trackers on one database (as two processes would be) appear in
        ``dspy_tokens_limit_refusals_total`` of a third (the app's reader), per model, feature and the refusing
        rule's scope and metric; admitted runs and ``check`` (which only reads) add nothing; no id label."""
        from tests.support.limits import GUILD, OTHER_USER, seed
        from tests.web.test_metrics import scrape

        limits = config(user_limit=1_000, limits=[{"scope": "guild", "metric": "requests", "max": 1,
                                                   "window": "24h"}])
        first, second = make_tracker(database_url, limits), make_tracker(database_url, limits)
        seed(first, dict(user_id=USER, prompt_tokens=900, completion_tokens=100))  # the user's tokens are spent
        seed(first, dict(user_id=OTHER_USER, guild_id=GUILD, prompt_tokens=1, completion_tokens=0))  # 1 request

        def refuse(tracker, times, **who):
            for _ in range(times):
                with pytest.raises(TokenLimitExceeded):
                    with tracker.guard(estimate=100, model=MODEL, **who):
                        pass  # pragma: no cover - never entered

        refuse(first, 2, user_id=USER, feature="chat")
        refuse(second, 3, user_id=USER, feature="chat")
        refuse(second, 1, user_id=OTHER_USER, guild_id=GUILD, feature="search")
        assert not first.check(USER, estimate=100, model=MODEL).allowed  # read only: not a refusal
        with first.guard(user_id=OTHER_USER, estimate=100, model=MODEL, feature="search"):
            pass  # admitted (no guild: the requests rule does not apply)
        with ServedApp(create_app(database_url, read_token=READ_TOKEN, config=limits)) as served:
            samples = scrape(served)
        refusals = {labels: value for (name, labels), value in samples.items()
                    if name == "dspy_tokens_limit_refusals_total"}
        assert refusals == {
            (("feature", "chat"), ("metric", "tokens"), ("model", MODEL), ("scope", "user")): 5,
            (("feature", "search"), ("metric", "requests"), ("model", MODEL), ("scope", "guild")): 1,
        }
        counted = {(r.scope, r.metric, r.feature): r.refusals for r in second.limit_refusals()}
        assert counted == {("user", "tokens", "chat"): 5, ("guild", "requests", "search"): 1}
