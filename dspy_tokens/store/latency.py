"""For tests and benchmarks, a database far away: every statement waits a round trip before it reaches the driver (BEGIN, COMMIT and
queries alike), for tests and benchmarks of what a slow database does to the code above it. Only the latency is
simulated: the statements run on the real database."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import peewee


class _SlowCursor:
    def __init__(self, cursor: Any, seconds: float) -> None:
        self._cursor, self._seconds = cursor, seconds

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._seconds)
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._seconds)
        return self._cursor.executemany(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


@contextlib.contextmanager
def database_latency(seconds: float) -> Iterator[None]:
    """While the block runs, each statement any Peewee database of this process sends waits ``seconds`` first
    (a round trip to a distant server)::

        with database_latency(0.05):           # 50 ms round trips
            decision = tracker.check(user_id=1)
    """
    if seconds < 0:
        raise ValueError(f"latency must be >= 0 seconds, got {seconds!r}")
    original = peewee.Database.cursor

    def cursor(self: peewee.Database, *args: Any, **kwargs: Any) -> Any:
        return _SlowCursor(original(self, *args, **kwargs), seconds)

    peewee.Database.cursor = cursor  # type: ignore[method-assign]
    try:
        yield
    finally:
        peewee.Database.cursor = original  # type: ignore[method-assign]
