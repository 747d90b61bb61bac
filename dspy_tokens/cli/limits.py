"""``limits USER_ID``: would this user's next request be allowed, and why — for support staff."""

from __future__ import annotations

import click

from .common import EXIT_NO, config_option, database_option, echo_json, json_option, one_line_errors, open_store
from .tables import render_table


@click.command("limits")
@click.argument("user_id", type=int)
@click.option("--guild", "guild_id", type=int, default=None, help="The guild (server) the request comes from.")
@click.option("--model", default=None, help="The model the request would use (for per-model limits).")
@click.option("--estimate", type=int, default=None, help="Tokens the request may use (default: from models.json).")
@config_option
@click.option("--bypasses", type=click.Path(dir_okay=False), default=None,
              help="token_bypasses.json (default: ./token_bypasses.json when present).")
@json_option
@database_option
@one_line_errors
def limits(user_id, guild_id, model, estimate, config_path, bypasses, as_json, database):
    """Would USER_ID's next request be allowed? The decision and every rule, for support staff.

    Exit code 0 when it would be allowed (bypassed, or only warned), 3 when it would be refused."""
    from dspy_tokens import TokenTracker  # imports DSPy (prices, the configured LM)

    open_store(database).close()  # a database without our data is an error, and is left untouched
    tracker = TokenTracker.reader(database, config_path, bypasses=bypasses)
    decision = tracker.check(user_id, guild_id, model=model, estimate=estimate)
    tracker.close()
    rules = list(decision.rules)
    if as_json:
        echo_json({
            "allowed": decision.allowed, "bypassed": decision.bypassed, "enforcement": decision.enforcement,
            "message": decision.message,
            "rules": [{"rule": d.rule, "scope": d.scope, "metric": d.metric, "used": str(d.used),
                       "reserved": str(d.reserved),
                       "held_until": _iso(d.held_until),
                       "limit": str(d.limit), "remaining": str(d.remaining),
                       "exceeded": d.exceeded, "resets_at": _iso(d.resets_at),
                       "forecast_exhausted_at": _iso(d.forecast_exhausted_at)}
                      for d in rules]})
    else:
        _show(decision, rules)
    if not decision.allowed:
        click.get_current_context().exit(EXIT_NO)


def _show(decision, rules) -> None:
    verdict = "allowed" if decision.allowed else "REFUSED"
    click.echo(f"{verdict} ({decision.enforcement}): {decision.message}")
    if rules:
        click.echo(render_table(("rule", "used", "reserved", "limit", "remaining", "over", "frees up",
                                 "used up at this pace"), [
            (d.rule, d.used, d.reserved, d.limit, d.remaining, "yes" if d.exceeded else "", _utc(d.resets_at),
             _utc(d.forecast_exhausted_at)) for d in rules]))


def _utc(moment) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else None


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None
