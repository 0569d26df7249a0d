"""Verify notices alerts (SPEC 11) on every store: thresholds crossed, first refusals, keys
about to expire; each written once, with the data the contract names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from quotad.domain.limits import parse_limits
from quotad.domain.models import Overrides, Quota
from quotad.domain.webhooks import AlertEvent
from quotad.service import admin, maintenance, usage
from quotad.service.context import Context
from quotad.service.usage import EventInput
from quotad.service.verify import refund, verify, verify_account
from quotad.storage import stores_from_url
from quotad.testing import FakeClock
from tests.conftest import make_settings


async def _account(
    ctx: Context, quota: object, thresholds: tuple[int, ...] | None = None
) -> tuple[str, str]:
    """A service, a plan of ``quota`` for it, an account ``acme`` in UTC and a key."""
    await admin.create_service(ctx, "insights", "")
    limits = parse_limits(quota)
    await admin.create_plan(ctx, "p", {"insights": Quota(limits)}, [], "")
    overrides = Overrides(alert_thresholds=thresholds)
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", overrides)
    issued = await admin.create_key(ctx, "acme", "k")
    return issued.record.id, issued.secret


async def _events(ctx: Context) -> list[AlertEvent]:
    await ctx.noticer.drain()
    return list(reversed(await ctx.stores.alerts.alert_events(100)))


async def test_a_daily_quota_tells_each_threshold_once_with_its_data(
    ctx: Context, clock: FakeClock
) -> None:
    """Version 1's day: 80 % and 100 % once each, then the first refusal, as SPEC 11 says."""
    _, key = await _account(ctx, {"total": 10})
    for _ in range(12):
        await verify(ctx, key, "insights", 1)
    events = await _events(ctx)
    assert [(e.type, e.data.get("threshold")) for e in events] == [
        ("quota.threshold", 80),
        ("quota.threshold", 100),
        ("quota.exceeded", None),
    ]
    first = events[0]
    assert first.account_id == "acme"
    assert first.data == {
        "account_id": "acme",
        "limit": "insights.day",
        "window_start": "2024-11-07T00:00:00Z",
        "reset": "2024-11-08T00:00:00Z",
        "threshold": 80,
        "used": 8,
        "total": 10,
    }
    assert events[2].data["used"] == 10


async def test_an_account_s_own_thresholds_replace_the_defaults(ctx: Context) -> None:
    """Thresholds of [50] tell 50 % only; a cost that jumps past it tells it once."""
    _, key = await _account(ctx, {"total": 10}, thresholds=(50,))
    await verify(ctx, key, "insights", 3)
    await verify(ctx, key, "insights", 4)  # 3 -> 7 passes 50 % (5)
    await verify(ctx, key, "insights", 2)
    events = await _events(ctx)
    assert [(e.type, e.data.get("threshold"), e.data["used"]) for e in events] == [
        ("quota.threshold", 50, 7)
    ]


async def test_a_refund_and_a_new_crossing_tell_nothing_twice_and_a_new_day_tells_again(
    ctx: Context, clock: FakeClock
) -> None:
    """Falling back under a threshold and passing it again is one event; tomorrow is new."""
    _, key = await _account(ctx, {"total": 10})
    for _ in range(8):
        verdict = await verify(ctx, key, "insights", 1)
    await refund(ctx, verdict, 1)
    await verify(ctx, key, "insights", 1)
    assert len(await _events(ctx)) == 1
    clock.advance(days=1)
    for _ in range(8):
        await verify(ctx, key, "insights", 1)
    events = await _events(ctx)
    assert [e.data["window_start"] for e in events] == [
        "2024-11-07T00:00:00Z",
        "2024-11-08T00:00:00Z",
    ]


async def test_window_limits_tell_their_own_crossings_and_keys_are_named(ctx: Context) -> None:
    """A month and a key's day each tell theirs; shadow limits and rates tell nothing."""
    key_id, key = await _account(
        ctx,
        [
            {"window": "month", "total": 10},
            {"window": "day", "total": 4, "per": "key"},
            {"window": "day", "total": 2, "mode": "shadow"},
            {"rate": {"per_second": 100, "burst": 100}},
        ],
    )
    for _ in range(5):
        await verify(ctx, key, "insights", 1)
    events = await _events(ctx)
    told = [
        (e.type, e.data["limit"], e.data.get("key_id"), e.data.get("threshold")) for e in events
    ]
    assert told == [
        ("quota.threshold", "insights.day.key", key_id, 80),
        ("quota.threshold", "insights.day.key", key_id, 100),
        ("quota.exceeded", "insights.day.key", key_id, None),
    ]
    for _ in range(4):
        await verify_account(ctx, "acme", "insights", 1)  # no key: only the month moves
    month = [e for e in await _events(ctx) if e.data["limit"] == "insights.month"]
    assert [(e.data["threshold"], e.data["window_start"]) for e in month] == [
        (80, "2024-11-01T00:00:00Z")
    ]


async def test_a_soft_limit_tells_when_it_is_passed_but_lets_calls_through(ctx: Context) -> None:
    """A soft day of 2: 80 % and 100 % told, no refusal, the calls granted."""
    _, key = await _account(ctx, [{"window": "day", "total": 2, "mode": "soft"}])
    verdicts = [await verify(ctx, key, "insights", 1) for _ in range(4)]
    assert all(v.valid for v in verdicts)
    events = await _events(ctx)
    assert [(e.type, e.data.get("threshold")) for e in events] == [
        ("quota.threshold", 80),
        ("quota.threshold", 100),
    ]


async def test_keys_about_to_expire_are_told_once(ctx: Context, clock: FakeClock) -> None:
    """A key expiring within 7 days is told once; one expiring later, or revoked, is not."""
    await _account(ctx, {"total": 10})
    now = clock.now()
    soon = await admin.create_key(ctx, "acme", "soon", expires_at=now + timedelta(days=3))
    await admin.create_key(ctx, "acme", "later", expires_at=now + timedelta(days=30))
    gone = await admin.create_key(ctx, "acme", "gone", expires_at=now + timedelta(days=2))
    await admin.revoke_key(ctx, gone.record.id)
    await maintenance.notice_expiring_keys(ctx)
    await maintenance.notice_expiring_keys(ctx)
    events = await _events(ctx)
    assert [(e.type, e.data["key_id"]) for e in events] == [("key.expiring", soon.record.id)]
    expires = (now + timedelta(days=3)).astimezone(UTC)
    assert events[0].data["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert events[0].at == datetime(2024, 11, 7, 12, tzinfo=UTC)


async def test_metering_events_tell_the_thresholds_they_reach_once(
    ctx: Context, clock: FakeClock
) -> None:
    """Events that take a day and a month past their marks tell each once, shared with
    what verify tells: a verify after them adds only its own crossing."""
    _, key = await _account(
        ctx, [{"window": "day", "total": 10}, {"window": "month", "total": 100}]
    )
    now = clock.now()
    batch = [EventInput(f"e{i}", "acme", "insights", 3, now) for i in range(3)]  # day: 9
    await usage.record_events(ctx, batch)
    await usage.record_events(ctx, batch)  # the same ids again: nothing moves, nothing new
    await verify(ctx, key, "insights", 1)  # day 10: 100 %
    events = await _events(ctx)
    told = [(e.data["limit"], e.data["threshold"], e.data["used"]) for e in events]
    assert told == [("insights.day", 80, 9), ("insights.day", 100, 10)]


async def test_closing_the_stores_waits_for_the_events_noticed(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An event noticed just before the stores close is written, not abandoned."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    stores = stores_from_url(url)
    await stores.open()
    ctx = Context(stores, make_settings(url), clock)
    _, key = await _account(ctx, {"total": 10})
    for _ in range(8):
        await verify(ctx, key, "insights", 1)
    await stores.close()  # no drain of its own: close waits for the write
    again = stores_from_url(url)
    await again.open()
    try:
        found = await again.alerts.alert_events(10)
    finally:
        await again.close()
    assert [(e.type, e.data["threshold"]) for e in found] == [("quota.threshold", 80)]
