"""``report``, ``top`` and ``session``: what was spent, by whom."""

from __future__ import annotations

import click

from dspy_tokens.reports import BREAKDOWNS

from .common import (
    TOTAL_HEADERS,
    database_option,
    echo_json,
    json_option,
    label,
    money,
    one_line_errors,
    open_reports,
    period_range,
    scope_options,
    total_cells,
    when,
)
from .tables import render_table


@click.command()
@scope_options("month")
@click.option("--by", "by", default="feature,model,user,day", show_default=True,
              help="Breakdowns to show, comma-separated: user, guild, model, feature, day, session.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows per breakdown (largest first; day: the last N days).")
@json_option
@database_option
@one_line_errors
def report(period, since, until, user_id, guild_id, feature, model, by, limit, as_json, database):
    """What was spent today, this week, this month and in all; then breakdowns for --period."""
    reports = open_reports(database)
    filters = dict(user_id=user_id, guild_id=guild_id, feature=feature, model=model)
    kinds = [k.strip() for k in by.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BREAKDOWNS]
    if unknown:
        raise click.ClickException(f"--by {','.join(unknown)}: breakdowns are {', '.join(BREAKDOWNS)}")
    chosen = period_range(period, since, until)
    if since is None and until is None:
        summaries = {name: reports.summary(name, **filters) for name in ("today", "week", "month", "all")}
    else:
        summaries = {"range": reports.summary(**chosen, **filters)}
    breakdowns = {}
    for kind in kinds:
        groups = reports.breakdown(kind, **chosen, **filters)
        breakdowns[kind] = groups[-limit:] if kind == "day" else groups[:limit]
    if as_json:
        echo_json({"summaries": {name: s.to_dict() for name, s in summaries.items()},
                    "breakdowns": {kind: [g.to_dict() for g in groups] for kind, groups in breakdowns.items()}})
        return
    scope = ", ".join(f"{k.replace('_id', '')} {v}" for k, v in filters.items() if v is not None)
    click.echo(render_table(
        ("period", "since", "users", *TOTAL_HEADERS),
        [(name, when(s.since), s.active_users, *total_cells(s)) for name, s in summaries.items()],
        "Usage" + (f" ({scope})" if scope else "") + ", UTC"))
    span = chosen["period"] or f"{when(since)} to {when(until) if until else 'now'}"
    for kind, groups in breakdowns.items():
        extra = ("first call",) if kind == "session" else ()
        rows = [(label(g.key), *total_cells(g), *((when(g.first_at),) if extra else ())) for g in groups]
        click.echo("")
        click.echo(render_table((kind, *TOTAL_HEADERS, *extra), rows, f"By {kind} ({span})"))


@click.command()
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many.")
@click.option("--by", type=click.Choice(["tokens", "cost"]), default="tokens", show_default=True,
              help="Rank by total tokens or by cost.")
@click.option("--scope", type=click.Choice(["user", "guild"]), default="user", show_default=True,
              help="Rank users or guilds (servers).")
@scope_options("month")
@json_option
@database_option
@one_line_errors
def top(n, by, scope, period, since, until, user_id, guild_id, feature, model, as_json, database):
    """The biggest spenders of a period: users (or guilds) by tokens (or cost)."""
    groups = open_reports(database).top(n, by, scope, **period_range(period, since, until), user_id=user_id,
                                    guild_id=guild_id, feature=feature, model=model)
    if as_json:
        echo_json([g.to_dict() for g in groups])
        return
    span = period if since is None else f"{when(since)} to {when(until) if until else 'now'}"
    click.echo(render_table(
        ("#", scope, "calls", "total tokens", "cost", "errors"),
        [(i, str(g.key), g.calls, g.total_tokens, money(g), g.errors) for i, g in enumerate(groups, 1)],
        f"Top {n} {scope}s by {by} ({span})"))


@click.command()
@click.argument("session_id")
@json_option
@database_option
@one_line_errors
def session(session_id, as_json, database):
    """Every call of one session (a top-level DSPy run, or an explicit session id), in call order."""
    calls = open_reports(database).session(session_id)
    if not calls:
        raise click.ClickException(f"no calls recorded for session {session_id!r} (retention may have removed "
                                   "them; `dspy-tokens report --by session` lists recent sessions)")
    if as_json:
        echo_json(calls)
        return
    first = calls[0]
    click.echo(f"Session {session_id}: user {label(first['user_id'])}, guild {label(first['guild_id'])}, "
               f"{len(calls)} calls")
    click.echo(render_table(
        ("#", "time (UTC)", "module", "model", "prompt", "completion", "total", "cost", "ms", "note"),
        [(c["call_index"], f"{c['created_at']:%Y-%m-%d %H:%M:%S}", c["module"], c["model"], c["prompt_tokens"],
          c["completion_tokens"], c["total_tokens"], c["cost_usd"] if c["cost_usd"] is not None else "unknown",
          c["latency_ms"], "cache hit" if c["cache_hit"] else (c["error"] or "")[:60]) for c in calls]))
