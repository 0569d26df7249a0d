"""What the ``webhooks`` and ``alerts`` commands ask of a deployment (SPEC 11).

Part of ``quotad.cli.operator.Operator``, kept apart so the webhook views live in one
place: each method answers with the JSON body ``/admin/v1/webhooks`` and
``/admin/v1/alerts`` return, whether over a local store (``quotad.cli.local_webhooks``)
or a running server (``quotad.cli.remote_webhooks``).
"""

from __future__ import annotations

from typing import Any, Protocol

View = dict[str, Any]


class WebhookOperator(Protocol):
    """Webhook endpoints, their deliveries and the alert events, as views."""

    async def create_webhook(self, url: str, events: list[str], description: str) -> View:
        """Register an endpoint; the view carries its signing secret as ``secret``, this once."""
        ...

    async def list_webhooks(self) -> list[View]:
        """Every endpoint, oldest first, never a secret."""
        ...

    async def get_webhook(self, endpoint_id: str) -> View:
        """One endpoint."""
        ...

    async def update_webhook(
        self,
        endpoint_id: str,
        url: str | None,
        events: list[str] | None,
        description: str | None,
        enabled: bool | None,
    ) -> View:
        """Change the given fields of an endpoint, enable or disable it."""
        ...

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries."""
        ...

    async def rotate_webhook_secret(self, endpoint_id: str, grace_seconds: int) -> View:
        """A new signing secret (the old one also signs for ``grace_seconds``); the view
        carries it as ``secret``, this once."""
        ...

    async def webhook_deliveries(self, endpoint_id: str, limit: int) -> list[View]:
        """An endpoint's latest ``limit`` deliveries with their attempts, newest first."""
        ...

    async def resend_webhook_delivery(self, endpoint_id: str, delivery_id: str) -> View:
        """Send a delivery again, as soon as a node is free to."""
        ...

    async def alerts(self, account_id: str | None, limit: int) -> list[View]:
        """The latest ``limit`` alert events (of one account, or all), newest first."""
        ...
