"""The webhook operations over a local store: ``quotad.service.webhooks``, as the routes
of ``/admin/v1/webhooks`` call it, answering the bodies those routes answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quotad.cli.webhook_operator import View, WebhookOperator
from quotad.http.webhook_views import (
    alert_event_view,
    created_webhook_view,
    delivery_view,
    webhook_view,
)
from quotad.service import webhooks

if TYPE_CHECKING:
    from quotad.service.context import Context


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
        return [alert_event_view(e) for e in events]


if TYPE_CHECKING:  # mypy checks the class against the interface
    _LOCAL: type[WebhookOperator] = LocalWebhooks
