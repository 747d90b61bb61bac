"""Telling the requester: :func:`say` (ephemeral when it can be) and :func:`notice_for`, the warn-mode warnings
and one-time soft-threshold heads-ups shown after an admitted request."""

from __future__ import annotations

import logging
import weakref
from typing import Any

import discord
from discord.ext import commands

from dspy_tokens import LimitDecision

from .deadline import AutoDeferred, interaction_of
from .embeds import soft_notice_text, warning_text
from .limit_text import fallback_text
from .requester import Requester, Target

log = logging.getLogger("dspy_tokens_discord")


async def say(target: Target, text: str) -> None:
    """Tell the requester: ephemeral for interactions (followup once answered), a reply without ping otherwise.

    Sending errors (missing permission to post, expired interaction) are logged, never raised: the handler's
    outcome must not depend on whether a notice could be delivered.
    """
    quiet = discord.AllowedMentions.none()
    try:
        interaction = interaction_of(target)
        if interaction is not None and isinstance(interaction.response, AutoDeferred):  # deferred: slow decision
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=quiet)
        elif isinstance(target, discord.Interaction):
            if target.response.is_done():
                await target.followup.send(text, ephemeral=True, allowed_mentions=quiet)
            else:
                await target.response.send_message(text, ephemeral=True, allowed_mentions=quiet)
        elif isinstance(target, commands.Context) and target.interaction is not None:
            await target.send(text, ephemeral=True, allowed_mentions=quiet)
        else:
            await target.reply(text, mention_author=False, allowed_mentions=quiet)
    except discord.HTTPException:
        log.warning("could not deliver a usage-limit message", exc_info=True)


# -- one-time soft-threshold notices -------------------------------------------------------------------
_notified: "weakref.WeakKeyDictionary[Any, set]" = weakref.WeakKeyDictionary()


def _scope_id(decision: LimitDecision, who: Requester) -> int | None:
    return {"user": who.user_id, "guild": who.guild_id}.get(decision.scope or "", 0)


def notice_for(tracker, decision: LimitDecision | None, who: Requester, window_days: int) -> str | None:
    """The message to show after an admitted request, if any.

    Run on a rule's fallback model: a one-line notice naming it. Warn mode over a limit: a warning every time. Soft threshold reached: a heads-up once per rule and
    user/server (per process), armed again when usage drops back under the threshold.
    """
    if decision is None or decision.bypassed or decision.enforcement == "off":
        return None
    if decision.fallback_model:
        entry = tracker.config.model_entry(decision.fallback_model)
        return fallback_text(entry.label if entry is not None else decision.fallback_model)
    rules = decision.rules
    over = [d for d in rules if d.exceeded]
    if over:
        return warning_text(over[0], window_days)
    try:
        seen = _notified.setdefault(tracker, set())
    except TypeError:  # not weak-referenceable: notices keyed per process instead
        seen = _notified.setdefault(type(tracker), set())
    fresh = []
    for d in rules:
        key = (d.rule, d.scope, _scope_id(d, who))
        if not d.warning:
            seen.discard(key)
        elif key not in seen:
            seen.add(key)
            fresh.append(d)
    return soft_notice_text(fresh[0], window_days) if fresh else None
