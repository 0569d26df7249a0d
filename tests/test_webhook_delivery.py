"""Delivery's guarantees (SPEC 11) over every store, against a real receiver process that
verifies with ``standardwebhooks``: what is sent, the retry schedule, each way of failing,
re-sends, secret rotation and the URL guard at send time.

The clock is a FakeClock moved by the tests, started at (or so that the deliveries that
must verify fall at) the real time: the receiver checks ``webhook-timestamp`` against its
own clock, within five minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import orjson
import pytest

from quotad.domain.models import Overrides, Quota
from quotad.domain.webhooks import (
    QUOTA_THRESHOLD,
    WEBHOOK_DISABLED,
    AlertEvent,
    Delivery,
    DeliveryStatus,
    WebhookEndpoint,
)
from quotad.service import admin, deliveries, verify, webhooks
from quotad.service.context import Context
from quotad.service.webhook_sender import new_client
from quotad.settings import Settings
from quotad.storage import Stores
from quotad.testing import FakeClock
from tests.conftest import make_settings
from tests.webhook_fixtures import WebhookReceiver

# Seconds a receiver has to answer, here: long enough that a receiver on a CI machine
# busy with the rest of the suite is not taken for a slow one (1 s once was).
TIMEOUT = 3.0
CLAIM = "node_test"
# When each attempt of a delivery that keeps failing is made, after the first (SPEC 11):
# +5 s, +1 min, +10 min, +1 h, +6 h, then every 12 h while within 3 days.
RETRY_GAPS = [
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
    *[timedelta(hours=12)] * 5,
]
LAST_RETRY = sum(RETRY_GAPS, timedelta())  # 2 days 19 h 11 min 5 s: the next is past 3 days


def real_now() -> datetime:
    """The real time, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def clock() -> FakeClock:
    """A clock standing at the real time until a test moves it."""
    return FakeClock(real_now())


def settings_for(stores: Stores, *, allow_private: bool) -> Settings:
    """Settings with a short receiver timeout, private addresses allowed or not."""
    return make_settings(
        stores.url, webhook_allow_private=allow_private, webhook_timeout_seconds=TIMEOUT
    )


@pytest.fixture
def ctx(stores: Stores, clock: FakeClock) -> Context:
    """A context that may send to the receiver on the loopback address."""
    return Context(stores, settings_for(stores, allow_private=True), clock)


@pytest.fixture
async def sender() -> AsyncIterator[httpx2.AsyncClient]:
    """The client every node sends deliveries with."""
    async with new_client() as client:
        yield client


@pytest.fixture
def other_receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    """A second receiver process, for the endpoint told about another's being disabled."""
    workdir = tmp_path / "other-receiver"
    workdir.mkdir()
    handle = WebhookReceiver(workdir)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


async def register(
    ctx: Context, receiver: WebhookReceiver, events: tuple[str, ...] = (QUOTA_THRESHOLD,)
) -> WebhookEndpoint:
    """An endpoint for ``receiver`` registered by the use case, signing with its secret."""
    created = await webhooks.create(ctx, receiver.url, list(events))
    endpoint = replace(created, secret=receiver.secret)
    await ctx.stores.alerts.update_webhook(endpoint)
    return endpoint


async def notice(ctx: Context, name: str = "a") -> AlertEvent:
    """A quota.threshold event noticed and written as verify's are; returns it."""
    now = ctx.clock.now()
    data = {"account_id": "acme", "limit": name, "threshold": 80, "used": 8, "total": 10}
    ctx.noticer.notice(QUOTA_THRESHOLD, f"test|{name}", now, "acme", data)
    await ctx.noticer.drain()
    [event] = [e for e in await ctx.stores.alerts.alert_events(100) if e.data["limit"] == name]
    return event


async def only_delivery(ctx: Context, endpoint: WebhookEndpoint) -> Delivery:
    """The endpoint's one delivery."""
    [delivery] = await ctx.stores.alerts.list_deliveries(endpoint.id, 10)
    return delivery


async def current(ctx: Context, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """The endpoint as stored now."""
    found = await ctx.stores.alerts.get_webhook(endpoint.id)
    assert found is not None
    return found


async def deliver(ctx: Context, sender: httpx2.AsyncClient) -> int:
    """One round of sending what is due; how many were attempted."""
    return await deliveries.deliver_due(ctx, sender, CLAIM)


async def test_a_threshold_crossed_by_verify_is_delivered_and_verified(
    ctx: Context, sender: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """A verify crossing 80% of a daily quota makes an event that reaches the receiver
    signed (standardwebhooks verifies it), with webhook-id = the event's id and SPEC 11's body."""
    endpoint = await register(ctx, receiver)
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "p", {"insights": Quota.daily(10)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = await admin.create_key(ctx, "acme", "k")
    assert (await verify.verify(ctx, key.secret, "insights", 8)).valid
    await ctx.noticer.drain()
    [event] = await ctx.stores.alerts.alert_events(10)

    assert await deliver(ctx, sender) == 1
    [received] = receiver.received()
    assert received["verified"] is True, received
    assert (received["webhook_id"], received["type"]) == (event.id, QUOTA_THRESHOLD)
    body = orjson.loads(deliveries.body_of(event))
    assert set(body) == {"type", "id", "timestamp", "data"}
    assert (body["type"], body["id"]) == (QUOTA_THRESHOLD, event.id)
    assert datetime.fromisoformat(body["timestamp"]) == event.at
    data = body["data"]
    assert {k: data[k] for k in ("account_id", "threshold", "used", "total")} == {
        "account_id": "acme",
        "threshold": 80,
        "used": 8,
        "total": 10,
    }
    assert "insights" in data["limit"]
    assert datetime.fromisoformat(data["window_start"]) < datetime.fromisoformat(data["reset"])
    delivery = await only_delivery(ctx, endpoint)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.status_code for a in delivery.attempts] == [200]
    assert await deliver(ctx, sender) == 0  # delivered: never sent again


async def test_a_failing_receiver_is_retried_on_schedule_then_disabled(
    ctx: Context,
    clock: FakeClock,
    sender: httpx2.AsyncClient,
    receiver: WebhookReceiver,
    other_receiver: WebhookReceiver,
) -> None:
    """Answering 500, a delivery is tried at +0, +5 s, +1 min, +10 min, +1 h, +6 h, then
    every 12 h, never before it is due; then it fails, the endpoint is disabled and
    webhook.disabled reaches (verified) another endpoint that takes it."""
    # Started so that the last attempt, and the webhook.disabled it causes, fall at the
    # real time: the other receiver verifies that one.
    clock.set(real_now() - LAST_RETRY)
    endpoint = await register(ctx, receiver)
    other = await register(ctx, other_receiver, (WEBHOOK_DISABLED,))
    receiver.set_mode(status=500, body="down")
    event = await notice(ctx)

    due = clock.now()
    for number, gap in enumerate([timedelta(0), *RETRY_GAPS], start=1):
        due += gap
        clock.set(due - timedelta(seconds=1))
        assert await deliver(ctx, sender) == 0, f"attempt {number} was sent before it was due"
        assert len(receiver.received()) == number - 1
        clock.set(due)
        assert await deliver(ctx, sender) == 1, f"attempt {number} was not sent when due"
        assert len(receiver.received()) == number
        delivery = await only_delivery(ctx, endpoint)
        assert [a.at for a in delivery.attempts][-1] == due
        assert delivery.attempts[-1].status_code == 500

    assert {line["webhook_id"] for line in receiver.received()} == {event.id}
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.next_at is None
    disabled = await current(ctx, endpoint)
    assert disabled.disabled_at == due
    assert disabled.disabled_reason == "every delivery failed for 3 days"

    [told] = await ctx.stores.alerts.list_deliveries(other.id, 10)
    assert (told.type, told.status) == (WEBHOOK_DISABLED, DeliveryStatus.PENDING)
    assert await deliver(ctx, sender) == 1  # the disabled endpoint gets nothing more
    [received] = other_receiver.received()
    assert received["verified"] is True, received
    assert received["type"] == WEBHOOK_DISABLED
    assert len(receiver.received()) == len(RETRY_GAPS) + 1


@pytest.mark.parametrize(
    ("mode", "status_code", "error"),
    [
        pytest.param({"delay": 2 * TIMEOUT}, None, "timed out after 3s", id="timeout"),
        pytest.param(
            {"close": True}, None, "the connection closed without a valid answer", id="closed"
        ),
        pytest.param({"redirect": "/elsewhere"}, 307, "redirect not followed", id="redirect"),
    ],
)
async def test_a_failed_attempt_is_retried_5_seconds_later(
    ctx: Context,
    clock: FakeClock,
    sender: httpx2.AsyncClient,
    receiver: WebhookReceiver,
    mode: dict[str, object],
    status_code: int | None,
    error: str,
) -> None:
    """A timeout, a closed connection or a 307 leaves the delivery pending, due again 5 s
    later, the endpoint failing but enabled; the retry then delivers it."""
    endpoint = await register(ctx, receiver)
    event = await notice(ctx)
    receiver.set_mode(**mode)
    assert await deliver(ctx, sender) == 1
    delivery = await only_delivery(ctx, endpoint)
    [attempt] = delivery.attempts
    assert (attempt.status_code, attempt.error) == (status_code, error)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.next_at == attempt.at + timedelta(seconds=5)
    failing = await current(ctx, endpoint)
    assert (failing.failing_since, failing.disabled_at) == (attempt.at, None)

    receiver.set_mode()
    clock.advance(seconds=5)
    assert await deliver(ctx, sender) == 1
    delivery = await only_delivery(ctx, endpoint)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.status_code for a in delivery.attempts] == [status_code, 200]
    assert (await current(ctx, endpoint)).failing_since is None
    verified = [line for line in receiver.received() if line["status"] == 200 and line["verified"]]
    assert {line["webhook_id"] for line in verified} == {event.id}


async def test_a_410_disables_the_endpoint_at_once(
    ctx: Context,
    sender: httpx2.AsyncClient,
    receiver: WebhookReceiver,
    other_receiver: WebhookReceiver,
) -> None:
    """410 Gone fails the delivery and disables its endpoint on the first attempt, and
    webhook.disabled is written for the other endpoints that take it."""
    endpoint = await register(ctx, receiver)
    other = await register(ctx, other_receiver, (WEBHOOK_DISABLED,))
    await notice(ctx)
    receiver.set_mode(status=410, body="gone")
    assert await deliver(ctx, sender) == 1
    delivery = await only_delivery(ctx, endpoint)
    assert delivery.status is DeliveryStatus.FAILED
    [attempt] = delivery.attempts
    gone = await current(ctx, endpoint)
    assert (gone.disabled_at, gone.disabled_reason) == (
        attempt.at,
        "the receiver answered 410 Gone",
    )
    [told] = await ctx.stores.alerts.list_deliveries(other.id, 10)
    assert told.type == WEBHOOK_DISABLED
    assert await deliver(ctx, sender) == 1
    [received] = other_receiver.received()
    assert (received["verified"], received["type"]) == (True, WEBHOOK_DISABLED)


async def test_a_resent_delivery_keeps_its_webhook_id(
    ctx: Context, sender: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """Re-sending a delivered delivery sends it again with the same webhook-id, verified."""
    endpoint = await register(ctx, receiver)
    event = await notice(ctx)
    assert await deliver(ctx, sender) == 1
    delivery = await only_delivery(ctx, endpoint)
    resent = await webhooks.resend(ctx, endpoint.id, delivery.id)
    assert (resent.id, resent.status) == (delivery.id, DeliveryStatus.PENDING)
    assert await deliver(ctx, sender) == 1
    received = receiver.received()
    assert [(line["webhook_id"], line["verified"]) for line in received] == [(event.id, True)] * 2
    again = await only_delivery(ctx, endpoint)
    assert again.status is DeliveryStatus.DELIVERED
    assert [a.status_code for a in again.attempts] == [200, 200]


async def send_again(
    ctx: Context, sender: httpx2.AsyncClient, receiver: WebhookReceiver, endpoint: WebhookEndpoint
) -> dict[str, object]:
    """Re-send the endpoint's delivery now; what the receiver logged of it."""
    delivery = await only_delivery(ctx, endpoint)
    await webhooks.resend(ctx, endpoint.id, delivery.id)
    before = len(receiver.received())
    assert await deliver(ctx, sender) == 1
    [line] = receiver.received()[before:]
    return line


def restart_with(receiver: WebhookReceiver, secret: str) -> None:
    """The receiver, now knowing only ``secret``."""
    receiver.stop()
    receiver.secret = secret
    receiver.start()


async def test_a_rotated_secret_signs_beside_the_old_one_during_its_grace(
    ctx: Context, clock: FakeClock, sender: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """During the grace period a delivery verifies with the old secret and with the new
    one; after it, with the new one only."""
    endpoint = await register(ctx, receiver)
    old = receiver.secret
    rotated = await webhooks.rotate_secret(ctx, endpoint.id, grace_seconds=60)
    assert rotated.secret != old
    await notice(ctx)
    assert await deliver(ctx, sender) == 1
    assert receiver.received()[0]["verified"] is True  # the old secret, during the grace

    restart_with(receiver, rotated.secret)
    assert (await send_again(ctx, sender, receiver, endpoint))["verified"] is True

    clock.advance(seconds=61)  # the grace is over (still within the receiver's tolerance)
    assert (await send_again(ctx, sender, receiver, endpoint))["verified"] is True
    restart_with(receiver, old)
    refused = await send_again(ctx, sender, receiver, endpoint)
    assert refused["verified"] is False
    assert "signature" in str(refused["error"]).lower()


async def test_a_host_that_now_resolves_privately_is_refused_at_send_time(
    stores: Stores, clock: FakeClock, sender: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """Without QUOTAD_WEBHOOK_ALLOW_PRIVATE, an endpoint whose host resolves to loopback
    when its delivery is due (it was public when registered) gets nothing: the attempt
    says why and the delivery is retried later."""
    ctx = Context(stores, settings_for(stores, allow_private=False), clock)
    now = clock.now()
    endpoint = WebhookEndpoint(
        id="wh_moved",
        url=f"http://localhost:{receiver.port}/hook",
        events=(QUOTA_THRESHOLD,),
        secret=receiver.secret,
        created_at=now,
        updated_at=now,
    )
    await stores.alerts.create_webhook(endpoint)  # as if checked when DNS said otherwise
    await notice(ctx)
    assert await deliver(ctx, sender) == 1
    delivery = await only_delivery(ctx, endpoint)
    [attempt] = delivery.attempts
    assert attempt.status_code is None
    assert attempt.error is not None
    assert "localhost resolves to" in attempt.error
    assert "loopback" in attempt.error
    assert receiver.secret.removeprefix("whsec_") not in attempt.error
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.next_at == attempt.at + timedelta(seconds=5)
    assert receiver.received() == []
