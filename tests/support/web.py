"""The web tests' world: a usage database seeded through real DSPy calls (plus a few earlier days stored through
the writer's own path), the totals a person should see, and the app served on a real socket."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import dspy
import httpx

from dspy_tokens import usage_context
from tests.support.db import stored_rows
from tests.support.rows import insert, usage_row

BIG_USER, BIG_GUILD = 111111111111111111, 900000000000000001  # past 2**53: a JSON number would lose digits
ADMIN_TOKEN, READ_TOKEN = "admin-token-for-tests-0123456789", "read-token-for-tests-0123456789"
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "openai/acme-mystery")  # the last one has no known price


@dataclass
class Seeded:
    url: str
    rows: list[dict]
    sessions: list[str]  # the ChainOfThought runs' sessions, one each

    def between(self, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        return [r for r in self.rows if (since is None or r["created_at"] >= since)
                and (until is None or r["created_at"] < until)]

    def daily(self, metric: str = "tokens") -> dict[date, object]:
        out: dict[date, object] = {}
        for r in self.rows:
            day = r["created_at"].date()
            value = (r["total_tokens"] or 0) if metric == "tokens" else (r["cost_usd"] or Decimal(0))
            out[day] = out.get(day, 0) + value
        return out


def totals(rows: list[dict]) -> dict:
    """What the cards and summaries must say about these rows."""
    return {"calls": len(rows), "total_tokens": sum(r["total_tokens"] or 0 for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
            "cost_usd": sum((r["cost_usd"] for r in rows if r["cost_usd"] is not None), Decimal(0)),
            "unknown_cost_calls": sum(1 for r in rows if r["cost_usd"] is None and r["error"] is None),
            "active_users": len({r["user_id"] for r in rows if r["user_id"] is not None})}


def seed(tracker, server, url: str, now: datetime | None = None) -> Seeded:
    """Real DSPy programs for two users in two guilds over three models and two features, a ChainOfThought
    session per user, then usage on the three previous UTC days (so the chart has several bars)."""
    predict, think = dspy.Predict("question -> answer"), dspy.ChainOfThought("question -> answer")
    people = ((BIG_USER, BIG_GUILD, "chat"), (42, 7, "search"))
    sessions = []
    with dspy.context(callbacks=[tracker]):
        for i, (user, guild, feature) in enumerate(people):
            for model in MODELS:
                with dspy.context(lm=server.lm(model)), usage_context(user_id=user, guild_id=guild, feature=feature):
                    predict(question=f"{feature} question {i} for {model}")
            with dspy.context(lm=server.lm(MODELS[0])), usage_context(user_id=user, guild_id=guild,
                                                                      feature=feature, session_id=f"cot-{i}"):
                think(question=f"think it through {i}")
                think(question=f"and once more {i}")
            sessions.append(f"cot-{i}")
    stored_rows(tracker)
    midnight = (now or datetime.now(timezone.utc)).replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = []
    for days_ago, (prompt, completion, cost, model) in enumerate(
            ((1200, 300, "0.00036", MODELS[0]), (800, 200, "0.004", MODELS[1]), (500, 100, None, MODELS[2])), 1):
        for hour in (3, 15):
            earlier.append(usage_row(midnight - timedelta(days=days_ago) + timedelta(hours=hour), prompt=prompt,
                                     completion=completion, cost=cost, model=model, user_id=42 + days_ago,
                                     guild_id=7, feature="search", session_id=f"earlier-{days_ago}-{hour}"))
    insert(url, earlier)
    return Seeded(url, stored_rows(tracker), sessions)


class ServedApp:
    """An app served by :func:`dspy_tokens.web.serve_in_background` on 127.0.0.1 (a free port), in an event loop
    on a thread of its own: the way a bot runs it, reached through a real socket."""

    def __init__(self, app):
        self.app = app
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="served-app", daemon=True)

    def _run(self):
        from dspy_tokens.web import serve_in_background

        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                web = await serve_in_background(self.app, port=0)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self.url = web.url
            self._ready.set()
            await self._stop.wait()
            await web.stop()
        asyncio.run(main())

    def __enter__(self) -> "ServedApp":
        self._thread.start()
        assert self._ready.wait(30), "the app did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc):
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def client(served: ServedApp, token: str | None = ADMIN_TOKEN, **kwargs) -> httpx.Client:
    """An HTTP client of the served app, sending ``token`` as a bearer token (None: no Authorization)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=served.url, headers=headers, timeout=30, **kwargs)
