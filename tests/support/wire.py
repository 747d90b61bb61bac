"""Helpers shared by the tests that run real DSPy programs: what the server sent, and what a row must say about it."""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import dspy

from dspy_tokens.testing import RequestLog

# gpt-4o-mini in the price map bundled with DSPy (offline, LITELLM_LOCAL_MODEL_COST_MAP=True), USD per token.
GPT4O_MINI = {"input": Decimal("1.5e-07"), "output": Decimal("6e-07"), "cache_read": Decimal("7.5e-08")}
# gpt-4o, for pricing by the provider's reported model.
GPT4O = {"input": Decimal("2.5e-06"), "output": Decimal("1e-05"), "cache_read": Decimal("1.25e-06")}

TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")


def sent(request: RequestLog) -> dict:
    """The usage one answered request carried, as the five stored token columns."""
    usage = request.usage or {}
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0),
    }


def tokens(row: dict) -> dict:
    """The five token columns of a stored row."""
    return {column: row[column] for column in TOKEN_COLUMNS}


def answered(server) -> list[RequestLog]:
    """The requests the server answered (HTTP 200), in arrival order."""
    return [r for r in server.requests if r.status == 200]


def hand_cost(usage: dict, rates: dict) -> Decimal:
    """Cost computed by hand: uncached input, cache reads at their rate, output (reasoning included) at output rate."""
    cached = usage["cached_tokens"]
    return ((usage["prompt_tokens"] - cached) * rates["input"] + cached * rates["cache_read"]
            + usage["completion_tokens"] * rates["output"])


def assert_rows_match_requests(rows: list[dict], server) -> None:
    """Every answered request has exactly one row carrying exactly its usage (as multisets)."""
    expected = Counter(tuple(sent(r).values()) for r in answered(server))
    got = Counter(tuple(tokens(row).values()) for row in rows if row["usage_reported"])
    assert got == expected


def text_of(request: RequestLog) -> str:
    """Every message of a request's prompt, as one text."""
    return "\n".join(str(m.get("content")) for m in (request.body or {}).get("messages", []))


def request_for(server, marker: str) -> RequestLog:
    """The single answered request whose prompt contains ``marker``."""
    found = [r for r in answered(server) if marker in text_of(r)]
    assert len(found) == 1, f"{len(found)} requests contain {marker!r}"
    return found[0]


def question(i: int) -> str:
    """A question whose prompt has a distinct length (so distinct token counts) and a unique marker."""
    return f"item{i:02d} " + "why " * (i + 1)


def marker(i: int) -> str:
    """The unique marker of :func:`question` ``i``."""
    return f"item{i:02d} "


def ask(tracker, server, n: int, start: int = 0, **context) -> list[str]:
    """Run ``n`` Predict calls (questions ``start`` .. ``start + n - 1``) through the tracker; returns the answers."""
    from dspy_tokens import usage_context

    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[tracker]), usage_context(**context):
        return [predict(question=question(i)).answer for i in range(start, start + n)]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def by_session(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by session id, each session's calls in call-index order."""
    sessions: dict[str, list[dict]] = {}
    for row in rows:
        sessions.setdefault(row["session_id"], []).append(row)
    for calls in sessions.values():
        calls.sort(key=lambda r: r["call_index"])
    return sessions


class Tagged(dspy.Module):
    """Runs ``inner`` on a question inside ``usage_context(feature=<its marker>)``, so rows name their question."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, question: str, tag: str):
        from dspy_tokens import usage_context

        with usage_context(feature=tag):
            return self.inner(question=question)


__all__ = ["GPT4O_MINI", "GPT4O", "sent", "tokens", "answered", "hand_cost", "assert_rows_match_requests",
           "request_for", "question", "marker", "ask", "wait_until", "by_session", "Tagged"]
