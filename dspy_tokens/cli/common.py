"""What every command shares: the ``--database`` option, one-line errors, exit codes, period and filter options,
progress bars, and the cells people read (money, labels, times). Tables: :func:`.tables.render_table`."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Callable, Iterator

import click

from dspy_tokens import DspyTokensError, Reports, StorageError
from dspy_tokens.reports import json_ready, to_json_value
from dspy_tokens.store import ENV_VAR, Store, redact, resolve_url, sqlite_path

#: Exit codes (also in ``dspy-tokens --help``): 0 done; 1 an error (one line on stderr); 2 a usage error (click's);
#: EXIT_NO, 3: the command worked and its answer is "no": ``limits`` would refuse the request, ``db
#: rebuild-counters --check`` found counters that drifted from the rows.
EXIT_NO = 3
EXIT_CODES_HELP = ("Exit codes: 0 done; 1 error (one line on stderr); 2 bad usage; 3 the answer is no (`limits` "
                   "refuses, `db rebuild-counters --check` finds drift).")

database_option = click.option(
    "--database", "-d", envvar=ENV_VAR, default=None, show_envvar=True,
    help="Peewee database URL (sqlite:///file.db, postgresql://..., mysql://...) or a SQLite file path. "
         "Default: sqlite:///dspy_tokens.db")
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="models.json (default: ./models.json when present).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def one_line_errors(fn):
    """Turn expected failures into ``Error: ...`` with exit code 1. A closed pipe (``report | head``) is not one:
    click ends the command quietly then."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            raise
        except StorageError as exc:
            raise click.ClickException(" ".join(f"database error: {exc}".split())) from exc
        except (DspyTokensError, ValueError, OSError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from exc
        except Exception as exc:  # a driver error raised outside the store's classification (schema creation)
            if type(exc).__module__.split(".")[0] in ("peewee", "psycopg2", "pymysql", "sqlite3"):
                raise click.ClickException(" ".join(f"database error: {exc}".split())) from exc
            raise
    return wrapper


class UTCTime(click.ParamType):
    """YYYY-MM-DD (00:00 UTC) or an ISO 8601 time (naive = UTC)."""

    name = "TIME"

    def convert(self, value, param, ctx):
        from datetime import date, datetime, timezone
        if isinstance(value, datetime):
            return value
        try:
            if len(value) == 10:
                return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", param, ctx)
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def scope_options(default_period: str):
    """--period/--since/--until and the filters, shared by report, top and export."""
    options = [
        click.option("--period", "-p", default=default_period, show_default=True,
                     help="today, week, month (UTC calendar periods, from 00:00 / Monday / the 1st), all, "
                          "or a rolling length such as 7d or 24h."),
        click.option("--since", type=UTCTime(), default=None, help="Start (UTC, inclusive); replaces --period."),
        click.option("--until", type=UTCTime(), default=None, help="End (UTC, exclusive)."),
        click.option("--user", "user_id", type=int, default=None, help="Only this user id."),
        click.option("--guild", "guild_id", type=int, default=None, help="Only this guild (server) id."),
        click.option("--feature", default=None, help="Only this feature."),
        click.option("--model", default=None, help="Only this model (as configured, e.g. openai/gpt-4o-mini)."),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def period_range(period, since, until) -> dict:
    return {"period": None if since is not None else period, "since": since, "until": until}


def open_store(database) -> Store:
    """The store of an existing dspy-tokens database, for commands that read (or clean) it: a missing SQLite
    file, or a database without our tables, is an error, and nothing is created (no file, no schema)."""
    url = resolve_url(database)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise click.ClickException(f"no database at {path}: record some calls first, or pass --database "
                                   f"(or set {ENV_VAR})")
    store = Store(url)
    if not store.has_schema():
        store.close()
        raise click.ClickException(f"no dspy-tokens data here ({redact(url)} has no token_usage table): "
                                   "record some calls first, or pass the --database that has them")
    return store


def open_reports(database) -> Reports:
    """Reports over an existing dspy-tokens database (see :func:`open_store`)."""
    return Reports(open_store(database))


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while long work runs, when stderr is a terminal (nothing otherwise); yields
    ``update(done, total=None)``. The bar goes away at the end, leaving the command's own summary line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done, total=None: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done, total=None: progress.update(task, completed=done, total=total)  # None: unchanged


def money(totals) -> str:
    """Cost for people: priced calls' cost, plus how many calls have no known price."""
    if totals.calls and totals.unknown_cost_calls == totals.calls - totals.errors and totals.unknown_cost_calls:
        return "unknown"
    text = f"${totals.cost_usd:.6f}"
    return text + (f" + {totals.unknown_cost_calls:,} unpriced" if totals.unknown_cost_calls else "")


def label(key) -> str:
    return "(none)" if key is None else str(key)


def when(moment) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def echo_json(payload) -> None:
    """Every ``--json`` output: 64-bit ids as strings, money as decimal strings, times ISO 8601 (``json_ready``)."""
    click.echo(json.dumps(json_ready(payload), indent=2, default=to_json_value))


TOTAL_HEADERS = ("calls", "prompt", "completion", "cached", "reasoning", "total", "cost", "errors", "cache hits")


def total_cells(t) -> tuple:
    return (t.calls, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.reasoning_tokens, t.total_tokens,
            money(t), t.errors, t.cache_hits)
