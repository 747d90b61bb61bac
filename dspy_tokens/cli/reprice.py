"""``reprice``: stored costs recomputed from today's prices (after a models.json fix or a LiteLLM update), with the
counters and rollups moved in the same transactions; ``--dry-run`` shows the difference and writes nothing."""

from __future__ import annotations

from decimal import Decimal

import click

from dspy_tokens.reports import decimal_text

from .common import (
    UTCTime,
    config_option,
    database_option,
    echo_json,
    json_option,
    one_line_errors,
    open_store,
    progress_bar,
    when,
)
from .tables import render_table

HEADERS = ("model", "rows", "changed", "unknown → priced", "unpriced", "ambiguous", "old cost", "new cost",
           "difference")


def _money(value: Decimal) -> str:
    """Exact dollars: ``$0.000123``, ``-$0.5``."""
    return f"{'-' if value < 0 else ''}${decimal_text(abs(value))}"


def _cells(group) -> tuple:
    return (group.model, group.rows, group.changed, group.newly_priced, group.unpriced, group.ambiguous,
            _money(group.old_cost_usd), _money(group.new_cost_usd), _money(group.difference_usd))


@click.command()
@click.option("--since", type=UTCTime(), required=True, help="First creation time to price again (UTC, inclusive).")
@click.option("--until", type=UTCTime(), default=None, help="End (UTC, exclusive; default: no end).")
@click.option("--model", default=None, help="Only this model (as configured, e.g. openai/gpt-4o-mini).")
@click.option("--dry-run", is_flag=True, help="Only show what would change; write nothing.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Rows per transaction.")
@config_option
@json_option
@database_option
@one_line_errors
def reprice(since, until, model, dry_run, batch_size, config_path, as_json, database):
    """Recompute the stored cost of the calls made since --since from today's prices (models.json and the LiteLLM
    price map), and move the counters, the daily cube and the rollups with them, one transaction per batch.

    Prints per model: rows read, rows whose cost changed, rows priced that had no price, rows without a price today
    (kept as they were), rows whose cost depends on a split the row does not record (kept), and the cost before and
    after. Rerunning changes nothing."""
    from dspy_tokens import TokenTracker  # imports DSPy

    open_store(database).close()  # a database without our data is an error, and nothing is created
    tracker = TokenTracker.reader(database, config=config_path)
    try:
        with progress_bar("would reprice" if dry_run else "repricing") as update:
            result = tracker.reprice(since, until, model, dry_run=dry_run, batch_size=batch_size,
                                     progress=lambda done, total: update(done, total))
    finally:
        tracker.close()
    if as_json:
        echo_json(result)
        return
    span = f"created from {when(result.since)}" + (f" to {when(result.until)}" if result.until else "")
    title = (f"{'Dry run: ' if dry_run else ''}rows {span}{f' of {model}' if model else ''}, priced at "
             f"{result.price_version}")
    rows = [_cells(g) for g in result.models]
    if len(rows) > 1:
        rows.append(_cells(result.total))
    click.echo(render_table(HEADERS, rows, title))
    total = result.total
    if dry_run:
        click.echo(f"dry run: {total.changed:,} of {total.rows:,} rows would change by "
                   f"{_money(total.difference_usd)}; nothing was written")
    else:
        click.echo(f"repriced {result.written:,} of {total.rows:,} rows: {_money(total.difference_usd)}; "
                   "counters and rollups moved with them")
    if total.ambiguous:
        click.echo(f"{total.ambiguous:,} rows kept their cost: it depends on how their audio tokens split between "
                   "input and output, or their cache writes between 5-minute and 1-hour, which rows do not record")
