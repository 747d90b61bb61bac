"""``serve``: the dashboard, HTTP API and /metrics (``pip install "dspy-tokens[web]"``)."""

from __future__ import annotations

import click

from .common import config_option, database_option, one_line_errors, open_reports

ADMIN_ENV, READ_ENV = "DSPY_TOKENS_ADMIN_TOKEN", "DSPY_TOKENS_READ_TOKEN"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback a token is required.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port.")
@click.option("--admin-token", envvar=ADMIN_ENV, show_envvar=True, default=None,
              help="Token for ids, export and cleanup (better from the environment than on a command line).")
@click.option("--read-token", envvar=READ_ENV, show_envvar=True, default=None,
              help="Token for reading usage (ids pseudonymised).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@config_option
@database_option
@one_line_errors
def serve(host, port, admin_token, read_token, log_level, config_path, database):
    """Serve the usage dashboard (/), the JSON API (/api/docs) and Prometheus metrics (/metrics)."""
    try:
        from dspy_tokens import web
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    url = open_reports(database).store.url  # an existing database, never a new empty one
    app = web.create_app(url, admin_token=admin_token, read_token=read_token, config=config_path)
    web.serve(app, host, port, log_level=log_level,
              on_ready=lambda address: click.echo(f"dspy-tokens dashboard on {address} (API docs: {address}api/docs; "
                                                  "Ctrl-C stops)", err=True))
