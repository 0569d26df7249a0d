"""Counters in SQL: consumes, adjustments, events, gauges, usage, and the write-behind of
a counter store (Redis) that keeps its durable copy here.

Every change is atomic in the database: consumes are decided under lock (see
``consume.py``); the other changes are single upserts of deltas or conditional updates
(``used + :delta``, ``usage + :amount <= :limit``), or one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from quotad.domain.credits import Hold
from quotad.domain.limits import HARD, Slot
from quotad.domain.models import (
    ConsumeOutcome,
    EventsOutcome,
    IdempotencyClaim,
    UsageDay,
    UsageEvent,
)
from quotad.errors import Conflict
from quotad.storage.schema import (
    accounts,
    counter_nodes,
    gauges,
    idempotency,
    usage_days,
    usage_events,
)
from quotad.storage.slot_calls import SlotCalls
from quotad.storage.sql.consume import Consumes
from quotad.storage.sql.decide import Consume, DayKey, SlotConsume, slot_keys
from quotad.storage.sql.engine import Database
from quotad.storage.sql.rows import affects_a_row, claim_values, to_micros, usage_day_of
from quotad.storage.sql.statements import DAY_KEY, keyed, write_claims
from quotad.storage.write_behind import Changes, StoredClaim


class SqlCounters:
    """Usage days, events, gauges and idempotency answers.

    Args:
        db: the database.
        batch: group-commit concurrent consumes; ``False`` runs one transaction per consume.
    """

    def __init__(self, db: Database, *, batch: bool) -> None:
        self._db = db
        self._consumes = Consumes(db, batch=batch)
        add_days = db.insert(usage_days)
        added = usage_days.c.used + sa.bindparam("d_used")
        self._add_days = add_days.on_conflict_do_update(
            index_elements=["account_id", "service", "day"],
            set_={
                "used": sa.case((added < 0, 0), else_=added),
                "rejected": usage_days.c.rejected + sa.bindparam("d_rejected"),
                "total": add_days.excluded.total,
            },
        )
        self._put_claims = write_claims(db.insert)
        # A Limits v2 call's slots and their rows' keys (``slot_calls``).
        self._calls: SlotCalls[tuple[DayKey, ...]] = SlotCalls(slot_keys)
        self._drop_claim = idempotency.delete().where(
            idempotency.c.account_id == sa.bindparam("a"), idempotency.c.key == sa.bindparam("k")
        )

    # Usage ------------------------------------------------------------------
    async def consume(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
        extra: tuple[Slot, ...] = (),
        day_mode: int = HARD,
        hold: Hold | None = None,
    ) -> ConsumeOutcome:
        """Add ``cost`` within ``total`` (and every slot of ``extra`` within its own), decided
        under lock and committed (group-committed with concurrent consumes unless
        ``batch=False``); a grant with a ``hold`` inserts its reservation in the same
        transaction."""
        if extra or day_mode != HARD or hold is not None:
            slots, keys = self._calls.slots_of(
                account_id, service, day, total, day_mode, cost, extra
            )
            return await self._consumes.consume(
                SlotConsume(account_id, service, day, cost, total, claim, now, slots, hold, keys)
            )
        return await self._consumes.consume(
            Consume(account_id, service, day, cost, total, claim, now)
        )

    def _add_to(self, account_id: str, service: str, day: str, delta: int, total: int) -> Any:
        """Add ``delta`` to a row's use, flooring at zero; ``total`` for a new row."""
        stmt = self._db.insert(usage_days).values(
            account_id=account_id,
            service=service,
            day=day,
            used=max(delta, 0),
            total=total,
            rejected=0,
        )
        new_used = sa.case((usage_days.c.used + delta < 0, 0), else_=usage_days.c.used + delta)
        return stmt.on_conflict_do_update(
            index_elements=["account_id", "service", "day"], set_={"used": new_used}
        )

    async def adjust(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...] = (),
    ) -> UsageDay:
        """Add ``delta`` to a day and to ``extra``'s window counters (rates are left
        alone), flooring each at zero, in one transaction."""
        async with self._db.write() as conn:
            return await self._adjusted(conn, account_id, service, day, delta, total, extra)

    async def adjust_once(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[UsageDay, bool]:
        """``adjust`` unless ``claim`` was seen before (``Store.adjust_once``), in the
        adjustment's transaction."""
        async with self._db.write() as conn:
            if await self._seen(conn, account_id, claim, now):
                row = (
                    await conn.execute(
                        usage_days.select().where(
                            usage_days.c.account_id == account_id,
                            usage_days.c.service == service,
                            usage_days.c.day == day.isoformat(),
                        )
                    )
                ).first()
                return (UsageDay(day, 0, total) if row is None else usage_day_of(row)), True
            adjusted = await self._adjusted(conn, account_id, service, day, delta, total, extra)
            await conn.execute(
                idempotency.update()
                .where(idempotency.c.account_id == account_id, idempotency.c.key == claim.key)
                .values(granted=True, used=adjusted.used, total=adjusted.total, day=day.isoformat())
            )
            return adjusted, False

    async def _seen(
        self, conn: Any, account_id: str, claim: IdempotencyClaim, now: datetime
    ) -> bool:
        """Take ``claim`` for this transaction: whether it was seen before (unexpired).

        Inserted first (a concurrent twin waits for this transaction, then finds it);
        an expired one is taken over; one of another request raises ``Conflict``.
        """
        values = {"fingerprint": claim.fingerprint, "expires_at": to_micros(claim.expires_at)}
        insert = self._db.insert(idempotency).values(account_id=account_id, key=claim.key, **values)
        if await affects_a_row(conn, insert.on_conflict_do_nothing()):
            return False
        kept = idempotency.c.account_id == account_id, idempotency.c.key == claim.key
        fingerprint, expires_at = (
            await conn.execute(
                sa.select(idempotency.c.fingerprint, idempotency.c.expires_at).where(*kept)
            )
        ).one()
        if expires_at <= to_micros(now):
            await conn.execute(idempotency.update().where(*kept).values(**values))
            return False
        if fingerprint != claim.fingerprint:
            raise Conflict("Idempotency-Key was used with a different request")
        return True

    async def _adjusted(
        self,
        conn: Any,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
    ) -> UsageDay:
        day_key = (service, day.isoformat())
        moved = {day_key: total}
        for slot in extra:
            if not slot.interval:
                moved.setdefault((slot.name, slot.period), slot.total)
        found: dict[tuple[str, str], Any] = {}
        # Sorted: the lock order consumes take the same rows in (no deadlock between them).
        for (name, period), new_total in sorted(moved.items()):
            upsert = self._add_to(account_id, name, period, delta, new_total)
            found[name, period] = (await conn.execute(upsert.returning(usage_days))).one()
        return usage_day_of(found[day_key])

    async def read_counters(self, account_id: str, keys: list[tuple[str, str]]) -> list[int]:
        """Counters by (name, period), 0 where absent, in order."""
        stored = await self.counter_rows(account_id, keys)
        return [stored[key][0] if key in stored else 0 for key in keys]

    async def counter_rows(
        self, account_id: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int, int]]:
        """The stored rows of counters by (name, period): ``(used, total, rejected)``;
        a counter not stored is left out."""
        if not keys:
            return {}
        query = keyed(
            usage_days, DAY_KEY, [(account_id, name, period) for name, period in set(keys)]
        ).with_only_columns(
            usage_days.c.service,
            usage_days.c.day,
            usage_days.c.used,
            usage_days.c.total,
            usage_days.c.rejected,
        )
        async with self._db.read() as conn:
            return {
                (name, period): (int(used), int(total), int(rejected))
                for name, period, used, total, rejected in await conn.execute(query)
            }

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add unseen events to their days, in one transaction."""
        accepted = await self.record_new_events(events)
        return EventsOutcome(len(accepted), len(events) - len(accepted))

    async def record_new_events(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """Add unseen events to their days, in one transaction; the events that were new."""
        accepted = []
        async with self._db.write() as conn:
            for item in events:
                new = await affects_a_row(
                    conn,
                    self._db.insert(usage_events)
                    .values(
                        id=item.id,
                        account_id=item.account_id,
                        recorded_at=to_micros(item.timestamp),
                    )
                    .on_conflict_do_nothing(),
                )
                if not new:
                    continue
                accepted.append(item)
                stmt = self._db.insert(usage_days).values(
                    account_id=item.account_id,
                    service=item.service,
                    day=item.day.isoformat(),
                    used=item.amount,
                    total=item.total,
                    rejected=0,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "service", "day"],
                        set_={"used": usage_days.c.used + item.amount},
                    )
                )
                for name, period in item.windows:
                    await conn.execute(self._add_to(item.account_id, name, period, item.amount, 0))
        return accepted

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Store days' absolute values (restoring an export)."""
        if not rows:
            return
        async with self._db.write() as conn:
            for service, row in rows:
                stmt = self._db.insert(usage_days).values(
                    account_id=account_id,
                    service=service,
                    day=row.day.isoformat(),
                    used=row.used,
                    total=row.total,
                    rejected=row.rejected,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "service", "day"],
                        set_={"used": row.used, "total": row.total, "rejected": row.rejected},
                    )
                )

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """Stored days in a range, ascending."""
        query = (
            usage_days.select()
            .where(usage_days.c.account_id == account_id)
            .where(usage_days.c.service == service)
            .where(usage_days.c.day.between(start.isoformat(), end.isoformat()))
            .order_by(usage_days.c.day)
        )
        async with self._db.read() as conn:
            return [usage_day_of(row) for row in await conn.execute(query)]

    async def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every stored day, streamed in primary-key order (day rows only: another limit's
        counter is named with a dot, which no service's name has)."""
        query = (
            usage_days.select()
            .where(usage_days.c.service.not_like("%.%"))
            .order_by(usage_days.c.account_id, usage_days.c.service, usage_days.c.day)
        )
        async with self._db.read() as conn:
            result = await conn.stream(query)
            async for row in result:
                yield row.account_id, row.service, usage_day_of(row)

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Delete expired idempotency answers and event ids older than the retention."""
        async with self._db.write() as conn:
            await conn.execute(
                idempotency.delete().where(idempotency.c.expires_at <= to_micros(now))
            )
            await conn.execute(
                usage_events.delete().where(usage_events.c.recorded_at < to_micros(events_before))
            )

    # Write-behind of a counter store (see storage/write_behind.py) -----------
    # Counters of one account: this store keeps them with its records.
    async def open_account(self, account_id: str) -> None:
        """Nothing to start: a new account's counters are whole (empty) from the start."""

    async def forget_account(self, account_id: str) -> None:
        """Nothing left: ``delete_account`` deleted the account's counters with it."""

    async def apply_counter_changes(
        self, node_id: str, seq: int, changes: Changes, now: datetime
    ) -> None:
        """Add a node's flush ``seq`` to the days and claims, once, in one transaction.

        A flush already applied (its commit went unanswered, and the node sent it again)
        only refreshes the node's heartbeat. Changes of accounts deleted meanwhile are
        dropped.
        """
        beat = to_micros(now)
        where = counter_nodes.c.node_id == node_id
        async with self._db.write() as conn:
            applied = await conn.scalar(sa.select(counter_nodes.c.seq).where(where))
            if applied is None:
                await conn.execute(
                    counter_nodes.insert().values(node_id=node_id, seq=seq, heartbeat_at=beat)
                )
            else:
                await conn.execute(
                    counter_nodes.update()
                    .where(where)
                    .values(seq=max(seq, int(applied)), heartbeat_at=beat)
                )
                if applied >= seq:
                    return
            if not changes:
                return
            named = {key[0] for key in changes.days} | {key[0] for key in changes.claims}
            present = set(
                await conn.scalars(sa.select(accounts.c.id).where(accounts.c.id.in_(named)))
            )
            days = [
                {
                    "account_id": account_id,
                    "service": service,
                    "day": day,
                    "used": max(delta.used, 0),
                    "total": delta.total,
                    "rejected": delta.rejected,
                    "d_used": delta.used,
                    "d_rejected": delta.rejected,
                }
                for (account_id, service, day), delta in changes.days.items()
                if account_id in present
            ]
            if days:
                await conn.execute(self._add_days, days)
            stored, dropped = [], []
            for (account_id, key), claim in changes.claims.items():
                if account_id not in present:
                    continue
                if claim is None:
                    dropped.append((account_id, key))
                else:
                    stored.append(claim_values(claim))
            if stored:
                await conn.execute(self._put_claims, stored)
            if dropped:  # one key a row: found in the key's index (see ``keyed``)
                await conn.execute(self._drop_claim, [{"a": a, "k": k} for a, k in dropped])

    async def counter_node_marks(self) -> dict[str, tuple[int, int]]:
        """Each counter node's last flush and heartbeat (microseconds)."""
        async with self._db.read() as conn:
            rows = await conn.execute(sa.select(counter_nodes))
            return {row.node_id: (int(row.seq), int(row.heartbeat_at)) for row in rows}

    async def forget_counter_nodes(self, node_ids: list[str]) -> None:
        """Remove nodes that stopped (or died long ago) from the write-behind roll."""
        if node_ids:
            async with self._db.write() as conn:
                await conn.execute(
                    counter_nodes.delete().where(counter_nodes.c.node_id.in_(node_ids))
                )

    async def live_claims(self, account_id: str, now: datetime) -> list[StoredClaim]:
        """An account's answered Idempotency-Keys that have not expired."""
        query = (
            idempotency.select()
            .where(idempotency.c.account_id == account_id)
            .where(idempotency.c.expires_at > to_micros(now))
            .where(idempotency.c.granted.is_not(None))
        )
        async with self._db.read() as conn:
            return [
                StoredClaim(
                    row.account_id,
                    row.key,
                    row.fingerprint,
                    int(row.expires_at) // 1000,
                    bool(row.granted),
                    int(row.used),
                    int(row.total),
                    row.day,
                )
                for row in await conn.execute(query)
            ]

    # Gauges -----------------------------------------------------------------
    async def gauges(self, account_id: str) -> dict[str, int]:
        """An account's gauges."""
        query = sa.select(gauges.c.name, gauges.c.usage).where(gauges.c.account_id == account_id)
        async with self._db.read() as conn:
            return {row.name: int(row.usage) for row in await conn.execute(query)}

    async def set_gauge(self, account_id: str, name: str, usage: int) -> int:
        """Set a gauge."""
        stmt = self._db.insert(gauges).values(account_id=account_id, name=name, usage=usage)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "name"], set_={"usage": usage}
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)
        return usage

    async def acquire(self, account_id: str, name: str, amount: int, limit: int) -> int | None:
        """Acquire within the limit, in one conditional upsert."""
        if amount > limit:
            return None
        async with self._db.write() as conn:
            return await self._moved_gauge(conn, account_id, name, amount, limit, acquiring=True)

    async def release(self, account_id: str, name: str, amount: int) -> int | None:
        """Release what is in use, in one conditional update."""
        async with self._db.write() as conn:
            return await self._moved_gauge(conn, account_id, name, -amount, 0, acquiring=False)

    async def move_gauge_once(
        self,
        account_id: str,
        name: str,
        delta: int,
        limit: int,
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[int | None, bool]:
        """``acquire`` or ``release`` unless ``claim`` was seen (``Store.move_gauge_once``),
        in one transaction."""
        async with self._db.write() as conn:
            if await self._seen(conn, account_id, claim, now):
                found = await conn.scalar(
                    sa.select(gauges.c.usage).where(
                        gauges.c.account_id == account_id, gauges.c.name == name
                    )
                )
                return int(found or 0), True
            usage = None
            if delta <= limit:
                usage = await self._moved_gauge(
                    conn, account_id, name, delta, limit, acquiring=delta > 0
                )
            if usage is None:  # refused: a retry of it is decided afresh
                await conn.execute(self._drop_claim, {"a": account_id, "k": claim.key})
            return usage, False

    async def _moved_gauge(
        self, conn: Any, account_id: str, name: str, delta: int, limit: int, *, acquiring: bool
    ) -> int | None:
        """Add ``delta`` within ``limit`` (a release: take ``-delta`` if that much is in use),
        in one conditional statement: the new usage, or ``None``."""
        moved: Any
        if acquiring:
            stmt = self._db.insert(gauges).values(account_id=account_id, name=name, usage=delta)
            moved = stmt.on_conflict_do_update(
                index_elements=["account_id", "name"],
                set_={"usage": gauges.c.usage + delta},
                where=gauges.c.usage + delta <= limit,
            ).returning(gauges.c.usage)
        else:
            moved = (
                gauges.update()
                .where(gauges.c.account_id == account_id)
                .where(gauges.c.name == name)
                .where(gauges.c.usage >= -delta)
                .values(usage=gauges.c.usage + delta)
                .returning(gauges.c.usage)
            )
        usage = await conn.scalar(moved)
        if usage is None:
            return 0 if delta == 0 else None
        return int(usage)
