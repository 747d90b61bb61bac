"""A fresh process that loads what another process saved with a tracker inside (tests/test_lifecycle.py). Prints
one JSON line: what the loaded callback turned out to be, and how many calls its database holds after one call.

    pickled.py settings DB_URL SPILL_DIR PATH LLM_URL live|none   dspy.settings.load, then one call
    pickled.py program  DB_URL SPILL_DIR PATH LLM_URL live|none   dspy.load(program), then one call
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main(kind: str, db_url: str, spill_dir: str, path: str, llm_url: str, tracker_first: str) -> None:
    import dspy

    from dspy_tokens import TokenTracker

    warnings = Warnings()
    logging.getLogger("dspy_tokens").addHandler(warnings)
    tracker = TokenTracker(db_url, spill_dir=spill_dir) if tracker_first == "live" else None
    if kind == "settings":
        configs = dspy.settings.load(path, allow_pickle=True)
        callback = configs["callbacks"][0]
        lm = dspy.LM("openai/gpt-4o-mini", api_base=llm_url, api_key="test", cache=False)
        program, context = dspy.Predict("question -> answer"), dict(lm=lm, callbacks=configs["callbacks"])
    else:
        program = dspy.load(path, allow_pickle=True)
        callback = program.lm.callbacks[0]
        context = {}
    loaded_is_tracker = callback is tracker
    if tracker is None:
        tracker = TokenTracker(db_url, spill_dir=spill_dir)  # created after loading: the reference finds it
    with dspy.context(**context):
        program(question="after loading")
    flushed = tracker.flush(30)
    print(json.dumps({"loaded": type(callback).__name__, "loaded_is_tracker": loaded_is_tracker,
                      "flushed": flushed, "committed": tracker.stats.committed, "warnings": warnings.messages}))
    tracker.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
