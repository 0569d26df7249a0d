"""``GET /healthz`` and ``GET /readyz`` (SPEC 12): liveness and readiness, no credentials.

The readiness tests hang real stores: Redis with SIGSTOP (a private redis-server of the
test's own), PostgreSQL by dropping its traffic in a proxy (``tests.faults.BlackholeProxy``),
as the hang tests do. Meanwhile ``/readyz`` must answer 503 within about a second and
``/healthz`` 200 at once; once the store is back, ``/readyz`` answers 200 again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest

from quotad import __version__
from quotad.api.app import create_app
from quotad.service.context import Context
from quotad.storage import stores_from_url
from tests.conftest import LOOPBACK, RedisProcess, make_settings
from tests.faults import BlackholeProxy, with_address
from tests.servers import postgres_schema

ERROR_KEYS = {"error", "id", "note", "validationErrors"}
OK = {"status": "ok"}
# Seconds a probe of a hung store may take: the 1 s timeout, plus this 2-core box's slack.
HUNG_ANSWER_BOUND = 1.6
# Headers any answer of the app carries; a health answer carries no other.
EXPECTED_HEADERS = {
    "content-length",
    "content-type",
    "cache-control",
    "api-version",
    "x-request-id",
}


def assert_reveals_nothing(response: httpx2.Response, *secrets: str) -> None:
    """No header beyond the expected ones, and neither version nor a store detail anywhere."""
    assert set(response.headers) <= EXPECTED_HEADERS
    # Random ids may hold any digits (a port's among them): they are left out of the search.
    body = response.json()
    if isinstance(body, dict):
        body.pop("id", None)
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    text = json.dumps(body) + " ".join(headers.values())
    for secret in (__version__, *secrets):
        assert secret not in text, f"{secret!r} revealed: {text}"


async def test_healthz_and_readyz_answer_ok_without_credentials(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Both answer 200 {"status": "ok"} to anyone, and nothing else: no version, no store."""
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        assert response.json() == OK
        assert response.headers["cache-control"] == "no-store"
        assert_reveals_nothing(response, ctx.stores.url)


async def test_head_is_answered_and_other_methods_are_405(client: httpx2.AsyncClient) -> None:
    """HEAD is answered like GET without a body; POST is 405 in the error shape, with Allow."""
    for path in ("/healthz", "/readyz"):
        head = await client.head(path)
        assert head.status_code == 200
        assert head.content == b""
        post = await client.post(path, json={})
        assert post.status_code == 405
        assert set(post.json()) == ERROR_KEYS
        assert post.headers["allow"] == "GET, HEAD"


async def test_health_answers_ignore_credentials_and_are_not_throttled(
    client: httpx2.AsyncClient,
) -> None:
    """A wrong token or key changes nothing, and many probes in a row all answer 200."""
    bad = {"Authorization": "Bearer qd_not-a-key", "x-api-key": "nope"}
    answers = await asyncio.gather(*(client.get("/readyz", headers=bad) for _ in range(50)))
    assert {a.status_code for a in answers} == {200}
    assert (await client.get("/healthz", headers=bad)).status_code == 200


# A store that hangs ------------------------------------------------------------------
@asynccontextmanager
async def app_over(url: str) -> AsyncIterator[httpx2.AsyncClient]:
    """An in-process app over opened stores of ``url`` (closed afterwards)."""
    stores = stores_from_url(url)
    await stores.open()
    try:
        ctx = Context(stores, make_settings(url))
        transport = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            yield http
    finally:
        await stores.close()


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A running redis-server of this test's own, killed afterwards (stopped or not)."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def sigstopped(server: RedisProcess) -> Iterator[None]:
    """The server stopped (SIGSTOP) inside the block, continued after it."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def probe(http: httpx2.AsyncClient, path: str) -> tuple[httpx2.Response, float]:
    """The answer to ``GET path`` and the seconds it took."""
    started = time.monotonic()
    response = await http.get(path)
    return response, time.monotonic() - started


async def check_hang_and_recovery(
    http: httpx2.AsyncClient, hang: Callable[[], AbstractContextManager[object]], *secrets: str
) -> None:
    """Ready before; while ``hang`` holds: 503 within the bound, healthz 200; ready after."""
    assert (await http.get("/readyz")).status_code == 200
    with hang():
        # Several probes at once (a balancer's and Kubernetes'), then one more.
        answers = await asyncio.gather(*(probe(http, "/readyz") for _ in range(3)))
        answers.append(await probe(http, "/readyz"))
        live, live_seconds = await probe(http, "/healthz")
        for response, seconds in answers:
            assert response.status_code == 503, response.text
            assert seconds < HUNG_ANSWER_BOUND, f"/readyz took {seconds:.2f} s"
            body = response.json()
            assert set(body) == ERROR_KEYS
            assert body["error"] == "SERVICE_UNAVAILABLE"
            assert body["note"] == "the store is not answering"
            assert body["validationErrors"] == []
            assert_reveals_nothing(response, *secrets)
        assert live.status_code == 200
        assert live.json() == OK
        assert live_seconds < 0.5
    # Back: ready again once the store answers (the hung ping may take a moment to end).
    deadline = time.monotonic() + 10
    while (response := await http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, f"/readyz still not ready: {response.text}"
        await asyncio.sleep(0.1)
    assert response.json() == OK


@pytest.mark.redis
@pytest.mark.slow
async def test_readyz_is_503_within_a_second_while_redis_is_stopped(tmp_path: Path) -> None:
    """Redis SIGSTOPped: /readyz 503 within ~1 s, /healthz 200; SIGCONT: /readyz 200 again."""
    with private_redis(tmp_path) as server:
        url = f"redis://{LOOPBACK}:{server.port}/0?records=sqlite:///{tmp_path / 'records.db'}"
        async with app_over(url) as http:
            await check_hang_and_recovery(
                http, lambda: sigstopped(server), str(server.port), "redis", "records.db"
            )


@pytest.mark.postgresql
@pytest.mark.slow
@pytest.mark.parametrize(
    "counters", [pytest.param("postgresql"), pytest.param("redis", marks=pytest.mark.redis)]
)
async def test_readyz_is_503_within_a_second_while_postgresql_is_blackholed(
    counters: str, tmp_path: Path
) -> None:
    """PostgreSQL's traffic dropped (alone, or as Redis's records): /readyz 503 within ~1 s,
    /healthz 200; traffic restored: /readyz 200 again."""
    with postgres_schema() as direct:
        target = urlsplit(direct)
        assert target.hostname is not None
        assert target.port is not None
        redis: AbstractContextManager[RedisProcess | None] = (
            private_redis(tmp_path) if counters == "redis" else nullcontext()
        )
        with BlackholeProxy(target.hostname, target.port) as proxy, redis as server:
            records = with_address(direct, proxy.address)
            url = (
                records
                if server is None
                else f"redis://{LOOPBACK}:{server.port}/0?records={records}"
            )
            async with app_over(url) as http:
                await check_hang_and_recovery(
                    http, proxy.blackholed, str(proxy.port), str(target.port), "postgres"
                )
