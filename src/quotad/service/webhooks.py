"""Webhook endpoints and their deliveries, as operators (and customers, their own) manage
them (SPEC 11).

Every entry point (the API, the CLI, the dashboard, the portal) calls these; each change is
audited without the secret (an endpoint appears by id, URL, events and a secret hint). A
customer's endpoint (``account_id`` set) takes only its account's events, at most
``MAX_ACCOUNT_ENDPOINTS`` of them per account.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from quotad.domain import days, signatures
from quotad.domain.webhooks import (
    ACCOUNT_EVENT_TYPES,
    EVENT_TYPES,
    MAX_ACCOUNT_ENDPOINTS,
    AlertEvent,
    Delivery,
    WebhookEndpoint,
)
from quotad.errors import Conflict, NotFound, ValidationFailed
from quotad.service import audit
from quotad.service.admin import new_id
from quotad.service.context import Context
from quotad.service.webhook_urls import check_url

MAX_GRACE_SECONDS = 7 * 86_400


def check_events(events: list[str], account_id: str | None = None) -> tuple[str, ...]:
    """The event types an endpoint subscribes to, each known (an account's endpoint: each
    about an account) and given once."""
    if not events:
        raise ValidationFailed.at(
            "/body/events", "events must name at least one event type", "minItems"
        )
    known = EVENT_TYPES if account_id is None else ACCOUNT_EVENT_TYPES
    unknown = [e for e in events if e not in known]
    if unknown:
        raise ValidationFailed.at(
            "/body/events",
            f"unknown event type {unknown[0]!r}; known: {', '.join(known)}",
            "enum",
        )
    if len(set(events)) != len(events):
        raise ValidationFailed.at("/body/events", "an event type is given twice", "uniqueItems")
    return tuple(events)


def endpoint_state(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the audit log keeps it: never its secret."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "secret_hint": secret_hint(endpoint.secret),
        "disabled_at": None if endpoint.disabled_at is None else days.rfc3339(endpoint.disabled_at),
        "account_id": endpoint.account_id,
    }


def secret_hint(secret: str) -> str:
    """What is shown of a secret after it was created: its form and last four characters."""
    return f"whsec_…{secret[-4:]}"


async def create(
    ctx: Context,
    url: str,
    events: list[str],
    description: str = "",
    account_id: str | None = None,
) -> WebhookEndpoint:
    """Register an endpoint (with ``account_id``: that account's own, receiving only its
    events); the returned record's secret is shown to the caller once."""
    subscribed = check_events(events, account_id)
    checked = await check_url(url, allow_private=ctx.settings.webhook_allow_private)
    # Checked before the write, not within it: two racing forms could each pass and make
    # six, which costs a little traffic, not anyone else's data.
    if (
        account_id is not None
        and len(await ctx.stores.alerts.list_webhooks(account_id)) >= MAX_ACCOUNT_ENDPOINTS
    ):
        raise Conflict(
            f"an account has at most {MAX_ACCOUNT_ENDPOINTS} webhook endpoints: "
            "delete one before registering another"
        )
    now = ctx.clock.now()
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        url=checked,
        events=subscribed,
        secret=signatures.new_secret(),
        created_at=now,
        updated_at=now,
        description=description,
        account_id=account_id,
    )
    async with ctx.records.atomic():  # endpoints are kept with the records
        await ctx.stores.alerts.create_webhook(endpoint)
        await audit.record(
            ctx, "webhook.create", _target(endpoint.id), None, endpoint_state(endpoint)
        )
    return endpoint


async def get(ctx: Context, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, or ``NotFound``."""
    endpoint = await ctx.stores.alerts.get_webhook(endpoint_id)
    if endpoint is None:
        raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
    return endpoint


async def get_own(ctx: Context, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    """One of the account's own endpoints, or ``NotFound`` (another account's, or the
    operator's, is not found either: a customer never learns it exists)."""
    endpoint = await ctx.stores.alerts.get_webhook(endpoint_id)
    if endpoint is None or endpoint.account_id != account_id:
        raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
    return endpoint


async def list_all(ctx: Context) -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return await ctx.stores.alerts.list_webhooks()


async def list_own(ctx: Context, account_id: str) -> list[WebhookEndpoint]:
    """The account's own endpoints, oldest first."""
    return await ctx.stores.alerts.list_webhooks(account_id)


async def update(
    ctx: Context,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    disabled_by: str = "an operator",
) -> WebhookEndpoint:
    """Change an endpoint's URL, events, description, or enable it again (resuming its
    pending deliveries) or disable it (the reason naming ``disabled_by``)."""
    before = await get(ctx, endpoint_id)
    after = before
    now = ctx.clock.now()
    if url is not None:
        after = replace(
            after, url=await check_url(url, allow_private=ctx.settings.webhook_allow_private)
        )
    if events is not None:
        after = replace(after, events=check_events(events, after.account_id))
    if description is not None:
        after = replace(after, description=description)
    if enabled is True and after.disabled_at is not None:
        after = replace(after, disabled_at=None, disabled_reason=None, failing_since=None)
    elif enabled is False and after.disabled_at is None:
        after = replace(after, disabled_at=now, disabled_reason=f"disabled by {disabled_by}")
    after = replace(after, updated_at=now)
    async with ctx.records.atomic():
        await ctx.stores.alerts.update_webhook(after)
        await audit.record(
            ctx,
            "webhook.update",
            _target(endpoint_id),
            endpoint_state(before),
            endpoint_state(after),
        )
    return after


async def delete(ctx: Context, endpoint_id: str) -> None:
    """Delete an endpoint and its deliveries."""
    before = await get(ctx, endpoint_id)
    async with ctx.records.atomic():
        await ctx.stores.alerts.delete_webhook(endpoint_id)
        await audit.record(
            ctx, "webhook.delete", _target(endpoint_id), endpoint_state(before), None
        )


async def rotate_secret(ctx: Context, endpoint_id: str, grace_seconds: int = 0) -> WebhookEndpoint:
    """A new secret signs every delivery from now; with ``grace_seconds``, the old one
    signs beside it that long (receivers switch without missing one)."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationFailed.at(
            "/body/grace_seconds",
            f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}",
            "maximum",
        )
    before = await get(ctx, endpoint_id)
    now = ctx.clock.now()
    after = replace(
        before,
        secret=signatures.new_secret(),
        previous_secret=before.secret if grace_seconds else None,
        previous_until=now + timedelta(seconds=grace_seconds) if grace_seconds else None,
        updated_at=now,
    )
    async with ctx.records.atomic():
        await ctx.stores.alerts.update_webhook(after)
        await audit.record(
            ctx,
            "webhook.rotate_secret",
            _target(endpoint_id),
            endpoint_state(before),
            endpoint_state(after),
        )
    return after


async def deliveries(
    ctx: Context, endpoint_id: str, limit: int, before_id: str | None = None
) -> list[Delivery]:
    """An endpoint's deliveries with their attempts, newest first."""
    await get(ctx, endpoint_id)
    return await ctx.stores.alerts.list_deliveries(endpoint_id, limit, before_id)


async def resend(ctx: Context, endpoint_id: str, delivery_id: str) -> Delivery:
    """Send a delivery again (same ``webhook-id``), as soon as a node is free to."""
    await get(ctx, endpoint_id)
    async with ctx.records.atomic():
        delivery = await ctx.stores.alerts.resend_delivery(
            endpoint_id, delivery_id, ctx.clock.now()
        )
        await audit.record(
            ctx, "webhook.resend", _target(endpoint_id), None, {"delivery_id": delivery_id}
        )
    return delivery


async def alert_events(
    ctx: Context, limit: int, before_id: str | None = None, account_id: str | None = None
) -> list[AlertEvent]:
    """The alert events written, newest first, of one account or of all."""
    return await ctx.stores.alerts.alert_events(limit, before_id, account_id)


def _target(endpoint_id: str) -> str:
    return audit.target("webhook", endpoint_id)


def rfc3339(value: datetime | None) -> str | None:
    """A time as the API writes it."""
    return None if value is None else days.rfc3339(value)
