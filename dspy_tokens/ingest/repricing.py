"""Stored rows priced again from today's prices (after a models.json fix or a LiteLLM update): ``tracker.reprice``.

A row is priced from every dimension it records (prompt, completion, cached, reasoning, cache-write and audio
tokens, the service tier, the reported model) by the same :class:`~dspy_tokens.pricing.PriceBook` that prices new
calls. What a row cannot tell is never guessed: when its cost would depend on a split it does not store (audio
tokens in against out, at different rates; 1-hour against 5-minute cache writes, at different rates) it keeps its
cost, and so does a row that today's prices cannot price at all (a stored cost is never turned into "unknown").
Cache hits and calls without usage cost what they cost. Both are counted in the result.

A row whose ``price_version`` is today's was priced at these very prices, so it is left as it is: that keeps what
rows do not store (image tokens) from changing a cost when no price did. Image tokens of rows priced at other
prices are priced as text.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from ..capture import TokenCounts
from ..pricing import SOURCE_CACHE_HIT, PriceBook
from ..store import Store, UsageRow
from .estimates import PREFIX

Q12 = Decimal("1e-12")  # what token_usage.cost_usd keeps
ZERO = Decimal(0)


@dataclass(frozen=True)
class RepriceGroup:
    """One model's rows in a reprice: how many, how many changed cost, and the cost before and after."""

    model: str
    rows: int = 0
    changed: int = 0
    newly_priced: int = 0  # unknown before, priced now
    unpriced: int = 0  # no price today: kept as they were (unknown ones stay unknown)
    ambiguous: int = 0  # the cost depends on a split the row does not record: kept as it was
    old_cost_usd: Decimal = ZERO  # the priced rows' stored cost
    new_cost_usd: Decimal = ZERO
    difference_usd: Decimal = ZERO


@dataclass(frozen=True)
class RepriceResult:
    """What :meth:`~dspy_tokens.TokenTracker.reprice` changed (``dry_run``: would change), per model and in all."""

    since: datetime
    until: datetime | None
    model: str | None
    dry_run: bool
    price_version: str
    models: tuple[RepriceGroup, ...]
    total: RepriceGroup
    written: int  # rows written (0 on a dry run; else total.changed)


@dataclass
class _Tally:
    rows: int = 0
    changed: int = 0
    newly_priced: int = 0
    unpriced: int = 0
    ambiguous: int = 0
    old_cost_usd: Decimal = ZERO
    new_cost_usd: Decimal = ZERO

    def add(self, other: "_Tally") -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def group(self, model: str) -> RepriceGroup:
        return RepriceGroup(model, self.rows, self.changed, self.newly_priced, self.unpriced, self.ambiguous,
                            self.old_cost_usd, self.new_cost_usd, self.new_cost_usd - self.old_cost_usd)


def _moment(value: datetime | date | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), timezone.utc)


def _as_stored(value: Decimal) -> Decimal:
    """A cost as ``token_usage.cost_usd`` keeps it (12 places, half up, as the aggregates' picodollars)."""
    return value.quantize(Q12, ROUND_HALF_UP)


def counts_of(row: UsageRow, audio_in: int = 0, write_1h: int = 0) -> TokenCounts:
    """The counts a stored row records, with ``audio_in`` of its audio tokens as input (the rest output) and
    ``write_1h`` of its cache writes at the 1-hour lifetime. Image tokens are not stored: priced as text."""
    audio = row.audio_tokens or 0
    return TokenCounts(row.prompt_tokens, row.completion_tokens, row.total_tokens, row.cached_tokens,
                       row.reasoning_tokens, reported=True, cache_write=row.cache_write_tokens or 0,
                       cache_write_1h=write_1h, audio_input=audio_in, audio_output=audio - audio_in,
                       service_tier=row.service_tier)


def _audio_bounds(row: UsageRow) -> tuple[int, int]:
    """The fewest and most of a row's audio tokens that can be input tokens (the rest are output)."""
    audio = row.audio_tokens or 0
    room_in = max((row.prompt_tokens or 0) - (row.cached_tokens or 0) - (row.cache_write_tokens or 0), 0)
    room_out = max((row.completion_tokens or 0) - (row.reasoning_tokens or 0), 0)
    return max(audio - room_out, 0), min(audio, room_in)


class Repricer:
    """Prices stored rows with ``prices`` and sums what changes, per model."""

    def __init__(self, prices: PriceBook):
        self.prices = prices
        self.version = prices.price_version
        self._groups: dict[str, _Tally] = {}

    def _group(self, model: str) -> _Tally:
        found = self._groups.get(model)
        if found is None:
            found = self._groups[model] = _Tally()
        return found

    def _priced(self, row: UsageRow) -> tuple[Decimal | None, str, bool]:
        """(cost, source, ambiguous) of ``row`` at today's prices; cost None: no price today."""
        def cost(audio_in: int = 0, write_1h: int = 0):
            return self.prices.cost(counts_of(row, audio_in, write_1h), row.model, row.response_model)

        low, high = _audio_bounds(row)
        base = cost(low)
        if base.usd is None:
            return None, base.source, False
        if low > high:  # more audio tokens than the prompt and completion can hold: no split is consistent
            return base.usd, base.source, True
        probes = []
        if high > low:
            probes.append(cost(high))
        if row.cache_write_tokens:
            probes.append(cost(low, row.cache_write_tokens))
        return base.usd, base.source, any(p.usd != base.usd for p in probes)

    def revise(self, rows: list[UsageRow]) -> list[UsageRow]:
        """Each row as today's prices make it (the row itself when its cost stays, or cannot be known)."""
        out = []
        for row in rows:
            group = self._group(row.model)
            new = self._revised(row, group)
            group.rows += 1
            if new is not row:
                group.changed += 1
                group.newly_priced += row.cost_usd is None
            group.old_cost_usd += row.cost_usd or ZERO
            group.new_cost_usd += new.cost_usd or ZERO
            out.append(new)
        return out

    def _revised(self, row: UsageRow, group: _Tally) -> UsageRow:
        if row.cache_hit or row.cost_source == SOURCE_CACHE_HIT or not (row.usage_reported or row.usage_estimated):
            group.unpriced += row.cost_usd is None and row.error is None
            return row
        if row.price_version == self.version:  # priced at these very prices (with what the row does not store)
            group.unpriced += row.cost_usd is None
            return row
        usd, source, ambiguous = self._priced(row)
        if usd is None:
            group.unpriced += 1
            return row
        if ambiguous:
            group.ambiguous += 1
            return row
        source = (PREFIX + source)[:20] if row.usage_estimated else source
        usd = _as_stored(usd)
        if (usd, source) == (row.cost_usd, row.cost_source):
            return row
        return row._replace(cost_usd=usd, cost_source=source, price_version=self.version)

    def result(self, since: datetime, until: datetime | None, model: str | None, dry_run: bool,
               written: int) -> RepriceResult:
        total = _Tally()
        for tally in self._groups.values():
            total.add(tally)
        return RepriceResult(since, until, model, dry_run, self.version,
                             tuple(tally.group(name) for name, tally in sorted(self._groups.items())),
                             total.group("(all)"), written)


def reprice(store: Store, prices: PriceBook, since: datetime | date, until: datetime | date | None = None,
            model: str | None = None, *, dry_run: bool = False, batch_size: int = 1000,
            progress: Callable[[int, int], None] | None = None) -> RepriceResult:
    """Price the rows created in ``[since, until)`` (of ``model``, if given) again with ``prices``, and write those
    whose cost changes with their counters and rollups, ``batch_size`` rows per transaction (see
    :class:`~dspy_tokens.store.costs.CostRewriter`). ``progress(rows_read, rows)`` after each batch."""
    start, end = _moment(since), _moment(until)
    if start is None:
        raise ValueError("reprice needs since= (the first creation time to price again)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    repricer = Repricer(prices)
    rewriter = store.costs
    total = rewriter.count(start, end, model) if progress is not None else 0
    written = rewriter.rewrite(start, end, model, repricer.revise, batch_size=batch_size, dry_run=dry_run,
                               progress=None if progress is None else lambda done: progress(done, total))
    return repricer.result(start, end, model, dry_run, written)

