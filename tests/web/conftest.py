"""Fixtures of the web tests: a seeded database (real DSPy calls) and the app over it on a real socket."""

from __future__ import annotations

import pytest

from dspy_tokens.web import create_app
from tests.support.web import ADMIN_TOKEN, READ_TOKEN, ServedApp, seed


@pytest.fixture
def seeded(make_tracker, database_url, server):
    """Usage from real DSPy programs (today) and three earlier days, on each backend."""
    return seed(make_tracker(database_url), server, database_url)


@pytest.fixture
def served(seeded):
    """The app (admin and read tokens set) over the seeded database, on a real socket."""
    with ServedApp(create_app(seeded.url, admin_token=ADMIN_TOKEN, read_token=READ_TOKEN)) as running:
        yield running



@pytest.fixture(scope="module")
def sqlite_seeded(tmp_path_factory):
    """One seeded SQLite database shared by a module's tests that only read (auth, metrics, the browser)."""
    from dspy_tokens import Config, TokenTracker
    from dspy_tokens.testing import FakeLLMServer

    folder = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{folder / 'usage.db'}"
    with FakeLLMServer() as server:
        tracker = TokenTracker(url, Config(), spill_dir=folder / "spill")
        try:
            yield seed(tracker, server, url)
        finally:
            tracker.close(timeout=5)


@pytest.fixture(scope="module")
def sqlite_served(sqlite_seeded):
    """The app (admin and read tokens set) over the shared SQLite database, on a real socket."""
    with ServedApp(create_app(sqlite_seeded.url, admin_token=ADMIN_TOKEN, read_token=READ_TOKEN)) as running:
        yield running
