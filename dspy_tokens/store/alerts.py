"""Budget alerts fired once: ``token_alerts_sent`` holds one row per (rule, scope id, window period, threshold), and
the process whose insert wins is the one that delivers the alert — however many processes see the crossing."""

from __future__ import annotations

from datetime import datetime

import peewee

from ._db import classified, write_transaction


class AlertLedger:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self.m = store.models

    @classified
    def claim(self, rule: str, scope_id: int, period: int, threshold: str, now: datetime) -> bool:
        """Record that this alert fired; ``True`` only for the one caller whose insert created the row."""
        self.store.ensure_schema()
        try:
            with write_transaction(self.db):
                self.m.AlertSent.insert(rule=rule[:190], scope_id=scope_id, period=period, threshold=threshold,
                                        sent_at=now).execute()
        except peewee.IntegrityError:  # the unique key: another process (or an earlier check) fired it
            return False
        return True

    @classified
    def sent(self, rule: str | None = None) -> list[dict]:
        """The alerts fired (of one rule, when given), oldest first."""
        a = self.m.AlertSent
        query = a.select()
        if rule is not None:
            query = query.where(a.rule == rule)
        return list(query.order_by(a.sent_at, a.rule, a.scope_id, a.threshold).dicts())
