"""normalize_usage and is_cache_hit: pure unit tests, plus a property test over arbitrary, malformed usage."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_tokens.capture.usage import MAX_TOKENS_PER_CALL, TokenCounts, is_cache_hit, normalize_usage


@pytest.fixture(autouse=True)
def _fresh_dspy_cache():
    """Pure tests: no DSPy cache to reset (overrides the conftest fixture)."""
    yield


def counts(c: TokenCounts) -> tuple:
    return c.prompt, c.completion, c.total, c.cached, c.reasoning


# -- examples -------------------------------------------------------------------------------------------------------

class TestNormalizeUsage:
    """normalize_usage on real and malformed provider usage: counts kept, recomputed or refused, never negative."""

    def test_openai_usage_with_details(self):
        """OpenAI's usage: cached tokens stay inside prompt_tokens, reasoning inside completion_tokens."""
        c = normalize_usage({"prompt_tokens": 158, "completion_tokens": 23, "total_tokens": 181,
                             "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 7, "audio_tokens": 0}})
        assert counts(c) == (158, 23, 181, 100, 7) and c.reported and c.problem is None

    @pytest.mark.parametrize("usage", [None, {}, [], "", 0, "usage", SimpleNamespace(prompt_tokens=5)])
    def test_no_usage_is_unreported(self, usage):
        """Missing, empty or non-mapping usage is unreported: every count None, never zero."""
        c = normalize_usage(usage)
        assert not c.reported and counts(c) == (None,) * 5

    @pytest.mark.parametrize("usage", [
        {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "prompt_tokens_details": None},
        {"prompt_tokens": 0, "completion_tokens": 0},
        {"prompt_tokens": 0},
        {"total_tokens": 0},
    ])
    def test_all_zero_usage_is_unreported(self, usage):
        """All-zero usage (LiteLLM's filler when the provider sent none) is unreported, not a free call."""
        c = normalize_usage(usage)
        assert not c.reported and counts(c) == (None,) * 5 and c.problem == "provider reported all-zero usage"

    @pytest.mark.parametrize("usage, total", [
        ({"prompt_tokens": 103, "completion_tokens": 13}, 116),
        ({"prompt_tokens": 103, "completion_tokens": 13, "total_tokens": 0}, 116),  # LiteLLM on partial usage
        ({"prompt_tokens": 103, "completion_tokens": 13, "total_tokens": 100}, 116),  # smaller than its parts
        ({"prompt_tokens": 103, "completion_tokens": 13, "total_tokens": 120}, 116),  # larger: never charged blindly
    ])
    def test_partial_usage_recomputes_the_total(self, usage, total):
        """With both parts reported the total is their sum: a missing, zero, too-small or too-large total is
        recomputed as prompt + completion."""
        c = normalize_usage(usage)
        assert c.reported and (c.prompt, c.completion, c.total) == (103, 13, total)
        assert (c.cached, c.reasoning) == (0, 0)

    def test_a_total_far_above_its_parts_is_named_and_not_counted(self):
        """A 15-token call reporting total_tokens 999,999,999 counts 15, and the disagreement is named."""
        c = normalize_usage({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 999_999_999})
        assert (c.prompt, c.completion, c.total) == (10, 5, 15) and c.reported
        assert "999999999" in c.problem and "counted 15" in c.problem

    @pytest.mark.parametrize("usage, expected", [
        ({"completion_tokens": 50}, (None, 50, 50)),
        ({"prompt_tokens": 40}, (40, None, 40)),
        ({"completion_tokens": 50, "total_tokens": 80}, (None, 50, 80)),  # the total covers the part: kept
        ({"completion_tokens": 50, "total_tokens": 20}, (None, 50, 50)),  # smaller than the part: the part
    ])
    def test_usage_missing_one_part_still_counts(self, usage, expected):
        """Usage without prompt_tokens (or completion_tokens) still has a total limits can count, and the missing
        part is named."""
        c = normalize_usage(usage)
        assert (c.prompt, c.completion, c.total) == expected and c.reported and "missing" in c.problem

    def test_only_a_total_is_kept_without_a_split(self):
        """Only total_tokens: reported, with prompt and completion unknown."""
        c = normalize_usage({"total_tokens": 50})
        assert c.reported and (c.prompt, c.completion, c.total) == (None, None, 50)

    def test_numbers_as_strings_and_integral_floats_are_accepted(self):
        """Digit strings and integral floats are usable counts."""
        c = normalize_usage({"prompt_tokens": " 12 ", "completion_tokens": 3.0, "total_tokens": "15"})
        assert counts(c) == (12, 3, 15, 0, 0)

    @pytest.mark.parametrize("bad", [-1, 1.5, math.nan, math.inf, True, "12a", "²", "9" * 5000, MAX_TOKENS_PER_CALL + 1,
                                     [1], {"n": 1}])
    def test_malformed_counts_are_ignored_and_named(self, bad):
        """A malformed count is ignored (never negative, never a crash) and named in ``problem``."""
        c = normalize_usage({"prompt_tokens": bad, "completion_tokens": 5})
        assert c.prompt is None and c.completion == 5 and c.reported
        assert "prompt_tokens" in c.problem

    def test_details_larger_than_their_totals_are_clamped(self):
        """cached > prompt or reasoning > completion is clamped to the total and reported as a problem."""
        c = normalize_usage({"prompt_tokens": 10, "completion_tokens": 4,
                             "prompt_tokens_details": {"cached_tokens": 50},
                             "completion_tokens_details": {"reasoning_tokens": 9}})
        assert (c.cached, c.reasoning) == (10, 4)
        assert "cached_tokens > prompt_tokens" in c.problem and "reasoning_tokens > completion_tokens" in c.problem

    def test_details_as_objects(self):
        """LiteLLM may hand details over as objects rather than dicts."""
        c = normalize_usage({"prompt_tokens": 10, "completion_tokens": 4,
                             "prompt_tokens_details": SimpleNamespace(cached_tokens=6),
                             "completion_tokens_details": SimpleNamespace(reasoning_tokens=None)})
        assert (c.cached, c.reasoning) == (6, 0)


# -- cache-hit detection ----------------------------------------------------------------------------------------------

native_response = SimpleNamespace(usage=SimpleNamespace(input_tokens=104, output_tokens=14))


no_usage_response = SimpleNamespace(usage=SimpleNamespace(input_tokens=None))


class TestCacheHits:
    """is_cache_hit: empty usage plus a hit flag or a cached response carrying usage."""

    @pytest.mark.parametrize("entry, hit", [
        pytest.param({"usage": {"prompt_tokens": 5}, "response": native_response}, False, id="usage-present"),
        pytest.param({"usage": {}, "response": native_response}, True, id="native-hit"),
        pytest.param({"usage": {}, "response": SimpleNamespace(cache_hit=True, usage={})}, True, id="litellm-hit"),
        pytest.param({"usage": {}, "response": no_usage_response}, False, id="provider-sent-no-usage"),
        pytest.param({"usage": {}, "response": None}, False, id="no-response"),
        pytest.param({"usage": {}, "response": (native_response, native_response)}, True, id="n>1-native-hit"),
        pytest.param({"usage": {}, "response": (no_usage_response,) * 2}, False, id="n>1-no-usage"),
        pytest.param({"usage": {}, "response": SimpleNamespace(cache_hit="yes")}, False, id="truthy-non-bool-flag"),
    ])
    def test_cache_hit_detection(self, entry, hit):
        """A hit is empty usage plus a hit flag or a cached response carrying usage; empty usage alone is not a hit."""
        assert is_cache_hit(entry) is hit


# -- property: arbitrary usage never breaks normalisation -----------------------------------------------------------

VALID = st.integers(min_value=0, max_value=MAX_TOKENS_PER_CALL)


def _is_count_string(s: str) -> bool:
    s = s.strip()
    return s.isascii() and s.isdigit()


# (raw value, the count it must yield or None)
COUNT = st.one_of(
    VALID.map(lambda n: (n, n)),
    VALID.map(lambda n: (str(n), n)),
    VALID.map(lambda n: (float(n), n)),
    st.none().map(lambda v: (v, None)),
    st.integers(max_value=-1).map(lambda v: (v, None)),
    st.integers(min_value=MAX_TOKENS_PER_CALL + 1).map(lambda v: (v, None)),
    st.integers(min_value=MAX_TOKENS_PER_CALL + 1, max_value=10**30).map(lambda v: (str(v), None)),
    st.integers(max_value=-1).map(lambda v: (str(v), None)),
    st.floats(allow_nan=True, allow_infinity=True)
    .filter(lambda f: not (math.isfinite(f) and f.is_integer() and 0 <= f <= MAX_TOKENS_PER_CALL))
    .map(lambda v: (v, None)),
    st.booleans().map(lambda v: (v, None)),
    st.text(max_size=8).filter(lambda s: not _is_count_string(s)).map(lambda v: (v, None)),
    st.lists(st.integers(), max_size=2).map(lambda v: (v, None)),
)


DETAILS = st.one_of(
    st.none(), st.text(max_size=4), st.integers(), st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries({}, optional={"cached_tokens": COUNT, "reasoning_tokens": COUNT, "audio_tokens": COUNT}),
)


MAIN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@st.composite
def usages(draw):
    """(usage dict, the valid prompt/completion/total counts it carries, the valid cached/reasoning counts)."""
    usage, expected = {}, {}
    for key in MAIN_KEYS:
        if draw(st.booleans()):
            raw, count = draw(COUNT)
            usage[key], expected[key] = raw, count
        else:
            expected[key] = None
    details = {}
    for section, key in (("prompt_tokens_details", "cached_tokens"), ("completion_tokens_details", "reasoning_tokens")):
        if draw(st.booleans()):
            value = draw(DETAILS)
            if isinstance(value, dict) and key in value:
                details[key] = value[key][1]
                value = {k: v[0] for k, v in value.items()}
            elif isinstance(value, dict):
                value = {k: v[0] for k, v in value.items()}
            usage[section] = value
    for extra in draw(st.lists(st.text(max_size=6).filter(lambda k: k not in usage), max_size=2)):
        usage[extra] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4)))
    return usage, expected, details


class TestArbitraryUsage:
    """Property: arbitrary, malformed usage never breaks normalisation."""

    @settings(max_examples=200, deadline=None)
    @given(usages())
    def test_normalize_usage_property(self, case):
        """Arbitrary usage dicts (None, strings, negatives, huge, NaN, missing fields, junk details) never raise, never
        yield a negative count, and are unreported exactly when no positive usable count was given."""
        usage, expected, details = case
        c = normalize_usage(usage)
        for value in counts(c):
            assert value is None or (type(value) is int and 0 <= value <= 2 * MAX_TOKENS_PER_CALL)
        prompt, completion, total = (expected[k] for k in MAIN_KEYS)
        assert c.reported is bool(prompt or completion or total)
        if not c.reported:
            assert counts(c) == (None,) * 5
            return
        if prompt is None and completion is None:  # only a total
            assert (c.prompt, c.completion, c.total) == (None, None, total)
            return
        assert (c.prompt, c.completion) == (prompt, completion)
        if prompt is not None and completion is not None:
            assert c.total == prompt + completion
        else:  # one part: the reported total if it covers that part, else the part (never uncounted)
            known = prompt if prompt is not None else completion
            assert c.total == (total if total is not None and total >= known else known)
        cached, reasoning = details.get("cached_tokens"), details.get("reasoning_tokens")
        assert c.cached == (min(cached, prompt) if cached is not None and prompt is not None else cached or 0)
        assert c.reasoning == (min(reasoning, completion) if reasoning is not None and completion is not None
                               else reasoning or 0)
