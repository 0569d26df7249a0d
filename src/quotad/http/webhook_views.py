"""Webhook endpoints, deliveries and alert events as the operator API answers them
(SPEC 11): one rendering for the routes and the CLI's local commands, which must answer
the same bodies without the web framework. Never an endpoint's secret but in
``created_webhook_view`` (creation and rotation only)."""

from __future__ import annotations

from typing import Any

from quotad.domain import days
from quotad.domain.webhooks import AlertEvent, Attempt, Delivery, WebhookEndpoint
from quotad.service.webhooks import rfc3339, secret_hint


def webhook_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as listed: a hint of its secret, never the secret."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "secret_hint": secret_hint(endpoint.secret),
        "enabled": endpoint.disabled_at is None,
        "disabled_at": rfc3339(endpoint.disabled_at),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": rfc3339(endpoint.failing_since),
        "created_at": days.rfc3339(endpoint.created_at),
        "updated_at": days.rfc3339(endpoint.updated_at),
        "account_id": endpoint.account_id,
    }


def created_webhook_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """A new or rotated endpoint with its secret, shown this once."""
    return {**webhook_view(endpoint), "secret": endpoint.secret}


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    """One try at a delivery."""
    return {
        "at": days.rfc3339(attempt.at),
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response": attempt.response,
    }


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery with its attempts, oldest first."""
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.type,
        "status": delivery.status.value,
        "created_at": days.rfc3339(delivery.created_at),
        "next_attempt_at": rfc3339(delivery.next_at),
        "attempts": [attempt_view(a) for a in delivery.attempts],
    }


def alert_event_view(event: AlertEvent) -> dict[str, Any]:
    """An event as its deliveries carry it, with the account it is about."""
    return {
        "id": event.id,
        "type": event.type,
        "timestamp": days.rfc3339(event.at),
        "account_id": event.account_id,
        "data": event.data,
    }
