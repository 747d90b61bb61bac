"""What the writer's queues carry besides calls and rows: the markers for flush, settle and stop."""

from __future__ import annotations

import threading

STOP = object()


class Settle:
    """Delete this reservation with the rows queued before it."""

    __slots__ = ("reservation_id",)

    def __init__(self, reservation_id: str):
        self.reservation_id = reservation_id


class Flush:
    """Set ``event`` once everything queued before it is committed."""

    __slots__ = ("event",)

    def __init__(self):
        self.event = threading.Event()


#: With STOP, the markers that end the writer's gathering of rows: what they wait for is committed at once.
MARKERS = (Flush, Settle)
