"""The demo's DSPy program (Predict, ChainOfThought, ReAct with a tool), run against a local OpenAI-compatible
server and tracked into the database; then a per-session and per-user usage table."""

from __future__ import annotations

import os
from datetime import datetime, timezone

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before DSPy prices anything: stay offline

import dspy  # noqa: E402

from dspy_tokens import TokenTracker, usage_context  # noqa: E402
from dspy_tokens.store import redact, sqlite_path  # noqa: E402
from dspy_tokens.testing import FakeLLMServer, Reply, dspy_reply  # noqa: E402

from .tables import render_table  # noqa: E402

USERS = ((111111111111111111, 900000000000000001, "alice"), (222222222222222222, 900000000000000001, "bob"))


def weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny and 21°C in {city}."


class Assistant(dspy.Module):
    """Classify a question, think about it, and use a tool: three DSPy module kinds in one run."""

    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("question -> topic")
        self.think = dspy.ChainOfThought("question, topic -> answer")
        self.agent = dspy.ReAct("question -> answer", tools=[weather], max_iters=3)

    def forward(self, question: str):
        topic = self.classify(question=question).topic
        draft = self.think(question=question, topic=topic).answer
        return self.agent(question=f"{question} (draft: {draft})")


def run_demo(database: str, echo=print) -> TokenTracker:
    started = datetime.now(timezone.utc)
    with FakeLLMServer(cached_tokens=16, reasoning_tokens=4, delay=0.01) as server:
        tracker = TokenTracker(database)
        lm = server.lm("openai/gpt-4o-mini")
        program = Assistant()
        echo(f"Local OpenAI-compatible server: {server.url}; recording into {tracker.database_url}")
        with dspy.context(lm=lm, callbacks=[tracker]):
            for user_id, guild_id, name in USERS:
                # The ReAct step calls the weather tool once, then finishes.
                server.enqueue(Reply(), Reply(), Reply(content=dspy_reply({
                    "next_thought": "Check the weather.", "next_tool_name": "weather",
                    "next_tool_args": '{"city": "Lisbon"}'})))
                with usage_context(user_id=user_id, guild_id=guild_id, feature="demo"):
                    answer = program(question=f"{name} asks: what should I wear in Lisbon today?").answer
                echo(f"  {name} (user {user_id}): {answer}")
        tracker.flush()
    echo("")
    echo(usage_tables(tracker, since=started))
    return tracker


def usage_tables(tracker: TokenTracker, since: datetime | None = None, limit: int = 20) -> str:
    """The per-session and per-user tables the demo ends with (the sessions since ``since``), from the report API,
    then the commands that look further."""
    names = {user_id: name for user_id, _, name in USERS}

    def who(user_id) -> str:
        return "-" if user_id is None else f"{names.get(user_id, '?')} ({user_id})"

    sessions = tracker.breakdown("session", since=since, limit=limit)
    owners = {g.key: next((call["user_id"] for call in tracker.session(g.key)), None) for g in sessions}
    users = sorted(tracker.breakdown("user"), key=lambda g: -g.total_tokens)[:limit]
    file = sqlite_path(tracker.database_url)
    database = str(file) if file is not None else redact(tracker.database_url)
    hint = [f"dspy-tokens session {sessions[0].key} -d {database}   # one run, call by call"] if sessions else []
    return "\n\n".join([
        render_table(("session", "user", "started (UTC)", "calls", "total tokens", "cost"),
                     [(g.key, who(owners[g.key]), f"{g.first_at:%H:%M:%S}", g.calls, g.total_tokens, g.cost_usd)
                      for g in sessions], "Usage per session (this run, latest first)"),
        render_table(("name", "user", "calls", "prompt", "completion", "total tokens", "cost"),
                     [(names.get(g.key, "-"), None if g.key is None else str(g.key), g.calls, g.prompt_tokens,
                       g.completion_tokens, g.total_tokens, g.cost_usd) for g in users],
                     "Usage per user (every run so far)"),
        "\n".join(["Look further:", *hint, f"dspy-tokens report -d {database}", f"dspy-tokens top -d {database}"]),
    ])
