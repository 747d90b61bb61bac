"""``limits set|clear|reset|bypass|show|history``: limits changed at run time. They are stored in the database, so
every process using it applies a change at its next check, and each change is written to the audit trail with who
made it. ``limits USER_ID`` (``limits check``) asks whether a request would be allowed."""

from __future__ import annotations

import contextlib
import getpass

import click

from .common import database_option, echo_json, json_option, one_line_errors, open_store, when
from .limits import limits as check
from .tables import render_table

SCOPES = ("user", "guild", "channel", "feature", "global")


class _LimitsGroup(click.Group):
    """``limits USER_ID [options]`` stays the check: anything that is not a subcommand goes to ``check``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["check", *args]
        return super().parse_args(ctx, args)


@click.group("limits", cls=_LimitsGroup)
def limits():
    """Check a request against the limits (limits USER_ID), or change limits at run time.

    Changes are stored in the database: every process on it applies them at its next check, and each is audited
    (limits history). SCOPE is user, guild, channel, feature (by name) or global (no ID)."""


limits.add_command(check, "check")

_scope = click.argument("scope", type=click.Choice(SCOPES))
_scope_id = click.argument("scope_id", required=False)
_by = click.option("--by", default=None, help="Who makes the change, for the audit (default: cli:<login name>).")


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container's anonymous uid)
        return "cli"


@contextlib.contextmanager
def _tracker(database):
    """A reader tracker on an existing dspy-tokens database, closed after the command."""
    from dspy_tokens import TokenTracker  # imports DSPy

    open_store(database).close()  # a database without our data is an error (run `dspy-tokens db migrate` first)
    tracker = TokenTracker.reader(database, config=None)
    try:
        yield tracker
    finally:
        tracker.close()


def _needs_id(scope: str, scope_id: str | None) -> None:
    if scope != "global" and not scope_id:
        raise click.UsageError(f"give the {scope}'s {'name' if scope == 'feature' else 'id'}: "
                               f"dspy-tokens limits ... {scope} ID")
    if scope == "global" and scope_id:
        raise click.UsageError("the global scope takes no ID")


def _target(scope: str, scope_id: str | None) -> str:
    return "global" if scope == "global" else f"{scope} {scope_id}"


@limits.command("set")
@_scope
@_scope_id
@click.option("--tokens", type=click.IntRange(min=0), default=None, help="Tokens per window.")
@click.option("--cost-usd", default=None, help="Dollars per window (a decimal, e.g. 5 or 0.50).")
@click.option("--requests", type=click.IntRange(min=0), default=None, help="Requests per window.")
@click.option("--window", default=None, help='30d, 24h, 7d, 1mo (a calendar month)... Default: the configured '
                                             'time_window_days.')
@_by
@database_option
@one_line_errors
def set_(scope, scope_id, tokens, cost_usd, requests, window, by, database):
    """Set SCOPE's limits: each metric given replaces the configured rules of that scope and metric."""
    _needs_id(scope, scope_id)
    with _tracker(database) as tracker:
        tracker.set_limit(scope, scope_id, tokens=tokens, cost_usd=cost_usd, requests=requests, window=window,
                          by=_who(by))
        _echo_override(tracker, scope, scope_id)


@limits.command("clear")
@_scope
@_scope_id
@_by
@database_option
@one_line_errors
def clear(scope, scope_id, by, database):
    """Drop SCOPE's run-time limits: the configured rules apply again."""
    _needs_id(scope, scope_id)
    with _tracker(database) as tracker:
        tracker.clear_limit(scope, scope_id, by=_who(by))
        click.echo(f"{_target(scope, scope_id)}: run-time limits cleared; the configured rules apply")


@limits.command("reset")
@_scope
@_scope_id
@_by
@database_option
@one_line_errors
def reset(scope, scope_id, by, database):
    """Usage before now stops counting toward SCOPE's limits (reports and history keep it)."""
    _needs_id(scope, scope_id)
    with _tracker(database) as tracker:
        tracker.reset_usage(scope, scope_id, by=_who(by))
        click.echo(f"{_target(scope, scope_id)}: usage before now no longer counts toward its limits")


@limits.command("bypass")
@_scope
@_scope_id
@click.option("--on/--off", "on", default=True, show_default=True, help="Start or end the bypass.")
@_by
@database_option
@one_line_errors
def bypass(scope, scope_id, on, by, database):
    """Let every request of SCOPE through (--off ends it)."""
    _needs_id(scope, scope_id)
    with _tracker(database) as tracker:
        tracker.set_bypass(scope, scope_id, on, by=_who(by))
        click.echo(f"{_target(scope, scope_id)}: bypass {'on' if on else 'off'}")


@limits.command("show")
@_scope
@_scope_id
@json_option
@database_option
@one_line_errors
def show(scope, scope_id, as_json, database):
    """What is overridden for SCOPE now."""
    _needs_id(scope, scope_id)
    with _tracker(database) as tracker:
        _echo_override(tracker, scope, scope_id, as_json=as_json)


@limits.command("history")
@click.argument("scope", type=click.Choice(SCOPES), required=False)
@_scope_id
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True, help="How many changes.")
@json_option
@database_option
@one_line_errors
def history(scope, scope_id, count, as_json, database):
    """Who changed which limits, when and to what (latest first); SCOPE [ID] narrows it."""
    with _tracker(database) as tracker:
        changes = tracker.limit_changes(scope, scope_id, limit=count)
    if as_json:
        echo_json({"changes": [{"id": str(c.id), "changed_at": c.changed_at, "changed_by": c.changed_by,
                                "action": c.action, "scope": c.scope, "scope_id": str(c.scope_id),
                                "detail": c.detail} for c in changes]})
        return
    if not changes:
        click.echo("no limit changes recorded")
        return
    click.echo(render_table(("when", "by", "action", "scope", "id", "detail"), [
        (when(c.changed_at), c.changed_by, c.action, c.scope, str(c.scope_id),
         ", ".join(f"{k}={v}" for k, v in c.detail.items()) or None) for c in changes], title="Limit changes"))


def _echo_override(tracker, scope: str, scope_id: str | None, *, as_json: bool = False) -> None:
    override = tracker.limit_override(scope, scope_id)
    if as_json:
        echo_json({"scope": scope, "scope_id": None if override is None else str(override.scope_id),
                   "override": None if override is None else {
                       "tokens": override.tokens, "cost_usd": override.cost_usd, "requests": override.requests,
                       "window": override.window, "bypass": override.bypass, "reset_at": override.reset_at,
                       "updated_at": override.updated_at, "updated_by": override.updated_by}})
        return
    if override is None:
        click.echo(f"{_target(scope, scope_id)}: nothing overridden; the configured rules apply")
        return
    limits_set = [f"{override.tokens:,} tokens" if override.tokens is not None else None,
                  f"${override.cost_usd}" if override.cost_usd is not None else None,
                  f"{override.requests:,} requests" if override.requests is not None else None]
    parts = [p for p in limits_set if p]
    text = " and ".join(parts) + f" per {override.window or 'configured window'}" if parts else "no limit override"
    extra = [e for e in ("bypass on" if override.bypass else None,
                         f"usage reset at {when(override.reset_at)}" if override.reset_at else None) if e]
    click.echo(f"{_target(scope, scope_id)}: {text}" + (f"; {'; '.join(extra)}" if extra else "")
               + (f" (changed by {override.updated_by}, {when(override.updated_at)})" if override.updated_by else ""))
