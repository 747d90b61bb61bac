"""``/token-usage user:`` is private across servers, through discord.py's real dispatch (only HTTP replaced).

Anyone can add the bot to a server of their own and be its admin there, so an admin sees another member's usage
*in this server only*, refuses non-members, and only the bot owner sees every server.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import discord
from dspy_tokens_discord.embeds import F_RECENT

from tests.discord.support.harness import ADMIN, ALICE, BOB, CAROL, OTHER_GUILD_ID, OWNER_ID
from tests.discord.support.rows import seed, usage_row

MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
LIMITS = {"user_limit": 10_000, "guild_limit": 50_000, "default_estimate_tokens": 10}
NOW = datetime.now(timezone.utc)


def seed_bob(tracker):
    """BOB: 300 tokens in 2 calls here (feature ``here``); 5,000 in 3 calls in another server (``secret``)."""
    seed(tracker,
         usage_row(user_id=BOB, tokens=100, feature="here", created_at=NOW - timedelta(minutes=5)),
         usage_row(user_id=BOB, tokens=200, feature="here", created_at=NOW - timedelta(minutes=4)),
         *[usage_row(user_id=BOB, tokens=tokens, feature="secret", guild_id=OTHER_GUILD_ID,
                     created_at=NOW - timedelta(minutes=3 - i)) for i, tokens in enumerate((1000, 1500, 2500))])


def everything(sent) -> str:
    return "\n".join(s.render() for s in sent)


async def test_admin_sees_a_member_in_this_server_only(make_app):
    """Totals, breakdown, cost and recent calls come from this server; the personal limit (which counts every
    server) shows its state without amounts, so nothing of the other server shows through."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [answer] = await app.slash("token-usage", user=ADMIN, permissions=MANAGE_GUILD, user_options={"user": BOB})
    [embed] = answer.embeds
    assert answer.ephemeral and embed["description"] == "Last 30 days (UTC), in this server only."
    assert answer.field("👤 Bob") == ("**300** tokens · 2 calls · $0.0020\n"
                                     "Limit: within the limit (counts every server; amounts not shown)")
    recent = answer.field(F_RECENT).split("\n")
    assert len(recent) == 2 and all("· here ·" in line for line in recent)
    text = everything([answer])
    for leaked in ("secret", "5,000", "5,300", "1,000", "1,500", "2,500", "4,700", "10,000 tokens"):
        assert leaked not in text


async def test_personal_limit_state_without_amounts_when_used_up(make_app):
    """A member over their personal limit (usage elsewhere) reads as used up, still without any amount."""
    app = await make_app({**LIMITS, "user_limit": 4000})
    seed_bob(app.tracker)
    [answer] = await app.slash("token-usage", user=ADMIN, permissions=MANAGE_GUILD, user_options={"user": BOB})
    assert answer.field("👤 Bob").split("\n")[1] == "Limit: ⛔ used up (counts every server; amounts not shown)"
    assert "5,300" not in everything([answer]) and "4,000" not in everything([answer])


async def test_non_member_is_refused_before_anything_is_read(make_app):
    """A user who is not a member of this server is refused, even for an admin; no usage is shown."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [refusal] = await app.slash("token-usage", user=ADMIN, permissions=MANAGE_GUILD, user_options={"user": CAROL},
                                non_members=[CAROL])
    assert refusal.ephemeral and refusal.content == "🚫 Carol is not a member of this server."
    assert not refusal.embeds
    assert [s for s in app.wire.posted if s.path.endswith("/callback")] == [refusal]  # no defer: nothing was read


async def test_non_admin_is_refused(make_app):
    """Without the admin permission, another member's usage is refused."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [refusal] = await app.slash("token-usage", user=ALICE, permissions="0", user_options={"user": BOB})
    assert refusal.ephemeral and refusal.content == "🚫 Only server admins can see another member's usage."


async def test_every_server_is_owner_only(make_app):
    """scope=all is refused for a server admin; the bot owner gets every server's totals and calls."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [refusal] = await app.slash("token-usage", {"scope": "all"}, user=ADMIN, permissions=MANAGE_GUILD,
                                user_options={"user": BOB})
    assert refusal.content == "🚫 Only the bot owner can see a member's usage across every server."
    [answer] = await app.slash("token-usage", {"scope": "all"}, user=OWNER_ID, user_options={"user": BOB})
    assert answer.embeds[0]["description"] == "Last 30 days (UTC)."
    assert answer.field("👤 Bob").startswith("**5,300** tokens · 5 calls · $0.0050\n"
                                             "Limit: 5,300 / 10,000 tokens in the last 30 days · **4,700** left")
    assert len(answer.field(F_RECENT).split("\n")) == 5


async def test_owner_sees_a_non_member_across_servers(make_app):
    """The owner may look up someone who is not in this server, across every server."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [answer] = await app.slash("token-usage", {"scope": "all"}, user=OWNER_ID, user_options={"user": BOB},
                               non_members=[BOB])
    assert answer.field("👤 Bob").startswith("**5,300** tokens · 5 calls")


async def test_owner_in_this_server_sees_this_server_only_by_default(make_app):
    """Without scope=all the owner, too, sees this server's part only."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [answer] = await app.slash("token-usage", user=OWNER_ID, user_options={"user": BOB})
    assert answer.field("👤 Bob").startswith("**300** tokens · 2 calls")


async def test_in_a_dm_only_the_owner_sees_another_user(make_app):
    """In a DM there is no server to filter by: a server admin is refused, the owner sees every server."""
    app = await make_app(LIMITS)
    seed_bob(app.tracker)
    [refusal] = await app.slash("token-usage", user=ADMIN, permissions=MANAGE_GUILD, user_options={"user": BOB},
                                guild_id=None)
    assert refusal.content == "🚫 Another member's usage can only be shown in a server you both belong to."
    [answer] = await app.slash("token-usage", user=OWNER_ID, user_options={"user": BOB}, guild_id=None)
    assert answer.field("👤 Bob").startswith("**5,300** tokens · 5 calls")


async def test_own_usage_still_counts_every_server(make_app):
    """Your own /token-usage (also as user:@you) shows all of your usage: it is yours."""
    app = await make_app(LIMITS)
    seed(app.tracker, usage_row(user_id=ALICE, tokens=100), usage_row(user_id=ALICE, tokens=900,
                                                                      guild_id=OTHER_GUILD_ID))
    [own] = await app.slash("token-usage", user=ALICE)
    [named] = await app.slash("token-usage", user=ALICE, user_options={"user": ALICE})
    assert own.field("👤 You").startswith("**1,000** tokens · 2 calls")
    assert named.field("👤 You").startswith("**1,000** tokens · 2 calls")
