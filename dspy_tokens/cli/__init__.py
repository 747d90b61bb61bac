"""The ``dspy-tokens`` command line (also ``python -m dspy_tokens``). Every command takes ``--database`` (default:
$DSPY_TOKENS_DATABASE_URL, else sqlite:///dspy_tokens.db; a bare path is a SQLite file). Errors are one line on
stderr and a non-zero exit, never a traceback (exit codes: :data:`.common.EXIT_CODES_HELP`). Read commands never
create anything. Commands use the public API only; DSPy and rich are imported only by the commands that need them.
"""

from __future__ import annotations

import click

from . import admin, config, data, demo, limit_admin, report, reprice, serve, spill, transfer
from .common import EXIT_CODES_HELP


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="dspy-tokens")
def main():
    """Token usage and cost of DSPy programs: record, report, limit."""


main.add_command(demo.demo)
main.add_command(admin.db)
main.add_command(limit_admin.limits)
main.add_command(config.config)
main.add_command(report.report)
main.add_command(report.top)
main.add_command(report.session)
main.add_command(data.export)
main.add_command(data.cleanup)
main.add_command(reprice.reprice)
main.add_command(transfer.copy)
main.add_command(transfer.import_)
main.add_command(admin.prices)
main.add_command(serve.serve)
main.add_command(spill.spill)
# The audit lives under `db`; the old top-level name keeps working for scripts.
main.add_command(click.Command("rebuild-counters", callback=admin.rebuild_counters.callback,
                               params=admin.rebuild_counters.params, help=admin.rebuild_counters.help, hidden=True))

__all__ = ["main"]
