"""The alert store's contract (SPEC 11), on every store: endpoints, events once per dedupe
key, deliveries claimed by one node at a time, attempts and re-sends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from quotad.domain.webhooks import (
    QUOTA_THRESHOLD,
    AlertEvent,
    Attempt,
    DeliveryStatus,
    WebhookEndpoint,
)
from quotad.errors import NotFound
from quotad.storage import Stores

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def endpoint(ident: str = "wh_1", **changes: object) -> WebhookEndpoint:
    base = WebhookEndpoint(
        id=ident,
        url="https://example.com/hook",
        events=(QUOTA_THRESHOLD,),
        secret="whsec_" + "A" * 32,
        created_at=NOW,
        updated_at=NOW,
        description="ops",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def event(ident: str = "evt_1", dedupe: str = "acme|insights.day|2026-12-02|80") -> AlertEvent:
    data = {"account_id": "acme", "limit": "insights.day", "threshold": 80}
    return AlertEvent(ident, QUOTA_THRESHOLD, NOW, dedupe, data, "acme")


def failed(at: datetime, code: int | None = 500) -> Attempt:
    return Attempt(at, code, 12, None if code else "refused", "oops")


async def test_endpoints_round_trip(stores: Stores) -> None:
    """An endpoint reads back as written, updates, lists oldest first and deletes."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint("wh_1"))
    await alerts.create_webhook(endpoint("wh_2", created_at=NOW + timedelta(seconds=1)))
    assert await alerts.get_webhook("wh_1") == endpoint("wh_1")
    changed = endpoint(
        "wh_1",
        url="https://example.org/x",
        previous_secret="whsec_old",
        previous_until=NOW + timedelta(hours=1),
        events=("quota.exceeded",),
    )
    await alerts.update_webhook(changed)
    assert await alerts.get_webhook("wh_1") == changed
    assert [e.id for e in await alerts.list_webhooks()] == ["wh_1", "wh_2"]
    await alerts.delete_webhook("wh_1")
    assert await alerts.get_webhook("wh_1") is None
    with pytest.raises(NotFound):
        await alerts.delete_webhook("wh_1")
    with pytest.raises(NotFound):
        await alerts.update_webhook(changed)


async def test_an_event_is_written_once_per_dedupe_key(stores: Stores) -> None:
    """Twenty concurrent writes of one crossing write one event and one delivery."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint())
    written = await asyncio.gather(
        *(alerts.record_alert(event(f"evt_{i:02d}"), ["wh_1"]) for i in range(20))
    )
    assert sum(written) == 1
    assert len(await alerts.alert_events(10)) == 1
    assert len(await alerts.list_deliveries("wh_1", 10)) == 1


async def test_deliveries_go_only_to_endpoints_still_there(stores: Stores) -> None:
    """An endpoint named but deleted gets no delivery; events list by account, newest first."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint())
    assert await alerts.record_alert(event("evt_1", "a"), ["wh_1", "wh_gone"])
    assert await alerts.record_alert(event("evt_2", "b"), [])
    assert [e.id for e in await alerts.alert_events(10, account_id="acme")] == ["evt_2", "evt_1"]
    assert [e.id for e in await alerts.alert_events(10, before_id="evt_2")] == ["evt_1"]
    assert await alerts.alert_events(10, account_id="other") == []
    assert [d.event_id for d in await alerts.list_deliveries("wh_1", 10)] == ["evt_1"]


async def test_a_claimed_delivery_is_held_by_one_claim_until_it_lapses(stores: Stores) -> None:
    """Concurrent claims take each endpoint's oldest due delivery once; a lapsed claim can
    be taken over, and its holder then settles nothing."""
    alerts = stores.alerts
    hooks = [f"wh_{n}" for n in range(3)]
    for n, ident in enumerate(hooks):
        await alerts.create_webhook(endpoint(ident, created_at=NOW + timedelta(seconds=n)))
    for i in range(2):
        await alerts.record_alert(event(f"evt_{i}", f"k{i}"), hooks)
    until = NOW + timedelta(seconds=30)
    batches = await asyncio.gather(
        *(alerts.claim_deliveries(NOW, until, f"node{i}", 6) for i in range(3))
    )
    held = [c for batch in batches for c in batch]
    assert sorted(c.endpoint.id for c in held) == hooks  # one each, none twice
    assert {c.event.id for c in held} == {"evt_0"}  # the oldest first
    assert await alerts.claim_deliveries(NOW + timedelta(seconds=10), until, "late", 6) == []
    later = await alerts.claim_deliveries(until, until + timedelta(seconds=30), "late", 6)
    assert sorted(c.delivery.id for c in later) == sorted(c.delivery.id for c in held)
    first = later[0]
    assert first.event.data["threshold"] == 80
    stale = next(c for c in held if c.delivery.id == first.delivery.id)
    lost = await alerts.finish_delivery(
        first.delivery.id, stale.claim, failed(NOW), None, delivered=False
    )
    assert lost is False


async def test_one_endpoint_s_backlog_keeps_no_other_waiting(stores: Stores) -> None:
    """An endpoint with 40 deliveries due does not crowd out another's one, due later."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint("wh_busy"))
    await alerts.create_webhook(endpoint("wh_quiet", created_at=NOW + timedelta(seconds=1)))
    for i in range(40):
        await alerts.record_alert(event(f"evt_{i:02d}", f"k{i}"), ["wh_busy"])
    later = replace(event("evt_zz", "late"), at=NOW + timedelta(seconds=1))
    await alerts.record_alert(later, ["wh_quiet"])
    at = NOW + timedelta(seconds=2)
    held = await alerts.claim_deliveries(at, at + timedelta(seconds=30), "n1", 2)
    assert sorted((c.endpoint.id, c.event.id) for c in held) == [
        ("wh_busy", "evt_00"),
        ("wh_quiet", "evt_zz"),
    ]


async def test_health_fields_change_alone_and_one_caller_disables(stores: Stores) -> None:
    """Failing-since is set without touching the rest; of two disables, one wins."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint())
    changed = endpoint(url="https://example.org/new")
    await alerts.update_webhook(changed)
    await alerts.set_webhook_failing("wh_1", NOW)
    assert await alerts.get_webhook("wh_1") == replace(changed, failing_since=NOW)
    won = await asyncio.gather(*(alerts.disable_webhook("wh_1", NOW, "gone") for _ in range(5)))
    assert sum(w is not None for w in won) == 1
    disabled = await alerts.get_webhook("wh_1")
    assert disabled is not None
    assert disabled.disabled_reason == "gone"
    assert disabled.url == "https://example.org/new"
    await alerts.set_webhook_failing("wh_gone", NOW)  # a deleted endpoint stays gone
    assert await alerts.get_webhook("wh_gone") is None


async def test_attempts_settle_a_delivery(stores: Stores) -> None:
    """A failure keeps it pending until due again; success delivers; a resend re-opens it."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint())
    await alerts.record_alert(event(), ["wh_1"])
    (held,) = await alerts.claim_deliveries(NOW, NOW + timedelta(seconds=30), "n1", 5)
    retry = NOW + timedelta(seconds=5)
    assert await alerts.finish_delivery(held.delivery.id, "n1", failed(NOW), retry, delivered=False)
    (delivery,) = await alerts.list_deliveries("wh_1", 5)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.next_at == retry
    assert delivery.attempts == (failed(NOW),)
    assert await alerts.claim_deliveries(NOW + timedelta(seconds=1), retry, "n2", 5) == []
    (again,) = await alerts.claim_deliveries(retry, retry + timedelta(seconds=30), "n2", 5)
    ok = Attempt(retry, 200, 3, None, "ok")
    assert await alerts.finish_delivery(again.delivery.id, "n2", ok, None, delivered=True)
    (delivery,) = await alerts.list_deliveries("wh_1", 5)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts[-1] == ok
    resent = await alerts.resend_delivery("wh_1", delivery.id, retry)
    assert resent.status is DeliveryStatus.PENDING
    assert resent.id == delivery.id
    assert len(await alerts.claim_deliveries(retry, retry + timedelta(seconds=9), "n3", 5)) == 1
    with pytest.raises(NotFound):
        await alerts.resend_delivery("wh_other", delivery.id, retry)


async def test_disabled_endpoints_are_not_claimed_and_gone_ones_take_their_deliveries(
    stores: Stores,
) -> None:
    """A disabled endpoint's deliveries wait; deleting it deletes them."""
    alerts = stores.alerts
    await alerts.create_webhook(endpoint(disabled_at=NOW, disabled_reason="410 Gone"))
    await alerts.record_alert(event(), ["wh_1"])
    assert await alerts.claim_deliveries(NOW, NOW + timedelta(seconds=9), "n1", 5) == []
    await alerts.update_webhook(endpoint())
    assert len(await alerts.claim_deliveries(NOW, NOW + timedelta(seconds=9), "n1", 5)) == 1
    await alerts.delete_webhook("wh_1")
    assert await alerts.list_deliveries("wh_1", 5) == []
