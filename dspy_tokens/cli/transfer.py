"""``copy`` and ``import``: usage from another database (SQLite up to PostgreSQL, say) or from a file (our
exports, GePeTo's SQLite table) into a dspy-tokens database. Both are idempotent by ``call_uuid``: run again,
they add nothing; interrupted, run again to resume (each batch is one transaction)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from dspy_tokens import Reports, load_config
from dspy_tokens.store import ENV_VAR, Store

from .common import config_option, database_option, echo_json, json_option, one_line_errors, open_store, progress_bar

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".db": "gepeto-sqlite",
             ".sqlite": "gepeto-sqlite", ".sqlite3": "gepeto-sqlite"}
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
                            help="Rows per transaction.")


def _report(verb: str, result, seconds: float, destination: str, as_json: bool, extra: dict | None = None) -> None:
    rate = result.read / seconds if seconds > 0 else 0.0
    if as_json:
        echo_json({"read": result.read, "added": result.added, "skipped": result.skipped,
                   "seconds": round(seconds, 3), "rows_per_second": round(rate, 1), "to": destination,
                   **(extra or {})})
        return
    click.echo(f"{verb} {result.added:,} of {result.read:,} rows into {destination} "
               f"({result.skipped:,} already there) in {seconds:.1f} s ({rate:,.0f} rows/s)")


@click.command("copy")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The database to copy from (URL or SQLite file path); it is only read.")
@click.option("--to", "target_url", default=None, envvar=ENV_VAR, show_envvar=True, metavar="URL",
              help="The database to copy into (created or migrated as needed).")
@batch_option
@json_option
@one_line_errors
def copy(source_url, target_url, batch_size, as_json):
    """Copy every recorded call from one database to another, e.g. from the SQLite default up to PostgreSQL:
    the hourly limit counters, daily cube and rollups are rebuilt in the target from the rows. Rows already in
    the target (same call_uuid) are skipped, so running it again adds nothing and an interrupted copy resumes."""
    from dspy_tokens.ingest import copy_rows  # imports DSPy: only for this command

    if not target_url:
        raise click.UsageError("give --to URL (or set DSPY_TOKENS_DATABASE_URL)")
    source = open_store(source_url)
    target = Store(target_url)
    started = time.perf_counter()
    with progress_bar("copying rows") as update:
        result = copy_rows(source, target, batch_size=batch_size, progress=update)
    seconds = time.perf_counter() - started
    rolled_up = Reports(source).summary().calls
    lost = max(rolled_up - result.read, 0)
    _report("copied", result, seconds, target.redacted_url, as_json, {"calls_only_in_rollups": lost})
    if lost:
        click.echo(f"warning: {lost:,} calls of {source.redacted_url} survive only in its daily and monthly "
                   "rollups (their rows were deleted by a cleanup) and were not copied: reports of those days "
                   "differ in the target", err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "gepeto-sqlite"]), default=None,
              help="What FILE is: a `dspy-tokens export` as JSON lines or CSV, or GePeTo's SQLite database "
                   "(token_usage table). Default: from the file name (.jsonl, .csv, .db/.sqlite).")
@click.option("--timezone", "zone", default=None, metavar="TZ",
              help="IANA zone of naive timestamps: GePeTo's token manager wrote local times, which need the "
                   "zone of the bot's host (e.g. Europe/Berlin or UTC).")
@batch_option
@config_option
@json_option
@database_option
@one_line_errors
def import_(file, fmt, zone, batch_size, config_path, as_json, database):
    """Add the calls in FILE to the database. Our own exports round-trip exactly (not anonymized ones); GePeTo
    rows (its token_usage or usage table) get ids derived from their content, their local times are converted to
    UTC with --timezone, and their cost is priced from models.json or the price map (cost_source import:...).
    Importing a file again adds nothing."""
    from dspy_tokens.ingest import import_file  # imports DSPy: only for this command
    from dspy_tokens.pricing import PriceBook

    fmt = fmt or _SUFFIXES.get(Path(file).suffix.lower())
    if fmt is None:
        raise click.UsageError(f"cannot tell the format of {file} from its name: give --format")
    store = Store(database)
    prices = PriceBook(load_config(config_path)) if fmt == "gepeto-sqlite" else None
    started = time.perf_counter()
    with progress_bar(f"importing {fmt}") as update:
        result = import_file(store, file, fmt, timezone=zone, prices=prices, batch_size=batch_size,
                             progress=update)
    _report("imported", result, time.perf_counter() - started, store.redacted_url, as_json, {"format": fmt})
