"""Shared fixtures: a database per backend (SQLite always; PostgreSQL/MariaDB when reachable, each run in a
private scratch database), a local OpenAI-compatible server, and trackers that are closed after each test.
Helpers are plain modules under ``tests/support`` (``from tests.support.db import stored_rows``)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before dspy is imported: pricing stays offline

import dspy  # noqa: E402
import litellm  # noqa: E402, F401 - pricing imports it on first use (~2 s): once here, so that tests' short
import pytest  # noqa: E402           timeouts (close(timeout=1)) measure the tracker, not that import

from dspy_tokens import Config, TokenTracker  # noqa: E402
from dspy_tokens.testing import FakeLLMServer  # noqa: E402
from tests.support.db import MYSQL_URL, POSTGRES_URL, drop_all_tables, scratch_database, server_problem  # noqa: E402

_scratch: dict[str, str] = {}


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
])
def database_url(request, tmp_path):
    """A fresh, empty database of each backend; server backends are skipped with the reason when absent."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.db'}"
        return
    server_url = POSTGRES_URL if request.param == "postgres" else MYSQL_URL
    problem = server_problem(server_url)
    if problem:
        pytest.skip(f"{request.param} server not reachable at {server_url}: {problem}")
    if server_url not in _scratch:
        _scratch[server_url] = scratch_database(server_url)
    url = _scratch[server_url]
    drop_all_tables(url)
    yield url
    drop_all_tables(url)


@pytest.fixture
def sqlite_url(tmp_path):
    """A fresh SQLite file in the test's temporary directory (only SQLite: tests of SQLite-specific behaviour)."""
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.fixture
def make_tracker(tmp_path):
    """Build trackers that are closed (and their writers stopped) at the end of the test."""
    made = []

    def make(database: str, config=None, **kwargs) -> TokenTracker:
        kwargs.setdefault("spill_dir", tmp_path / f"spill{len(made)}")
        # No config means no config: never the example ./models.json at the repository root (the tests' cwd).
        tracker = TokenTracker(database, config if config is not None else Config(), **kwargs)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=5)


@pytest.fixture
def tracker(make_tracker, database_url):
    """A tracker on each backend (no models.json: no limits, price-map prices)."""
    return make_tracker(database_url)


@pytest.fixture
def sqlite_tracker(make_tracker, sqlite_url):
    """A tracker on a SQLite file (no models.json)."""
    return make_tracker(sqlite_url)


@pytest.fixture
def server():
    """A FakeLLMServer (``dspy_tokens.testing``) running for the test; ``server.lm()`` is a real dspy.LM on it."""
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_dspy_cache(tmp_path):
    """Every test gets its own empty DSPy cache, so cache hits happen only where a test makes them.

    In memory only: a fresh disk cache (16 SQLite shards) costs 0.2-1 s per test; tests of the disk cache
    configure one themselves."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    callbacks = dspy.settings.callbacks
    yield
    # A test leaves nothing in DSPy's global settings (dspy.settings.save pickles them): not its callbacks, and not
    # its programs, which DSPy's global trace keeps (with their LMs and those LMs' trackers).
    if dspy.settings.callbacks is not callbacks:
        dspy.configure(callbacks=callbacks)
    dspy.settings.trace.clear()
