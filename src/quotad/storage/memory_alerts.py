"""Alerts in process memory: the memory store's webhook endpoints, events and deliveries.

Each method runs to completion without awaiting, under the store's lock, so each is one
atomic step as the contract asks (``AlertStore``).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

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


class MemoryAlerts:
    """Endpoints, events (with their dedupe keys) and deliveries (with their claims)."""

    def __init__(self) -> None:
        self._alerts_lock = threading.Lock()
        self._webhooks: dict[str, WebhookEndpoint] = {}
        self._alert_events: dict[str, AlertEvent] = {}  # by id
        self._dedupes: set[str] = set()
        self._deliveries: dict[str, Delivery] = {}  # by id
        self._claims: dict[str, tuple[str, datetime]] = {}  # delivery id -> (claim, until)

    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Register an endpoint."""
        with self._alerts_lock:
            self._webhooks[endpoint.id] = endpoint

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint with this id."""
        return self._webhooks.get(endpoint_id)

    async def list_webhooks(self, account_id: str | None = None) -> list[WebhookEndpoint]:
        """Every endpoint (or one account's own), oldest first."""
        with self._alerts_lock:
            found = [
                e
                for e in self._webhooks.values()
                if account_id is None or e.account_id == account_id
            ]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def update_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Replace an endpoint's fields."""
        with self._alerts_lock:
            if endpoint.id not in self._webhooks:
                raise NotFound(f"webhook endpoint {endpoint.id!r} not found")
            created = self._webhooks[endpoint.id].created_at
            self._webhooks[endpoint.id] = replace(endpoint, created_at=created)

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries."""
        with self._alerts_lock:
            if self._webhooks.pop(endpoint_id, None) is None:
                raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
            for ident in [i for i, d in self._deliveries.items() if d.endpoint_id == endpoint_id]:
                del self._deliveries[ident]
                self._claims.pop(ident, None)

    async def record_alert(self, event: AlertEvent, endpoint_ids: list[str]) -> bool:
        """Write the event once per dedupe key, with its deliveries."""
        with self._alerts_lock:
            if event.dedupe in self._dedupes:
                return False
            self._dedupes.add(event.dedupe)
            self._alert_events[event.id] = event
            for endpoint_id in endpoint_ids:
                if endpoint_id in self._webhooks:
                    ident = delivery_id(event.id, endpoint_id)
                    self._deliveries[ident] = Delivery(
                        ident,
                        endpoint_id,
                        event.id,
                        event.type,
                        DeliveryStatus.PENDING,
                        event.at,
                        event.at,
                    )
            return True

    async def alert_events(
        self, limit: int, before_id: str | None = None, account_id: str | None = None
    ) -> list[AlertEvent]:
        """Events, newest first."""
        with self._alerts_lock:
            found = sorted(self._alert_events.values(), key=lambda e: e.id, reverse=True)
        return [
            event
            for event in found
            if (before_id is None or event.id < before_id)
            and (account_id is None or event.account_id == account_id)
        ][:limit]

    async def claim_deliveries(
        self, now: datetime, until: datetime, claim: str, limit: int
    ) -> list[Claimed]:
        """Claim due deliveries to enabled endpoints."""
        with self._alerts_lock:
            busy = {
                self._deliveries[ident].endpoint_id
                for ident, (_, held_until) in self._claims.items()
                if held_until > now and ident in self._deliveries
            }
            candidates = sorted(
                (
                    d
                    for d in self._deliveries.values()
                    if d.status is DeliveryStatus.PENDING
                    and d.next_at is not None
                    and d.next_at <= now
                    and self._webhooks[d.endpoint_id].disabled_at is None
                    and d.endpoint_id not in busy
                ),
                key=lambda d: (d.next_at, d.id),
            )
            due: dict[str, Delivery] = {}  # endpoint -> its oldest due delivery
            for delivery in candidates:
                if delivery.endpoint_id not in due and len(due) < limit:
                    due[delivery.endpoint_id] = delivery
            claimed = []
            for delivery in due.values():
                self._claims[delivery.id] = (claim, until)
                event = self._alert_events[delivery.event_id]
                endpoint = self._webhooks[delivery.endpoint_id]
                claimed.append(Claimed(delivery, event, endpoint, claim, until))
            return claimed

    async def set_webhook_failing(self, endpoint_id: str, since: datetime | None) -> None:
        """Set only when the endpoint began failing."""
        with self._alerts_lock:
            endpoint = self._webhooks.get(endpoint_id)
            if endpoint is not None:
                self._webhooks[endpoint_id] = replace(endpoint, failing_since=since)

    async def disable_webhook(
        self, endpoint_id: str, at: datetime, reason: str
    ) -> WebhookEndpoint | None:
        """Disable the endpoint if it is enabled (one caller wins)."""
        with self._alerts_lock:
            endpoint = self._webhooks.get(endpoint_id)
            if endpoint is None or endpoint.disabled_at is not None:
                return None
            endpoint = replace(endpoint, disabled_at=at, disabled_reason=reason)
            self._webhooks[endpoint_id] = endpoint
            return endpoint

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
        with self._alerts_lock:
            held = self._claims.get(delivery_id)
            delivery = self._deliveries.get(delivery_id)
            if held is None or held[0] != claim or delivery is None:
                return False
            del self._claims[delivery_id]
            status, due = settled(delivered, next_at)
            self._deliveries[delivery_id] = replace(
                delivery, status=status, next_at=due, attempts=(*delivery.attempts, attempt)
            )
            return True

    async def list_deliveries(
        self, endpoint_id: str, limit: int, before_id: str | None = None
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first."""
        with self._alerts_lock:
            found = [d for d in self._deliveries.values() if d.endpoint_id == endpoint_id]
        found.sort(key=lambda d: d.id, reverse=True)
        return [d for d in found if before_id is None or d.id < before_id][:limit]

    async def resend_delivery(self, endpoint_id: str, delivery_id: str, at: datetime) -> Delivery:
        """Make a delivery due again at ``at``."""
        with self._alerts_lock:
            delivery = self._deliveries.get(delivery_id)
            if delivery is None or delivery.endpoint_id != endpoint_id:
                raise NotFound(f"webhook endpoint {endpoint_id!r} has no delivery {delivery_id!r}")
            delivery = replace(delivery, status=DeliveryStatus.PENDING, next_at=at)
            self._deliveries[delivery_id] = delivery
            return delivery
