"""Budget alerts (models.json ``"alerts"``): each (rule, scope id, window period, threshold) fires exactly once
whatever the number of processes, to ``tracker.on_alert`` hooks and to a webhook that is retried and pings nobody."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dspy
import pytest

from dspy_tokens import BudgetAlert, usage_context
from tests.support.limits import USER, config, seed
from tests.support.reliability import spawn


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 standing in for a Discord/Slack webhook; answers the first ``fail_first``
    POSTs with 500."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.posts.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.posts

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = WebhookReceiver(fail_first=1)
    yield made
    made.close()


def test_alerts_fire_once_across_two_processes(database_url, receiver, tmp_path):
    """Two processes check the same user (4 threads each) at 85% of the limit at the same moment: 50% and 80%
    fire once in all, one POST each (the first POST is answered 500 and retried), mentioning nobody."""
    document = {"user_limit": 1000, "alerts": {"thresholds": [0.5, 0.8, 1.0], "webhook_url": receiver.url}}
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config
    seeder = TokenTracker(database_url, parse_config(document, "models.json"), spill_dir=tmp_path / "seed")
    seed(seeder, dict(user_id=USER, prompt_tokens=850, completion_tokens=0))
    seeder.close()
    start_at = str(time.time() + 4)
    children = [spawn("alerts", database_url, str(tmp_path / f"spill{i}"), json.dumps(document), str(USER),
                      start_at, "10") for i in range(2)]
    fired = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        fired += json.loads(out.strip().splitlines()[-1])["thresholds"]
    assert sorted(fired) == [0.5, 0.8]
    posts = receiver.wait_for(2)
    time.sleep(0.3)  # a duplicate would arrive now
    assert len(posts) == 2 and receiver.attempts == 3  # one retry after the 500
    assert sorted("50%" in p["content"] for p in posts) == [False, True]
    for post in posts:
        assert post["allowed_mentions"] == {"parse": []}
        assert post["text"] == post["content"] and f"user {USER}" in post["content"]


def test_on_alert_through_a_real_dspy_program(make_tracker, sqlite_url, server):
    """A user's tracked DSPy calls (no guard) cross 50%, 80% and 100% of a daily calendar limit: each threshold
    reaches the hook once, as a typed BudgetAlert, at the next check."""
    tracker = make_tracker(sqlite_url, config(limits=[{"scope": "user", "metric": "requests", "max": 10,
                                                       "window": "1d", "calendar": True,
                                                       "alerts": {"thresholds": [0.5, 0.8, 1.0]}}]))
    got: list[BudgetAlert] = []
    tracker.on_alert(got.append)
    predict, seen = dspy.Predict("question -> answer"), []
    for i in range(10):
        with dspy.context(lm=server.lm(), callbacks=[tracker]), usage_context(user_id=USER):
            predict(question=f"question {i}")
        tracker.flush()
        tracker.check(USER, estimate=0)
        tracker.check(USER, estimate=0)  # a second check at the same usage fires nothing new
        seen.append([a.threshold for a in got])
    assert seen[3] == [] and seen[4] == [0.5] and seen[7] == [0.5, 0.8] and seen[9] == [0.5, 0.8, 1.0]
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [(a.used, a.limit) for a in got] == [(5, 10), (8, 10), (10, 10)]
    for alert in got:
        assert isinstance(alert, BudgetAlert) and alert.scope == "user" and alert.scope_id == USER
        assert alert.rule == "limits[user.requests.1d]" and alert.window_start == today
        with pytest.raises(AttributeError):
            alert.used = 0  # frozen


def test_a_new_window_period_fires_again(make_tracker, sqlite_url):
    """A daily dollar budget alerts at 80% today, again tomorrow; Decimal dollars in the alert."""
    tracker = make_tracker(sqlite_url, config(daily_cost_limit="1.00", alerts={"thresholds": [0.8]}))
    got: list[BudgetAlert] = []
    tracker.on_alert(got.append)
    today = datetime.now(timezone.utc)
    tomorrow = today + timedelta(days=1)
    seed(tracker, dict(user_id=USER, cost_usd=Decimal("0.85"), created_at=today))
    tracker.check(USER, estimate=0)
    tracker.check(USER, estimate=0)
    seed(tracker, dict(user_id=USER, cost_usd=Decimal("0.90"), created_at=tomorrow))
    tracker.check(USER, estimate=0, now=tomorrow)
    tracker.check(USER, estimate=0, now=tomorrow)
    assert [(a.rule, a.used, a.limit) for a in got] == [("daily_cost_limit", Decimal("0.85"), Decimal("1")),
                                                        ("daily_cost_limit", Decimal("0.9"), Decimal("1"))]
    assert got[1].window_start - got[0].window_start == timedelta(days=1)
    assert "$0.90 of $1.00" in got[1].text()


def test_a_failing_hook_or_dead_webhook_never_reaches_the_caller(make_tracker, sqlite_url):
    """The check returns its decision even when a hook raises and the webhook refuses connections."""
    tracker = make_tracker(sqlite_url, config(user_limit=100, alerts={"webhook_url": "http://127.0.0.1:9/x"}))
    tracker.on_alert(lambda alert: 1 / 0)
    seed(tracker, dict(user_id=USER, prompt_tokens=60, completion_tokens=0))
    started = time.monotonic()
    decision = tracker.check(USER, estimate=0)
    assert decision.allowed and decision.used == 60 and time.monotonic() - started < 2
