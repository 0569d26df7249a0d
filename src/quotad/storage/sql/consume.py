"""SQL consumes: group-committed, each batch read under lock, decided, written back.

Every consume goes the same way, alone or in a batch: the batch's day rows and its
claims' stored answers are read under a lock, ``decide_batch`` grants or refuses each
request in arrival order, and what it changed is written back in the same transaction,
so a batch costs the same few statements whatever its size.

- SQLite: the whole transaction runs in ``SqliteDayWriter`` on a thread of its own;
  ``BEGIN IMMEDIATE`` holds the database's write lock throughout.
- PostgreSQL: the rows are created if missing (a missing row cannot be locked), then
  read ``FOR UPDATE``, all in one lock order (claims, then days, each sorted) that every
  node follows. Row locks serialise concurrent batches of the same days under READ
  COMMITTED across any number of quotad nodes. Most batches find every row there
  already, so a batch without claims locks first and creates nothing; one that finds
  a row missing rolls back (holding locks, it may not create rows out of the lock
  order) and runs again from the create. Each locked row is written back by its
  address (``ctid``), which its lock keeps, rather than found again by its key.

With ``batch=True`` (the default) concurrent consumes of one process share a batch, one
transaction and one commit (one fsync); each caller is answered after that commit. With
``batch=False`` each consume is a batch of its own. A batch the database refuses (bad
input in one request, a deleted account, a lost race) committed nothing and runs again
one request at a time, so each request gets its own answer.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from quotad.domain.credits import Hold, Reservation, ReservationStatus
from quotad.domain.models import ConsumeOutcome
from quotad.errors import QuotadError, StorageError
from quotad.lazy_logger import LazyLogger
from quotad.storage.batching import Batcher, submit_or_run
from quotad.storage.schema import idempotency, reservations, usage_days
from quotad.storage.sql.day_batches import SqliteDayWriter
from quotad.storage.sql.decide import (
    Answer,
    ClaimKey,
    Consume,
    DayKey,
    DayRow,
    Decided,
    SlotConsume,
    claim_order,
    decide_batch,
    lock_order,
    made_reservations,
)
from quotad.storage.sql.engine import Database
from quotad.storage.sql.reservation_rows import insert_pg
from quotad.storage.sql.rows import affects_a_row, to_micros
from quotad.storage.sql.statements import (
    CLAIM_COLUMNS,
    CLAIM_KEY,
    DAY_KEY,
    as_batch,
    as_dicts,
    claim_params,
    day_params,
    pg_create_days,
    pg_insert,
    pg_lock_days,
    pg_write_days,
    pg_write_locked_days,
    read_claims,
    stored_answer,
    write_claims,
)

# The key of a give-back's mark in the idempotency table, before 32 random hex digits (a
# client's Idempotency-Key may look alike, but cannot guess them).
GIVE_BACK_MARK = "quotad-give-back:"

log = LazyLogger("quotad.storage.sql")  # structlog only when something goes wrong


class Consumes:
    """The consumes of one SQL store.

    Args:
        db: the store's database.
        batch: group-commit concurrent consumes; ``False`` runs one transaction per consume.
    """

    def __init__(self, db: Database, *, batch: bool) -> None:
        self._db = db
        self._batcher: Batcher[Consume, ConsumeOutcome] | None = (
            Batcher(self._run, abandoned=self._abandoned, under_way=db.under_way) if batch else None
        )
        self._refunds: set[asyncio.Task[None]] = set()
        self._sqlite: SqliteDayWriter | None = None
        if not db.sqlite:
            self._build_pg_statements()

    def _build_pg_statements(self) -> None:
        # Built once: building them (``excluded`` above all) costs more than running them
        # through SQLAlchemy's compiled cache. Not on SQLite, whose commands would import
        # PostgreSQL's dialect for them (about a twentieth of their start-up).
        create_days = pg_create_days()
        self._create_days = create_days
        self._create_days_noted = create_days.returning(*DAY_KEY)
        self._create_claims = pg_insert(idempotency).on_conflict_do_nothing()
        self._lock_days = pg_lock_days()
        self._lock_claims = read_claims().order_by(*CLAIM_KEY).with_for_update()
        self._write_days = pg_write_days()
        self._write_locked_days = pg_write_locked_days()
        self._write_claims = write_claims(pg_insert)
        self._forget_days = usage_days.delete().where(
            sa.tuple_(*DAY_KEY).in_(sa.bindparam("keys", expanding=True))
        )

    def start(self) -> None:
        """Start SQLite's writer (once the database is open)."""
        if self._db.file is not None:
            self._sqlite = SqliteDayWriter(self._db.file, share=self.batched)
            self._sqlite.start()

    async def stop(self) -> None:
        """Finish the refunds under way and stop SQLite's writer."""
        for task in list(self._refunds):
            with suppress(Exception):
                await task
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None

    @property
    def sqlite_writer(self) -> SqliteDayWriter | None:
        """SQLite's writer thread (None on PostgreSQL, or until started): the store's
        other group-committed writes run on it too."""
        return self._sqlite

    @property
    def batched(self) -> bool:
        """Whether concurrent writes share a transaction (the store's ``batch``)."""
        return self._batcher is not None

    async def consume(self, request: Consume) -> ConsumeOutcome:
        """Decide ``request`` and commit what it changed; its answer once committed."""
        return await submit_or_run(self._batcher, self._run, request)

    async def _run(self, batch: list[Consume]) -> list[ConsumeOutcome | Exception]:
        try:
            return (await self._decide(batch)).answers
        except StorageError:
            raise
        except QuotadError:
            if len(batch) == 1:
                raise
        # Nothing of the batch was committed: run each request alone to give each its answer.
        answers: list[ConsumeOutcome | Exception] = []
        for request in batch:
            try:
                answers += (await self._decide([request])).answers
            except StorageError:
                raise
            except QuotadError as exc:
                answers.append(exc)
        return answers

    async def _decide(self, batch: list[Consume]) -> Decided:
        made: list[tuple[Hold, Reservation]] = []  # the reservations the batch makes
        if self._db.sqlite:
            if self._sqlite is None:
                raise StorageError("store is not open")
            decided = await self._sqlite.consume(batch, made)
        else:
            try:
                async with self._db.write() as conn:
                    decided = await self._decide_locked(conn, batch, made, self._db.free)
            except _Missing:  # rolled back: the batch creates a day row, as below
                made.clear()
                async with self._db.write() as conn:
                    decided = await self._decide_locked(conn, batch, made)
        for hold, reservation in made:  # committed with the batch: theirs now
            hold.made = reservation
        return decided

    async def _decide_locked(
        self,
        conn: AsyncConnection,
        batch: list[Consume],
        made: list[tuple[Hold, Reservation]],
        existing: bool = False,
    ) -> Decided:
        """PostgreSQL: create what is missing, lock and read, decide, write back (and insert
        the reservations the grants make, into ``made``).

        ``existing``: a batch without claims locks its day rows without creating any, and
        raises ``_Missing`` (before writing anything) when one is not there yet; only for a
        transaction of its own, which the caller rolls back.
        """
        claims = claim_order(batch)
        if claims:
            await conn.execute(
                self._create_claims,
                [
                    {
                        "account_id": account_id,
                        "key": key,
                        "fingerprint": claim.fingerprint,
                        "expires_at": to_micros(claim.expires_at),
                    }
                    for (account_id, key), claim in claims.items()
                ],
            )
        totals = lock_order(batch)
        # Each row its key and total: the create reads all four, the lock the key.
        keys = as_batch((*key, total) for key, total in totals.items())
        created_keys: set[tuple[str, ...]] = set()
        if not existing or claims:
            created = await conn.execute(
                # Only a batch with claims may leave a day it created untouched (see below).
                self._create_days_noted if claims else self._create_days,
                keys,
            )
            created_keys = {tuple(row) for row in created} if claims else set()
        rows: dict[DayKey, DayRow] = {}
        row_ids: dict[DayKey, str] = {}
        ordered = list(totals)
        for row_id, used, total, rejected, position in await conn.execute(self._lock_days, keys):
            key = ordered[position - 1]
            rows[key] = DayRow(used, total, rejected)
            row_ids[key] = row_id
        if existing and len(rows) < len(totals):
            raise _Missing
        seen: dict[ClaimKey, Answer] = {}
        if claims:
            for account_id, key, *stored in await conn.execute(
                self._lock_claims, {"keys": list(claims)}
            ):
                answer = stored_answer(*stored)
                if answer is not None:
                    seen[account_id, key] = answer
        decided = decide_batch(batch, rows, seen)
        if decided.rows and decided.rows.keys() <= row_ids.keys():
            written = ((row_ids[key], *row) for key, row in decided.rows.items())
            await conn.execute(self._write_locked_days, as_batch(written))
        elif decided.rows:  # a row that vanished after its create (a purge): made again
            await conn.execute(self._write_days, as_batch(day_params(decided.rows)))
        if decided.claims:
            await conn.execute(
                self._write_claims, as_dicts(CLAIM_COLUMNS, claim_params(decided.claims))
            )
        made += made_reservations(batch, decided.answers)
        if made:
            await insert_pg(conn, [r for _, r in made])
        # A day created only to be locked, whose consumes all replayed an earlier answer
        # (or reused a key): as if it had never been asked for.
        untouched = created_keys - decided.rows.keys()
        if untouched:
            await conn.execute(self._forget_days, {"keys": sorted(untouched)})
        return decided

    def _abandoned(self, request: Consume, outcome: ConsumeOutcome) -> None:
        """Give back a grant committed after its caller stopped waiting (it was told 503)."""
        if outcome.granted and not outcome.replayed:
            task = asyncio.get_running_loop().create_task(self._refund(request, outcome))
            self._refunds.add(task)
            task.add_done_callback(self._refunds.discard)

    async def _refund(self, request: Consume, outcome: ConsumeOutcome) -> None:
        # What the grant moved each counter by (a rate's bucket refills by itself): the
        # decision's after minus before, so a credit slot gives back its take, not its
        # cost, and a give-back (a negative TALLY) is taken again.
        given: list[tuple[DayKey, int]]
        if isinstance(request, SlotConsume):
            given = [
                (key, after - before)
                for key, slot, before, after in zip(
                    request.keys, request.slots, outcome.before, outcome.after, strict=True
                )
                if not slot.interval and after != before
            ]
        else:
            given = [(request.row_key, request.cost)]
        hold = request.hold if isinstance(request, SlotConsume) else None
        made = None if hold is None else hold.made
        # A give-back whose commit was answered by a lost connection may have committed:
        # it is tried again, and applies once (its mark, or its reservation's cancel).
        mark = f"{GIVE_BACK_MARK}{uuid.uuid4().hex}"
        for attempt in range(8):
            try:
                async with self._db.write() as conn:
                    # The reservation the grant made is cancelled with the give-back, or,
                    # settled already (its deadline swept), gave back itself: not twice.
                    if made is not None and not await _cancelled(conn, made.id):
                        return
                    if made is None and not await self._marked(conn, request.account_id, mark):
                        return
                    for (account_id, service, day), cost in sorted(given):
                        less = usage_days.c.used - cost
                        await conn.execute(
                            usage_days.update()
                            .where(usage_days.c.account_id == account_id)
                            .where(usage_days.c.service == service)
                            .where(usage_days.c.day == day)
                            .values(used=sa.case((less < 0, 0), else_=less))
                        )
                    if request.claim is not None:  # a retry of the call is decided afresh
                        await conn.execute(
                            idempotency.delete()
                            .where(idempotency.c.account_id == request.account_id)
                            .where(idempotency.c.key == request.claim.key)
                            .where(idempotency.c.fingerprint == request.claim.fingerprint)
                        )
            except StorageError:
                await asyncio.sleep(min(0.25 * 2**attempt, 10))
            except QuotadError:  # the account was deleted meanwhile: nothing to give back
                return
            else:
                return
        log.error(
            "could not give back a grant whose caller was answered 503",
            account_id=request.account_id,
        )

    async def _marked(self, conn: AsyncConnection, account_id: str, mark: str) -> bool:
        """Note the give-back ``mark`` among the account's Idempotency-Key claims (no
        answer: never replayed nor dumped; purged once expired): whether it was new."""
        expires = to_micros(datetime.now(UTC) + timedelta(days=1))
        row = {"account_id": account_id, "key": mark, "fingerprint": "-", "expires_at": expires}
        insert = self._db.insert(idempotency).values(row).on_conflict_do_nothing()
        return await affects_a_row(conn, insert)


class _Missing(Exception):
    """A day row to lock is missing: the batch runs again, creating it first."""


async def _cancelled(conn: AsyncConnection, reservation_id: str) -> bool:
    """Cancel a pending, unclaimed reservation (no settlement has begun): whether it was."""
    r = reservations.c
    pending = ReservationStatus.PENDING.value
    cancel = (
        reservations.update()
        .where(r.id == reservation_id, r.status == pending, r.claim.is_(None))
        .values(status=ReservationStatus.CANCELLED.value, settled_at=to_micros(datetime.now(UTC)))
    )
    return await affects_a_row(conn, cancel)
