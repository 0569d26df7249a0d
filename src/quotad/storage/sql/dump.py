"""A whole SQL deployment out and in: ``dump`` in one snapshot, ``restore`` in one transaction.

Each kind of record has one reader (a query streamed in key order, rows turned into a
value) and one writer (the value as a row of its table); ``_KINDS`` lists them in
``DUMP_ORDER``. A kind added later adds its pair there.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from quotad.domain.credits import Grant, Reservation
from quotad.domain.dump import (
    AccountTotal,
    AccountUsage,
    DumpItem,
    Gauge,
    IdempotencyAnswer,
    SeenEvent,
    Setting,
    WindowCounter,
)
from quotad.domain.models import Account, ApiKey, Plan, Service, TotalChange
from quotad.domain.operators import AuditEntry, OperatorToken
from quotad.domain.webhooks import AlertEvent, Delivery, WebhookEndpoint
from quotad.errors import Conflict
from quotad.storage.base import NOT_EMPTY
from quotad.storage.schema import (
    accounts,
    alert_events,
    api_keys,
    audit_log,
    credit_grants,
    gauges,
    idempotency,
    operator_tokens,
    plans,
    reservations,
    services,
    settings,
    total_changes,
    usage_days,
    usage_events,
    webhook_deliveries,
    webhook_endpoints,
)
from quotad.storage.sql.alerts import (
    delivery_of,
    delivery_values,
    endpoint_of,
    endpoint_values,
    event_of,
    event_values,
)
from quotad.storage.sql.credits import grant_of, grant_values
from quotad.storage.sql.engine import Database
from quotad.storage.sql.reservation_rows import reservation_of, reservation_values
from quotad.storage.sql.rows import (
    account_of,
    account_values,
    audit_of,
    audit_values,
    from_micros,
    key_of,
    key_values,
    operator_token_of,
    operator_token_values,
    plan_of,
    plan_values,
    service_of,
    to_micros,
    usage_day_of,
)

ROWS_PER_INSERT = 1000
ROWS_PER_READ = 1000


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one kind of record is read from its table and written back."""

    type: type[Any]
    table: sa.Table
    order: tuple[str, ...]  # the columns a dump lists its rows by
    read: Callable[[Any], DumpItem]
    write: Callable[[Any], dict[str, Any]]
    where: sa.ColumnElement[bool] | None = None


def _idempotency_answer(row: Any) -> IdempotencyAnswer:
    return IdempotencyAnswer(
        row.account_id,
        row.key,
        row.fingerprint,
        from_micros(row.expires_at),
        bool(row.granted),
        int(row.used),
        int(row.total),
        date.fromisoformat(row.day),
    )


def _idempotency_row(item: IdempotencyAnswer) -> dict[str, Any]:
    return {
        "account_id": item.account_id,
        "key": item.key,
        "fingerprint": item.fingerprint,
        "expires_at": to_micros(item.expires_at),
        "granted": item.granted,
        "used": item.used,
        "total": item.total,
        "day": item.day.isoformat(),
    }


# A service's day row: no service's name has a dot, every other limit's name does.
_DAY_ROW = usage_days.c.service.not_like("%.%")

_KINDS: tuple[_Kind, ...] = (
    _Kind(
        Setting,
        settings,
        ("name",),
        lambda row: Setting(row.name, row.value),
        lambda item: {"name": item.name, "value": item.value},
    ),
    _Kind(
        Service,
        services,
        ("name",),
        service_of,
        lambda item: {
            "name": item.name,
            "description": item.description,
            "created_at": to_micros(item.created_at),
            "credit_price": item.credit_price,
        },
    ),
    _Kind(Plan, plans, ("id",), plan_of, plan_values),
    _Kind(Account, accounts, ("id",), account_of, account_values),
    _Kind(ApiKey, api_keys, ("account_id", "created_at", "id"), key_of, key_values),
    _Kind(
        AccountTotal,
        total_changes,
        ("account_id", "service", "effective_from"),
        lambda row: AccountTotal(
            row.account_id,
            row.service,
            TotalChange(from_micros(row.effective_from), int(row.total)),
        ),
        lambda item: {
            "account_id": item.account_id,
            "service": item.service,
            "effective_from": to_micros(item.change.effective_from),
            "total": item.change.total,
        },
    ),
    _Kind(
        AccountUsage,
        usage_days,
        ("account_id", "service", "day"),
        lambda row: AccountUsage(row.account_id, row.service, usage_day_of(row)),
        lambda item: {
            "account_id": item.account_id,
            "service": item.service,
            "day": item.day.day.isoformat(),
            "used": item.day.used,
            "total": item.day.total,
            "rejected": item.day.rejected,
        },
        _DAY_ROW,
    ),
    # Every other limit's counter shares the table: its name has a dot (SPEC 9).
    _Kind(
        WindowCounter,
        usage_days,
        ("account_id", "service", "day"),
        lambda row: WindowCounter(
            row.account_id, row.service, row.day, int(row.used), int(row.total)
        ),
        lambda item: {
            "account_id": item.account_id,
            "service": item.name,
            "day": item.period,
            "used": item.value,
            "total": item.total,
            "rejected": 0,
        },
        sa.not_(_DAY_ROW),
    ),
    _Kind(
        Gauge,
        gauges,
        ("account_id", "name"),
        lambda row: Gauge(row.account_id, row.name, int(row.usage)),
        lambda item: {"account_id": item.account_id, "name": item.name, "usage": item.usage},
    ),
    _Kind(
        IdempotencyAnswer,
        idempotency,
        ("account_id", "key"),
        _idempotency_answer,
        _idempotency_row,
        # A claim without an answer is a consume that never finished: nothing to replay.
        idempotency.c.granted.is_not(None),
    ),
    _Kind(
        SeenEvent,
        usage_events,
        ("account_id", "id"),
        lambda row: SeenEvent(row.account_id, row.id, from_micros(row.recorded_at)),
        lambda item: {
            "account_id": item.account_id,
            "id": item.id,
            "recorded_at": to_micros(item.recorded_at),
        },
    ),
    _Kind(
        OperatorToken,
        operator_tokens,
        ("created_at", "id"),
        operator_token_of,
        operator_token_values,
    ),
    _Kind(AuditEntry, audit_log, ("id",), audit_of, audit_values),
    _Kind(WebhookEndpoint, webhook_endpoints, ("id",), endpoint_of, endpoint_values),
    _Kind(AlertEvent, alert_events, ("id",), event_of, event_values),
    # Written unclaimed (``delivery_values``): a claim belongs to a node of the old deployment.
    _Kind(Delivery, webhook_deliveries, ("id",), delivery_of, delivery_values),
    _Kind(Grant, credit_grants, ("account_id", "id"), grant_of, grant_values),
    # Written unclaimed (``reservation_values``): the next node's sweep or commit settles it.
    _Kind(Reservation, reservations, ("id",), reservation_of, reservation_values),
)
_BY_TYPE = {kind.type: kind for kind in _KINDS}


class SqlDump:
    """``dump`` and ``restore`` of a SQL store (records and counters alike)."""

    _db: Database

    async def dump(self) -> AsyncIterator[DumpItem]:
        """Every record and counter, streamed from one read-only snapshot."""
        async with self._db.snapshot() as conn:
            for kind in _KINDS:
                query = kind.table.select().order_by(*self._ordering(kind))
                if kind.where is not None:
                    query = query.where(kind.where)
                result = await conn.stream(query.execution_options(yield_per=ROWS_PER_READ))
                async for rows in result.partitions():
                    for row in rows:
                        yield kind.read(row)

    def _ordering(self, kind: _Kind) -> list[sa.ColumnElement[Any]]:
        """Text in code point order on every database (as SQLite and Python sort it), so a
        dump lists its records in the same order whichever store it was taken from."""
        found: list[sa.ColumnElement[Any]] = []
        for name in kind.order:
            column = kind.table.c[name]
            text = isinstance(column.type, sa.String) and not self._db.sqlite
            found.append(column.collate("C") if text else column)
        return found

    async def is_empty(self) -> bool:
        """Whether the store has no service, plan or account (a restore's target)."""
        async with self._db.read() as conn:
            return await _empty(conn)

    async def restore(self, items: AsyncIterable[DumpItem]) -> None:
        """Write a dump into this empty store in one transaction, ``ROWS_PER_INSERT`` rows at
        a time; any failure (of the store, or of reading ``items``) rolls it back."""
        async with self._db.write() as conn:
            if not await _empty(conn):
                raise Conflict(NOT_EMPTY)
            kind: _Kind | None = None
            rows: list[dict[str, Any]] = []
            async for item in items:
                item_kind = _BY_TYPE[type(item)]
                if item_kind is not kind or len(rows) >= ROWS_PER_INSERT:
                    await self._insert(conn, kind, rows)
                    kind, rows = item_kind, []
                rows.append(item_kind.write(item))
            await self._insert(conn, kind, rows)

    async def _insert(
        self, conn: AsyncConnection, kind: _Kind | None, rows: list[dict[str, Any]]
    ) -> None:
        if kind is None or not rows:
            return
        statement: Any = kind.table.insert()
        if kind.table is settings:  # a new store may hold settings already: the dump's win
            upsert = self._db.insert(settings)
            statement = upsert.on_conflict_do_update(
                index_elements=["name"], set_={"value": upsert.excluded.value}
            )
        try:
            await conn.execute(statement, rows)
        except sa.exc.IntegrityError as exc:
            msg = f"the dump holds a {kind.table.name} row twice; nothing was restored"
            raise Conflict(msg) from exc


async def _empty(conn: AsyncConnection) -> bool:
    for table in (services, plans, accounts):
        if await conn.scalar(sa.select(sa.exists().select_from(table))):
            return False
    return True
