"""``export`` and ``cleanup``: the per-call rows out, and old ones away."""

from __future__ import annotations

import sys

import click

from dspy_tokens import load_config
from dspy_tokens.reports import keep_counters_days

from .common import (
    config_option,
    database_option,
    echo_json,
    json_option,
    one_line_errors,
    open_reports,
    period_range,
    progress_bar,
    scope_options,
    when,
)


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
    """Stream the recorded calls as CSV, a JSON array or JSON lines (constant memory; a progress bar on stderr
    when it is a terminal)."""
    reports = open_reports(database)
    filters = dict(user_id=user_id, guild_id=guild_id, feature=feature, model=model,
                   **period_range(period, since, until))
    total = reports.summary(**filters).calls  # from the rollups: cheap, and the bar knows where it ends
    with progress_bar("exporting", total) as update:
        options = dict(anonymize=anonymize, batch_size=batch_size, progress=update, **filters)
        if output == "-":
            stdout = sys.stdout
            written = reports.export(fmt, stdout, **options)
            stdout.flush()
        else:
            written = reports.export(fmt, output, **options)
    click.echo(f"exported {written:,} rows" + ("" if output == "-" else f" to {output}")
               + (" (ids anonymized)" if anonymize else ""), err=True)


@click.command()
@click.option("--older-than", "older_than", type=click.IntRange(min=1), default=None,
              help="Delete raw rows older than DAYS (default: retention_days from models.json).", metavar="DAYS")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reclaim/--no-reclaim", default=True, show_default=True,
              help="Give the space back afterwards: VACUUM (SQLite), VACUUM ANALYZE (PostgreSQL), OPTIMIZE TABLE "
                   "(MySQL/MariaDB).")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per short delete transaction.")
@config_option
@json_option
@database_option
@one_line_errors
def cleanup(older_than, dry_run, yes, reclaim, batch_size, config_path, as_json, database):
    """Delete old per-call rows in batches; daily and monthly rollups are kept, so old reports still answer.

    Asks before deleting (unless --yes), then reclaims the space: SQLite's VACUUM shrinks the file (it needs
    about the file's size free on disk while it runs); PostgreSQL's VACUUM ANALYZE makes the space reusable by new
    rows (only VACUUM FULL, which locks the tables, would shrink the files); MySQL's OPTIMIZE TABLE rebuilds them.
    """
    config = load_config(config_path)
    days = older_than or config.retention_days
    if days is None:
        raise click.ClickException("give --older-than DAYS (or set retention_days in models.json)")
    reports = open_reports(database)
    options = dict(batch_size=batch_size, keep_counters_days=keep_counters_days(config))
    planned = reports.cleanup(days, dry_run=True, **options)
    if dry_run:
        return _report_cleanup(planned, None, as_json)
    if (planned.rows or planned.counter_rows) and not yes:
        click.confirm(f"Delete {planned.rows:,} rows created before {when(planned.cutoff)} and "
                      f"{planned.counter_rows:,} hourly limit counters from {reports.store.redacted_url}?",
                      abort=True, err=True)
    with progress_bar("deleting rows", planned.rows) as update:
        result = reports.cleanup(days, progress=update, **options)
    space = None
    if reclaim and (result.rows or result.counter_rows):
        with progress_bar("reclaiming space", None):
            space = reports.store.reclaim_space()
    _report_cleanup(result, space, as_json)


def _report_cleanup(result, space, as_json) -> None:
    before, after = space or (None, None)
    if as_json:
        echo_json({**result.to_dict(), "bytes_before": before, "bytes_after": after})
        return
    verb = "would delete" if result.dry_run else "deleted"
    click.echo(f"{verb} {result.rows:,} rows created before {when(result.cutoff)} (and {result.hour_rollup_rows:,} "
               f"hour rollups of those hours) and {result.counter_rows:,} hourly limit counters before "
               f"{when(result.counters_cutoff)}; daily and monthly rollups are kept")
    if before is not None and after is not None:
        from rich.filesize import decimal

        click.echo(f"reclaimed {decimal(max(before - after, 0))}: the tables took {decimal(before)}, "
                   f"now {decimal(after)}")

