"""``python -m benchmarks.discord_first_reply [--rounds N]``: the first reply of ``/ask`` with a slow database.

Discord drops an interaction whose first response comes more than 3 s after it was created. ``@enforce_limits``
decides (database round trips) before anything is sent; this measures, for 12 concurrent ``/ask`` through
discord.py's real dispatch (the fake Discord of ``dspy_tokens_discord.testing``, only HTTP replaced), how long
after each interaction its first response (answer, refusal or defer) was sent, and how many missed 3 s. The
database is a real SQLite file; only the latency is simulated: every statement (BEGIN, queries, COMMIT) waits a
50 ms or 200 ms round trip first (``dspy_tokens.store.latency.database_latency``). ``before``: the automatic defer
off (``defer_after=None``, the behaviour before it existed); ``after``: the default (defer at 1.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # pricing offline, before dspy is imported

CONCURRENT = 12
DEADLINE = 3.0
LATENCIES = (0.05, 0.2)


def _bot(tracker, lm, defer_after):
    import discord
    import dspy
    from discord.ext import commands
    from dspy_tokens_discord import enforce_limits

    program = dspy.Predict("question -> answer")
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), help_command=None)

    @bot.tree.command(name="ask", description="Ask the model")
    @enforce_limits(tracker, defer_after=defer_after)
    async def ask(interaction: discord.Interaction, question: str):
        await interaction.response.defer(thinking=True)
        with dspy.context(lm=lm):
            answer = (await program.acall(question=question)).answer
        await interaction.followup.send(answer)

    @bot.tree.error
    async def quiet(interaction, error):  # a dead interaction is what is being counted, not logged
        pass

    return bot


async def _round(work: Path, lm, latency: float, defer_after, tag: str) -> list[float]:
    """One burst of 12 concurrent /ask from 12 users: seconds from each interaction to its first response."""
    from dspy_tokens_discord.testing import FakeDiscord, gateway, slash_payload

    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config
    from dspy_tokens.store.latency import database_latency

    config = parse_config({"user_limit": 10**7, "guild_limit": 10**9}, "benchmark")
    tracker = TokenTracker(f"sqlite:///{work / f'{tag}.db'}", config, spill_dir=work / f"{tag}-spill")
    try:
        tracker.check(user_id=1, guild_id=None)  # the schema is in place, as at every start but the first
        async with FakeDiscord(_bot(tracker, lm, defer_after), response_deadline=DEADLINE) as fake:
            users = [fake.member(f"user{i}") for i in range(CONCURRENT)]
            payloads = [slash_payload("ask", {"question": f"{tag} {i}"}, user=u.id, user_name=u.name,
                                      guild_id=fake.guild_id, channel_id=fake.channel("general"))
                        for i, u in enumerate(users)]
            fake.wire.clear()
            with database_latency(latency):
                for payload in payloads:
                    gateway.deliver_interaction(fake.bot, payload)
                await gateway.settle()
            first = {}
            for sent in fake.wire.sent:
                if sent.is_initial_response:
                    first.setdefault(sent.path.split("/")[2], sent)
            return [first[p["id"]].seconds_after(p["id"]) for p in payloads if p["id"] in first]
    finally:
        tracker.close()


def measure(rounds: int) -> list[dict]:
    from dspy_tokens.testing import FakeLLMServer

    results = []
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer() as server:
        lm = server.lm("openai/gpt-4o-mini")
        for latency in LATENCIES:
            for name, defer_after in (("before", None), ("after", 1.5)):
                times: list[float] = []
                for r in range(rounds):
                    times += asyncio.run(_round(Path(tmp), lm, latency, defer_after, f"{name}-{latency}-{r}"))
                late = sum(t > DEADLINE for t in times)
                results.append({"rtt_ms": latency * 1000, "variant": name, "median_s": statistics.median(times),
                                "max_s": max(times), "late": late, "total": len(times)})
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.discord_first_reply",
                                     description="first-reply time of 12 concurrent /ask with a slow database")
    parser.add_argument("--rounds", type=int, default=1, help="bursts per variant (default 1)")
    args = parser.parse_args(argv)
    print(f"{CONCURRENT} concurrent /ask, SQLite, deadline {DEADLINE:.0f} s; first reply = answer, refusal or defer")
    print(f"{'RTT':>7} {'variant':<8} {'median':>8} {'max':>7}  missed 3 s")
    for row in measure(args.rounds):
        print(f"{row['rtt_ms']:>5.0f}ms {row['variant']:<8} {row['median_s']:>7.2f}s {row['max_s']:>6.2f}s  "
              f"{row['late']}/{row['total']}")


if __name__ == "__main__":
    main()
