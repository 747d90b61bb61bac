"""Who may see what: the permission predicates, and the cog's admin-only paths through real dispatch (the
runtime check, owner and SUPER_ROLE_IDS, the configurable admin permission)."""

from __future__ import annotations

from types import SimpleNamespace

import discord
from dspy_tokens_discord.permissions import has_super_role, is_owner, role_ids_of

from tests.discord.support.harness import ADMIN, ALICE, BOB, CAROL, OWNER_ID, SUPER_ROLE

MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
USAGE_LIMITS = {"user_limit": 10_000, "guild_limit": 50_000, "default_estimate_tokens": 10}


def test_role_ids_and_super_role():
    """A member's role ids are read from its roles (none for a plain user); a super role is any of them."""
    member = SimpleNamespace(roles=[SimpleNamespace(id=1), SimpleNamespace(id=SUPER_ROLE)])
    assert role_ids_of(member) == (1, SUPER_ROLE) and role_ids_of(SimpleNamespace()) == ()
    assert has_super_role(member, {SUPER_ROLE}) and not has_super_role(member, {2})
    assert not has_super_role(SimpleNamespace(roles=None), {SUPER_ROLE})


async def test_is_owner_asks_the_client_and_survives_http_errors():
    """is_owner() uses the client's own is_owner (Bot), else the application owner; an HTTP error means no."""
    async def owner_check(user):
        return user.id == OWNER_ID

    async def failing(user):
        response = SimpleNamespace(status=500, reason="boom")
        raise discord.HTTPException(response, "boom")

    owner, alice = SimpleNamespace(id=OWNER_ID), SimpleNamespace(id=ALICE)
    assert await is_owner(SimpleNamespace(is_owner=owner_check), owner)
    assert not await is_owner(SimpleNamespace(is_owner=owner_check), alice)
    assert not await is_owner(SimpleNamespace(is_owner=failing), owner)
    plain_client = SimpleNamespace(application=SimpleNamespace(owner=owner))
    assert await is_owner(plain_client, owner) and not await is_owner(plain_client, alice)
    assert not await is_owner(SimpleNamespace(application=None), owner)


async def test_other_members_usage_is_admin_only(make_app):
    """Passing user: as a non-admin is refused ephemerally before any work; nothing is deferred."""
    app = await make_app(USAGE_LIMITS)
    [refusal] = await app.slash("token-usage", user=ALICE, permissions="0", user_options={"user": BOB})
    assert refusal.path.endswith("/callback") and refusal.json["type"] == 4 and refusal.ephemeral
    assert refusal.content == "🚫 Only server admins can see another member's usage."


async def test_token_stats_refuses_non_admins(make_app):
    """/token-stats from a member without Manage Server is refused ephemerally by the runtime check."""
    app = await make_app()
    [refusal] = await app.slash("token-stats", permissions="0")
    assert refusal.json["type"] == 4 and refusal.ephemeral
    assert refusal.content == "🚫 You need the Manage Server permission to use this command."
    assert app.wire.posted == [refusal]  # no defer, no followup


async def test_token_stats_owner_and_super_role_pass_without_permission(make_app):
    """The bot owner and SUPER_ROLE_IDS members pass the admin check without Manage Server."""
    app = await make_app()
    for kwargs in ({"user": OWNER_ID}, {"user": CAROL, "roles": (SUPER_ROLE,)}):
        [answer] = await app.slash("token-stats", permissions="0", **kwargs)
        assert answer.ephemeral and answer.embeds[0]["title"].startswith("📊 Token stats")


async def test_admin_permission_is_configurable(make_app):
    """admin_permission='administrator': Manage Server is no longer enough, and the sync hint is 8."""
    app = await make_app(admin_permission="administrator")
    [refusal] = await app.slash("token-stats", user=ADMIN, permissions=MANAGE_GUILD)
    assert refusal.content == "🚫 You need the Administrator permission to use this command."
    await app.bot.tree.sync()
    synced = {c["name"]: c for c in app.wire.commands}
    assert synced["token-stats"]["default_member_permissions"] == 8
