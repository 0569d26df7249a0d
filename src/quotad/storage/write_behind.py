"""What a node of a counter store has granted that SQL does not hold yet.

A Redis deployment decides in Redis and writes behind to SQL. Redis may lose what it
holds (a restart without persistence, a failover to an empty replica, ``FLUSHALL``), so
the node that granted a change keeps it here, in its own memory, until SQL has it: the
usage a node acknowledged survives a Redis loss for as long as that node lives.

Limits v2's window counters (a month's, a key's hour…) are kept and flushed the same
way as day rows, each under its ``(account, name, period)``; so are a credit grant's
(SPEC 10: ``credits.<grant id>``), each by what the consume moved it (a take, not the
call's debit; negative for a give-back).

Changes are kept as deltas (``used + 3``), never as absolute values, so several nodes
can write the same day without overwriting each other; each flush is one SQL
transaction numbered per node (``seq``), so a flush whose commit went unanswered is
retried without being counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# account id, service, ISO day; or for Limits v2's other window counters account id, limit
# name, period (its usage_days row: service = the name, day = the period). Rates have none:
# their buckets are Redis's only.
DayKey = tuple[str, str, str]


class StoredClaim(NamedTuple):
    """An Idempotency-Key's first answer, as kept in SQL and restored to Redis."""

    account_id: str
    key: str
    fingerprint: str
    expires_ms: int
    granted: bool
    used: int
    total: int
    day: str


@dataclass
class DayDelta:
    """What one node changed on one day since its last flush."""

    used: int = 0
    rejected: int = 0
    total: int = 0  # the latest total the node saw in force


@dataclass
class Changes:
    """A batch of changes for one flush: day deltas, and claims stored (or dropped: None)."""

    days: dict[DayKey, DayDelta] = field(default_factory=dict)
    claims: dict[tuple[str, str], StoredClaim | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.days or self.claims)

    def add(self, key: DayKey, used: int, rejected: int, total: int) -> None:
        """Count ``used`` more (or fewer) units and ``rejected`` more refusals on a day."""
        delta = self.days.get(key)
        if delta is None:
            self.days[key] = DayDelta(used, rejected, total)
        else:
            delta.used += used
            delta.rejected += rejected
            delta.total = total


class Journal:
    """The changes a node has made and not yet flushed, and the flush in doubt."""

    def __init__(self) -> None:
        self.pending = Changes()
        self.seq = 0  # the last flush known to be in SQL
        self.in_doubt: Changes | None = None  # sent as seq + 1, outcome unknown

    def take(self) -> tuple[int, Changes]:
        """The next flush: the one in doubt again (same number), else everything pending."""
        if self.in_doubt is None:
            self.in_doubt, self.pending = self.pending, Changes()
        return self.seq + 1, self.in_doubt

    def done(self, seq: int) -> None:
        """Flush ``seq`` is in SQL."""
        self.seq = seq
        self.in_doubt = None

    def forget(self, account_id: str) -> None:
        """Drop an account's pending changes: it was deleted, and may come back under its id.

        A flush in doubt is resent whole; SQL drops what it holds of an account deleted
        before it lands.
        """
        pending = self.pending
        pending.days = {key: d for key, d in pending.days.items() if key[0] != account_id}
        pending.claims = {key: c for key, c in pending.claims.items() if key[0] != account_id}
