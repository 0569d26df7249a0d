"""Reservations across faults (SPEC 10): given back exactly once whatever node or restart
the deadline falls in, a node killed between reserve and commit included."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.errors import Conflict
from quotad.service import reservations
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests import processes
from tests.conftest import OPERATOR, Deployment, make_settings, seed, store_url

SHARED = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
]
BASE = "/admin/v1/accounts/acme"
WAIT_SECONDS = 20.0


# Nodes in this process, over one store URL, with a fake clock -------------------------
@asynccontextmanager
async def node(url: str, clock: FakeClock) -> AsyncIterator[httpx2.AsyncClient]:
    """A node as ``quotad serve`` runs it (it opens the store and starts its sweeper),
    sweeping once on start and then not for a minute: a client to it."""
    settings = make_settings(url, reservation_sweep_seconds=60)
    app = create_app(Context(stores_from_url(url), settings, clock), manage_store=True)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://n") as http,
    ):
        yield http


async def admin(http: httpx2.AsyncClient, method: str, path: str, **body: Any) -> Any:
    """An operator call that must succeed: its JSON answer."""
    response = await http.request(method, path, json=body or None, headers=OPERATOR)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def reserve(http: httpx2.AsyncClient, key: str, cost: int, ttl: int) -> dict[str, Any]:
    """A granted verify with reserve on insights: its answer."""
    body = {"key": key, "service": "insights", "cost": cost, "reserve": True, "ttl_seconds": ttl}
    answer: dict[str, Any] = await admin(http, "POST", "/v1/verify", **body)
    assert answer["valid"] is True, answer
    return answer


async def state(http: httpx2.AsyncClient) -> tuple[int, float]:
    """acme's insights used today and its credit balance."""
    quotas = await admin(http, "GET", f"{BASE}/quotas")
    [used] = [q["used"] for q in quotas if q["name"] == "insights.day"]
    balance = (await admin(http, "GET", f"{BASE}/credits"))["balance"]
    return int(used), float(balance)


async def settle_soon(http: httpx2.AsyncClient, expected: tuple[int, float]) -> None:
    """Wait until acme's state is ``expected`` (a sweeper runs in the background), then a
    little more: it must stay so (nothing given back twice)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while await state(http) != expected:
        assert time.monotonic() < deadline, await state(http)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert await state(http) == expected


async def reserve_then_stop(url: str, clock: FakeClock) -> str:
    """On a node that then stops: insights priced at 1, a grant of 100, a reservation of
    10 with a 30 s TTL and one of 3 with an hour's; the first's id."""
    async with node(url, clock) as http:
        deployment = await seed(http)
        await admin(http, "PATCH", "/admin/v1/services/insights", credit_price=1)
        await admin(http, "POST", f"{BASE}/grants", amount=100)
        rid: str = (await reserve(http, deployment.key, 10, 30))["reservation_id"]
        await reserve(http, deployment.key, 3, 3600)
        assert await state(http) == (13, 87)
    return rid


@pytest.mark.parametrize("kind", SHARED)
@pytest.mark.parametrize("starting", [1, 2])
async def test_a_deadline_no_node_saw_is_given_back_by_the_next_node_once(
    kind: str, starting: int, tmp_path: Path
) -> None:
    """A reservation due while no node ran is given back, units and credits, exactly once
    by the first sweep of the node(s) started next, one or two at once."""
    clock = FakeClock()
    with store_url(kind, tmp_path) as url:
        rid = await reserve_then_stop(url, clock)
        clock.advance(seconds=31)
        async with AsyncExitStack() as stack:
            nodes = await asyncio.gather(
                *(stack.enter_async_context(node(url, clock)) for _ in range(starting))
            )
            await settle_soon(nodes[0], (3, 97))
            for http in nodes:
                late = await http.post(
                    f"/v1/reservations/{rid}/commit", json={"cost": 10}, headers=OPERATOR
                )
                assert late.status_code == 409, late.text
            assert await state(nodes[-1]) == (3, 97)


@pytest.mark.parametrize("kind", SHARED)
async def test_a_reservation_outlives_its_node_and_is_committed_on_the_next(
    kind: str, tmp_path: Path
) -> None:
    """A reservation made on a node that stopped is committed on the next before its
    deadline; the next node's sweep leaves it alone."""
    clock = FakeClock()
    with store_url(kind, tmp_path) as url:
        rid = await reserve_then_stop(url, clock)
        clock.advance(seconds=20)
        async with node(url, clock) as http:
            answer = await admin(http, "POST", f"/v1/reservations/{rid}/commit", cost=4)
            assert (answer["status"], answer["committed"]) == ("committed", 4)
            await settle_soon(http, (7, 93))


# Real ``quotad serve`` processes, one SIGKILLed ------------------------------------------
KILLED = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
]
SWEEP_ENV = {"QUOTAD_RESERVATION_SWEEP_SECONDS": "0.2"}


def spec(url: str, name: str) -> processes.Spec:
    """``quotad serve`` on ``url`` sweeping every 0.2 s, logging to ``<name>.log``."""
    return processes.Spec(
        [str(processes.BIN / "quotad"), "serve", "--store", url], name, env=SWEEP_ENV
    )


def call(http: httpx2.Client, method: str, path: str, **body: Any) -> Any:
    """An operator call to a real node that must succeed: its JSON answer."""
    response = http.request(method, path, json=body or None, headers=processes.OPERATOR)
    assert response.status_code in (200, 201), (path, response.text)
    return response.json()


def provision(http: httpx2.Client) -> str:
    """insights priced at 1 credit, a plan of 1000 a day, account acme near noon in its
    zone with a grant of 100: acme's key."""
    call(http, "POST", "/admin/v1/services", name="insights", credit_price=1)
    call(http, "POST", "/admin/v1/plans", id="p", quotas={"insights": {"total": 1000}})
    zone = processes.noon_zone()
    call(http, "POST", "/admin/v1/accounts", id="acme", name="Acme", plan="p", timezone=zone)
    call(http, "POST", f"{BASE}/grants", amount=100)
    return str(call(http, "POST", f"{BASE}/keys", name="k")["key"])


def real_state(http: httpx2.Client) -> tuple[int, float]:
    """acme's insights used today and its balance, from a real node."""
    quotas = call(http, "GET", f"{BASE}/quotas")
    [used] = [q["used"] for q in quotas if q["name"] == "insights.day"]
    return int(used), float(call(http, "GET", f"{BASE}/credits")["balance"])


def real_reserve(http: httpx2.Client, key: str, cost: int, ttl: int) -> dict[str, Any]:
    """A granted verify with reserve on a real node: its answer."""
    body = {"key": key, "service": "insights", "cost": cost, "reserve": True, "ttl_seconds": ttl}
    answer: dict[str, Any] = call(http, "POST", "/v1/verify", **body)
    assert answer["valid"] is True, answer
    return answer


def reserve_and_kill(url: str, workdir: Path, ttl: int) -> tuple[str, str, datetime]:
    """On a real node then SIGKILLed: a reservation of 10 (``ttl``) and one of 3 (an
    hour); acme's key, the first's id and deadline."""
    with (
        processes.running_all(workdir, spec(url, "before")) as [server],
        httpx2.Client(base_url=server.base, timeout=30) as http,
    ):
        key = provision(http)
        held = real_reserve(http, key, 10, ttl)
        real_reserve(http, key, 3, 3600)
        assert real_state(http) == (13, 87)
        server.process.kill()  # SIGKILL: no shutdown, nothing flushed
        server.process.wait(timeout=10)
        assert server.process.returncode == -9
    deadline = datetime.fromisoformat(held["expires_at"].replace("Z", "+00:00"))
    return key, str(held["reservation_id"]), deadline


def wait_for(http: httpx2.Client, expected: tuple[int, float]) -> None:
    """Wait until a real node shows ``expected``, then several sweeps more: it stays."""
    deadline = time.monotonic() + WAIT_SECONDS
    while real_state(http) != expected:
        assert time.monotonic() < deadline, real_state(http)
        time.sleep(0.05)
    time.sleep(1.0)  # five sweeps of every node
    assert real_state(http) == expected


@pytest.fixture
def shared_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh store of ``kind`` every node of the test shares."""
    with store_url(kind, tmp_path) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("kind", KILLED)
def test_a_reservation_of_a_killed_node_expires_once(
    kind: str, shared_url: str, tmp_path: Path
) -> None:
    """A node SIGKILLed holding a reservation: past its deadline, the two nodes started
    next give its units and credits back exactly once; a late commit is 409."""
    _, rid, deadline = reserve_and_kill(shared_url, tmp_path, ttl=2)
    wait = (deadline - datetime.now(deadline.tzinfo)).total_seconds()
    time.sleep(max(wait, 0) + 0.2)  # the deadline passes with no node running
    with (
        processes.running_all(tmp_path, spec(shared_url, "a"), spec(shared_url, "b")) as nodes,
        httpx2.Client(base_url=nodes[0].base, timeout=30) as http,
        httpx2.Client(base_url=nodes[1].base, timeout=30) as other,
    ):
        wait_for(http, (3, 97))
        late = other.post(
            f"/v1/reservations/{rid}/commit", json={"cost": 10}, headers=processes.OPERATOR
        )
        assert late.status_code == 409, late.text
        assert real_state(other) == (3, 97)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KILLED)
def test_a_reservation_of_a_killed_node_commits_on_the_next(
    kind: str, shared_url: str, tmp_path: Path
) -> None:
    """A node SIGKILLed holding a reservation: a commit sent to the next node before the
    deadline settles it, once, and no sweep gives it back."""
    _, rid, _ = reserve_and_kill(shared_url, tmp_path, ttl=300)
    with (
        processes.running_all(tmp_path, spec(shared_url, "after")) as [server],
        httpx2.Client(base_url=server.base, timeout=30) as http,
    ):
        answer = call(http, "POST", f"/v1/reservations/{rid}/commit", cost=6)
        assert (answer["status"], answer["committed"], answer["overage"]) == ("committed", 6, 0)
        again = call(http, "POST", f"/v1/reservations/{rid}/commit", cost=6)
        assert again == answer
        wait_for(http, (9, 91))


# An account deleted while it holds a reservation -----------------------------------------
async def test_a_deleted_accounts_reservation_expires_without_reviving_its_counters(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A reservation of an account deleted before its deadline expires without moving
    counters: a new account of that id starts from zero, and the sweep does not retry it."""
    rid = (await reserve(client, deployment.key, 5, 10))["reservation_id"]
    assert (await client.delete(BASE, headers=OPERATOR)).status_code == 204
    clock.advance(seconds=20)
    await reservations.sweep(ctx)
    clock.advance(seconds=60)  # past any claim a failed settlement would have left
    assert await reservations.sweep(ctx) == 0
    found = await ctx.stores.credits.get_reservation(rid)
    assert found is not None
    assert found.status.value == "expired"
    body = {"id": "acme", "name": "Acme", "plan": "plan-acme"}
    assert (await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)).status_code == 201
    assert await state(client) == (0, 0)


class FailingOne:
    """The credit store, failing every claim of one reservation (a store fault)."""

    def __init__(self, inner: Any, broken: str) -> None:
        self.inner = inner
        self.broken = broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def claim_reservation(self, reservation_id: str, *args: Any) -> Any:
        if reservation_id == self.broken:
            raise OSError("the store failed this one")
        return await self.inner.claim_reservation(reservation_id, *args)


async def test_one_failing_reservation_does_not_stop_the_sweep(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A reservation whose settlement fails is left for a later sweep; the rest of the
    batch (due after it) is given back all the same."""
    await admin(client, "PATCH", "/admin/v1/services/insights", credit_price=1)
    await admin(client, "POST", f"{BASE}/grants", amount=100)
    broken = (await reserve(client, deployment.key, 5, 10))["reservation_id"]
    clock.advance(seconds=1)
    await reserve(client, deployment.key, 7, 10)
    clock.advance(seconds=20)
    failing = dataclasses.replace(ctx.stores, credits=FailingOne(ctx.stores.credits, broken))
    assert await reservations.sweep(Context(failing, ctx.settings, clock)) == 1
    assert await state(client) == (5, 95)
    assert await reservations.sweep(ctx) == 1
    assert await state(client) == (0, 100)


async def test_a_commit_racing_a_skewed_nodes_sweep_settles_once(
    stores: Stores, client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A commit on a node whose clock is before the deadline, racing the sweep of a node
    whose clock is past it: each reservation is committed or expired, once, not both."""
    await admin(client, "PATCH", "/admin/v1/services/insights", credit_price=1)
    await admin(client, "POST", f"{BASE}/grants", amount=100)
    ids = [(await reserve(client, deployment.key, 10, 30))["reservation_id"] for _ in range(6)]
    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.advance(seconds=29)
    ahead = FakeClock(ctx.clock.now() + timedelta(seconds=2))
    async with AsyncExitStack() as stack:
        other = stores
        if not stores.url.startswith("memory"):
            other = stores_from_url(stores.url)
            await other.open()
            stack.push_async_callback(other.close)
        sweeper = Context(other, ctx.settings, ahead)

        async def commit(rid: str) -> None:
            with contextlib.suppress(Conflict):
                await reservations.commit(ctx, rid, 4)

        await asyncio.gather(reservations.sweep(sweeper), *(commit(rid) for rid in ids))
        await reservations.sweep(sweeper)  # what a held claim kept from the first
    found = [await stores.credits.get_reservation(rid) for rid in ids]
    statuses = [r.status.value for r in found if r is not None]
    assert len(statuses) == len(ids)
    assert set(statuses) <= {"committed", "expired"}, statuses
    committed = statuses.count("committed")
    assert await state(client) == (4 * committed, 100 - 4 * committed)
