"""Alerts in SQL: webhook endpoints, alert events and their deliveries (SPEC 11).

An event and its deliveries are written in one transaction, and only if no event with
its ``dedupe`` key exists (the unique index decides between nodes). Claiming is one
transaction too: PostgreSQL locks the due rows it picks with ``FOR UPDATE SKIP LOCKED``
(another node picks others), SQLite takes its one write lock (``BEGIN IMMEDIATE``); the
update then names the claim only where no live claim is held, so a delivery is never
claimed twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from quotad.domain.webhooks import (
    AlertEvent,
    Attempt,
    Claimed,
    Delivery,
    DeliveryStatus,
    WebhookEndpoint,
    delivery_id,
    settled,
)
from quotad.errors import NotFound
from quotad.storage.schema import alert_events, webhook_deliveries, webhook_endpoints
from quotad.storage.sql.engine import Database
from quotad.storage.sql.rows import affects_a_row, from_micros, opt_dt, opt_micros, to_micros


def endpoint_values(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """A WebhookEndpoint as a ``webhook_endpoints`` row."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "secret": endpoint.secret,
        "previous_secret": endpoint.previous_secret,
        "previous_until": opt_micros(endpoint.previous_until),
        "disabled_at": opt_micros(endpoint.disabled_at),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": opt_micros(endpoint.failing_since),
        "created_at": to_micros(endpoint.created_at),
        "updated_at": to_micros(endpoint.updated_at),
        "account_id": endpoint.account_id,
    }


def endpoint_of(row: Any) -> WebhookEndpoint:
    """A ``webhook_endpoints`` row as a WebhookEndpoint."""
    return WebhookEndpoint(
        id=row.id,
        url=row.url,
        events=tuple(row.events),
        secret=row.secret,
        created_at=from_micros(row.created_at),
        updated_at=from_micros(row.updated_at),
        description=row.description,
        previous_secret=row.previous_secret,
        previous_until=opt_dt(row.previous_until),
        disabled_at=opt_dt(row.disabled_at),
        disabled_reason=row.disabled_reason,
        failing_since=opt_dt(row.failing_since),
        account_id=row.account_id,
    )


def event_values(event: AlertEvent) -> dict[str, Any]:
    """An AlertEvent as an ``alert_events`` row."""
    return {
        "id": event.id,
        "dedupe": event.dedupe,
        "type": event.type,
        "account_id": event.account_id,
        "at": to_micros(event.at),
        "data": event.data,
    }


def event_of(row: Any) -> AlertEvent:
    """An ``alert_events`` row as an AlertEvent."""
    return AlertEvent(
        id=row.id,
        type=row.type,
        at=from_micros(row.at),
        dedupe=row.dedupe,
        data=row.data,
        account_id=row.account_id,
    )


def attempt_values(attempt: Attempt) -> dict[str, Any]:
    """An Attempt as an entry of a delivery's ``attempts`` list."""
    return {
        "at": to_micros(attempt.at),
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response": attempt.response,
    }


def attempt_of(value: dict[str, Any]) -> Attempt:
    """An entry of a delivery's ``attempts`` list as an Attempt."""
    return Attempt(
        at=from_micros(value["at"]),
        status_code=value["status_code"],
        latency_ms=value["latency_ms"],
        error=value["error"],
        response=value["response"],
    )


def delivery_values(delivery: Delivery) -> dict[str, Any]:
    """A Delivery as a ``webhook_deliveries`` row (unclaimed)."""
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "type": delivery.type,
        "status": delivery.status.value,
        "created_at": to_micros(delivery.created_at),
        "next_at": opt_micros(delivery.next_at),
        "claim": None,
        "claimed_until": None,
        "attempts": [attempt_values(a) for a in delivery.attempts],
    }


def delivery_of(row: Any) -> Delivery:
    """A ``webhook_deliveries`` row as a Delivery."""
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        type=row.type,
        status=DeliveryStatus(row.status),
        created_at=from_micros(row.created_at),
        next_at=opt_dt(row.next_at),
        attempts=tuple(attempt_of(a) for a in row.attempts),
    )


class SqlAlerts:
    """Webhook endpoints, alert events and deliveries in the records database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Register an endpoint."""
        async with self._db.write() as conn:
            await conn.execute(webhook_endpoints.insert().values(**endpoint_values(endpoint)))

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint with this id."""
        query = webhook_endpoints.select().where(webhook_endpoints.c.id == endpoint_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else endpoint_of(row)

    async def list_webhooks(self, account_id: str | None = None) -> list[WebhookEndpoint]:
        """Every endpoint (or one account's own), oldest first."""
        query = webhook_endpoints.select().order_by(
            webhook_endpoints.c.created_at, webhook_endpoints.c.id
        )
        if account_id is not None:
            query = query.where(webhook_endpoints.c.account_id == account_id)
        async with self._db.read() as conn:
            return [endpoint_of(row) for row in await conn.execute(query)]

    async def update_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Replace an endpoint's fields."""
        values = endpoint_values(endpoint)
        del values["id"], values["created_at"]
        stmt = (
            webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint.id).values(**values)
        )
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"webhook endpoint {endpoint.id!r} not found")

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries."""
        stmt = webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id)
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
            await conn.execute(
                webhook_deliveries.delete().where(webhook_deliveries.c.endpoint_id == endpoint_id)
            )

    async def record_alert(self, event: AlertEvent, endpoint_ids: list[str]) -> bool:
        """Write the event once per dedupe key, with its deliveries."""
        insert = self._db.insert(alert_events).values(**event_values(event))
        async with self._db.write() as conn:
            if not await affects_a_row(conn, insert.on_conflict_do_nothing()):
                return False
            if endpoint_ids:
                live = await conn.execute(
                    sa.select(webhook_endpoints.c.id).where(
                        webhook_endpoints.c.id.in_(endpoint_ids)
                    )
                )
                rows = [
                    delivery_values(
                        Delivery(
                            delivery_id(event.id, endpoint_id),
                            endpoint_id,
                            event.id,
                            event.type,
                            DeliveryStatus.PENDING,
                            event.at,
                            event.at,
                        )
                    )
                    for (endpoint_id,) in live
                ]
                if rows:
                    await conn.execute(webhook_deliveries.insert(), rows)
        return True

    async def alert_events(
        self, limit: int, before_id: str | None = None, account_id: str | None = None
    ) -> list[AlertEvent]:
        """Events, newest first."""
        query = alert_events.select().order_by(alert_events.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(alert_events.c.id < before_id)
        if account_id is not None:
            query = query.where(alert_events.c.account_id == account_id)
        async with self._db.read() as conn:
            return [event_of(row) for row in await conn.execute(query)]

    async def claim_deliveries(
        self, now: datetime, until: datetime, claim: str, limit: int
    ) -> list[Claimed]:
        """Claim due deliveries to enabled endpoints (see the module's docstring)."""
        at = to_micros(now)
        d = webhook_deliveries.c
        free = sa.or_(d.claimed_until.is_(None), d.claimed_until <= at)
        # Each enabled endpoint with nothing claimed offers its oldest due delivery, so one
        # endpoint's backlog never keeps the others' waiting.
        held = webhook_deliveries.alias("held")
        busy = sa.select(held.c.endpoint_id).where(held.c.claimed_until > at)
        own = webhook_deliveries.alias("own")
        oldest = (
            sa.select(own.c.id)
            .where(
                own.c.endpoint_id == webhook_endpoints.c.id,
                own.c.status == DeliveryStatus.PENDING.value,
                own.c.next_at <= at,
            )
            .order_by(own.c.next_at, own.c.id)
            .limit(1)
            .scalar_subquery()
        )
        offered = sa.select(oldest).where(
            webhook_endpoints.c.disabled_at.is_(None), webhook_endpoints.c.id.not_in(busy)
        )
        due = (
            sa.select(d.id, d.endpoint_id)
            .where(d.id.in_(offered), free)
            .order_by(d.next_at, d.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._db.write() as conn:
            picked = {row.endpoint_id: row.id for row in await conn.execute(due)}
            if not picked:
                return []
            ids = list(picked.values())
            await conn.execute(
                webhook_deliveries.update()
                .where(d.id.in_(ids), free)
                .values(claim=claim, claimed_until=to_micros(until))
            )
            rows = await conn.execute(
                sa.select(webhook_deliveries, alert_events, webhook_endpoints)
                .join_from(webhook_deliveries, alert_events, alert_events.c.id == d.event_id)
                .join_from(
                    webhook_deliveries,
                    webhook_endpoints,
                    webhook_endpoints.c.id == d.endpoint_id,
                )
                .where(d.id.in_(ids), d.claim == claim)
                .order_by(d.next_at, d.id)
            )
            found = list(rows)
        delivery_columns = len(webhook_deliveries.c)
        event_columns = len(alert_events.c)
        claimed = []
        for row in found:
            delivery = delivery_of(_part(row, webhook_deliveries, 0))
            event = event_of(_part(row, alert_events, delivery_columns))
            endpoint = endpoint_of(_part(row, webhook_endpoints, delivery_columns + event_columns))
            claimed.append(Claimed(delivery, event, endpoint, claim, until))
        return claimed

    async def set_webhook_failing(self, endpoint_id: str, since: datetime | None) -> None:
        """Set only when the endpoint began failing."""
        stmt = (
            webhook_endpoints.update()
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(failing_since=opt_micros(since))
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)

    async def disable_webhook(
        self, endpoint_id: str, at: datetime, reason: str
    ) -> WebhookEndpoint | None:
        """Disable the endpoint if it is enabled (one caller wins)."""
        e = webhook_endpoints.c
        stmt = (
            webhook_endpoints.update()
            .where(e.id == endpoint_id, e.disabled_at.is_(None))
            .values(disabled_at=to_micros(at), disabled_reason=reason)
        )
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                return None
            row = (await conn.execute(webhook_endpoints.select().where(e.id == endpoint_id))).one()
        return endpoint_of(row)

    async def finish_delivery(
        self,
        delivery_id: str,
        claim: str,
        attempt: Attempt,
        next_at: datetime | None,
        *,
        delivered: bool,
    ) -> bool:
        """Record an attempt and release the claim (if still held)."""
        d = webhook_deliveries.c
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    sa.select(d.attempts).where(d.id == delivery_id, d.claim == claim)
                )
            ).first()
            if row is None:
                return False
            status, due = settled(delivered, next_at)
            # Still under the claim: another node may have claimed it since the read above.
            return await affects_a_row(
                conn,
                webhook_deliveries.update()
                .where(d.id == delivery_id, d.claim == claim)
                .values(
                    attempts=[*row.attempts, attempt_values(attempt)],
                    status=status.value,
                    next_at=opt_micros(due),
                    claim=None,
                    claimed_until=None,
                ),
            )

    async def list_deliveries(
        self, endpoint_id: str, limit: int, before_id: str | None = None
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first."""
        d = webhook_deliveries.c
        query = (
            webhook_deliveries.select()
            .where(d.endpoint_id == endpoint_id)
            .order_by(d.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(d.id < before_id)
        async with self._db.read() as conn:
            return [delivery_of(row) for row in await conn.execute(query)]

    async def resend_delivery(self, endpoint_id: str, delivery_id: str, at: datetime) -> Delivery:
        """Make a delivery due again at ``at``."""
        d = webhook_deliveries.c
        where = sa.and_(d.id == delivery_id, d.endpoint_id == endpoint_id)
        async with self._db.write() as conn:
            stmt = (
                webhook_deliveries.update()
                .where(where)
                .values(status=DeliveryStatus.PENDING.value, next_at=to_micros(at))
            )
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"webhook endpoint {endpoint_id!r} has no delivery {delivery_id!r}")
            row = (await conn.execute(webhook_deliveries.select().where(where))).one()
        return delivery_of(row)


class _Part:
    """One table's columns of a joined row, by name."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _part(row: Any, table: sa.Table, offset: int) -> Any:
    return _Part({column.name: row[offset + i] for i, column in enumerate(table.c)})
