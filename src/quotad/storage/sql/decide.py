"""The decision of a consume, written once: every SQL consume path calls ``decide``.

A consume reads what it needs (the day's row; the stored answer of its Idempotency-Key,
if it carries one) under the database's lock, decides here without I/O, and writes back
what the decision changed, in the same transaction. ``decide_batch`` runs a group-
committed batch through ``decide`` (a Limits v2 ``SlotConsume``: ``decide_slots``, over
every counter it checks, each a row of the same table) in arrival order, each request
seeing the rows and answers its predecessors left, and returns exactly what is to be written back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NamedTuple, cast

from quotad.domain import limits
from quotad.domain.credits import Hold, Reservation
from quotad.domain.limits import Slot, is_day_row
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


@dataclass(slots=True)
class SlotConsume(Consume):
    """A Limits v2 ``consume``: its day row and every other counter, decided together.

    A subclass, so that a version-1 consume (the hot path) builds and decides exactly as
    before; ``slots[0]`` is the day row, and ``keys`` each slot's row, in slot order.
    """

    slots: tuple[Slot, ...] = ()
    hold: Hold | None = None  # the reservation a grant makes in the same transaction
    keys: tuple[DayKey, ...] = ()  # given when known (``slot_keys``), else made here

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = slot_keys(self.account_id, self.slots)
        self.row_key = self.keys[0]  # the day row's


def slot_keys(account_id: str, slots: tuple[Slot, ...]) -> tuple[DayKey, ...]:
    """The row of each of an account's slots, in slot order: its name and period."""
    return tuple([(account_id, slot[0], slot[1]) for slot in slots])


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
    outcome = _new(ConsumeOutcome, (granted, used, total, request.day, False, (), -1, 0, ()))
    remember = None if claim is None else Answer(claim.fingerprint, claim.expires_at, outcome)
    return _new(Decision, (outcome, _new(DayRow, (used, total, rejected)), remember))


def now_us(request: Consume) -> int:
    """The instant (µs since the epoch) a consume's rates are decided at: its ``now``, else
    the wall clock (as the memory store reckons it)."""
    return int((request.now or datetime.now(UTC)).timestamp() * 1_000_000)


def replayed(request: Consume, seen: Answer | None) -> Decision | None:
    """The answer of a claim seen before and not expired (or ``Conflict``), else ``None``."""
    claim = request.claim
    if (
        claim is None
        or seen is None
        or (request.now is not None and seen.expires_at <= request.now)
    ):
        return None
    if seen.fingerprint != claim.fingerprint:
        return Decision(Conflict("Idempotency-Key was used with a different request"), None, None)
    return Decision(seen.outcome._replace(replayed=True, at_us=now_us(request)), None, None)


class SlotsDecision(NamedTuple):
    """What one Limits v2 consume answers, and what it changes."""

    answer: ConsumeOutcome | Conflict
    rows: list[DayRow] | None  # each slot's row afterwards, in slot order; None: unchanged
    remember: Answer | None


def decide_slots(
    rows: Sequence[DayRow | None], request: SlotConsume, seen: Answer | None
) -> SlotsDecision:
    """Grant ``request`` iff no hard slot refuses (``limits.decide``), all or nothing.

    Args:
        rows: each slot's stored row (``None``: absent, its value 0), in slot order.
        request: the consume and its slots.
        seen: the stored answer of the request's Idempotency-Key, if any.

    Granted, every slot's row takes the value ``limits.decide`` gives it; refused, none moves and
    each day row among them counts one rejection. Either way each row's total becomes
    its slot's, as a version-1 consume makes the day's total the request's.
    """
    if request.claim is not None:
        replay = replayed(request, seen)
        if replay is not None:
            return SlotsDecision(replay.answer, None, None)
    slots = request.slots
    at = now_us(request)
    before = tuple([0 if row is None else row[0] for row in rows])
    refused, values = limits.decide(before, slots, at)  # one pass: refusal and values
    # ``rows`` holds one row a slot: walked by index (cheaper than zip, per slot per consume).
    after = []
    index = 0
    if refused < 0:
        for row in rows:
            # slot[2]: its total
            after.append(
                _new(DayRow, (values[index], slots[index][2], 0 if row is None else row[2]))
            )
            index += 1
    else:
        values = list(before)
        for row in rows:
            slot = slots[index]
            rejected = 0 if row is None else row[2]
            if is_day_row(slot):
                rejected += 1
            after.append(_new(DayRow, (before[index], slot[2], rejected)))
            index += 1
    outcome = _new(
        ConsumeOutcome,
        (
            refused < 0,
            values[0],
            slots[0][2],
            request.day,
            False,
            before,
            refused,
            at,
            tuple(values),  # verify need not decide again
        ),
    )
    claim = request.claim
    remember = None if claim is None else Answer(claim.fingerprint, claim.expires_at, outcome)
    return _new(SlotsDecision, (outcome, after, remember))


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
        claim_key = answer = None
        if request.claim is not None:
            claim_key = (request.account_id, request.claim.key)
            answer = remembered.get(claim_key)
            if answer is None:
                answer = seen.get(claim_key)
        if request.__class__ is not Consume:  # a Limits v2 consume: all its slots
            multi: SlotConsume = request  # type: ignore[assignment]  # (cast() is a call)
            keys = multi.keys
            stored = [written.get(key) or rows.get(key) for key in keys]
            answer_of, after, remember = decide_slots(stored, multi, answer)
            answers.append(answer_of)
            if after is not None:
                # One row a key (decide_slots' contract): zip needs no ``strict`` here.
                written.update(zip(keys, after))  # noqa: B905
            if remember is not None and claim_key is not None:
                remembered[claim_key] = remember
            continue
        row_key = request.row_key
        row = written.get(row_key)
        if row is None:
            row = rows.get(row_key)
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
        if request.__class__ is Consume:
            totals.setdefault(request.row_key, request.total)
        else:
            multi = cast("SlotConsume", request)
            for key, slot in zip(multi.keys, multi.slots, strict=True):
                totals.setdefault(key, slot.total)
    return dict(sorted(totals.items()))


def claim_order(batch: list[Consume]) -> dict[ClaimKey, IdempotencyClaim]:
    """Each Idempotency-Key of the batch, in one lock order, with its first claim."""
    claims: dict[ClaimKey, IdempotencyClaim] = {}
    for request in batch:
        if request.claim is not None:
            claims.setdefault((request.account_id, request.claim.key), request.claim)
    return dict(sorted(claims.items()))


def made_reservations(
    batch: list[Consume], answers: Sequence[ConsumeOutcome | Exception]
) -> list[tuple[Hold, Reservation]]:
    """The reservation each granted (not replayed) consume of the batch with a ``hold``
    makes, to insert in the batch's transaction (and hand its hold once committed)."""
    made = []
    for request, answer in zip(batch, answers, strict=True):
        if request.__class__ is Consume or not isinstance(answer, ConsumeOutcome):
            continue
        hold = cast("SlotConsume", request).hold
        if hold is None or not answer.granted or answer.replayed:
            continue
        slots = cast("SlotConsume", request).slots
        reservation = hold.reservation_of(
            request.account_id, request.day, slots, answer.before, answer.after
        )
        made.append((hold, reservation))
    return made
