"""``config check FILE`` and ``config schema``: validate a models.json as a tracker would, and publish its schema."""

from __future__ import annotations

import json

import click

from .common import json_option, one_line_errors


@click.group("config")
def config():
    """models.json: check a file, or print its JSON Schema."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@one_line_errors
def check(path, as_json):
    """Validate PATH (unknown or duplicate keys, bounds, labels): exit 0 when a tracker would load it, else 1
    with one line naming the key and the fix."""
    from dspy_tokens.config import check_file

    found = check_file(path)
    rules = len(found.limits) + sum(getattr(found, key) is not None for key in (
        "user_limit", "guild_limit", "global_limit", "daily_token_limit", "user_cost_limit", "guild_cost_limit",
        "global_cost_limit", "daily_cost_limit", "monthly_cost_limit")) + sum(len(m.limits) for m in found.models)
    if as_json:
        click.echo(json.dumps({"ok": True, "file": path, "models": len(found.models), "rules": rules}))
    else:
        click.echo(f"{path}: OK ({len(found.models)} models, {rules} limit rules)")


@config.command("schema")
def schema():
    """Print the JSON Schema of models.json (for editors: "$schema" or a JSON Schema store)."""
    from dspy_tokens.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))
