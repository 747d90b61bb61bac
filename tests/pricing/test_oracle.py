"""Pricing held against LiteLLM as an oracle: every chat/completion/responses model of the bundled price map under
every usage shape of tests/support/pricing_oracle.py (plain, reasoning, cache read, 5-minute and 1-hour cache
writes, long context with and without cache, priority, flex, audio, image), compared with
``litellm.cost_per_token`` to 1e-12 relative.

Every disagreement must fall in a documented class (tests/support/oracle_classes.py: LiteLLM needing a login,
inventing a Fireworks cache discount, pricing $0 what the map gives no token price, dropping Fireworks' service
tier, time-of-day discounts, a provider LiteLLM no longer routes, names LiteLLM re-resolves, tiered range lists);
none may be unexplained."""

from __future__ import annotations

import pytest

from tests.support import pricing_oracle
from tests.support.oracle_classes import CLASSES


@pytest.fixture(scope="module")
def result():
    pricing_oracle.quiet()
    return pricing_oracle.run()


def test_no_disagreement_with_litellm_is_unexplained(result):
    """Zero unexplained disagreements over the whole map; each explained one is in a named class."""
    assert result.unexplained == []
    assert set(result.classes) <= set(CLASSES)


def test_agreement_is_high_on_every_shape(result):
    """Each shape agrees on at least 85% of models (the classes above are the rest)."""
    for shape, cases in result.cases.items():
        assert result.agreed[shape] / cases > 0.85, (shape, result.agreed[shape], cases)


def test_the_oracle_covers_the_map(result):
    """The comparison runs over thousands of models and all eleven shapes."""
    assert set(result.cases) == set(pricing_oracle.SHAPES) and min(result.cases.values()) > 3000
