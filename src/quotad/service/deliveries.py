"""Sending alert events to webhook endpoints (SPEC 11), on every node, off the hot path.

Each node claims the deliveries that are due (``AlertStore.claim_deliveries``: no two
nodes hold one at once), signs each as Standard Webhooks asks and posts it. A claim
outlives the receiver's timeout, so a node killed mid-send leaves its deliveries to be
claimed again once the claim lapses: delivery is at least once, with the same
``webhook-id`` (the event's id) every time, for receivers to de-duplicate.

A failed attempt is tried again on the schedule of ``quotad.domain.webhooks``; an endpoint
that has failed for three days, or answered 410 Gone, is disabled and ``webhook.disabled``
is sent to the other endpoints.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta

import httpx2
import orjson
import structlog

from quotad.domain import days, ids, signatures
from quotad.domain.webhooks import (
    DISABLE_AFTER,
    WEBHOOK_DISABLED,
    AlertEvent,
    Attempt,
    Claimed,
    WebhookEndpoint,
    next_attempt,
)
from quotad.service.context import Context
from quotad.service.webhook_sender import new_client, send
from quotad.service.webhook_urls import public_address_or_error

log = structlog.get_logger("quotad.deliveries")

BATCH = 20  # deliveries claimed per round
LEASE_MARGIN = timedelta(seconds=5)  # a claim outlives the receiver's timeout by this
# A send starts only if the claim outlives it by this much: time to record the attempt
# before another node may claim the delivery.
SETTLE_MARGIN = timedelta(seconds=1)


def body_of(event: AlertEvent) -> bytes:
    """The delivered JSON body of an event."""
    return orjson.dumps(event.payload(days.rfc3339(event.at)))


async def deliver_due(ctx: Context, client: httpx2.AsyncClient, claim: str) -> int:
    """Claim the deliveries due now (one per endpoint: its oldest) and send them side by
    side. Returns how many were attempted."""
    now = ctx.clock.now()
    timeout = ctx.settings.webhook_timeout_seconds
    until = now + timedelta(seconds=timeout) + LEASE_MARGIN
    claimed = await ctx.stores.alerts.claim_deliveries(now, until, claim, BATCH)
    tried = await asyncio.gather(*(_try(ctx, client, held) for held in claimed))
    return sum(tried)


async def _try(ctx: Context, client: httpx2.AsyncClient, held: Claimed) -> bool:
    """``_attempt``, its failure logged: one delivery's failure must not stop the others."""
    try:
        return await _attempt(ctx, client, held)
    except Exception as exc:
        log.warning("webhook delivery failed", delivery=held.delivery.id, error=str(exc))
        return False


def _outlives_a_send(ctx: Context, held: Claimed) -> bool:
    """Whether the claim still holds when a send started now has ended and been recorded.

    A slow claim or address check can eat into it: were a delivery sent after its claim
    lapsed, another node could claim and send it at the same time.
    """
    timeout = timedelta(seconds=ctx.settings.webhook_timeout_seconds)
    return ctx.clock.now() + timeout + SETTLE_MARGIN <= held.until


async def _attempt(ctx: Context, client: httpx2.AsyncClient, held: Claimed) -> bool:
    """Try one delivery and settle it; False (nothing sent) if its claim is too short now."""
    endpoint = held.endpoint
    allow_private = ctx.settings.webhook_allow_private
    problem = await public_address_or_error(endpoint.url, allow_private=allow_private)
    if not _outlives_a_send(ctx, held):
        return False
    sent_at = ctx.clock.now()
    if problem is not None:
        attempt = Attempt(sent_at, None, 0, problem)
    else:
        body = body_of(held.event)
        headers = signatures.headers(
            endpoint.signing_secrets(sent_at), held.event.id, int(sent_at.timestamp()), body
        )
        timeout = ctx.settings.webhook_timeout_seconds
        attempt = await send(client, endpoint.url, body, headers, timeout, ctx.clock.now)
    delivered = attempt.delivered
    next_at = (
        None if delivered or attempt.gone else next_attempt((*held.delivery.attempts, attempt))
    )
    alerts = ctx.stores.alerts
    if not await alerts.finish_delivery(
        held.delivery.id, held.claim, attempt, next_at, delivered=delivered
    ):
        log.warning(
            "a webhook delivery's claim lapsed before it was settled", delivery=held.delivery.id
        )
    # A delivery given up on has failed through its whole retry schedule (about 3 days):
    # if nothing reached the endpoint since its first attempt, the endpoint has failed
    # that long too (its last retry comes a little before the 3 days are out).
    first_at = held.delivery.attempts[0].at if held.delivery.attempts else attempt.at
    gave_up_since = first_at if next_at is None and not delivered else None
    await _endpoint_health(ctx, endpoint.id, attempt, gave_up_since)
    return True


async def _endpoint_health(
    ctx: Context, endpoint_id: str, attempt: Attempt, gave_up_since: datetime | None = None
) -> None:
    """Note since when an endpoint fails (or that it answers again), or disable it.

    Only those fields are written, so an operator's change made meanwhile stands; of two
    nodes disabling one endpoint at once, one does, and only it tells the others.
    ``gave_up_since``: the first attempt of a delivery that this attempt gave up on.
    """
    alerts = ctx.stores.alerts
    endpoint = await alerts.get_webhook(endpoint_id)
    if endpoint is None:
        return
    if attempt.delivered:
        if endpoint.failing_since is not None:
            await alerts.set_webhook_failing(endpoint_id, None)
        return
    failing_since = endpoint.failing_since or attempt.at
    if endpoint.failing_since is None:
        await alerts.set_webhook_failing(endpoint_id, failing_since)
    reason = None
    if attempt.gone:
        reason = "the receiver answered 410 Gone"
    elif attempt.at - failing_since >= DISABLE_AFTER or (
        gave_up_since is not None and failing_since <= gave_up_since
    ):
        reason = "every delivery failed for 3 days"
    if reason is None or endpoint.disabled_at is not None:
        return
    disabled = await alerts.disable_webhook(endpoint_id, attempt.at, reason)
    if disabled is None:
        return  # another node (or an operator) disabled it first
    log.warning("webhook endpoint disabled", endpoint=endpoint_id, reason=reason)
    await tell_disabled(ctx, disabled)


async def tell_disabled(ctx: Context, endpoint: WebhookEndpoint) -> None:
    """Send ``webhook.disabled`` about ``endpoint`` to every other endpoint that takes it."""
    at = endpoint.disabled_at or ctx.clock.now()
    others = [
        e.id
        for e in await ctx.stores.alerts.list_webhooks()
        if e.id != endpoint.id and e.receives(WEBHOOK_DISABLED, None)
    ]
    event = AlertEvent(
        ids.sortable_id("evt", at),
        WEBHOOK_DISABLED,
        at,
        f"{WEBHOOK_DISABLED}|{endpoint.id}|{days.rfc3339(at)}",
        {
            "endpoint_id": endpoint.id,
            "url": endpoint.url,
            "reason": endpoint.disabled_reason,
            "disabled_at": days.rfc3339(at),
        },
    )
    await ctx.stores.alerts.record_alert(event, others)


def new_claim() -> str:
    """A node's claim name: unique per process run."""
    return f"node_{secrets.token_hex(8)}"


async def deliver_forever(ctx: Context, poll: float | None = None) -> None:
    """Send due deliveries until cancelled; look again every ``webhook_poll_seconds``
    when nothing was due. Failures are logged and retried: the loop outlives outages."""
    every = ctx.settings.webhook_poll_seconds if poll is None else poll
    claim = new_claim()
    async with new_client() as client:
        while True:
            try:
                sent = await deliver_due(ctx, client, claim)
            except Exception as exc:
                log.warning("could not look for webhook deliveries; will retry", error=str(exc))
                sent = 0
            if not sent:
                await asyncio.sleep(every)
