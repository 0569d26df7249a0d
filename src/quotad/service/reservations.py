"""Reservations (SPEC 10): a verify's cost held, then committed, cancelled or expired.

A settlement happens exactly once, whatever node or restart it spans:

1. ``claim_reservation`` (conditional: one node holds it). The claim names the settlement
   (``<nonce>:<status>:<committed>``) and the first named sticks, so a node that takes
   over a claim whose holder died finishes that holder's settlement, not its own.
2. The counters move in ONE consume under ``IdempotencyClaim(f"reservation:{id}", the
   settlement's fingerprint)``: a node that died after it is replayed, not re-applied.
   A larger commit whose extra a hard limit refuses moves it as overage in a second
   consume under its own claim (``reservation:{id}:over``), replayed the same way.
3. ``settle_reservation`` under the claim.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
import weakref
from collections import OrderedDict
from datetime import date, datetime, timedelta

import structlog

from quotad.domain import credits, days
from quotad.domain.credits import Reservation, ReservationStatus
from quotad.domain.limits import CREDIT, CREDIT_TAKE, HARD, TALLY, Slot
from quotad.domain.models import IdempotencyClaim
from quotad.errors import Conflict, NotFound, StorageError
from quotad.service import credits as credit_service
from quotad.service import verify
from quotad.service.context import Context
from quotad.service.verify import Verdict

log = structlog.get_logger("quotad.reservations")

CLAIM_SECONDS = 30  # how long a node holds a reservation it settles
REPLAY_DAYS = 60  # how long a settlement's counter claim is kept (far past any TTL)
SWEEP_BATCH = 100
HELD_PER_STORE = 4096  # reservations made here, kept for their commit (oldest dropped)
GIVE_BACK_ATTEMPTS = 8  # about 40 s of retries, as a consume's give-back (``storage.sql``)

# The pending reservations this process made (random ids only), by store: a commit of the
# reserved cost settles the copy with its conditional write instead of reading it first.
# That write succeeds only if the stored one is still pending, unclaimed and not due, and
# nothing changes a pending reservation but a claim, so the copy is what is stored; if the
# write fails, the commit reads the stored one and goes on as it would have.
# An OrderedDict, not a dict: once full, every reservation made drops the oldest, and a
# dict's ``next(iter(...))`` walks past every slot deleted from its front so far (µs).
_held: weakref.WeakKeyDictionary[object, OrderedDict[str, Reservation]] = (
    weakref.WeakKeyDictionary()
)
# Give-backs of unconfirmed reservations retrying in the background (kept from the GC).
_giving_back: set[asyncio.Task[None]] = set()


def reservation_id(account_id: str, idempotency_key: str | None) -> str:
    """A new reservation's id: derived from the account and the Idempotency-Key when
    there is one (a replayed verify answers the same reservation), else the time and 72
    random bits.

    The time first (µs since the epoch, 14 hex digits): ids made one after another sort
    together, so each new row's entry in the table's primary key lands on the index's
    last page, not on a random one of them all (every page a commit touches is written
    and synced: SQLite reserve + commit, 50 callers, 13 % faster).
    """
    if idempotency_key is None:
        # os.urandom: secrets.token_hex's bytes, without its layers.
        return f"rsv_{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"
    digest = hashlib.sha256(f"{account_id}\n{idempotency_key}".encode()).hexdigest()
    return f"rsv_{digest[:32]}"


def moved_slots(verdict: Verdict, items: tuple[tuple[str, int], ...], day: str) -> tuple[Slot, ...]:
    """What a granted verify moved (``credits.moved_counters``); a version-1 verdict its
    day row ``day``."""
    decided = verdict.decided
    if decided is None:
        service, cost = items[0]
        return (Slot(service, day, verdict.total or 0, HARD, cost),)
    return credits.moved_counters(decided.slots, decided.before, decided.after, items, day)


async def verify_and_reserve(
    ctx: Context,
    raw_key: str,
    items: tuple[tuple[str, int], ...],
    ttl_seconds: int,
    idempotency_key: str | None,
) -> tuple[Verdict, Reservation | None]:
    """Verify ``items`` and hold what the verdict granted (SPEC 10's ``"reserve": true``).

    Where the store keeps reservations with its counters (SQL, memory) and the call has
    no Idempotency-Key, the reservation is made in the verify's own consume: both are
    stored, or neither. Otherwise (Redis; a replayable call) it is written just after, and
    a store that cannot keep it in time is answered as verify answers its own failures
    (``on_store_error``): 503, or an uncounted allow that holds nothing.
    """
    service, cost = items[0]
    several = items if len(items) > 1 else None
    hold = None
    if idempotency_key is None:
        hold = _new_hold(items, ttl_seconds, ctx.clock.now())
    verdict = await verify.verify(ctx, raw_key, service, cost, idempotency_key, several, hold)
    # A counted grant only: a verify answered by fail-open after its deadline may see its
    # consume commit a moment later, and that grant is given back, its reservation with it.
    if hold is not None and hold.made is not None and verdict.account_id is not None:
        _hold(ctx, hold.made)
        return verdict, hold.made
    try:
        return verdict, await reserve(ctx, verdict, items, ttl_seconds, idempotency_key)
    except (StorageError, TimeoutError) as exc:
        return verify.store_failed(ctx, "reserve", service, exc), None


def _new_hold(items: tuple[tuple[str, int], ...], ttl_seconds: int, now: datetime) -> credits.Hold:
    """A reservation for a verify's consume to make (a random id: a call without an
    Idempotency-Key; verify prices it as what it admitted)."""
    expires = now + timedelta(seconds=ttl_seconds)
    return credits.Hold(reservation_id("", None), items, now, expires)


async def reserve(
    ctx: Context,
    verdict: Verdict,
    items: tuple[tuple[str, int], ...],
    ttl_seconds: int,
    idempotency_key: str | None,
    key_id: str | None = None,
) -> Reservation | None:
    """The reservation of a granted verdict (None for a refusal or an uncounted allow),
    kept by the store within verify's deadline (``store_timeout_ms``).

    If the store does not confirm it in time, the verdict's grant is given back
    (``give_back_unconfirmed``) and the failure raised: the caller is answered 503 and
    not charged. Except under fail-closed for a call with an Idempotency-Key: its retry
    answers the same reservation (or keeps it then), charged once.
    """
    if not verdict.valid or verdict.account_id is None:
        return None
    reservation = None
    try:
        with verify.store_deadline(ctx):
            if idempotency_key is None:
                new_id = reservation_id(verdict.account_id, None)
            else:
                new_id, replayed = await _replayed(ctx, verdict.account_id, idempotency_key)
                if replayed is not None:
                    return replayed
            reservation = await _reservation(ctx, verdict, items, new_id, ttl_seconds, key_id)
            await ctx.stores.credits.create_reservation(reservation)
    except Exception:
        kept = idempotency_key is not None and ctx.settings.on_store_error != "fail-open"
        if reservation is not None and not kept:
            await give_back_unconfirmed(ctx, reservation)
        raise
    if idempotency_key is None:  # a derived id may name one stored before: not this copy
        _hold(ctx, reservation)
    return reservation


async def _replayed(
    ctx: Context, account_id: str, idempotency_key: str
) -> tuple[str, Reservation | None]:
    """The id of the reservation a verify with an Idempotency-Key makes, and the one an
    earlier verify with the same key made while the key lasts (a replay answers that one)."""
    found_id = reservation_id(account_id, idempotency_key)
    found = await ctx.stores.credits.get_reservation(found_id)
    if found is None:
        return found_id, None
    if ctx.clock.now() < found.created_at + timedelta(seconds=ctx.settings.idempotency_ttl_seconds):
        return found_id, found
    return reservation_id(account_id, None), None  # the key reused after its window


async def _reservation(
    ctx: Context,
    verdict: Verdict,
    items: tuple[tuple[str, int], ...],
    found_id: str,
    ttl_seconds: int,
    key_id: str | None,
) -> Reservation:
    """The new reservation ``found_id`` of a granted verdict (not yet stored)."""
    account_id = verdict.account_id
    assert account_id is not None  # noqa: S101 - a granted, counted verdict
    now = ctx.clock.now()
    if verdict.decided is None:  # version 1: the day its reset ends
        account = await ctx.records.get_account(account_id)
        timezone = account.timezone if account is not None else "UTC"
        day = verify.consumed_day(verdict, timezone)
    else:
        day = date.fromisoformat(verdict.decided.slots[0].period)
    moved = moved_slots(verdict, items, day.isoformat())
    decided = verdict.decided
    given = {} if decided is None else credits.takes(decided.slots, decided.before, decided.after)
    service = await ctx.records.get_service(items[0][0])
    price = (service.credit_price if service is not None else None) or 0
    return Reservation(
        id=found_id,
        account_id=account_id,
        key_id=key_id,
        items=items,
        day=day,
        moved=moved,
        given=given,
        price=price,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )


async def give_back_unconfirmed(ctx: Context, reservation: Reservation) -> None:
    """Give back what a reservation holds whose write the store did not confirm (it may
    have kept it or not): as its cancellation would, under the claim every settlement of
    it takes. So if the store did keep it, its expiry later replays this give-back
    instead of repeating it. A store that fails again is retried in the background."""
    now = ctx.clock.now()
    cancelled = reservation.settled_as(ReservationStatus.CANCELLED, 0, 0, now)
    try:
        with verify.store_deadline(ctx):
            await _move(ctx, cancelled, now)
    except Exception as exc:
        log.warning(
            "could not give back an unconfirmed reservation yet; retrying",
            reservation=reservation.id,
            error=str(exc),
        )
        task = asyncio.get_running_loop().create_task(_give_back_later(ctx, cancelled))
        _giving_back.add(task)
        task.add_done_callback(_giving_back.discard)


async def _give_back_later(ctx: Context, cancelled: Reservation) -> None:
    for attempt in range(GIVE_BACK_ATTEMPTS):
        await asyncio.sleep(min(0.25 * 2**attempt, 10))
        try:
            await _move(ctx, cancelled, ctx.clock.now())
        except Exception:  # noqa: S112 - the store still fails: the next attempt, later
            continue
        return
    log.error(
        "could not give back an unconfirmed reservation",
        reservation=cancelled.id,
        account_id=cancelled.account_id,
    )


def _hold(ctx: Context, reservation: Reservation) -> None:
    store = ctx.stores.credits
    try:
        held = _held.get(store)
        if held is None:
            held = _held[store] = OrderedDict()
    except TypeError:  # a store that cannot be weakly referenced (a test's fake): no copies
        return
    if len(held) >= HELD_PER_STORE:
        held.popitem(last=False)  # the oldest: most likely settled or expired by now
    held[reservation.id] = reservation


def _unhold(ctx: Context, reservation_id_: str) -> Reservation | None:
    try:
        held = _held.get(ctx.stores.credits)
    except TypeError:
        return None
    return None if held is None else held.pop(reservation_id_, None)


async def get(ctx: Context, reservation_id_: str) -> Reservation:
    """The reservation, or ``NotFound``."""
    found = await ctx.stores.credits.get_reservation(reservation_id_)
    if found is None:
        raise NotFound(f"reservation {reservation_id_!r} not found")
    return found


async def commit(ctx: Context, reservation_id_: str, actual: int) -> Reservation:
    """Settle a reservation at ``actual`` units (idempotent; 409 once settled otherwise
    or past its deadline)."""
    return await _settle_asked(ctx, reservation_id_, ReservationStatus.COMMITTED, actual)


async def cancel(ctx: Context, reservation_id_: str) -> Reservation:
    """Give everything a reservation holds back (idempotent; 409 as ``commit``)."""
    return await _settle_asked(ctx, reservation_id_, ReservationStatus.CANCELLED, 0)


def _same(reservation: Reservation, status: ReservationStatus, actual: int) -> bool:
    return reservation.status is status and (
        status is not ReservationStatus.COMMITTED or reservation.committed == actual
    )


def _moves_nothing(reservation: Reservation, status: ReservationStatus, actual: int) -> bool:
    return status is ReservationStatus.COMMITTED and actual == reservation.reserved


async def _settle_asked(
    ctx: Context, reservation_id_: str, status: ReservationStatus, actual: int
) -> Reservation:
    copy = _unhold(ctx, reservation_id_)
    if copy is not None and _moves_nothing(copy, status, actual):
        now = ctx.clock.now()
        if now < copy.expires_at:  # past it, what is stored decides (settled, or expired)
            finished = copy.settled_as(status, actual, 0, now)
            if await ctx.stores.credits.finish_reservation(finished, now):
                return finished
    found = await get(ctx, reservation_id_)
    now = ctx.clock.now()
    if found.status is ReservationStatus.PENDING and now >= found.expires_at:
        raise Conflict(f"reservation {reservation_id_!r} expired at its deadline")
    if found.status is ReservationStatus.PENDING and _moves_nothing(found, status, actual):
        # A commit of the reserved cost moves no counter: one conditional write settles it
        # (no claim needed: there is nothing to apply exactly once but the status itself).
        finished = found.settled_as(status, actual, 0, now)
        if await ctx.stores.credits.finish_reservation(finished, now):
            return finished
    if found.status is ReservationStatus.PENDING:
        settled = await settle(ctx, found.id, status, actual, now)
        if settled is not None:
            found = settled
        else:  # another node holds it: answer as it stands once settled
            found = await get(ctx, reservation_id_)
    if _same(found, status, actual):
        return found
    if found.status is ReservationStatus.PENDING:
        raise Conflict(f"reservation {reservation_id_!r} is being settled; try again")
    raise Conflict(f"reservation {reservation_id_!r} is already {found.status.value}")


async def settle(
    ctx: Context,
    reservation_id_: str,
    status: ReservationStatus,
    actual: int,
    now: datetime,
) -> Reservation | None:
    """Settle a pending reservation (as asked, or as an interrupted earlier settlement
    asked): the settled reservation, or None if another node holds it or it is settled."""
    store = ctx.stores.credits
    claim = f"{secrets.token_hex(8)}:{status.value}:{actual}"
    held = await store.claim_reservation(
        reservation_id_, claim, now, now + timedelta(seconds=CLAIM_SECONDS)
    )
    if held is None:
        return None
    # ``held`` carries the settlement the claim names: ours, or an earlier holder's.
    overage = await _move(ctx, held, now)
    settled = held._replace(overage=overage, settled_at=now)
    if not await store.settle_reservation(settled, claim):
        return None
    return settled


def _fingerprint(reservation: Reservation) -> str:
    """What a settlement moves: everything back, or a commit of so many units."""
    committed = (
        0 if reservation.status is not ReservationStatus.COMMITTED else reservation.committed
    )
    return hashlib.sha256(f"{reservation.id}\n{committed}".encode()).hexdigest()


async def _move(ctx: Context, reservation: Reservation, now: datetime) -> int:
    """Move the counters of ``reservation``'s settlement (status, committed): the overage."""
    reserved = reservation.reserved
    actual = reservation.committed if reservation.status is ReservationStatus.COMMITTED else 0
    if actual == reserved:
        return 0
    account = await ctx.records.get_account(reservation.account_id)
    if account is None:
        # Deleted since it reserved: its counters are gone, and moving them would bring
        # them back (a give-back as negative usage a new account of that id would inherit).
        return 0
    expires = now + timedelta(days=REPLAY_DAYS)
    claim = IdempotencyClaim(f"reservation:{reservation.id}", _fingerprint(reservation), expires)
    if actual < reserved:
        slots = _give_back(reservation, actual, now)
        await _consume(ctx, reservation, slots, claim, now)
        return 0
    extra = actual - reserved
    grown = await _grown(ctx, reservation, extra, days.local_day(now, account.timezone), now)
    outcome = await _consume(ctx, reservation, grown, claim, now)
    if outcome:
        return 0
    # A hard limit refused the extra: it is used all the same, as overage.
    over = tuple(_unchecked(slot) for slot in grown)
    over_claim = IdempotencyClaim(f"reservation:{reservation.id}:over", claim.fingerprint, expires)
    await _consume(ctx, reservation, over, over_claim, now)
    return extra


def _unchecked(slot: Slot) -> Slot:
    """A slot that moves whatever room it has: a window as TALLY, a grant pool as
    CREDIT_TAKE (takes what is left, never refuses)."""
    if slot.mode == CREDIT:
        return slot._replace(mode=CREDIT_TAKE)
    if slot.mode < CREDIT:
        return slot._replace(mode=TALLY)
    return slot


def _give_back(reservation: Reservation, actual: int, now: datetime) -> tuple[Slot, ...]:
    back = credits.scaled(reservation.moved, reservation.reserved, actual)
    owed = sum(reservation.given.values()) - _debit_at(reservation, actual)
    given_back: dict[str, int] = {}
    for grant_id, amount in reversed(list(reservation.given.items())):
        if owed <= 0:
            break
        part = min(amount, owed)
        given_back[grant_id] = part
        owed -= part
    slots = [slot._replace(mode=TALLY) for slot in back]
    slots += credits.give_back_slots(given_back, reservation.day)
    return _day_row_first(reservation, slots)


def _debit_at(reservation: Reservation, units: int) -> int:
    """The micro-credits ``units`` of a reservation cost: the reserve's debit scaled, as
    every window is (its items may have had different prices, or the first none, so one
    price a unit would not do); the first item's price when nothing was reserved."""
    debited = sum(reservation.given.values())
    if reservation.reserved <= 0:
        return credits.debit_of(units, reservation.price)
    return debited * units // reservation.reserved


def _day_row_first(reservation: Reservation, slots: list[Slot]) -> tuple[Slot, ...]:
    """The slots with the reservation's first day row first (cost 0 if it moves not)."""
    head = reservation.moved[0] if reservation.moved else None
    if head is None:
        service = reservation.items[0][0]
        head = Slot(service, reservation.day.isoformat(), 0, TALLY, 0)
    key = (head.name, head.period)
    found = [slot for slot in slots if (slot.name, slot.period) == key]
    rest = [slot for slot in slots if (slot.name, slot.period) != key]
    first = found[0] if found else head._replace(mode=TALLY, cost=0)
    return (first, *rest)


async def _grown(
    ctx: Context, reservation: Reservation, extra: int, today: date, now: datetime
) -> tuple[Slot, ...]:
    """The slots of a larger commit's extra: the same counters (modes, totals), and the
    account's grants for the extra's debit, on the ledger's ``today`` (the settlement's
    local day: a grant made since the reserve has no ledger day before it was made)."""
    reserved = reservation.reserved
    slots = []
    for slot in reservation.moved:
        grow = extra if reserved <= 0 else slot.cost * extra // reserved
        slots.append(slot._replace(cost=grow))
    debit = _debit_at(reservation, extra)
    if debit:
        # The current refill too: a refill window may have begun since the reserve.
        account = await ctx.records.get_account(reservation.account_id)
        if account is None:
            grants = await ctx.stores.credits.list_grants(reservation.account_id)
        else:
            grants = await credit_service.live_grants(ctx, account, now)
        slots += credits.credit_slots(grants, debit, today, now)
    return _day_row_first(reservation, slots)


async def _consume(
    ctx: Context,
    reservation: Reservation,
    slots: tuple[Slot, ...],
    claim: IdempotencyClaim,
    now: datetime,
) -> bool:
    """One consume of ``slots`` (the first a day row) under ``claim``: granted or not."""
    first = slots[0]
    outcome = await ctx.counters.consume(
        reservation.account_id,
        first.name,
        reservation.day,
        first.cost,
        first.total,
        claim,
        now,
        extra=slots[1:],
        day_mode=first.mode,
    )
    return outcome.granted


async def sweep(ctx: Context) -> int:
    """Expire every reservation past its deadline that no node holds: how many."""
    now = ctx.clock.now()
    expired = 0
    for due in await ctx.stores.credits.due_reservations(now, SWEEP_BATCH):
        try:
            settled = await settle(ctx, due.id, ReservationStatus.EXPIRED, 0, now)
        except Exception as exc:
            # One that fails (its claim, if taken, lapses and a later sweep retries it)
            # must not keep the rest of the batch from being given back.
            log.warning("could not expire a reservation", reservation=due.id, error=str(exc))
            continue
        if settled is not None:
            expired += 1
    return expired


async def sweep_forever(ctx: Context, every: float | None = None) -> None:
    """Expire due reservations until cancelled, every ``reservation_sweep_seconds``
    (at once on start: what came due while no node ran is given back then)."""
    wait = ctx.settings.reservation_sweep_seconds if every is None else every
    while True:
        try:
            await sweep(ctx)
        except Exception as exc:
            log.warning("could not expire reservations; will retry", error=str(exc))
        await asyncio.sleep(wait)
