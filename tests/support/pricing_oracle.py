"""LiteLLM's own cost function as an oracle for dspy-tokens' pricing.

Every chat/completion/responses model of LiteLLM's bundled price map (the map dspy-tokens prices from) is priced
under each usage shape below, by ``PriceBook.cost`` (exact ``Decimal``) and by ``litellm.cost_per_token`` (floats),
and the two are compared to 1e-12 relative. A disagreement is *explained* when it falls in one of the classes of
:func:`explain`, each a place where LiteLLM adds what the map does not say or prices what dspy-tokens deliberately
leaves unknown; anything else is *unexplained*.

Run ``LITELLM_LOCAL_MODEL_COST_MAP=True python tests/support/pricing_oracle.py`` for the agreement per shape.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODES = ("chat", "completion", "responses")
TOLERANCE = Decimal("1e-12")
#: Map providers whose names are not what a DSPy model string starts with.
PREFIXES = {"bedrock_converse": "bedrock", "cohere_chat": "cohere"}
#: Providers LiteLLM prices only after an interactive network login (a device-code flow): not asked offline.
NEEDS_LOGIN = {"github_copilot", "chatgpt"}
LOGIN = "litellm needs a login"


@dataclass(frozen=True)
class Shape:
    usage: dict
    service_tier: str | None = None


def _usage(prompt=1000, completion=500, cached=0, write=0, write_1h=0, reasoning=0, audio_in=0, audio_out=0,
           image_in=0) -> dict:
    prompt_details: dict = {"cached_tokens": cached}
    if write:
        prompt_details["cache_creation_tokens"] = write
        prompt_details["cache_creation_token_details"] = {"ephemeral_5m_input_tokens": write - write_1h,
                                                          "ephemeral_1h_input_tokens": write_1h}
    if audio_in:
        prompt_details["audio_tokens"] = audio_in
    if image_in:
        prompt_details["image_tokens"] = image_in
    completion_details: dict = {"reasoning_tokens": reasoning}
    if audio_out:
        completion_details["audio_tokens"] = audio_out
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": prompt_details, "completion_tokens_details": completion_details}


SHAPES: dict[str, Shape] = {
    "plain": Shape(_usage()),
    "reasoning": Shape(_usage(reasoning=200)),
    "cache_read": Shape(_usage(cached=600)),
    "cache_write_5m": Shape(_usage(write=400)),
    "cache_write_1h": Shape(_usage(write=400, write_1h=400)),
    "long_context": Shape(_usage(prompt=300_000)),
    "long_ctx_cached": Shape(_usage(prompt=300_000, cached=100_000)),
    "priority": Shape(_usage(), "priority"),
    "flex": Shape(_usage(), "flex"),
    "audio": Shape(_usage(audio_in=300, audio_out=200)),
    "image": Shape(_usage(image_in=300)),
}


def model_string(key: str, entry: dict) -> str:
    """What a DSPy user writes for the map's entry ``key``: ``provider/name``."""
    provider = str(entry.get("litellm_provider") or "")
    if "/" in key or not provider:
        return key
    if provider.startswith("vertex_ai"):
        provider = "vertex_ai"
    return f"{PREFIXES.get(provider, provider)}/{key}"


def models() -> list[tuple[str, str, dict]]:
    """(map key, model string, entry) of every chat/completion/responses model of the bundled map."""
    import litellm
    return [(key, model_string(key, entry), entry) for key, entry in sorted(litellm.model_cost.items())
            if isinstance(entry, dict) and entry.get("mode") in MODES and key != "sample_spec"]


def litellm_cost(model: str, shape: Shape, provider: str | None = None) -> Decimal | str | None:
    import litellm
    if provider in NEEDS_LOGIN:
        return LOGIN
    try:
        prompt, completion = litellm.cost_per_token(model=model, usage_object=litellm.Usage(**shape.usage),
                                                    service_tier=shape.service_tier)
    except Exception:
        return None
    return Decimal(repr(prompt + completion))


def our_cost(book, model: str, shape: Shape) -> Decimal | None:
    from dspy_tokens.capture.usage import normalize_usage
    try:
        counts = normalize_usage(shape.usage, service_tier=shape.service_tier)
    except TypeError:  # a pricing without service tiers
        counts = normalize_usage(shape.usage)
    return book.cost(counts, model).usd


def agree(ours: Decimal | None, theirs: Decimal | str | None) -> bool:
    if isinstance(theirs, str):
        return False
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if ours == theirs:
        return True
    return abs(ours - theirs) <= TOLERANCE * max(abs(ours), abs(theirs))


def explain(key: str, model: str, entry: dict, shape_name: str, ours, theirs) -> str | None:
    """The documented class of a disagreement, or None (unexplained). Imported lazily so the BEFORE run of an
    older pricing can use this module unchanged."""
    try:
        from tests.support.oracle_classes import classify
    except ImportError:
        return None
    return classify(key, model, entry, shape_name, ours, theirs)


@dataclass
class Result:
    cases: Counter = field(default_factory=Counter)
    agreed: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    unexplained: list = field(default_factory=list)
    examples: dict = field(default_factory=lambda: defaultdict(list))

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def quiet() -> None:
    import logging

    import litellm
    litellm.suppress_debug_info = True
    logging.getLogger("dspy_tokens").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)


def run(shapes: dict[str, Shape] = SHAPES) -> Result:
    from dspy_tokens.config import Config
    from dspy_tokens.pricing import PriceBook
    book = PriceBook(Config())
    result = Result()
    for key, model, entry in models():
        for name, shape in shapes.items():
            ours, theirs = our_cost(book, model, shape), litellm_cost(model, shape, entry.get("litellm_provider"))
            result.cases[name] += 1
            if agree(ours, theirs):
                result.agreed[name] += 1
                continue
            why = explain(key, model, entry, name, ours, theirs)
            if why is None:
                result.unexplained.append((name, model, ours, theirs))
            else:
                result.classes[why] += 1
                if len(result.examples[why]) < 3:
                    result.examples[why].append((name, model, ours, theirs))
    return result


def report(result: Result) -> str:
    lines = [f"{'shape':<16} {'cases':>6} {'agree':>6} {'agreement':>9}"]
    for name in result.cases:
        lines.append(f"{name:<16} {result.cases[name]:>6} {result.agreed[name]:>6} "
                     f"{100 * result.agreed[name] / result.cases[name]:>8.2f}%")
    agreed = sum(result.agreed.values())
    lines.append(f"{'overall':<16} {result.total:>6} {agreed:>6} {100 * agreed / result.total:>8.2f}%")
    lines.append("explained disagreements:")
    for why, count in result.classes.most_common():
        lines.append(f"  {count:>6}  {why}   e.g. {result.examples[why][0]}")
    lines.append(f"unexplained: {len(result.unexplained)}")
    lines += [f"  {case}" for case in result.unexplained[:20]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    quiet()
    print(report(run()))
