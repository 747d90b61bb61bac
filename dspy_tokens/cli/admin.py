"""``db migrate|status|rebuild-counters`` and ``prices``: the schema, the audit, and what a model costs."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import click

from dspy_tokens import load_config
from dspy_tokens.reports import decimal_text
from dspy_tokens.store import Store, redact

from .common import (
    EXIT_NO,
    config_option,
    database_option,
    echo_json,
    json_option,
    one_line_errors,
    open_store,
    progress_bar,
)
from .tables import render_table


@click.group()
def db():
    """Schema: migrate, status, and the counters audit."""


@db.command("migrate")
@database_option
@one_line_errors
def db_migrate(database):
    """Create or upgrade the schema (trackers also do this on first write)."""
    store = Store(database)
    for migration in store.migrate():
        click.echo(f"applied {migration.version}: {migration.name}")
    click.echo(f"{redact(store.url)}: schema up to date")


@db.command("status")
@json_option
@database_option
@one_line_errors
def db_status(as_json, database):
    """Show which schema migrations are applied (a read: nothing is created)."""
    store = open_store(database)
    status = store.migration_status()
    store.close()
    if as_json:
        echo_json([{"version": m.version, "name": m.name, "applied_at": applied_at} for m, applied_at in status])
        return
    click.echo(render_table(("version", "migration", "applied (UTC)"),
                            [(m.version, m.name, f"{applied_at:%Y-%m-%d %H:%M:%S}" if applied_at else "pending")
                             for m, applied_at in status], f"Schema of {redact(store.url)}"))


SHOWN = ("calls", "tokens", "cost_usd")  # of the counters' measures (unpriced_calls is in --json)
TABLE_NAMES = {"scope": "per user/guild/global", "model": "per model"}


@db.command("rebuild-counters")
@click.option("--check", is_flag=True,
              help="Only audit: say how the counters differ from the rows, change nothing; exit 3 if they do.")
@json_option
@database_option
@one_line_errors
def rebuild_counters(check, as_json, database):
    """Audit the hourly limit counters against the raw rows and rebuild them (writers wait meanwhile).

    Prints, per counter table, how many counters were missing, orphaned or wrong and the totals before and
    after. With --check nothing is written and the exit code is 3 when they drifted.
    """
    store = open_store(database)
    with progress_bar("reading rows") as update:
        audit = store.rebuild_counters(check=check, progress=update)
    store.close()
    if as_json:
        echo_json({"rows": audit.rows, "checked_only": audit.checked_only, "drifted": audit.drifted,
                   "tables": [dataclasses.asdict(t) for t in audit.tables]})
    else:
        click.echo(render_table(
            ("counters", "expected", "missing", "orphaned", "wrong", *(m.replace("_usd", "") for m in SHOWN)),
            [(TABLE_NAMES[t.table], t.counters, t.added, t.removed, t.changed,
              *(_change(t.before[m], t.after[m]) for m in SHOWN)) for t in audit.tables],
            f"Hourly limit counters against {audit.rows:,} rows"))
        if not audit.drifted:
            click.echo("no drift: the counters match the rows")
        else:
            click.echo("the counters had drifted from the rows; " + (
                "run without --check to rebuild them" if check else "rebuilt from the rows"))
    if check and audit.drifted:
        click.get_current_context().exit(EXIT_NO)



def _change(before, after) -> str:
    def text(n):
        return f"${decimal_text(n)}" if isinstance(n, Decimal) else f"{n:,}"
    return text(after) if before == after else f"{text(before)} → {text(after)}"


@click.command()
@click.argument("model")
@click.option("--response-model", default=None,
              help="The model the provider reported (e.g. gpt-4o-mini-2024-07-18); tried first in the price map.")
@config_option
@json_option
@one_line_errors
def prices(model, response_model, config_path, as_json):
    """The price dspy-tokens uses for MODEL, and where it comes from."""
    from dspy_tokens.pricing import SOURCE_CONFIG, PriceBook, price_map_version  # imports DSPy's price map

    config = load_config(config_path)
    found = PriceBook(config).rates(model, response_model)
    if found is None:
        raise click.ClickException(
            f"no price known for {model!r}: its calls are recorded with an unknown cost (never $0); add "
            f"input_cost_per_token and output_cost_per_token to its entry in {config.source}")
    price, source, priced_as = found
    origin = (f"models.json ({config.source})" if source == SOURCE_CONFIG
              else f"the LiteLLM price map bundled with DSPy (snapshot {price_map_version() or 'unknown'})")
    rates = {"input": price.input, "output": price.output,
             "cache_read": price.cache_read if price.cache_read is not None else price.input,
             "reasoning": price.reasoning if price.reasoning is not None else price.output}
    if as_json:
        echo_json({"model": model, "source": source, "origin": origin, "priced_as": priced_as,
                    "usd_per_token": {k: decimal_text(v) for k, v in rates.items()}})
        return
    click.echo(f"{model}: priced as {priced_as} from {origin}")
    million = Decimal(10**6)
    click.echo(render_table(("tokens", "USD per token", "USD per 1M tokens"),
                            [(k.replace("_", " "), decimal_text(v), decimal_text(v * million))
                             for k, v in rates.items()]))
