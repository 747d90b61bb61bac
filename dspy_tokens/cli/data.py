"""``export`` and ``cleanup``: the per-call rows out, and old ones away."""

from __future__ import annotations

import sys

import click

from dspy_tokens import load_config
from dspy_tokens.reports import keep_counters_days

from .common import config_option, database_option, one_line_errors, open_reports, period_range, scope_options, when


@click.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), default="csv", show_default=True)
@click.option("--anonymize", is_flag=True,
              help="Replace user, guild and channel ids by a salted hash (stable within this export only).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-", show_default=True,
              help="File to write (- for stdout).")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per database read.")
@scope_options("all")
@database_option
@one_line_errors
def export(fmt, anonymize, output, batch_size, period, since, until, user_id, guild_id, feature, model, database):
    """Stream the recorded calls as CSV, a JSON array or JSON lines (constant memory; progress on stderr)."""
    reports = open_reports(database)
    err = sys.stderr
    interactive = err.isatty()

    def progress(rows):
        if interactive:
            err.write(f"\rexported {rows:,} rows")
            err.flush()

    options = dict(anonymize=anonymize, batch_size=batch_size, progress=progress, user_id=user_id,
                   guild_id=guild_id, feature=feature, model=model, **period_range(period, since, until))
    if output == "-":
        stdout = sys.stdout
        written = reports.export(fmt, stdout, **options)
        stdout.flush()
    else:
        written = reports.export(fmt, output, **options)
    if interactive:
        err.write("\r")
    click.echo(f"exported {written:,} rows" + ("" if output == "-" else f" to {output}")
               + (" (ids anonymized)" if anonymize else ""), err=True)


@click.command()
@click.option("--older-than", "older_than", type=click.IntRange(min=1), default=None,
              help="Delete raw rows older than DAYS (default: retention_days from models.json).", metavar="DAYS")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per short delete transaction.")
@config_option
@database_option
@one_line_errors
def cleanup(older_than, dry_run, batch_size, config_path, database):
    """Delete old per-call rows in batches; daily and monthly rollups are kept, so old reports still answer."""
    config = load_config(config_path)
    days = older_than or config.retention_days
    if days is None:
        raise click.ClickException("give --older-than DAYS (or set retention_days in models.json)")
    reports = open_reports(database)
    err = sys.stderr
    interactive = err.isatty()

    def progress(rows):
        if interactive:
            err.write(f"\rdeleted {rows:,} rows")
            err.flush()

    result = reports.cleanup(days, batch_size=batch_size, dry_run=dry_run, progress=progress,
                             keep_counters_days=keep_counters_days(config))
    if interactive and not dry_run:
        err.write("\r")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.rows:,} rows created before {when(result.cutoff)} and {result.counter_rows:,} "
               f"hourly limit counters before {when(result.counters_cutoff)}; daily and monthly rollups are kept")
