"""``dspy-tokens demo``: a real DSPy program against a local fake LLM server, tracked, then its usage."""

from __future__ import annotations

import click

from .common import one_line_errors

DEMO_DATABASE = "sqlite:///dspy_tokens_demo.db"


@click.command()
@click.option("--database", "-d", default=DEMO_DATABASE, show_default=True,
              help="Where the demo records its fake users' calls (never $DSPY_TOKENS_DATABASE_URL: the demo keeps "
                   "out of a real database unless you name one here).")
@one_line_errors
def demo(database):
    """Run a tracked DSPy program against a local fake LLM server and print the usage."""
    from .demo_program import run_demo  # imports DSPy: only this command pays for it

    tracker = run_demo(database, echo=click.echo)
    tracker.close()
