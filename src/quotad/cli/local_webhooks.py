"""The webhook operations over a local store: ``quotad.service.webhooks``, as the routes
of ``/admin/v1/webhooks`` call it, answering the bodies those routes answer."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from quotad.cli.webhook_operator import View, WebhookOperator
from quotad.domain import days
from quotad.domain.webhooks import AlertEvent, Attempt, Delivery, WebhookEndpoint
from quotad.service import webhooks

if TYPE_CHECKING:
    from quotad.service.context import Context


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def webhook_view(endpoint: WebhookEndpoint) -> View:
    """An endpoint as ``GET /admin/v1/webhooks/{id}`` shows it: never its secret."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "secret_hint": webhooks.secret_hint(endpoint.secret),
        "enabled": endpoint.disabled_at is None,
        "disabled_at": _time(endpoint.disabled_at),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _time(endpoint.failing_since),
        "created_at": days.rfc3339(endpoint.created_at),
        "updated_at": days.rfc3339(endpoint.updated_at),
    }


def created_webhook_view(endpoint: WebhookEndpoint) -> View:
    """An endpoint with its new secret: the answer of create and rotate-secret only."""
    return {**webhook_view(endpoint), "secret": endpoint.secret}


def attempt_view(attempt: Attempt) -> View:
    """One try at a delivery and what the receiver answered."""
    return {
        "at": days.rfc3339(attempt.at),
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response": attempt.response,
    }


def delivery_view(delivery: Delivery) -> View:
    """A delivery with its attempts, oldest attempt first."""
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.type,
        "status": delivery.status.value,
        "created_at": days.rfc3339(delivery.created_at),
        "next_attempt_at": _time(delivery.next_at),
        "attempts": [attempt_view(a) for a in delivery.attempts],
    }


def alert_view(event: AlertEvent) -> View:
    """An alert event as ``GET /admin/v1/alerts`` lists it."""
    return {
        "id": event.id,
        "type": event.type,
        "timestamp": days.rfc3339(event.at),
        "account_id": event.account_id,
        "data": event.data,
    }


class LocalWebhooks:
    """The webhook operations of ``LocalOperator``, over its context ``ctx``."""

    ctx: Context

    async def create_webhook(self, url: str, events: list[str], description: str) -> View:
        """Register an endpoint; its secret shown this once."""
        endpoint = await webhooks.create(self.ctx, url, events, description)
        return created_webhook_view(endpoint)

    async def list_webhooks(self) -> list[View]:
        """Every endpoint, oldest first."""
        return [webhook_view(e) for e in await webhooks.list_all(self.ctx)]

    async def get_webhook(self, endpoint_id: str) -> View:
        """One endpoint."""
        return webhook_view(await webhooks.get(self.ctx, endpoint_id))

    async def update_webhook(
        self,
        endpoint_id: str,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        enabled: bool | None,
    ) -> View:
        """Change the given fields of an endpoint."""
        endpoint = await webhooks.update(
            self.ctx,
            endpoint_id,
            url=url,
            events=events,
            description=description,
            enabled=enabled,
        )
        return webhook_view(endpoint)

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries."""
        await webhooks.delete(self.ctx, endpoint_id)

    async def rotate_webhook_secret(self, endpoint_id: str, grace_seconds: int) -> View:
        """A new signing secret, shown this once."""
        endpoint = await webhooks.rotate_secret(self.ctx, endpoint_id, grace_seconds)
        return created_webhook_view(endpoint)

    async def webhook_deliveries(self, endpoint_id: str, limit: int) -> list[View]:
        """An endpoint's latest deliveries, newest first."""
        found = await webhooks.deliveries(self.ctx, endpoint_id, limit)
        return [delivery_view(d) for d in found]

    async def resend_webhook_delivery(self, endpoint_id: str, delivery_id: str) -> View:
        """Send a delivery again."""
        return delivery_view(await webhooks.resend(self.ctx, endpoint_id, delivery_id))

    async def alerts(self, account_id: str | None, limit: int) -> list[View]:
        """The latest alert events, newest first."""
        events = await webhooks.alert_events(self.ctx, limit, None, account_id)
        return [alert_view(e) for e in events]


if TYPE_CHECKING:  # mypy checks the class against the interface
    _LOCAL: type[WebhookOperator] = LocalWebhooks
