"""The webhook operations through the operator API: the SDK's ``AsyncClient``, its typed
results turned back into the bodies the API answered (as ``quotad.cli.local_webhooks``
renders them from the records), so a command prints the same either way."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from quotad.cli.webhook_operator import View, WebhookOperator
from quotad.domain import days
from quotad.sdk import (
    AlertEventInfo,
    AsyncClient,
    CreatedWebhook,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def webhook_view(endpoint: Webhook) -> View:
    """An endpoint, as ``quotad.http.webhook_views.webhook_view``."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "secret_hint": endpoint.secret_hint,
        "enabled": endpoint.enabled,
        "disabled_at": _time(endpoint.disabled_at),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _time(endpoint.failing_since),
        "created_at": days.rfc3339(endpoint.created_at),
        "updated_at": days.rfc3339(endpoint.updated_at),
        "account_id": endpoint.account_id,
    }


def created_webhook_view(endpoint: CreatedWebhook) -> View:
    """An endpoint with its new secret."""
    return {**webhook_view(endpoint), "secret": endpoint.secret}


def attempt_view(attempt: WebhookAttempt) -> View:
    """One try at a delivery."""
    return {
        "at": days.rfc3339(attempt.at),
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response": attempt.response,
    }


def delivery_view(delivery: WebhookDelivery) -> View:
    """A delivery, as ``quotad.http.webhook_views.delivery_view``."""
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.type,
        "status": delivery.status,
        "created_at": days.rfc3339(delivery.created_at),
        "next_attempt_at": _time(delivery.next_attempt_at),
        "attempts": [attempt_view(a) for a in delivery.attempts],
    }


def alert_view(event: AlertEventInfo) -> View:
    """An alert event, as ``quotad.cli.local_webhooks.alert_view``."""
    return {
        "id": event.id,
        "type": event.type,
        "timestamp": days.rfc3339(event.timestamp),
        "account_id": event.account_id,
        "data": event.data,
    }


class RemoteWebhooks:
    """The webhook operations of ``RemoteOperator``, over its ``client``."""

    client: AsyncClient

    async def create_webhook(self, url: str, events: list[str], description: str) -> View:
        """Register an endpoint; its secret shown this once."""
        created = await self.client.create_webhook(url, events, description)
        return created_webhook_view(created)

    async def list_webhooks(self) -> list[View]:
        """Every endpoint, oldest first."""
        return [webhook_view(e) for e in await self.client.webhooks()]

    async def get_webhook(self, endpoint_id: str) -> View:
        """One endpoint."""
        return webhook_view(await self.client.webhook(endpoint_id))

    async def update_webhook(
        self,
        endpoint_id: str,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        enabled: bool | None,
    ) -> View:
        """Change the given fields of an endpoint."""
        endpoint = await self.client.update_webhook(
            endpoint_id, url=url, events=events, description=description, enabled=enabled
        )
        return webhook_view(endpoint)

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries."""
        await self.client.delete_webhook(endpoint_id)

    async def rotate_webhook_secret(self, endpoint_id: str, grace_seconds: int) -> View:
        """A new signing secret, shown this once."""
        rotated = await self.client.rotate_webhook_secret(endpoint_id, grace_seconds)
        return created_webhook_view(rotated)

    async def webhook_deliveries(self, endpoint_id: str, limit: int) -> list[View]:
        """An endpoint's latest deliveries, newest first (one page of ``limit``)."""
        page = await self.client.webhook_deliveries(endpoint_id, limit=limit)
        return [delivery_view(d) for d in page.items]

    async def resend_webhook_delivery(self, endpoint_id: str, delivery_id: str) -> View:
        """Send a delivery again."""
        return delivery_view(await self.client.resend_webhook_delivery(endpoint_id, delivery_id))

    async def alerts(self, account_id: str | None, limit: int) -> list[View]:
        """The latest alert events, newest first: pages until ``limit`` are read (the API
        pages alerts at its own size)."""
        found: list[View] = []
        cursor: str | None = None
        while len(found) < limit:
            page = await self.client.alerts(account_id, cursor)
            found += [alert_view(e) for e in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found[:limit]


if TYPE_CHECKING:  # mypy checks the class against the interface
    _REMOTE: type[WebhookOperator] = RemoteWebhooks
