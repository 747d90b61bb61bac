"""Is any tracker seeing the calls? Which DSPy history entries a tracker recorded, so that a ``usage_context``
(and so a ``tracker.guard``) can tell, when it ends, that LM calls made inside it reached no tracker at all — the
tracker was never registered with ``dspy.configure(callbacks=[...])`` or the LM — and say so once."""

from __future__ import annotations

import logging
from collections import OrderedDict

from .dspy_internals import global_history

log = logging.getLogger("dspy_tokens")

MAX_RECORDED = 20_000
SCAN = 512  # history entries looked at when a context ends (those made while it was open are the last ones)
_recorded: OrderedDict[str, None] = OrderedDict()
_warned = False


def note_recorded(entry_uuid) -> None:
    """A tracker recorded the call of this history entry."""
    _recorded[entry_uuid] = None
    if len(_recorded) > MAX_RECORDED:
        try:
            _recorded.popitem(last=False)
        except KeyError:  # emptied by another thread meanwhile
            pass


def history_mark():
    """The newest history entry now (None when there is none): the calls made after it are the newer entries."""
    history = global_history()
    return history[-1] if history else None


def warn_if_unrecorded(mark, seen_by_a_tracker: bool) -> None:
    """At the end of a context: warn once if calls were made inside it that no tracker recorded."""
    global _warned
    if _warned or seen_by_a_tracker:
        return
    recent = global_history()[-SCAN:]
    unrecorded = 0
    for entry in reversed(recent):
        if entry is mark:
            break
        if isinstance(entry, dict) and entry.get("uuid") not in _recorded:
            unrecorded += 1
    if unrecorded:
        _warned = True
        log.warning("dspy-tokens: %d LM calls made inside usage_context/tracker.guard() reached no TokenTracker, so "
                    "they are not recorded and limits cannot see them: register the tracker with "
                    "dspy.configure(callbacks=[tracker]) (or dspy.context(callbacks=[tracker]), or "
                    "dspy.LM(..., callbacks=[tracker]))", unrecorded)
