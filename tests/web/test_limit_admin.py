"""Limit management over HTTP (a real socket): a change made through the app is stored in the database, so
another tracker on it applies it at its next check; admin token only; every change in the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dspy_tokens.web import create_app
from tests.support.limits import config, seed
from tests.support.web import ADMIN_TOKEN, BIG_USER, READ_TOKEN, ServedApp, client

USED = 600  # tokens the user has used in the window
RULES = dict(user_limit=10_000)


def serve(make_tracker, url):
    bot = make_tracker(url, config(**RULES))
    seed(bot, dict(user_id=BIG_USER, prompt_tokens=500, completion_tokens=100))
    return bot, ServedApp(create_app(url, admin_token=ADMIN_TOKEN, read_token=READ_TOKEN, config=config(**RULES)))


@pytest.fixture
def world(make_tracker, database_url):
    """The app over a database URL (it opens its own reader), and a second tracker on the same database that
    decides (as another process would); the user has used 600 of 10,000 tokens. On each backend."""
    bot, app = serve(make_tracker, database_url)
    with app as served:
        yield served, bot


@pytest.fixture
def sqlite_world(make_tracker, sqlite_url):
    """The same world on SQLite only (for what does not depend on the backend)."""
    bot, app = serve(make_tracker, sqlite_url)
    with app as served:
        yield served, bot


def path(scope="user", scope_id=BIG_USER, tail=""):
    return f"/api/limits/{scope}/{scope_id}{tail}"


class TestChanges:
    def test_a_limit_set_over_http_refuses_in_another_tracker_and_clearing_restores(self, world):
        """PUT sets 650 tokens for the user: the other tracker refuses a 100-token request under that rule
        (models.json's 10,000 no longer applies to this id); DELETE brings models.json's rule back."""
        served, bot = world
        assert bot.check(BIG_USER, estimate=100).allowed
        response = client(served).put(path(), json={"tokens": 650})
        assert response.status_code == 200, response.text
        change = response.json()["change"]
        assert change["action"] == "set" and change["scope"] == "user" and change["scope_id"] == str(BIG_USER)
        assert change["detail"] == {"tokens": 650} and change["changed_by"] == "web:127.0.0.1"
        refused = bot.check(BIG_USER, estimate=100)
        assert not refused.allowed and refused.limit == 650 and refused.used == USED
        assert bot.check(42, estimate=100).allowed  # another user: models.json's limit as before
        assert client(served).delete(path()).status_code == 200
        restored = bot.check(BIG_USER, estimate=100)
        assert restored.allowed and restored.limit == 10_000

    def test_a_dollar_limit_over_a_window(self, world):
        """cost_usd is a decimal string; the rule counts dollars over the given window."""
        served, bot = world
        response = client(served).put(path(), json={"cost_usd": "0.000001", "window": "24h"})
        assert response.status_code == 200, response.text
        assert response.json()["change"]["detail"] == {"cost_usd": "0.000001", "window": "24h"}
        refused = bot.check(BIG_USER, estimate=100, model="openai/gpt-4o-mini")
        assert not refused.allowed and refused.metric == "cost" and refused.limit == Decimal("0.000001")

    def test_reset_forgets_the_usage_before_it_for_limits_only(self, world):
        """POST .../reset: the 600 tokens stop counting toward the limits (a 650 limit admits 100 again); the
        reports still show them."""
        served, bot = world
        client(served).put(path(), json={"tokens": 650})
        assert not bot.check(BIG_USER, estimate=100).allowed
        response = client(served).post(path(tail="/reset"))
        assert response.status_code == 200 and response.json()["change"]["action"] == "reset"
        after = bot.check(BIG_USER, estimate=100)
        assert after.allowed and after.used == 0
        seed(bot, dict(user_id=BIG_USER, prompt_tokens=40, completion_tokens=0))
        assert bot.check(BIG_USER, estimate=100).used == 40  # usage after the reset counts
        assert bot.summary("all", user_id=BIG_USER).total_tokens == USED + 40

    def test_bypass_turns_limits_off_and_on(self, world):
        """PUT .../bypass {"on": true}: a request far over every limit is admitted (bypassed); false: refused."""
        served, bot = world
        assert client(served).put(path(tail="/bypass"), json={"on": True}).status_code == 200
        free = bot.check(BIG_USER, estimate=1_000_000)
        assert free.allowed and free.bypassed
        assert client(served).put(path(tail="/bypass"), json={"on": False}).status_code == 200
        assert not bot.check(BIG_USER, estimate=1_000_000).allowed

    def test_history_lists_who_did_what_when_newest_first(self, world):
        """GET /api/limits/history: every change, with the client, the action, the values and a UTC time; a
        scope filter narrows it; ids are strings."""
        served, bot = world
        api = client(served)
        started = datetime.now(timezone.utc) - timedelta(seconds=1)
        api.put(path(), json={"tokens": 650, "requests": 5})
        api.post(path(tail="/reset"))
        api.put(path(scope="guild", scope_id=7), json={"tokens": 1})
        api.put(path(tail="/bypass"), json={"on": True})
        api.delete(path())
        changes = api.get("/api/limits/history").json()["changes"]
        assert [(c["action"], c["scope"], c["scope_id"]) for c in changes] == [
            ("clear", "user", str(BIG_USER)), ("bypass", "user", str(BIG_USER)), ("set", "guild", "7"),
            ("reset", "user", str(BIG_USER)), ("set", "user", str(BIG_USER))]
        assert changes[-1]["detail"] == {"tokens": 650, "requests": 5} and changes[1]["detail"] == {"on": True}
        assert all(c["changed_by"] == "web:127.0.0.1" and isinstance(c["id"], str) for c in changes)
        times = [datetime.fromisoformat(c["changed_at"]) for c in changes]
        assert times == sorted(times, reverse=True) and all(started <= t <= datetime.now(timezone.utc)
                                                            for t in times)
        mine = api.get("/api/limits/history", params={"scope": "user", "scope_id": str(BIG_USER), "n": 2}).json()
        assert [c["action"] for c in mine["changes"]] == ["clear", "bypass"]
        assert [c.action for c in bot.limit_changes("guild")] == ["set"]  # the same trail, from Python


class TestWhoMayChange:
    CALLS = (("put", path(), {"tokens": 0}), ("delete", path(), None), ("post", path(tail="/reset"), None),
             ("put", path(tail="/bypass"), {"on": True}), ("get", "/api/limits/history", None))

    @pytest.mark.parametrize("token", [READ_TOKEN, "wrong-token-0123456789abcdef", None], ids=["read", "wrong",
                                                                                              "none"])
    def test_only_the_admin_token_changes_anything(self, sqlite_world, token):
        """The read token, a wrong one or none: a bare 401 on every call, and nothing changed or recorded."""
        served, bot = sqlite_world
        for method, url, body in self.CALLS:
            response = client(served, token).request(method, url, json=body)
            assert response.status_code == 401 and response.json() == {"detail": "Unauthorized"}, (method, url)
        assert bot.check(BIG_USER, estimate=100).allowed
        assert bot.limit_changes() == []


class TestBadInput:
    @pytest.mark.parametrize("url, body, says", [
        (path(scope="planet"), {"tokens": 5}, "scope must be one of global, user, guild, channel, feature"),
        (path(scope_id="-5"), {"tokens": 5}, "scope_id must be a 64-bit"),
        (path(scope="global", scope_id=3), {"tokens": 5}, "must be 0 or left out for the global scope"),
        (path(), {"tokens": -5}, "greater than or equal to 0"),
        (path(), {"cost_usd": "-1"}, "cost_usd must be a dollar amount >= 0"),
        (path(), {"cost_usd": 1.5}, "valid string"),
        (path(), {"tokens": 5, "window": "fortnight"}, "window must be"),
        (path(), {}, "give tokens=, cost_usd=, requests= or window="),
        (path(), {"tokens": 5, "max": 3}, "max"),
        (path(tail="/bypass"), {"on": "maybe"}, "valid boolean"),
    ])
    def test_a_bad_change_is_a_422_that_says_what_and_changes_nothing(self, sqlite_world, url, body, says):
        served, bot = sqlite_world
        response = client(served).put(url, json=body)
        assert response.status_code == 422 and says in response.text, response.text
        assert bot.limit_changes() == [] and bot.check(BIG_USER, estimate=100).allowed

    def test_history_of_an_unknown_scope_is_a_422(self, sqlite_world):
        served, _ = sqlite_world
        response = client(served).get("/api/limits/history", params={"scope": "planet"})
        assert response.status_code == 422 and "scope must be one of" in response.text


class TestGuardedRuns:
    def test_a_limit_set_over_http_stops_a_strict_run_before_the_call_that_does_not_fit(self, sqlite_world,
                                                                                         server):
        """The run's top-ups (before each LM call) read the run-time limit too: with 600 used and a 3,600-token
        limit set over HTTP (3,000 left), a strict run of ~1,000-token calls makes two and never sends the third."""
        import dspy

        from dspy_tokens import TokenLimitExceeded
        from dspy_tokens.testing import Reply

        served, bot = sqlite_world
        assert client(served).put(path(), json={"tokens": USED + 3_000}).status_code == 200
        server.enqueue(*[Reply(completion_tokens=900) for _ in range(3)])
        with dspy.context(lm=server.lm(max_tokens=900), callbacks=[bot]):
            with pytest.raises(TokenLimitExceeded) as stopped:
                with bot.guard(BIG_USER, estimate=10, strict=True):
                    for i in range(3):
                        dspy.Predict("question -> answer")(question=f"step {i}")
        assert len(server.requests) == 2 and stopped.value.decision.limit == USED + 3_000
        assert bot.flush(10) and bot.check(BIG_USER, estimate=0).used <= USED + 3_000
