"""The SDK's webhook and alert methods against a real ``quotad serve``, sync and async, and
its deliveries reaching a real receiver that verifies them with standardwebhooks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotad.sdk import (
    AlertEventInfo,
    ConflictError,
    CreatedWebhook,
    NotFoundError,
    Overrides,
    ValidationFailedError,
    Webhook,
    WebhookDelivery,
)
from tests import sdk_harness
from tests.processes import BIN, Running, Spec, noon_zone, running_all
from tests.sdk_harness import Api, uid
from tests.webhook_fixtures import WebhookReceiver

# The shared harness's client fixture, over this module's own ``server``.
api = sdk_harness.api

EVENTS = ["quota.threshold", "quota.exceeded"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One ``quotad serve`` for the module that sends webhooks to this machine, promptly."""
    workdir = tmp_path_factory.mktemp("sdk-webhooks")
    env = {"QUOTAD_WEBHOOK_ALLOW_PRIVATE": "1", "QUOTAD_WEBHOOK_POLL_SECONDS": "0.1"}
    argv = [str(BIN / "quotad"), "serve", "--store", f"sqlite:///{workdir / 'quotad.db'}"]
    with running_all(workdir, Spec(argv, "quotad", env=env)) as [process]:
        yield process


async def delivered(api: Api, webhook_id: str, count: int) -> list[WebhookDelivery]:
    """The endpoint's deliveries once ``count`` of them are delivered (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        page = await api.webhook_deliveries(webhook_id)
        if sum(d.status == "delivered" for d in page.items) >= count:
            return list(page.items)
        assert time.monotonic() < deadline, page
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_webhook_endpoints_through_the_sdk(api: Api) -> None:
    """Create shows the secret once; list, get, update, disable, rotate and delete round-trip."""
    created = await api.create_webhook("http://127.0.0.1:9/hook", EVENTS, description="pager")
    assert isinstance(created, CreatedWebhook)
    assert created.secret.startswith("whsec_")
    assert created.secret not in repr(created)
    assert (created.events, created.description, created.enabled) == (tuple(EVENTS), "pager", True)
    listed = [w for w in await api.webhooks() if w.id == created.id]
    assert [type(w) for w in listed] == [Webhook]
    one = await api.webhook(created.id)
    assert type(one) is Webhook
    assert one.secret_hint == created.secret_hint
    assert one.created_at.tzinfo is not None
    changed = await api.update_webhook(created.id, events=["credits.low"], enabled=False)
    assert (changed.events, changed.enabled) == (("credits.low",), False)
    assert changed.disabled_at is not None
    assert changed.description == "pager"
    again = await api.update_webhook(created.id, url="http://127.0.0.1:10/hook", enabled=True)
    assert (again.url, again.enabled, again.disabled_at) == ("http://127.0.0.1:10/hook", True, None)
    rotated = await api.rotate_webhook_secret(created.id, grace_seconds=60)
    assert isinstance(rotated, CreatedWebhook)
    assert rotated.secret != created.secret
    assert rotated.secret_hint.endswith(rotated.secret[-4:])
    with pytest.raises(ValidationFailedError) as caught:
        await api.create_webhook("http://127.0.0.1:9/hook", [])
    assert caught.value.validation_errors[0].path == "/body/events"
    with pytest.raises(ValidationFailedError):
        await api.rotate_webhook_secret(created.id, grace_seconds=10**7)
    await api.delete_webhook(created.id)
    with pytest.raises(NotFoundError):
        await api.webhook(created.id)
    with pytest.raises(NotFoundError):
        await api.webhook_deliveries(created.id)


@pytest.mark.slow
async def test_thresholds_alerts_deliveries_and_resend(api: Api, tmp_path: Path) -> None:
    """A plan's threshold crossed by a verify is an alert, delivered signed to a real
    receiver; listed with its attempt, and a resend arrives again with the same webhook-id."""
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    receiver = WebhookReceiver(workdir)
    created = await api.create_webhook(receiver.url, ["quota.threshold"])
    receiver.secret = created.secret  # it verifies with the secret quotad showed once
    receiver.start()
    try:
        with contextlib.suppress(ConflictError):
            await api.create_service("insights")
        plan = await api.create_plan(uid("p"), {"insights": 10}, alert_thresholds=[50])
        assert plan.alert_thresholds == (50,)
        assert (await api.get_plan(plan.id)).alert_thresholds == (50,)
        account = await api.create_account(
            "Alerted", plan.id, account_id=uid("a"), timezone=noon_zone()
        )
        assert account.overrides.alert_thresholds is None
        key = (await api.create_key(account.id, "k")).key
        assert (await api.verify(key, "insights", cost=6)).valid
        (line,) = receiver.wait_for(1)
        assert (line["verified"], line["type"]) == (True, "quota.threshold")

        page = await api.alerts(account_id=account.id)
        (event,) = page.items
        assert isinstance(event, AlertEventInfo)
        assert (event.id, event.type, event.account_id) == (
            line["webhook_id"],
            "quota.threshold",
            account.id,
        )
        assert (event.data["threshold"], event.data["used"], event.data["total"]) == (50, 6, 10)
        assert page.next_cursor is None

        (delivery,) = await delivered(api, created.id, 1)
        assert (delivery.event_id, delivery.type) == (event.id, "quota.threshold")
        (attempt,) = delivery.attempts
        assert (attempt.status_code, attempt.error) == (200, None)
        resent = await api.resend_webhook_delivery(created.id, delivery.id)
        assert (resent.id, resent.status) == (delivery.id, "pending")
        first, second = receiver.wait_for(2)
        assert second["verified"] is True
        assert second["webhook_id"] == first["webhook_id"] == event.id
        (after,) = await delivered(api, created.id, 1)
        assert len(after.attempts) >= 2
        with pytest.raises(NotFoundError):
            await api.resend_webhook_delivery(created.id, "dlv_nope")
    finally:
        receiver.stop()
        await api.delete_webhook(created.id)


@pytest.mark.slow
async def test_account_thresholds_through_the_sdk(api: Api) -> None:
    """An account's thresholds go in and come back in its overrides; bad ones raise."""
    with contextlib.suppress(ConflictError):
        await api.create_service("insights")
    plan = await api.create_plan(uid("p"), {"insights": 10})
    assert plan.alert_thresholds is None
    account = await api.create_account(
        "Own", plan.id, account_id=uid("a"), overrides=Overrides(alert_thresholds=(90,))
    )
    assert account.overrides.alert_thresholds == (90,)
    patched = await api.update_account(
        account.id, overrides=Overrides(limits={}, alert_thresholds=(70, 95))
    )
    assert patched.overrides.alert_thresholds == (70, 95)
    replaced = await api.replace_plan(plan.id, {"insights": 10}, alert_thresholds=[25, 75])
    assert replaced.alert_thresholds == (25, 75)
    with pytest.raises(ValidationFailedError) as caught:
        await api.update_account(account.id, overrides=Overrides(alert_thresholds=(0,)))
    assert caught.value.validation_errors[0].path == "/body/overrides/alert_thresholds"
    assert (await api.get_account(account.id)).overrides.alert_thresholds == (70, 95)
