"""Reservation leaks: a guarded block whose process dies never settles its reservation. It must expire after
``reservation_ttl_seconds`` so the user is refused for at most that long, never forever."""

from __future__ import annotations

import json
import os
import signal
import time

from dspy_tokens.config import parse_config
from tests.support.db import reservation_expiry, reservations, store_of
from tests.support.reliability import read_event, spawn

TTL = 3
CONFIG = {"user_limit": 10_000, "reservation_ttl_seconds": TTL}
USER, ESTIMATE = 77, 8_000


def test_a_killed_guard_blocks_the_user_only_until_its_reservation_expires(database_url, make_tracker, tmp_path):
    """A SIGKILLed guard's reservation refuses the user until reservation_ttl_seconds pass, and not after."""
    child = spawn("hold", database_url, str(tmp_path / "child-spill"), json.dumps(CONFIG), str(USER), str(ESTIMATE))
    held = read_event(child, "held", timeout=120)
    assert held["allowed"] and held["reservation"]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    tracker = make_tracker(database_url, parse_config(CONFIG, "leak"))
    # From the stored expiry (the database's clock, which the child's print time only approximates under load).
    expires = reservation_expiry(tracker, held["reservation"])
    decision = tracker.check(user_id=USER, estimate=ESTIMATE)
    if time.time() < expires - 0.5:  # still well inside the TTL: the leaked reservation counts
        assert not decision.allowed and decision.reserved == ESTIMATE
        assert "in flight" in decision.message
    while not (decision := tracker.check(user_id=USER, estimate=ESTIMATE)).allowed:
        assert time.time() < expires + 2.0, f"still refused {time.time() - expires:.1f}s after the TTL"
        time.sleep(0.05)
    late = time.time() - expires
    print(f"\nleaked reservation on {store_of(tracker).dialect}: admitted again {late:+.2f}s from its expiry "
          f"(TTL {TTL}s)")
    assert late >= -0.5  # not before it expired
    assert decision.reserved == 0
    with tracker.guard(user_id=USER, estimate=ESTIMATE) as admitted:
        assert admitted.allowed and admitted.reservation_id
    assert tracker.flush(timeout=30)
    assert reservations(tracker) == 0  # the expired one was swept when the new one was taken
