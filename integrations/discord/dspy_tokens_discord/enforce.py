"""``@enforce_limits``: usage limits for slash, hybrid and prefix commands and ``on_message`` handlers.

Placement: directly on the coroutine, *below* ``@app_commands.command`` / ``@commands.command`` /
``@commands.Cog.listener()`` / ``@bot.event``::

    @bot.tree.command(name="ask")
    @enforce_limits(tracker)
    async def ask(interaction: discord.Interaction, question: str): ...

Before the handler runs the limits are checked and the estimate reserved (``tracker.guard``). A refused request
gets a short friendly reply — ephemeral for interactions, a reply without mention otherwise — and the handler
(the LLM) never runs. While it runs, every DSPy call inside is attributed to the user, server, channel, the
command name and one session (the interaction or message id).
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, TypeVar, Union, cast

import discord
import dspy
from discord import app_commands
from discord.ext import commands

import dspy_tokens
from dspy_tokens import usage_context

from .config import env_super_role_ids, parse_role_ids
from .deadline import DEFER_AFTER, answer_in_time, checked_defer_after
from .embeds import refusal_text
from .replies import notice_for, say
from .requester import Requester, Target, find_target, requester

if TYPE_CHECKING:
    from dspy_tokens import LimitDecision, TokenTracker

log = logging.getLogger("dspy_tokens_discord")

When = Callable[[Any], Union[bool, Awaitable[bool]]]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


class TokenLimitExceeded(dspy_tokens.TokenLimitExceeded, commands.CheckFailure):
    """A usage limit refused the request (``@enforce_limits(..., raise_error=True)``).

    A ``commands.CheckFailure``: from prefix and hybrid commands it reaches ``Command.error``,
    ``Cog.cog_command_error`` and ``on_command_error`` as itself (also when a hybrid command is used as a slash
    command). From ``on_message`` handlers it reaches ``Client.on_error``. ``.decision`` is the
    :class:`~dspy_tokens.LimitDecision` (scope, used, limit, resets_at, window_start, message).
    Catching ``dspy_tokens.TokenLimitExceeded`` catches it too.
    """

    def __init__(self, decision: LimitDecision) -> None:
        dspy_tokens.TokenLimitExceeded.__init__(self, decision)


class AppTokenLimitExceeded(TokenLimitExceeded, app_commands.CheckFailure):
    """The slash-command flavour: also an ``app_commands.CheckFailure``, so it reaches the command's
    ``@cmd.error``, ``Cog.cog_app_command_error`` and ``CommandTree.on_error`` unwrapped."""


# -- the decorator -------------------------------------------------------------------------------------
def _resolve_annotations(fn: Callable[..., Any]) -> None:
    """PEP 563: discord.py resolves string annotations against the *wrapper's* module globals; resolve them
    against ``fn``'s own module now, before ``functools.wraps`` copies ``__annotations__``."""
    try:
        fn.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # NameError for names only defined later, or anything exotic: leave them for discord.py
        pass


async def _holds(when: When | None, target: Target) -> bool:
    if when is None:
        return True
    result = when(target)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def _with_tracker_callback(tracker: TokenTracker) -> Any:
    """A ``dspy.context`` that adds the tracker to the callbacks if the program did not register it."""
    callbacks = list(dspy.settings.get("callbacks") or [])
    if any(cb is tracker for cb in callbacks):
        return None
    return dspy.context(callbacks=[*callbacks, tracker])


def enforce_limits(tracker: TokenTracker, *, when: When | None = None, raise_error: bool = False,
                   estimate: int | None = None, feature: str | None = None, model: str | None = None,
                   super_role_ids: str | Iterable[int | str] | None = None,
                   defer_after: float | None = DEFER_AFTER) -> Callable[[Handler], Handler]:
    """Check (and reserve) usage limits before the handler; attribute its DSPy calls; refuse politely.

    :param tracker: the :class:`dspy_tokens.TokenTracker` whose database and ``models.json`` limits apply.
    :param when: ``predicate(target) -> bool`` (may be async), ``target`` being the Interaction, Context or
        Message. When false the handler runs unchecked and unattributed — use it for ``on_message`` so only
        messages that really reach the LLM (e.g. those mentioning the bot) are checked. Messages from bots
        are never checked nor refused (the handler still runs).
    :param raise_error: raise :class:`TokenLimitExceeded` (a ``CheckFailure``) instead of replying, for the
        bot's own error handlers.
    :param estimate: tokens to reserve for one run (default: the model's ``max_tokens`` in ``models.json``,
        else its ``default_estimate_tokens``).
    :param feature: the feature name stored with each call (default: the command's qualified name, or the
        function name for event handlers).
    :param model: the model the handler will use, for per-model rules and cost estimates (default: the
        configured ``dspy`` LM).
    :param super_role_ids: role ids that bypass limits (default: ``$SUPER_ROLE_IDS``); users, servers and roles
        listed in ``token_bypasses.json`` bypass them too.
    :param defer_after: an interaction whose limit decision is not back this many seconds after it was created
        is deferred first (Discord drops it at 3 s); the handler's ``interaction.response`` calls then become
        followups. ``None``: never defer.
    """
    if not hasattr(tracker, "guard"):
        raise TypeError("use @enforce_limits(tracker), with the TokenTracker as argument")
    if estimate is not None and (isinstance(estimate, bool) or not isinstance(estimate, int) or estimate < 0):
        raise ValueError(f"estimate must be a non-negative number of tokens, got {estimate!r}")
    super_roles = parse_role_ids(super_role_ids) if super_role_ids is not None else env_super_role_ids()
    defer_after = checked_defer_after(defer_after)

    def decorate(fn: Handler) -> Handler:
        if isinstance(fn, (app_commands.Command, app_commands.ContextMenu, app_commands.Group, commands.Command)):
            raise TypeError("@enforce_limits must sit below @app_commands.command / @commands.command "
                            "(directly on the async function)")
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@enforce_limits needs an async function, got {fn!r}")
        _resolve_annotations(fn)
        default_feature = feature or fn.__name__

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = find_target(args, kwargs)
            if target is None:
                raise TypeError(f"@enforce_limits: {fn.__qualname__} received no Interaction, Context or Message")
            who = requester(target, default_feature)
            if feature is not None:
                who = Requester(who.user_id, who.guild_id, who.channel_id, feature, who.session_id, who.role_ids,
                                who.is_bot)
            if who.is_bot or not await _holds(when, target):
                return await fn(*args, **kwargs)
            extra = _with_tracker_callback(tracker)
            if super_roles.intersection(who.role_ids):  # privileged: never refused, still recorded
                with usage_context(user_id=who.user_id, guild_id=who.guild_id, channel_id=who.channel_id,
                                   feature=who.feature, session_id=who.session_id):
                    return await _run(fn, args, kwargs, extra)
            guard = tracker.guard(who.user_id, who.guild_id, who.channel_id, who.feature, estimate,
                                  session_id=who.session_id, model=model, role_ids=who.role_ids)
            try:
                async with answer_in_time(target, defer_after):
                    decision = await guard.__aenter__()
            except dspy_tokens.TokenLimitExceeded as exc:
                log.info("refused %s for user=%s guild=%s: %s", who.feature, who.user_id, who.guild_id,
                         exc.decision.message)
                if raise_error:
                    kind = AppTokenLimitExceeded if isinstance(target, discord.Interaction) else TokenLimitExceeded
                    raise kind(exc.decision) from None
                await say(target, refusal_text(exc.decision, tracker.config.time_window_days))
                return None
            try:
                result = await _run(fn, args, kwargs, extra)
            finally:
                await guard.__aexit__(None, None, None)
            notice = notice_for(tracker, decision, who, tracker.config.time_window_days)
            if notice:
                await say(target, notice)
            return result

        wrapper.__dspy_tokens_enforced__ = True  # type: ignore[attr-defined]  # a mark on the function object
        return cast(Handler, wrapper)

    return decorate


async def _run(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any],
               extra: Any) -> Any:
    if extra is None:
        return await fn(*args, **kwargs)
    with extra:
        return await fn(*args, **kwargs)
