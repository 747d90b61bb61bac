"""The demo's DSPy program (Predict, ChainOfThought, ReAct with a tool), run against a local OpenAI-compatible
server and tracked into the database; then a per-session and per-user usage table."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before DSPy prices anything: stay offline

import dspy  # noqa: E402

from dspy_tokens import TokenTracker, usage_context  # noqa: E402
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


def run_demo(database: str | None = None, echo=print) -> TokenTracker:
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
                echo(f"  {name}: {answer}")
        tracker.flush()
    echo("")
    echo(usage_tables(tracker))
    return tracker


def usage_tables(tracker: TokenTracker, limit: int = 20) -> str:
    """The per-session and per-user tables the demo ends with, from the report API."""
    sessions = tracker.breakdown("session", limit=limit)
    users = sorted(tracker.breakdown("user"), key=lambda g: -g.total_tokens)[:limit]
    return "\n\n".join([
        render_table(("session", "started (UTC)", "calls", "prompt", "completion", "total", "cost"),
                     [(str(g.key)[:12], f"{g.first_at:%H:%M:%S}", g.calls, g.prompt_tokens, g.completion_tokens,
                       g.total_tokens, g.cost_usd) for g in sessions], "Usage per session (latest first)"),
        render_table(("user", "calls", "prompt", "completion", "total tokens", "cost"),
                     [(None if g.key is None else str(g.key), g.calls, g.prompt_tokens, g.completion_tokens,
                       g.total_tokens, g.cost_usd) for g in users], "Usage per user"),
    ])
