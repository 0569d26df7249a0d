"""No alert event is lost, and no delivery is sent twice at once, across real ``quotad
serve`` nodes on one PostgreSQL store (SPEC 11): a node SIGKILLed mid-delivery, a receiver
down meanwhile, two nodes sending side by side.

The receiver (tests/webhook_receiver.py) answers each delivery ``DELAY`` seconds after it
arrives and logs the moment it answers, so a reception spans ``[at - DELAY, at]``: two
receptions of one ``webhook-id`` overlap exactly when their ``at`` are less than ``DELAY``
apart (its sleep never ends early).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest

from quotad.domain.webhooks import QUOTA_THRESHOLD, Delivery
from quotad.service import webhooks
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Stores, stores_from_url
from tests.processes import BIN, OPERATOR, Running, Spec, noon_zone, running_all
from tests.servers import postgres_schema
from tests.webhook_fixtures import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

DELAY = 1.5  # seconds the receiver takes to answer: slower than a node's round trip
NODE_ENV = {
    "QUOTAD_WEBHOOK_ALLOW_PRIVATE": "1",
    "QUOTAD_WEBHOOK_TIMEOUT_SECONDS": "2",
    "QUOTAD_WEBHOOK_POLL_SECONDS": "0.2",
}
ACCOUNTS = 5  # each crosses 80% and 100% of its quota at once: two events each
EVENTS = 2 * ACCOUNTS
ALL_RECEIVED_WITHIN = 60.0

T = TypeVar("T")


@pytest.fixture
def store() -> Iterator[str]:
    """A fresh PostgreSQL schema's store URL, dropped afterwards."""
    with postgres_schema() as url:
        yield url


def node(store: str, name: str) -> Spec:
    """A ``quotad serve`` node over ``store`` that sends webhooks every 0.2 s, 2 s timeout."""
    return Spec([str(BIN / "quotad"), "serve", "--store", store], name, env=NODE_ENV)


def on_store(store: str, use: Callable[[Context], Awaitable[T]]) -> T:
    """Run ``use(ctx)`` on a context over ``store``, in this process."""

    async def run() -> T:
        stores: Stores = stores_from_url(store)
        settings = Settings(_env_file=None, store_url=store, webhook_allow_private=True)
        await stores.open()
        try:
            result: T = await use(Context(stores, settings))
            return result
        finally:
            await stores.close()

    return asyncio.run(run())


def register(store: str, receiver: WebhookReceiver) -> str:
    """An endpoint for ``receiver`` (taking quota.threshold), signing with its secret."""

    async def use(ctx: Context) -> str:
        created = await webhooks.create(ctx, receiver.url, [QUOTA_THRESHOLD])
        await ctx.stores.alerts.update_webhook(replace(created, secret=receiver.secret))
        return created.id

    return on_store(store, use)


def deliveries_of(store: str, endpoint_id: str) -> list[Delivery]:
    """The endpoint's deliveries as stored now."""

    async def use(ctx: Context) -> list[Delivery]:
        return await ctx.stores.alerts.list_deliveries(endpoint_id, 100)

    return on_store(store, use)


def event_ids(store: str) -> set[str]:
    """The ids of the events written (each one's ``webhook-id``), once all ``EVENTS`` are."""
    deadline = time.monotonic() + 10

    async def use(ctx: Context) -> set[str]:
        return {event.id for event in await ctx.stores.alerts.alert_events(100)}

    while len(found := on_store(store, use)) < EVENTS:
        assert time.monotonic() < deadline, f"only {len(found)} of {EVENTS} events written"
        time.sleep(0.1)
    assert len(found) == EVENTS, found
    return found


def cross_thresholds(bases: list[str]) -> None:
    """``ACCOUNTS`` accounts with 10 a day, each spending it all in one verify (crossing 80
    and 100), round-robin over the nodes at ``bases``."""
    with httpx2.Client(timeout=30, headers=OPERATOR) as http:

        def post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = http.post(base + path, json=body)
            assert response.status_code in (200, 201), (path, response.text)
            answer: dict[str, Any] = response.json()
            return answer

        post(bases[0], "/admin/v1/services", {"name": "insights"})
        plan = {"id": "alerts", "quotas": {"insights": {"total": 10}}}
        post(bases[0], "/admin/v1/plans", plan)
        for n in range(ACCOUNTS):
            base = bases[n % len(bases)]
            account = {"id": f"acct-{n}", "name": "A", "plan": "alerts", "timezone": noon_zone()}
            post(base, "/admin/v1/accounts", account)
            key = post(base, f"/admin/v1/accounts/acct-{n}/keys", {"name": "k"})["key"]
            verdict = post(base, "/v1/verify", {"key": key, "service": "insights", "cost": 10})
            assert verdict["valid"] is True, verdict


def received_all(receiver: WebhookReceiver, ids: set[str]) -> list[dict[str, Any]]:
    """The receiver's log once every id in ``ids`` was received and verified."""
    deadline = time.monotonic() + ALL_RECEIVED_WITHIN
    while True:
        received = receiver.received()
        verified = {line["webhook_id"] for line in received if line["verified"]}
        if ids <= verified:
            return received
        if time.monotonic() > deadline:
            pytest.fail(f"{len(ids - verified)} of {len(ids)} events never reached the receiver")
        time.sleep(0.1)


def wait_until(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Return once ``condition()`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def overlapping(received: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Receptions of one webhook-id that were in progress at the same time (see the module)."""
    answered: dict[str, list[datetime]] = defaultdict(list)
    for line in received:
        answered[line["webhook_id"]].append(datetime.fromisoformat(line["at"]))
    found = []
    for webhook_id, times in answered.items():
        for first, second in combinations(times, 2):
            apart = abs((second - first).total_seconds())
            if apart < DELAY:
                found.append((webhook_id, apart))
    return found


def sigkill(handle: Running) -> None:
    """Kill a node without warning and reap it."""
    handle.process.kill()
    handle.process.wait(timeout=10)
    assert handle.process.returncode == -9


def test_a_node_killed_mid_delivery_loses_no_event(
    store: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """SIGKILL the only node while it sends to a slow receiver, take the receiver down, start
    another node: once the receiver is back, every event arrives verified, under its own id."""
    receiver.set_mode(delay=DELAY)
    with running_all(tmp_path, node(store, "node-1")) as [first]:
        endpoint_id = register(store, receiver)
        cross_thresholds([first.base])
        ids = event_ids(store)
        wait_until(lambda: len(receiver.received()) >= 2, "two deliveries received")
        sigkill(first)
    assert len(receiver.received()) < EVENTS, "every event arrived before the kill"

    receiver.stop()  # down while the next node starts sending

    def refused_once() -> bool:
        return any(
            attempt.status_code is None
            for delivery in deliveries_of(store, endpoint_id)
            for attempt in delivery.attempts
        )

    with running_all(tmp_path, node(store, "node-2")):
        wait_until(refused_once, "the new node tried the receiver while it was down")
        receiver.start()
        received = received_all(receiver, ids)

    assert {line["webhook_id"] for line in received} == ids  # each under its event's id
    assert overlapping(received) == []


def test_two_nodes_never_send_one_delivery_at_once(
    store: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """A second node joins while the first works through a backlog for a slow receiver
    (longer than one claim lasts): every event arrives, and no webhook-id is ever being
    received twice at the same time."""
    receiver.set_mode(delay=DELAY)
    with running_all(tmp_path, node(store, "node-a")) as [first]:
        register(store, receiver)
        cross_thresholds([first.base])
        ids = event_ids(store)
        wait_until(lambda: len(receiver.received()) >= 1, "the first node sending")
        with running_all(tmp_path, node(store, "node-b")):
            received_all(receiver, ids)
            time.sleep(DELAY)  # a duplicate still in flight is answered (and logged) by now
            received = receiver.received()

    assert {line["webhook_id"] for line in received} == ids
    assert overlapping(received) == []
