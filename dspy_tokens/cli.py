"""The ``dspy-tokens`` command line. Every command takes ``--database`` (default: $DSPY_TOKENS_DATABASE_URL,
else sqlite:///dspy_tokens.db). Errors are one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys

import click

from .db import ENV_VAR, redact, resolve_url
from .errors import DspyTokensError

database_option = click.option(
    "--database", "-d", envvar=ENV_VAR, default=None, show_envvar=True,
    help="Peewee database URL (sqlite:///file.db, postgresql://..., mysql://...). Default: sqlite:///dspy_tokens.db")


def one_line_errors(fn):
    """Turn expected failures into ``Error: ...`` with exit code 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DspyTokensError, ValueError, OSError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from exc
        except Exception as exc:  # database drivers raise their own classes
            if type(exc).__module__.split(".")[0] in ("peewee", "psycopg2", "pymysql", "sqlite3"):
                raise click.ClickException(" ".join(f"database error: {exc}".split())) from exc
            raise
    return wrapper


@click.group()
@click.version_option(package_name="dspy-tokens")
def main():
    """Token usage and cost of DSPy programs: record, report, limit."""


@main.command()
@database_option
@one_line_errors
def demo(database):
    """Run a tracked DSPy program against a local fake LLM server and print the usage."""
    from .demo import run_demo
    tracker = run_demo(database, echo=click.echo)
    tracker.close()


@main.group()
def db():
    """Schema: migrate and status."""


@db.command("migrate")
@database_option
@one_line_errors
def db_migrate(database):
    """Create or upgrade the schema (trackers also do this on first write)."""
    from .migrations import migrate
    from .store import Store
    store = Store(database)
    applied = migrate(store.db, store.models)
    for migration in applied:
        click.echo(f"applied {migration.version}: {migration.name}")
    click.echo(f"{redact(resolve_url(database))}: schema up to date")


@db.command("status")
@database_option
@one_line_errors
def db_status(database):
    """Show which schema migrations are applied."""
    from .migrations import status
    from .store import Store
    store = Store(database)
    for migration, applied_at in status(store.db, store.models):
        state = f"applied {applied_at:%Y-%m-%d %H:%M:%S} UTC" if applied_at else "pending"
        click.echo(f"{migration.version:>3}  {migration.name:<50}  {state}")


@main.command("limits")
@click.argument("user_id", type=int)
@click.option("--guild", "guild_id", type=int, default=None, help="The guild (server) the request comes from.")
@click.option("--model", default=None, help="The model the request would use (for per-model limits).")
@click.option("--estimate", type=int, default=None, help="Tokens the request may use (default: from models.json).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="models.json (default: ./models.json when present).")
@click.option("--bypasses", type=click.Path(dir_okay=False), default=None,
              help="token_bypasses.json (default: ./token_bypasses.json when present).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
@one_line_errors
def limits(user_id, guild_id, model, estimate, config_path, bypasses, as_json, database):
    """Would USER_ID's next request be allowed? The decision and every rule, for support staff."""
    import json as jsonlib

    from .config import load_bypasses, load_config
    from .limits import Limiter
    from .pricing import PriceBook
    from .store import Store

    config = load_config(config_path)
    limiter = Limiter(Store(database), config, load_bypasses(bypasses), PriceBook(config))
    decision = limiter.check(user_id, guild_id, model=model, estimate=estimate)
    rules = [decision, *decision.others] if decision.scope else []
    if as_json:
        click.echo(jsonlib.dumps({
            "allowed": decision.allowed, "bypassed": decision.bypassed, "enforcement": decision.enforcement,
            "message": decision.message,
            "rules": [{"rule": d.rule, "scope": d.scope, "metric": d.metric, "used": str(d.used),
                       "reserved": str(d.reserved), "limit": str(d.limit), "remaining": str(d.remaining),
                       "exceeded": d.exceeded, "resets_at": d.resets_at.isoformat() if d.resets_at else None}
                      for d in rules]}, indent=2))
        return
    from .tables import render_table
    verdict = "allowed" if decision.allowed else "REFUSED"
    click.echo(f"{verdict} ({decision.enforcement}): {decision.message}")
    if rules:
        click.echo(render_table(("rule", "used", "reserved", "limit", "remaining", "over", "frees up"), [
            (d.rule, d.used, d.reserved, d.limit, d.remaining, "yes" if d.exceeded else "",
             f"{d.resets_at:%Y-%m-%d %H:%M} UTC" if d.resets_at else None) for d in rules]))


@main.command("rebuild-counters")
@database_option
@one_line_errors
def rebuild_counters(database):
    """Recompute the hourly usage counters from the raw rows (an audit; writers wait meanwhile)."""
    from .counters import rebuild
    from .store import Store

    store = Store(database)
    store.ensure_schema()
    written = rebuild(store.db, store.models)
    click.echo(f"rebuilt from {written['rows']:,} rows: {written['scope']:,} scope counters, "
               f"{written['model']:,} per-model counters")


# -- reports, exports, retention, prices ---------------------------------------------------------------------------
class _UTCTime(click.ParamType):
    """YYYY-MM-DD (00:00 UTC) or an ISO 8601 time (naive = UTC)."""

    name = "TIME"

    def convert(self, value, param, ctx):
        from datetime import date, datetime, timezone
        if isinstance(value, datetime):
            return value
        try:
            if len(value) == 10:
                return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", param, ctx)
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _scope_options(default_period: str):
    """--period/--since/--until and the filters, shared by report, top and export."""
    options = [
        click.option("--period", "-p", default=default_period, show_default=True,
                     help="today, week, month (UTC calendar periods, from 00:00 / Monday / the 1st), all, "
                          "or a rolling length such as 7d or 24h."),
        click.option("--since", type=_UTCTime(), default=None, help="Start (UTC, inclusive); replaces --period."),
        click.option("--until", type=_UTCTime(), default=None, help="End (UTC, exclusive)."),
        click.option("--user", "user_id", type=int, default=None, help="Only this user id."),
        click.option("--guild", "guild_id", type=int, default=None, help="Only this guild (server) id."),
        click.option("--feature", default=None, help="Only this feature."),
        click.option("--model", default=None, help="Only this model (as configured, e.g. openai/gpt-4o-mini)."),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def _range(period, since, until) -> dict:
    return {"period": None if since is not None else period, "since": since, "until": until}


def _reports(database):
    """Reports over an existing database: a missing SQLite file is an error, not a new empty database."""
    from pathlib import Path

    from playhouse.db_url import parse

    from .reports import Reports
    from .store import Store
    url = resolve_url(database)
    if url.lower().startswith("sqlite"):
        path = parse(url).get("database")
        if path and path != ":memory:" and not Path(path).exists():
            raise click.ClickException(f"no database at {path}: record some calls first, or pass --database "
                                       f"(or set {ENV_VAR})")
    return Reports(Store(url))


def _money(totals) -> str:
    """Cost for people: priced calls' cost, plus how many calls have no known price."""
    if totals.calls and totals.unknown_cost_calls == totals.calls - totals.errors and totals.unknown_cost_calls:
        return "unknown"
    text = f"${totals.cost_usd:.6f}"
    return text + (f" + {totals.unknown_cost_calls:,} unpriced" if totals.unknown_cost_calls else "")


def _label(key) -> str:
    return "(none)" if key is None else str(key)


def _when(moment) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def _echo_json(payload) -> None:
    import json
    click.echo(json.dumps(payload, indent=2))


TOTAL_HEADERS = ("calls", "prompt", "completion", "cached", "reasoning", "total", "cost", "errors", "cache hits")


def _total_cells(t) -> tuple:
    return (t.calls, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.reasoning_tokens, t.total_tokens,
            _money(t), t.errors, t.cache_hits)


@main.command()
@_scope_options("month")
@click.option("--by", "by", default="feature,model,user,day", show_default=True,
              help="Breakdowns to show, comma-separated: user, guild, model, feature, day, session.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows per breakdown (largest first; day: the last N days).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
@one_line_errors
def report(period, since, until, user_id, guild_id, feature, model, by, limit, as_json, database):
    """What was spent today, this week, this month and in all; then breakdowns for --period."""
    from .reports import BREAKDOWNS
    from .tables import render_table

    reports = _reports(database)
    filters = dict(user_id=user_id, guild_id=guild_id, feature=feature, model=model)
    kinds = [k.strip() for k in by.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BREAKDOWNS]
    if unknown:
        raise click.ClickException(f"--by {','.join(unknown)}: breakdowns are {', '.join(BREAKDOWNS)}")
    chosen = _range(period, since, until)
    if since is None and until is None:
        summaries = {name: reports.summary(name, **filters) for name in ("today", "week", "month", "all")}
    else:
        summaries = {"range": reports.summary(**chosen, **filters)}
    breakdowns = {}
    for kind in kinds:
        groups = reports.breakdown(kind, **chosen, **filters)
        breakdowns[kind] = groups[-limit:] if kind == "day" else groups[:limit]
    if as_json:
        _echo_json({"summaries": {name: s.to_dict() for name, s in summaries.items()},
                    "breakdowns": {kind: [g.to_dict() for g in groups] for kind, groups in breakdowns.items()}})
        return
    scope = ", ".join(f"{k.replace('_id', '')} {v}" for k, v in filters.items() if v is not None)
    click.echo(render_table(
        ("period", "since", "users", *TOTAL_HEADERS),
        [(name, _when(s.since), s.active_users, *_total_cells(s)) for name, s in summaries.items()],
        "Usage" + (f" ({scope})" if scope else "") + ", UTC"))
    span = chosen["period"] or f"{_when(since)} to {_when(until) if until else 'now'}"
    for kind, groups in breakdowns.items():
        extra = ("first call",) if kind == "session" else ()
        rows = [(_label(g.key), *_total_cells(g), *((_when(g.first_at),) if extra else ())) for g in groups]
        click.echo("")
        click.echo(render_table((kind, *TOTAL_HEADERS, *extra), rows, f"By {kind} ({span})"))


@main.command()
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many.")
@click.option("--by", type=click.Choice(["tokens", "cost"]), default="tokens", show_default=True,
              help="Rank by total tokens or by cost.")
@click.option("--scope", type=click.Choice(["user", "guild"]), default="user", show_default=True,
              help="Rank users or guilds (servers).")
@_scope_options("month")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
@one_line_errors
def top(n, by, scope, period, since, until, user_id, guild_id, feature, model, as_json, database):
    """The biggest spenders of a period: users (or guilds) by tokens (or cost)."""
    from .tables import render_table

    groups = _reports(database).top(n, by, scope, **_range(period, since, until), user_id=user_id,
                                    guild_id=guild_id, feature=feature, model=model)
    if as_json:
        _echo_json([g.to_dict() for g in groups])
        return
    span = period if since is None else f"{_when(since)} to {_when(until) if until else 'now'}"
    click.echo(render_table(
        ("#", scope, "calls", "total tokens", "cost", "errors"),
        [(i, str(g.key), g.calls, g.total_tokens, _money(g), g.errors) for i, g in enumerate(groups, 1)],
        f"Top {n} {scope}s by {by} ({span})"))


@main.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
@one_line_errors
def session(session_id, as_json, database):
    """Every call of one session (a top-level DSPy run, or an explicit session id), in call order."""
    from .reports import _jsonable
    from .tables import render_table

    calls = _reports(database).session(session_id)
    if not calls:
        raise click.ClickException(f"no calls recorded for session {session_id!r} (retention may have removed "
                                   "them; `dspy-tokens report --by session` lists recent sessions)")
    if as_json:
        _echo_json([{k: _jsonable(v) for k, v in call.items()} for call in calls])
        return
    first = calls[0]
    click.echo(f"Session {session_id}: user {_label(first['user_id'])}, guild {_label(first['guild_id'])}, "
               f"{len(calls)} calls")
    click.echo(render_table(
        ("#", "time (UTC)", "module", "model", "prompt", "completion", "total", "cost", "ms", "note"),
        [(c["call_index"], f"{c['created_at']:%Y-%m-%d %H:%M:%S}", c["module"], c["model"], c["prompt_tokens"],
          c["completion_tokens"], c["total_tokens"], c["cost_usd"] if c["cost_usd"] is not None else "unknown",
          c["latency_ms"], "cache hit" if c["cache_hit"] else (c["error"] or "")[:60]) for c in calls]))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), default="csv", show_default=True)
@click.option("--anonymize", is_flag=True,
              help="Replace user, guild and channel ids by a salted hash (stable within this export only).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-", show_default=True,
              help="File to write (- for stdout).")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per database read.")
@_scope_options("all")
@database_option
@one_line_errors
def export(fmt, anonymize, output, batch_size, period, since, until, user_id, guild_id, feature, model, database):
    """Stream the recorded calls as CSV, a JSON array or JSON lines (constant memory; progress on stderr)."""
    reports = _reports(database)
    err = sys.stderr
    interactive = err.isatty()

    def progress(rows):
        if interactive:
            err.write(f"\rexported {rows:,} rows")
            err.flush()

    options = dict(anonymize=anonymize, batch_size=batch_size, progress=progress, user_id=user_id,
                   guild_id=guild_id, feature=feature, model=model, **_range(period, since, until))
    if output == "-":
        stdout = sys.stdout
        written = reports.export(fmt, stdout, **options)
        stdout.flush()
    else:
        written = reports.export(fmt, output, **options)
    if interactive:
        err.write("\r")
    click.echo(f"exported {written:,} rows" + ("" if output == "-" else f" to {output}")
               + (" (ids anonymized)" if anonymize else ""), err=True)


@main.command()
@click.option("--older-than", "older_than", type=click.IntRange(min=1), default=None,
              help="Delete raw rows older than DAYS (default: retention_days from models.json).", metavar="DAYS")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per short delete transaction.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="models.json (default: ./models.json when present).")
@database_option
@one_line_errors
def cleanup(older_than, dry_run, batch_size, config_path, database):
    """Delete old per-call rows in batches; daily and monthly rollups are kept, so old reports still answer."""
    from .config import load_config
    from .reports import DEFAULT_KEEP_COUNTERS_DAYS

    config = load_config(config_path)
    days = older_than or config.retention_days
    if days is None:
        raise click.ClickException("give --older-than DAYS (or set retention_days in models.json)")
    reports = _reports(database)
    err = sys.stderr
    interactive = err.isatty()

    def progress(rows):
        if interactive:
            err.write(f"\rdeleted {rows:,} rows")
            err.flush()

    result = reports.cleanup(days, batch_size=batch_size, dry_run=dry_run, progress=progress,
                             keep_counters_days=max(config.time_window_days + 1, DEFAULT_KEEP_COUNTERS_DAYS))
    if interactive and not dry_run:
        err.write("\r")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.rows:,} rows created before {_when(result.cutoff)} and {result.counter_rows:,} "
               f"hourly limit counters before {_when(result.counters_cutoff)}; daily and monthly rollups are kept")


@main.command()
@click.argument("model")
@click.option("--response-model", default=None,
              help="The model the provider reported (e.g. gpt-4o-mini-2024-07-18); tried first in the price map.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="models.json (default: ./models.json when present).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@one_line_errors
def prices(model, response_model, config_path, as_json):
    """The price dspy-tokens uses for MODEL, and where it comes from."""
    from decimal import Decimal

    from .config import load_config
    from .pricing import SOURCE_CONFIG, PriceBook, price_map_version
    from .reports import decimal_text
    from .tables import render_table

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
        _echo_json({"model": model, "source": source, "origin": origin, "priced_as": priced_as,
                    "usd_per_token": {k: decimal_text(v) for k, v in rates.items()}})
        return
    click.echo(f"{model}: priced as {priced_as} from {origin}")
    million = Decimal(10**6)
    click.echo(render_table(("tokens", "USD per token", "USD per 1M tokens"),
                            [(k.replace("_", " "), decimal_text(v), decimal_text(v * million))
                             for k, v in rates.items()]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
