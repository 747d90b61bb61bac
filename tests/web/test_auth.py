"""Who may see and do what: bearer tokens, pseudonymised ids below admin, bare 401s, no CORS, tokens checked at
start."""

from __future__ import annotations

import pytest

from dspy_tokens import ConfigurationError
from dspy_tokens.web import create_app
from tests.support.web import ADMIN_TOKEN, BIG_USER, READ_TOKEN, ServedApp, client

READ_PATHS = ["/api/usage/stats", "/api/usage", "/api/usage/daily", "/api/usage/models", "/api/usage/users",
              "/api/usage/guilds", "/api/sessions", "/api/sessions/cot-0", "/api/limits", "/metrics"]


class TestTokens:
    @pytest.mark.parametrize("path", READ_PATHS + ["/api/export"])
    @pytest.mark.parametrize("header", [None, "Bearer wrong-token-wrong-token", "Basic " + "x" * 20,
                                        f"Bearer {ADMIN_TOKEN}x"], ids=["missing", "wrong", "not-bearer", "longer"])
    def test_a_wrong_or_missing_token_is_a_bare_401(self, sqlite_served, path, header):
        """No token, a wrong one or another scheme: 401 with WWW-Authenticate and no hint of why."""
        headers = {"Authorization": header} if header else {}
        response = client(sqlite_served, token=None).get(path, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("path", READ_PATHS)
    def test_the_read_token_reads(self, sqlite_served, path):
        """The read token opens every read endpoint."""
        assert client(sqlite_served, READ_TOKEN).get(path).status_code == 200

    @pytest.mark.parametrize("method, path", [("GET", "/api/export"), ("DELETE", "/api/cleanup?older_than_days=30")])
    def test_admin_calls_refuse_the_read_token(self, sqlite_served, method, path):
        """Export and cleanup are admin only: the read token gets the same bare 401."""
        response = client(sqlite_served, READ_TOKEN).request(method, path)
        assert response.status_code == 401 and response.json() == {"detail": "Unauthorized"}

    def test_the_read_token_sees_pseudonyms_and_the_admin_token_sees_ids(self, sqlite_served, sqlite_seeded):
        """Below admin, user/guild ids are replaced by stable pseudonyms (equal across calls, never the id)."""
        top = {"period": "all", "n": 5}
        admin_top = client(sqlite_served).get("/api/usage/users", params=top).json()["users"]
        read_top = client(sqlite_served, READ_TOKEN).get("/api/usage/users", params=top).json()["users"]
        assert str(BIG_USER) in [g["key"] for g in admin_top]
        assert [g["total_tokens"] for g in read_top] == [g["total_tokens"] for g in admin_top]
        shown = [g["key"] for g in read_top]
        assert not set(shown) & {g["key"] for g in admin_top} and all(len(k) == 16 for k in shown)
        again = client(sqlite_served, READ_TOKEN).get("/api/usage/users", params=top).json()["users"]
        assert [g["key"] for g in again] == shown
        calls = client(sqlite_served, READ_TOKEN).get("/api/sessions/cot-0").json()["calls"]
        assert calls[0]["user_id"] == shown[[g["key"] for g in admin_top].index(str(BIG_USER))]
        assert str(BIG_USER) not in client(sqlite_served, READ_TOKEN).get("/api/sessions/cot-0").text

    def test_no_cors_headers_by_default(self, sqlite_served):
        """A cross-origin request, preflight or not, gets no Access-Control-Allow-Origin."""
        api = client(sqlite_served)
        simple = api.get("/api/usage", headers={"Origin": "https://evil.example"})
        preflight = api.options("/api/cleanup", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "DELETE"})
        assert "access-control-allow-origin" not in simple.headers
        assert "access-control-allow-origin" not in preflight.headers

    def test_healthz_needs_no_token_and_says_nothing_about_usage(self, sqlite_served):
        """/healthz: database reachable (and no writer: the app reads through a reader)."""
        response = client(sqlite_served, token=None).get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": True, "writer": None}


class TestOpenApp:
    def test_without_tokens_reads_are_open_with_pseudonyms_and_admin_calls_are_refused(self, sqlite_seeded):
        """No token configured: reads need none (ids pseudonymised), export and cleanup answer 401."""
        with ServedApp(create_app(sqlite_seeded.url)) as running:
            api = client(running, token=None)
            top = api.get("/api/usage/users", params={"period": "all"}).json()["users"]
            assert top and str(BIG_USER) not in [g["key"] for g in top]
            assert api.get("/api/export").status_code == 401
            assert api.delete("/api/cleanup", params={"older_than_days": 1}).status_code == 401


class TestConfiguration:
    @pytest.mark.parametrize("kwargs, says", [
        ({"admin_token": "short"}, "at least 16"),
        ({"read_token": "x" * 8}, "at least 16"),
        ({"admin_token": "s" * 20, "read_token": "s" * 20}, "must differ"),
        ({"admin_token": 12345678901234567890}, "must be a string"),
    ])
    def test_weak_or_confused_tokens_are_refused_at_start(self, sqlite_url, kwargs, says):
        """A token too short to be secret, or the same token for both levels, is a ConfigurationError."""
        with pytest.raises(ConfigurationError, match=says):
            create_app(sqlite_url, **kwargs)
