"""The ``dspy-tokens`` command line. Every command takes ``--database`` (default: $DSPY_TOKENS_DATABASE_URL,
else sqlite:///dspy_tokens.db). Errors are one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys

import click

from .db import ENV_VAR, redact, resolve_url
from .errors import DspyTokensError

database_option = click.option(
    "--database", "-d", envvar=ENV_VAR, default=None, show_envvar=True,
    help="Peewee database URL (sqlite:///file.db, postgresql://..., mysql://...). Default: sqlite:///dspy_tokens.db")


def one_line_errors(fn):
    """Turn expected failures into ``Error: ...`` with exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DspyTokensError, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:  # database drivers raise their own classes
            if type(exc).__module__.split(".")[0] in ("peewee", "psycopg2", "pymysql", "sqlite3"):
                raise click.ClickException(f"database error: {exc}".strip()) from exc
            raise
    return wrapper


@click.group()
@click.version_option(package_name="dspy-tokens")
def main():
    """Token usage and cost of DSPy programs: record, report, limit."""


@main.command()
@database_option
@one_line_errors
def demo(database):
    """Run a tracked DSPy program against a local fake LLM server and print the usage."""
    from .demo import run_demo
    tracker = run_demo(database, echo=click.echo)
    tracker.close()


@main.group()
def db():
    """Schema: migrate and status."""


@db.command("migrate")
@database_option
@one_line_errors
def db_migrate(database):
    """Create or upgrade the schema (trackers also do this on first write)."""
    from .migrations import migrate
    from .store import Store
    store = Store(database)
    applied = migrate(store.db, store.models)
    for migration in applied:
        click.echo(f"applied {migration.version}: {migration.name}")
    click.echo(f"{redact(resolve_url(database))}: schema up to date")


@db.command("status")
@database_option
@one_line_errors
def db_status(database):
    """Show which schema migrations are applied."""
    from .migrations import status
    from .store import Store
    store = Store(database)
    for migration, applied_at in status(store.db, store.models):
        state = f"applied {applied_at:%Y-%m-%d %H:%M:%S} UTC" if applied_at else "pending"
        click.echo(f"{migration.version:>3}  {migration.name:<50}  {state}")


@main.command("limits")
@click.argument("user_id", type=int)
@click.option("--guild", "guild_id", type=int, default=None, help="The guild (server) the request comes from.")
@click.option("--model", default=None, help="The model the request would use (for per-model limits).")
@click.option("--estimate", type=int, default=None, help="Tokens the request may use (default: from models.json).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="models.json (default: ./models.json when present).")
@click.option("--bypasses", type=click.Path(dir_okay=False), default=None,
              help="token_bypasses.json (default: ./token_bypasses.json when present).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
@one_line_errors
def limits(user_id, guild_id, model, estimate, config_path, bypasses, as_json, database):
    """Would USER_ID's next request be allowed? The decision and every rule, for support staff."""
    import json as jsonlib

    from .config import load_bypasses, load_config
    from .limits import Limiter
    from .pricing import PriceBook
    from .store import Store

    config = load_config(config_path)
    limiter = Limiter(Store(database), config, load_bypasses(bypasses), PriceBook(config))
    decision = limiter.check(user_id, guild_id, model=model, estimate=estimate)
    rules = [decision, *decision.others] if decision.scope else []
    if as_json:
        click.echo(jsonlib.dumps({
            "allowed": decision.allowed, "bypassed": decision.bypassed, "enforcement": decision.enforcement,
            "message": decision.message,
            "rules": [{"rule": d.rule, "scope": d.scope, "metric": d.metric, "used": str(d.used),
                       "reserved": str(d.reserved), "limit": str(d.limit), "remaining": str(d.remaining),
                       "exceeded": d.exceeded, "resets_at": d.resets_at.isoformat() if d.resets_at else None}
                      for d in rules]}, indent=2))
        return
    from .tables import render_table
    verdict = "allowed" if decision.allowed else "REFUSED"
    click.echo(f"{verdict} ({decision.enforcement}): {decision.message}")
    if rules:
        click.echo(render_table(("rule", "used", "reserved", "limit", "remaining", "over", "frees up"), [
            (d.rule, d.used, d.reserved, d.limit, d.remaining, "yes" if d.exceeded else "",
             f"{d.resets_at:%Y-%m-%d %H:%M} UTC" if d.resets_at else None) for d in rules]))


@main.command("rebuild-counters")
@database_option
@one_line_errors
def rebuild_counters(database):
    """Recompute the hourly usage counters from the raw rows (an audit; writers wait meanwhile)."""
    from .counters import rebuild
    from .store import Store

    store = Store(database)
    store.ensure_schema()
    written = rebuild(store.db, store.models)
    click.echo(f"rebuilt from {written['rows']:,} rows: {written['scope']:,} scope counters, "
               f"{written['model']:,} per-model counters")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
