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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
