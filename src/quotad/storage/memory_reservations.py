"""Reservations in process memory (SPEC 10)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from quotad.domain.credits import Reservation, ReservationStatus

# A settlement's claim is ``<nonce>:<status>:<committed>``: the holder, and the settlement
# it is for. The first settlement a claim names sticks until the reservation is settled:
# its counters may have moved, so whoever takes the claim over finishes that one.


def nonce_of(claim: str) -> str:
    """The holder part of a claim."""
    return claim.split(":", 1)[0]


def intent_of(claim: str | None) -> tuple[ReservationStatus, int] | None:
    """The settlement a claim names, if any."""
    if claim is None:
        return None
    parts = claim.split(":")
    if len(parts) != 3 or parts[1] not in ReservationStatus._value2member_map_:
        return None
    try:
        return ReservationStatus(parts[1]), int(parts[2])
    except ValueError:
        return None


def taken_over(held: str | None, claim: str) -> str:
    """The claim stored when ``claim`` takes a reservation held under ``held``: the new
    holder, with the settlement first named (the held one's, else its own)."""
    intent = intent_of(held) or intent_of(claim)
    if intent is None:
        return nonce_of(claim)
    return f"{nonce_of(claim)}:{intent[0].value}:{intent[1]}"


def may_claim(held: str | None, held_until: datetime | None, claim: str, now: datetime) -> bool:
    """Whether ``claim`` may take a pending reservation held under ``held`` at ``now``."""
    if held is None or held_until is None or held_until <= now:
        return True
    return nonce_of(held) == nonce_of(claim)


def with_intent(reservation: Reservation, claim: str) -> Reservation:
    """A pending reservation with the settlement its claim names (status, committed):
    the caller settles that one."""
    intent = intent_of(claim)
    if intent is None:
        return reservation
    return reservation._replace(status=intent[0], committed=intent[1])


# How many settled reservations a memory store keeps of those a verify's consume made (a
# reserve without an Idempotency-Key): the newest. An older one is dropped, as the SQL
# stores' upkeep drops one 60 days past its deadline (a commit or cancel of it is then a
# 404). Without a bound, a steady rate of reserves would fill the process's memory long
# before 60 days (at 1,000 a second, 5 billion of them), and every one kept made the
# garbage collector's full passes longer. A reservation made under an Idempotency-Key is
# kept the 60 days: a replay of its verify answers it for as long as the key lasts, and
# one dropped early would be made afresh and its cost given back twice.
MAX_SETTLED = 10_000


class MemoryReservations:
    """Reservations of the store (``CreditStore``)."""

    def __init__(self) -> None:
        self._reservations_lock = threading.Lock()
        # Pending: id -> (reservation, claim, claimed until), and which of them a verify's
        # consume made; settled: id -> reservation, those a consume made apart (the
        # newest ``MAX_SETTLED``, oldest first).
        self._reservations: dict[str, tuple[Reservation, str | None, datetime | None]] = {}
        self._from_consumes: set[str] = set()
        self._settled: dict[str, Reservation] = {}
        self._recent: OrderedDict[str, Reservation] = OrderedDict()

    async def create_reservation(self, reservation: Reservation) -> None:
        """Store a pending reservation (kept as it is if one of its id exists: a replay)."""
        with self._reservations_lock:
            self._create(reservation)

    def _known(self, ident: str) -> bool:
        """Whether a reservation of this id is kept, pending or settled."""
        return ident in self._reservations or ident in self._settled or ident in self._recent

    def _create(self, reservation: Reservation) -> bool:
        if self._known(reservation.id):
            return False
        self._reservations[reservation.id] = (reservation, None, None)
        return True

    def _create_made(self, reservation: Reservation) -> None:
        """Store the pending reservation a verify's consume made (no replay asks for it)."""
        with self._reservations_lock:
            if self._create(reservation):
                self._from_consumes.add(reservation.id)

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        """The reservation with this id."""
        with self._reservations_lock:
            found = self._reservations.get(reservation_id)
            if found is not None:
                return found[0]
            return self._settled.get(reservation_id) or self._recent.get(reservation_id)

    def _keep(self, reservation: Reservation) -> None:
        """Store a reservation, unclaimed (its lock held): settled, among the settled ones
        (one a consume made among the newest ``MAX_SETTLED``, the oldest dropped)."""
        ident = reservation.id
        if reservation.status is ReservationStatus.PENDING:
            self._reservations[ident] = (reservation, None, None)
            return
        self._reservations.pop(ident, None)
        if ident not in self._from_consumes:
            self._settled[ident] = reservation
            return
        self._from_consumes.discard(ident)
        recent = self._recent
        recent[ident] = reservation
        if len(recent) > MAX_SETTLED:
            recent.popitem(last=False)

    async def claim_reservation(
        self, reservation_id: str, claim: str, now: datetime, until: datetime
    ) -> Reservation | None:
        """Hold a pending reservation under ``claim``; it comes back with the settlement
        its claim names (``with_intent``), an earlier holder's first."""
        with self._reservations_lock:
            found = self._reservations.get(reservation_id)
            if found is None:
                return None
            reservation, held, held_until = found
            if reservation.status is not ReservationStatus.PENDING:
                return None
            if not may_claim(held, held_until, claim, now):
                return None
            stored = taken_over(held, claim)
            self._reservations[reservation_id] = (reservation, stored, until)
        return with_intent(reservation, stored)

    async def due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        """Pending reservations past their deadline that nobody holds."""
        with self._reservations_lock:
            due = [
                reservation
                for reservation, held, held_until in self._reservations.values()
                if reservation.status is ReservationStatus.PENDING
                and reservation.expires_at <= now
                and (held is None or held_until is None or held_until <= now)
            ]
        due.sort(key=lambda r: (r.expires_at, r.id))
        return due[:limit]

    async def settle_reservation(self, reservation: Reservation, claim: str) -> bool:
        """Store a settled reservation still held under ``claim``."""
        with self._reservations_lock:
            found = self._reservations.get(reservation.id)
            if found is None or found[1] is None or nonce_of(found[1]) != nonce_of(claim):
                return False
            if found[0].status is not ReservationStatus.PENDING:
                return False
            self._keep(reservation)
        return True

    async def finish_reservation(self, reservation: Reservation, now: datetime) -> bool:
        """Store a settlement that moves nothing, if pending, never claimed and not due."""
        with self._reservations_lock:
            found = self._reservations.get(reservation.id)
            if found is None or found[1] is not None:
                return False
            stored = found[0]
            if stored.status is not ReservationStatus.PENDING or stored.expires_at <= now:
                return False
            self._keep(reservation)
        return True

    async def purge_reservations(self, before: datetime) -> int:
        """Delete settled reservations whose deadline was before ``before``."""
        gone = 0
        with self._reservations_lock:
            for settled in (self._settled, self._recent):
                old = [ident for ident, kept in settled.items() if kept.expires_at < before]
                for reservation_id in old:
                    del settled[reservation_id]
                gone += len(old)
        return gone
