"""``@enforce_limits`` with a rule's fallback, through discord.py's real dispatch: a request over the big model's
budget runs on the fallback model and the user gets a one-line notice naming it."""

from __future__ import annotations

import discord
import dspy
from dspy_tokens_discord import enforce_limits

from tests.discord.support.harness import ALICE
from tests.support.db import stored_rows

MODELS = [{"label": "big", "name": "gpt-4o", "provider": "openai"},
          {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}]
CENT_A_DAY = {"scope": "user", "metric": "cost_usd", "max": "0.01", "window": "1d", "calendar": True}


async def ask_big(make_app, rule: dict):
    """A bot whose /ask-big runs on the configured LM (gpt-4o), guarded for model "big" with a 2,000-token
    estimate ($0.02 on gpt-4o, $0.0012 on gpt-4o-mini); returns the app and what /ask-big produced."""
    app = await make_app({"models": MODELS, "limits": [rule]})
    program = dspy.Predict("question -> answer")

    @discord.app_commands.command(name="ask-big", description="Ask the big model")
    @enforce_limits(app.tracker, model="big", estimate=2_000)
    async def ask_big_command(interaction: discord.Interaction, question: str):
        await interaction.response.defer(thinking=True)
        await interaction.followup.send((await program.acall(question=question)).answer)

    app.bot.tree.add_command(ask_big_command)
    with dspy.context(lm=app.server.lm("openai/gpt-4o")):  # the bot's configured LM
        sent = await app.slash("ask-big", {"question": "which model?"})
    return app, sent


async def test_a_request_over_budget_runs_on_the_fallback_with_a_notice(make_app):
    """The answer comes from gpt-4o-mini, stored under it, and one ephemeral line says so."""
    app, sent = await ask_big(make_app, {**CENT_A_DAY, "fallback": "mini"})
    answer, notice = sent
    assert answer.content.startswith("Answer to:") and not answer.ephemeral
    assert notice.ephemeral and "**mini**" in notice.content and "\n" not in notice.content
    assert [r.body["model"] for r in app.server.requests] == ["gpt-4o-mini"]
    [row] = stored_rows(app.tracker)
    assert (row["model"], row["user_id"], row["feature"]) == ("openai/gpt-4o-mini", ALICE, "ask-big")


async def test_without_a_fallback_the_request_is_refused(make_app):
    """The same budget without a fallback: one ephemeral refusal and no LLM request."""
    app, sent = await ask_big(make_app, CENT_A_DAY)
    [refusal] = sent
    assert refusal.ephemeral and refusal.content.startswith("⛔") and app.server.requests == []
