"""``spill status|replay|discard``: what waits on disk for the database and where, replaying it now, and deleting
what an operator decided to give up (after a confirmation). Trackers replay waiting files by themselves; these
commands are for looking, for a replay without a tracker, and for rows the database refused before a fix."""

from __future__ import annotations

import click

from dspy_tokens.store import Store

from .common import database_option, echo_json, json_option, one_line_errors, when
from .tables import render_table

WAITING = ("spill", "journal", "claimed")
spill_dir_option = click.option(
    "--spill-dir", type=click.Path(file_okay=False), default=None,
    help="The spill directory (default: the one a tracker on --database uses: beside a SQLite file, else "
         "$DSPY_TOKENS_SPILL_DIR/<digest> or ~/.cache/dspy_tokens/spill/<digest>).")


def _directory(database, spill_dir):
    from dspy_tokens.ingest import SpillDirectory, default_spill_dir  # imports DSPy: only for these commands

    return SpillDirectory(spill_dir) if spill_dir else SpillDirectory(default_spill_dir(Store(database)))


def _state(spill_file) -> str:
    if spill_file.kind in ("journal", "claimed"):
        return "held by a running process" if spill_file.live else "waiting (its process ended)"
    return {"spill": "waiting", "rejected": "refused as data", "unreadable": "not rows"}[spill_file.kind]


@click.group()
def spill():
    """Rows waiting on disk for the database: status, replay, discard."""


@spill.command("status")
@spill_dir_option
@database_option
@json_option
@one_line_errors
def status(spill_dir, database, as_json):
    """List the spill directory: rows waiting for the database, refused rows, unreadable lines."""
    directory = _directory(database, spill_dir)
    files = directory.files()
    waiting = sum(f.rows for f in files if f.kind in WAITING and not f.live)
    held = sum(f.rows for f in files if f.live)
    rejected = sum(f.rows for f in files if f.kind == "rejected")
    unreadable = sum(f.rows for f in files if f.kind == "unreadable")
    if as_json:
        echo_json({"spill_dir": str(directory.path), "waiting": waiting, "held_by_running_processes": held,
                   "rejected": rejected, "unreadable": unreadable,
                   "files": [{"name": f.path.name, "kind": f.kind, "live": f.live, "rows": f.rows, "bytes": f.bytes,
                              "modified": f.modified} for f in files]})
        return
    click.echo(render_table(("kind", "state", "rows", "bytes", "modified", "file"),
                            [(f.kind, _state(f), f.rows, f.bytes, when(f.modified), f.path.name) for f in files],
                            title=str(directory.path)))
    click.echo(f"{waiting:,} rows wait for the database (any tracker on it replays them; now: dspy-tokens spill "
               f"replay); {held:,} are held by running processes; {rejected:,} were refused as data (after a fix: "
               f"dspy-tokens spill replay --rejected); {unreadable:,} lines are not rows")


@spill.command("replay")
@click.option("--rejected", is_flag=True, help="Also replay rows the database refused before (after fixing why).")
@spill_dir_option
@database_option
@one_line_errors
def replay(rejected, spill_dir, database):
    """Write the waiting rows into the database now (rows already stored are skipped)."""
    from dspy_tokens.ingest import replay_directory

    store = Store(database)
    result = replay_directory(_directory(database, spill_dir), store.write_batch, rejected=rejected)
    click.echo(f"replayed {result.files:,} files: {result.rows:,} rows, {result.written:,} new "
               f"({result.rows - result.written - result.rejected:,} were stored already)")
    if result.rejected:
        click.echo(f"{result.rejected:,} rows refused as data ({result.last_rejection}); kept in rejected-*.jsonl")
    if result.unreadable:
        click.echo(f"{result.unreadable:,} lines are not rows; kept in unreadable-*.jsonl")
    for reason in result.skipped:
        click.echo(f"left in place: {reason}")
    if result.unavailable is not None:
        raise click.ClickException(f"the database stopped answering ({result.unavailable}); the other files still "
                                   "wait: run this again later")


@spill.command("discard")
@click.option("--rejected", "kinds", flag_value="rejected", multiple=True, help="Rows the database refused.")
@click.option("--unreadable", "kinds", flag_value="unreadable", multiple=True, help="Lines that are not rows.")
@click.option("--waiting", "kinds", flag_value="waiting", multiple=True,
              help="Rows waiting for the database (never the files of running processes).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@spill_dir_option
@database_option
@one_line_errors
def discard(kinds, yes, spill_dir, database):
    """Delete spill files for good (they are not in the database): choose --rejected, --unreadable, --waiting."""
    if not kinds:
        raise click.UsageError("say what to discard: --rejected, --unreadable and/or --waiting")
    chosen = {kind for k in kinds for kind in (WAITING if k == "waiting" else (k,))}
    directory = _directory(database, spill_dir)
    files = [f for f in directory.files() if f.kind in chosen and not f.live]
    if not files:
        click.echo("nothing to discard")
        return
    rows = sum(f.rows for f in files)
    click.echo(render_table(("kind", "rows", "file"), [(f.kind, f.rows, f.path.name) for f in files]))
    if not yes:
        click.confirm(f"Delete these {len(files):,} files ({rows:,} rows)? The rows are not in the database and "
                      "cannot be recovered", abort=True)
    gone = directory.discard(files)
    click.echo(f"deleted {len(gone):,} files ({sum(f.rows for f in gone):,} rows) from {directory.path}")
