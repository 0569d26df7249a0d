"""Reservations in SQL (SPEC 10): the ``reservations`` table.

A claim is a read and a conditional update in one write transaction: PostgreSQL locks
the row (``FOR UPDATE``), SQLite holds its one write lock (``BEGIN IMMEDIATE``), so two
nodes never both hold a reservation. What a claim stores is the memory store's
(``quotad.storage.memory_reservations``): the first settlement named sticks.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from quotad.domain.credits import Reservation, ReservationStatus
from quotad.storage.memory_reservations import may_claim, nonce_of, taken_over, with_intent
from quotad.storage.schema import reservations
from quotad.storage.sql.consume import Consumes
from quotad.storage.sql.engine import Database
from quotad.storage.sql.reservation_batches import Create, Finish, ReservationWrites
from quotad.storage.sql.reservation_rows import reservation_body, reservation_of
from quotad.storage.sql.rows import affects_a_row, opt_dt, opt_micros, to_micros


class SqlReservations:
    """Reservations of the store (``CreditStore``)."""

    _db: Database
    _consumes: Consumes
    _reservation_writes: ReservationWrites | None = None  # made on first use

    def _writes(self) -> ReservationWrites:
        if self._reservation_writes is None:
            consumes = self._consumes
            self._reservation_writes = ReservationWrites(
                self._db, lambda: consumes.sqlite_writer, batch=consumes.batched
            )
        return self._reservation_writes

    async def create_reservation(self, reservation: Reservation) -> None:
        """Store a pending reservation (kept as it is if one of its id exists: a replay);
        group-committed with concurrent reservation writes."""
        await self._writes().write(Create(reservation))

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        """The reservation with this id."""
        query = reservations.select().where(reservations.c.id == reservation_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else reservation_of(row)

    async def claim_reservation(
        self, reservation_id: str, claim: str, now: datetime, until: datetime
    ) -> Reservation | None:
        """Hold a pending reservation under ``claim`` (with the settlement first named)."""
        r = reservations.c
        query = reservations.select().where(r.id == reservation_id)
        if not self._db.sqlite:
            query = query.with_for_update()
        async with self._db.write() as conn:
            row = (await conn.execute(query)).first()
            if row is None or row.status != ReservationStatus.PENDING.value:
                return None
            held_until = opt_dt(row.claimed_until)
            if not may_claim(row.claim, held_until, claim, now):
                return None
            stored = taken_over(row.claim, claim)
            update = (
                reservations.update()
                .where(r.id == reservation_id, r.status == ReservationStatus.PENDING.value)
                .values(claim=stored, claimed_until=to_micros(until))
            )
            if not await affects_a_row(conn, update):
                return None
        return with_intent(reservation_of(row), stored)

    async def due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        """Pending reservations past their deadline that nobody holds."""
        r = reservations.c
        at = to_micros(now)
        query = (
            reservations.select()
            .where(
                r.status == ReservationStatus.PENDING.value,
                r.expires_at <= at,
                sa.or_(r.claimed_until.is_(None), r.claimed_until <= at),
            )
            .order_by(r.expires_at, r.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [reservation_of(row) for row in await conn.execute(query)]

    async def settle_reservation(self, reservation: Reservation, claim: str) -> bool:
        """Store a settled reservation still held under ``claim``."""
        r = reservations.c
        query = sa.select(r.claim).where(r.id == reservation.id)
        if not self._db.sqlite:
            query = query.with_for_update()
        async with self._db.write() as conn:
            row = (await conn.execute(query)).first()
            if row is None or row.claim is None or nonce_of(row.claim) != nonce_of(claim):
                return False
            update = (
                reservations.update()
                .where(
                    r.id == reservation.id,
                    r.claim == row.claim,
                    r.status == ReservationStatus.PENDING.value,
                )
                .values(
                    status=reservation.status.value,
                    body=reservation_body(reservation),
                    settled_at=opt_micros(reservation.settled_at),
                    claim=None,
                    claimed_until=None,
                )
            )
            return await affects_a_row(conn, update)

    async def finish_reservation(self, reservation: Reservation, now: datetime) -> bool:
        """Store a settlement that moves nothing, if pending, never claimed and not due:
        one conditional update (a claim, even a lapsed one, names a settlement that may
        have moved counters: that reservation is settled under a claim)."""
        finish = Finish(
            reservation.id,
            reservation.status.value,
            reservation_body(reservation),
            opt_micros(reservation.settled_at),
            to_micros(now),
        )
        return await self._writes().write(finish)

    async def purge_reservations(self, before: datetime) -> int:
        """Delete settled reservations whose deadline was before ``before`` (the index on
        status and deadline finds them)."""
        r = reservations.c
        settled = [s.value for s in ReservationStatus if s is not ReservationStatus.PENDING]
        delete = reservations.delete().where(
            r.status.in_(settled), r.expires_at < to_micros(before)
        )
        async with self._db.write() as conn:
            # RETURNING, not rowcount: psycopg's async cursor leaves that at -1.
            return len((await conn.execute(delete.returning(r.id))).all())
