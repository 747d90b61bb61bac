"""The read API over a real socket: every number equals what the stored rows say; ids and money are strings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.support.web import BIG_USER, MODELS, client, totals


def today() -> datetime:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


class TestUsage:
    def test_stats_is_the_seeds_shape_with_totals_and_features_equal_to_the_rows(self, served, seeded):
        """GET /api/usage/stats?period=today: the budget-guard plan's document (plus unknown-cost calls, cache hits
        and errors), each number summed from today's stored rows; money a decimal string."""
        rows = seeded.between(today())
        body = client(served).get("/api/usage/stats", params={"period": "today"}).json()
        expected = totals(rows)
        assert body["period"] == "today" and body["start_date"] == today().date().isoformat()
        assert body["total_calls"] == expected["calls"] and body["total_tokens"] == expected["total_tokens"]
        assert Decimal(body["total_cost"]) == expected["cost_usd"] and isinstance(body["total_cost"], str)
        assert body["unknown_cost_calls"] == expected["unknown_cost_calls"] == 2  # the unpriced model, per user
        assert body["errors"] == 0 and body["cache_hits"] == 0
        by_feature = {f["feature"]: f for f in body["by_feature"]}
        for feature in ("chat", "search"):
            mine = totals([r for r in rows if r["feature"] == feature])
            assert (by_feature[feature]["calls"], by_feature[feature]["tokens"]) == (mine["calls"],
                                                                                   mine["total_tokens"])
            assert Decimal(by_feature[feature]["cost"]) == mine["cost_usd"]
        assert set(body) == {"period", "start_date", "total_calls", "total_tokens", "total_cost", "by_feature",
                             "unknown_cost_calls", "cache_hits", "errors"}

    @pytest.mark.parametrize("params, pick", [
        pytest.param({"period": "all"}, lambda r: True, id="all"),
        pytest.param({"period": "today", "user_id": str(BIG_USER)}, lambda r: r["user_id"] == BIG_USER, id="user"),
        pytest.param({"period": "all", "model": MODELS[1]}, lambda r: r["model"] == MODELS[1], id="model"),
        pytest.param({"period": "all", "feature": "search", "guild_id": "7"},
                     lambda r: r["feature"] == "search" and r["guild_id"] == 7, id="feature+guild"),
    ])
    def test_usage_is_a_summary_of_exactly_the_filtered_rows(self, served, seeded, params, pick):
        """GET /api/usage takes the reports API's periods and filters and answers a Summary."""
        rows = [r for r in seeded.between(today() if params["period"] == "today" else None) if pick(r)]
        body = client(served).get("/api/usage", params=params).json()
        expected = totals(rows)
        assert {k: body[k] for k in ("calls", "total_tokens", "prompt_tokens", "unknown_cost_calls",
                                     "active_users")} == {k: v for k, v in expected.items() if k != "cost_usd"}
        assert Decimal(body["cost_usd"]) == expected["cost_usd"]

    def test_daily_has_one_entry_per_day_split_by_model(self, served, seeded):
        """GET /api/usage/daily: per-day totals equal the rows of that day, and the model parts add up to them."""
        body = client(served).get("/api/usage/daily", params={"since": (today() - timedelta(days=6)).isoformat()}
                                  ).json()
        expected = seeded.daily()
        assert {d["key"]: d["total_tokens"] for d in body["days"]} == {k.isoformat(): v for k, v in expected.items()}
        assert body["split"] == "model"
        sums: dict = {}
        for part in body["parts"]:
            day, model = part["key"]
            assert model in MODELS
            sums[day] = sums.get(day, 0) + part["total_tokens"]
        assert sums == {d["key"]: d["total_tokens"] for d in body["days"]}

    def test_models_and_features_break_the_period_down(self, served, seeded):
        """GET /api/usage/models and /features: one line per model/feature, numbers from the rows."""
        api = client(served)
        models = {g["key"]: g for g in api.get("/api/usage/models", params={"period": "all"}).json()["models"]}
        assert set(models) == set(MODELS)
        for model, group in models.items():
            mine = totals([r for r in seeded.rows if r["model"] == model])
            assert (group["calls"], group["total_tokens"], Decimal(group["cost_usd"])) == (
                mine["calls"], mine["total_tokens"], mine["cost_usd"])
        assert models[MODELS[2]]["unknown_cost_calls"] == totals(
            [r for r in seeded.rows if r["model"] == MODELS[2]])["unknown_cost_calls"] > 0
        features = api.get("/api/usage/features", params={"period": "all"}).json()["features"]
        assert {g["key"]: g["calls"] for g in features} == {
            f: sum(1 for r in seeded.rows if r["feature"] == f) for f in ("chat", "search")}

    @pytest.mark.parametrize("kind, column", [("users", "user_id"), ("guilds", "guild_id")])
    def test_top_users_and_guilds_rank_by_tokens_with_ids_as_strings(self, served, seeded, kind, column):
        """GET /api/usage/users|guilds: the n biggest by tokens, ids as strings that keep every digit."""
        body = client(served).get(f"/api/usage/{kind}", params={"period": "all", "n": 3, "by": "tokens"}).json()
        spent: dict = {}
        for r in seeded.rows:
            spent[r[column]] = spent.get(r[column], 0) + (r["total_tokens"] or 0)
        ranked = sorted(((k, v) for k, v in spent.items() if k is not None), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert [(g["key"], g["total_tokens"]) for g in body[kind]] == [(str(k), v) for k, v in ranked]
        assert all(isinstance(g["key"], str) for g in body[kind])


class TestSessions:
    def test_a_session_lists_its_calls_in_order_with_string_ids(self, served, seeded):
        """GET /api/sessions/{id}: the session's calls in call order; row, user and guild ids are strings."""
        session = seeded.sessions[0]
        body = client(served).get(f"/api/sessions/{session}").json()
        mine = sorted((r for r in seeded.rows if r["session_id"] == session), key=lambda r: r["call_index"])
        assert [c["call_index"] for c in body["calls"]] == [r["call_index"] for r in mine]
        assert [c["total_tokens"] for c in body["calls"]] == [r["total_tokens"] for r in mine]
        assert body["calls"][0]["user_id"] == str(BIG_USER) and body["calls"][0]["id"] == str(mine[0]["id"])

    def test_an_unknown_session_is_404(self, served):
        """A session without calls says so."""
        response = client(served).get("/api/sessions/no-such-session")
        assert response.status_code == 404 and "no-such-session" in response.json()["detail"]

    def test_recent_sessions_are_the_latest_first(self, served, seeded):
        """GET /api/sessions: the sessions with the latest calls, latest first, with their totals."""
        body = client(served).get("/api/sessions", params={"limit": 3}).json()["sessions"]
        last_call: dict = {}
        for r in seeded.rows:
            last_call[r["session_id"]] = max(last_call.get(r["session_id"], r["created_at"]), r["created_at"])
        latest = sorted(last_call, key=lambda s: last_call[s], reverse=True)[:3]
        assert [s["key"] for s in body] == latest
        assert body[0]["calls"] == sum(1 for r in seeded.rows if r["session_id"] == latest[0])


class TestLimitsAndErrors:
    def test_limits_answers_a_decision(self, served):
        """GET /api/limits: the LimitDecision as JSON (no models.json here: no limits apply)."""
        body = client(served).get("/api/limits", params={"user_id": str(BIG_USER)}).json()
        assert body["allowed"] is True and body["limit"] is None and body["remaining"] is None
        assert body["message"] == "No usage limits apply."

    @pytest.mark.parametrize("params, says", [
        ({"period": "fortnight"}, "fortnight"),
        ({"since": "yesterday"}, "since"),
        ({"user_id": "-5"}, "user_id"),
    ])
    def test_a_bad_parameter_is_a_422_that_says_which(self, served, params, says):
        """Misuse is answered with what was wrong, never with a guess."""
        response = client(served).get("/api/usage", params=params)
        assert response.status_code == 422 and says in response.text

    def test_openapi_docs_are_served(self, served):
        """The OpenAPI document lists the endpoints; /api/docs is the interactive page."""
        api = client(served, token=None)
        paths = api.get("/api/openapi.json").json()["paths"]
        assert {"/api/usage/stats", "/api/usage", "/api/usage/daily", "/api/usage/models", "/api/usage/users",
                "/api/usage/guilds", "/api/sessions/{session_id}", "/api/limits", "/api/export",
                "/api/cleanup"} <= set(paths)
        assert api.get("/api/docs").status_code == 200
