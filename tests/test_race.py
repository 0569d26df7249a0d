"""No two concurrent consumes can together pass the quota (SPEC 1), in-process and over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar, cast

import httpx2
import pytest

from quotad.domain.models import Account, AccountStatus, Overrides, Plan, Quota, Service
from quotad.storage import Stores, stores_from_url
from tests.conftest import ADMIN_TOKEN, OPERATOR, STORES, create_account, store_url

with_cluster = True  # also run the store-backed tests on a Redis Cluster

DAY = date(2024, 11, 7)
CREATED = datetime(2024, 11, 7, tzinfo=UTC)
TOTAL = 50
ATTEMPTS = 200
T = TypeVar("T")
# Every store that several processes can share (all but the in-process one).
SHARED_STORES = [param for param in STORES if param.values[0] != "memory"]


async def add_account(stores: Stores, account_id: str = "racer") -> None:
    """Service insights, a plan with a quota for it, and one account on that plan."""
    await stores.records.create_service(Service("insights", "", CREATED))
    await stores.records.create_plan(Plan("plan", {"insights": Quota.daily(TOTAL)}, (), CREATED))
    await create_account(
        stores,
        Account(account_id, "Racer", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), CREATED),
    )


async def gather_all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run every call concurrently, let all of them finish, then raise the first failure.

    Plain ``gather`` raises at the first failure while the others keep running into the
    fixture's teardown; here every call is done before anything is reported.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return cast("list[T]", results)


async def test_concurrent_consumes_never_pass_the_quota(stores: Stores) -> None:
    """200 concurrent consumes of 1 against a total of 50 grant exactly 50 and refuse 150."""
    await add_account(stores)
    outcomes = await gather_all(
        stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(ATTEMPTS)
    )
    granted = [o for o in outcomes if o.granted]
    assert len(granted) == TOTAL
    assert sorted(o.used for o in granted) == list(range(1, TOTAL + 1))
    assert all(o.used == TOTAL for o in outcomes if not o.granted)
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert (row.used, row.total, row.rejected) == (TOTAL, TOTAL, ATTEMPTS - TOTAL)


@pytest.mark.parametrize("kind", SHARED_STORES)
async def test_two_store_instances_on_one_database_never_pass_the_quota(
    kind: str, tmp_path: Path
) -> None:
    """Two stores opened on one database (two nodes), racing 100 consumes each, grant 50."""
    with store_url(kind, tmp_path) as url:
        first, second = stores_from_url(url), stores_from_url(url)
        await first.open()
        await second.open()
        try:
            await add_account(first)
            half = ATTEMPTS // 2
            outcomes = await gather_all(
                node.counters.consume("racer", "insights", DAY, 1, TOTAL)
                for _ in range(half)
                for node in (first, second)
            )
            assert sum(o.granted for o in outcomes) == TOTAL
            for node in (first, second):
                [row] = await node.counters.usage("racer", "insights", DAY, DAY)
                assert (row.used, row.rejected) == (TOTAL, ATTEMPTS - TOTAL)
        finally:
            await first.close()
            await second.close()


# A real server process ---------------------------------------------------------------
def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def noon_zone(now: datetime) -> str:
    """A fixed-offset zone where ``now`` is near noon, so the test never straddles a day."""
    offset = 12 - now.astimezone(UTC).hour  # -11 .. 12, all valid Etc/GMT zones
    if offset == 0:
        return "UTC"
    # POSIX sign convention: Etc/GMT-5 is five hours ahead of UTC.
    return f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}"


@contextmanager
def running_server(store_url: str, workdir: Path) -> Iterator[str]:
    """``quotad serve`` in a subprocess; yields its base URL and stops it afterwards."""
    port = free_port()
    script = Path(sys.executable).parent / "quotad"
    env = {
        **os.environ,
        "QUOTAD_ADMIN_TOKEN": ADMIN_TOKEN,
        "QUOTAD_LOG_LEVEL": "warning",
        # This test is about atomicity, not latency: a burst of 200 verifies queues on the
        # store's connections for longer than the default 1 s verify timeout on a busy
        # machine, and the timed-out ones would answer 503 instead of racing.
        "QUOTAD_STORE_TIMEOUT_MS": "60000",
    }
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [str(script), "serve", "--store", store_url, "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,  # no stray .env or quotad.db from the checkout
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"quotad serve exited with {process.returncode}: {read_log(workdir)}")
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"quotad serve did not answer /healthz: {read_log(workdir)}")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def read_log(workdir: Path) -> str:
    """What the server wrote so far."""
    return (workdir / "server.log").read_text(errors="replace")[-4000:]


async def seed_over_http(http: httpx2.AsyncClient) -> tuple[str, str]:
    """Service insights, a plan of 50 a day, one account and its key; returns (id, key)."""
    response = await http.post("/admin/v1/services", json={"name": "insights"}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    plan = {"id": "race", "quotas": {"insights": {"total": TOTAL}}}
    response = await http.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    account = {
        "id": "racer",
        "name": "Racer",
        "plan": "race",
        "timezone": noon_zone(datetime.now(UTC)),
    }
    response = await http.post("/admin/v1/accounts", json=account, headers=OPERATOR)
    assert response.status_code == 201, response.text
    response = await http.post(
        "/admin/v1/accounts/racer/keys", json={"name": "race"}, headers=OPERATOR
    )
    assert response.status_code == 201, response.text
    return "racer", str(response.json()["key"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
async def test_concurrent_verifies_over_http_never_pass_the_quota(
    kind: str, tmp_path: Path
) -> None:
    """200 concurrent POST /v1/verify on a real server grant exactly 50 and refuse 150."""
    limits = httpx2.Limits(max_connections=ATTEMPTS + 10, max_keepalive_connections=ATTEMPTS + 10)
    with store_url(kind, tmp_path) as url, running_server(url, tmp_path) as base:
        async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
            account_id, key = await seed_over_http(http)
            body = {"key": key, "service": "insights", "cost": 1}
            responses = await gather_all(
                http.post("/v1/verify", json=body, headers=OPERATOR) for _ in range(ATTEMPTS)
            )
            statuses = Counter(r.status_code for r in responses)
            odd = next((r.text for r in responses if r.status_code != 200), "")
            assert statuses == {200: ATTEMPTS}, (statuses, odd)
            verdicts = [r.json() for r in responses]
            granted = [v for v in verdicts if v["valid"] is True and v["code"] == "VALID"]
            refused = [v for v in verdicts if v["valid"] is False]
            assert len(granted) == TOTAL
            assert len(refused) == ATTEMPTS - TOTAL
            assert {v["code"] for v in refused} == {"QUOTA_EXCEEDED"}
            assert sorted(v["used"] for v in granted) == list(range(1, TOTAL + 1))
            assert all(r.headers["Retry-After"] for r in responses if not r.json()["valid"])

            response = await http.get(
                f"/admin/v1/accounts/{account_id}/usage/insights", headers=OPERATOR
            )
            assert response.status_code == 200, response.text
            [today] = response.json()
            assert (today["used"], today["remaining"], today["total"]) == (TOTAL, 0, TOTAL)
