"""The decision of a consume, written once: every SQL consume path calls ``decide``.

A consume reads what it needs (the day's row; the stored answer of its Idempotency-Key,
if it carries one) under the database's lock, decides here without I/O, and writes back
what the decision changed, in the same transaction. ``decide_batch`` runs a group-
committed batch through ``decide`` in arrival order, each request seeing the rows and
answers its predecessors left, and returns exactly what is to be written back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import Conflict

DayKey = tuple[str, str, str]  # account id, service, day (ISO)
ClaimKey = tuple[str, str]  # account id, Idempotency-Key
# Builds a named tuple without its Python-level ``__new__``, the costliest part of
# building one: ``decide`` builds three per consume.
_new = tuple.__new__


class DayRow(NamedTuple):
    """A day's counters as stored."""

    used: int
    total: int
    rejected: int


class Answer(NamedTuple):
    """An Idempotency-Key's first answer, as stored with the key."""

    fingerprint: str
    expires_at: datetime
    outcome: ConsumeOutcome


# Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which
# more than doubles the cost of the one built per consume. Nothing changes it once built.
@dataclass(slots=True)
class Consume:
    """One ``consume`` call."""

    account_id: str
    service: str
    day: date
    cost: int
    total: int
    claim: IdempotencyClaim | None
    now: datetime | None
    row_key: DayKey = field(init=False)  # the day row it counts against

    def __post_init__(self) -> None:
        self.row_key = (self.account_id, self.service, self.day.isoformat())


class Decision(NamedTuple):
    """What one consume answers, and what it changes."""

    answer: ConsumeOutcome | Conflict
    row: DayRow | None  # the day's row afterwards; None when it is left as it was
    remember: Answer | None  # the answer to store with the claim; None to store nothing


def decide(row: DayRow | None, request: Consume, seen: Answer | None) -> Decision:
    """Grant ``request`` iff its cost fits the day's total, or answer its claim's replay.

    Args:
        row: the day's stored row; ``None`` for a day not stored yet (nothing used).
        request: the consume.
        seen: the stored answer of the request's Idempotency-Key, if any.

    A claim seen before and not expired at ``request.now`` (never, without a ``now``)
    answers its first outcome again, marked replayed, or ``Conflict`` when the
    fingerprints differ; either way nothing changes. Otherwise the day's total becomes
    the request's, the cost is added if it fits (all or nothing) or one rejection is
    counted, and a claim is remembered with this outcome.
    """
    claim = request.claim
    if (
        claim is not None
        and seen is not None
        and (request.now is None or seen.expires_at > request.now)
    ):
        if seen.fingerprint != claim.fingerprint:
            return Decision(
                Conflict("Idempotency-Key was used with a different request"), None, None
            )
        return Decision(seen.outcome._replace(replayed=True), None, None)
    total = request.total
    used, rejected = (0, 0) if row is None else (row[0], row[2])
    granted = used + request.cost <= total
    if granted:
        used += request.cost
    else:
        rejected += 1
    outcome = _new(ConsumeOutcome, (granted, used, total, request.day, False, (), -1, 0))
    remember = None if claim is None else Answer(claim.fingerprint, claim.expires_at, outcome)
    return _new(Decision, (outcome, _new(DayRow, (used, total, rejected)), remember))


class Decided(NamedTuple):
    """A batch decided: each request's answer, and what to write back."""

    answers: list[ConsumeOutcome | Exception]
    rows: dict[DayKey, DayRow]  # every day row the batch changed, as it is to be stored
    claims: dict[ClaimKey, Answer]  # every answer to store with its Idempotency-Key


def decide_batch(
    batch: list[Consume], rows: Mapping[DayKey, DayRow], seen: Mapping[ClaimKey, Answer]
) -> Decided:
    """``decide`` each request in arrival order, on the stored ``rows`` and ``seen`` answers
    as the requests before it in the batch left them."""
    answers: list[ConsumeOutcome | Exception] = []
    written: dict[DayKey, DayRow] = {}
    remembered: dict[ClaimKey, Answer] = {}
    for request in batch:
        row_key = request.row_key
        row = written.get(row_key)
        if row is None:
            row = rows.get(row_key)
        claim_key = answer = None
        if request.claim is not None:
            claim_key = (request.account_id, request.claim.key)
            answer = remembered.get(claim_key)
            if answer is None:
                answer = seen.get(claim_key)
        decision = decide(row, request, answer)
        answers.append(decision.answer)
        if decision.row is not None:
            written[row_key] = decision.row
        if decision.remember is not None and claim_key is not None:
            remembered[claim_key] = decision.remember
    return Decided(answers, written, remembered)


def lock_order(batch: list[Consume]) -> dict[DayKey, int]:
    """Each day row of the batch, in one lock order for every node, with the total its
    first consume brings (the total a row is created with)."""
    totals: dict[DayKey, int] = {}
    for request in batch:
        totals.setdefault(request.row_key, request.total)
    return dict(sorted(totals.items()))


def claim_order(batch: list[Consume]) -> dict[ClaimKey, IdempotencyClaim]:
    """Each Idempotency-Key of the batch, in one lock order, with its first claim."""
    claims: dict[ClaimKey, IdempotencyClaim] = {}
    for request in batch:
        if request.claim is not None:
            claims.setdefault((request.account_id, request.claim.key), request.claim)
    return dict(sorted(claims.items()))
