"""A recording process for the metrics tests: ``web_writer.py DB_URL LLM_URL SPILL_DIR MODEL FEATURE CALLS``
makes CALLS tracked DSPy calls, closes its tracker (every row committed) and exits."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main(db_url: str, llm_url: str, spill_dir: str, model: str, feature: str, calls: str) -> None:
    import dspy

    from dspy_tokens import TokenTracker, usage_context

    tracker = TokenTracker(db_url, spill_dir=spill_dir)
    lm = dspy.LM(model, api_base=llm_url, api_key="test", cache=False)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, callbacks=[tracker]), usage_context(user_id=os.getpid(), feature=feature):
        for i in range(int(calls)):
            predict(question=f"{feature} {i}")
    assert tracker.close(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
