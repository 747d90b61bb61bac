"""``dspy-tokens demo``: a real DSPy program against a local fake LLM server, tracked, then its usage."""

from __future__ import annotations

import click

from .common import database_option, one_line_errors


@click.command()
@database_option
@one_line_errors
def demo(database):
    """Run a tracked DSPy program against a local fake LLM server and print the usage."""
    from .demo_program import run_demo  # imports DSPy: only this command pays for it

    tracker = run_demo(database, echo=click.echo)
    tracker.close()
