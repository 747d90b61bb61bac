"""``db migrate|status|rebuild-counters`` and ``prices``: the schema, the audit, and what a model costs."""

from __future__ import annotations

from decimal import Decimal

import click

from dspy_tokens import load_config
from dspy_tokens.reports import decimal_text
from dspy_tokens.store import Store, redact

from .common import config_option, database_option, echo_json, json_option, one_line_errors
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
@database_option
@one_line_errors
def db_status(database):
    """Show which schema migrations are applied."""
    for migration, applied_at in Store(database).migration_status():
        state = f"applied {applied_at:%Y-%m-%d %H:%M:%S} UTC" if applied_at else "pending"
        click.echo(f"{migration.version:>3}  {migration.name:<50}  {state}")


@db.command("rebuild-counters")
@database_option
@one_line_errors
def rebuild_counters(database):
    """Recompute the hourly usage counters from the raw rows (an audit; writers wait meanwhile)."""
    written = Store(database).rebuild_counters()
    click.echo(f"rebuilt from {written['rows']:,} rows: {written['scope']:,} scope counters, "
               f"{written['model']:,} per-model counters")


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
