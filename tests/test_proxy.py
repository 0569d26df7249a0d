"""``quotad proxy`` in front of a real upstream process: quota, headers, keys, usage, streaming."""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from quotad.asgi import EmbeddedBackend, QuotadMiddleware
from quotad.asgi.forward import forwarded_headers, target_url
from quotad.asgi.proxy import ProxyApp, build_proxy
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from tests.processes import (
    BIN,
    ROOT,
    Running,
    Spec,
    free_port,
    memory_status,
    provision_store,
    running_all,
)

MB = 1024 * 1024
UPSTREAM = [sys.executable, str(ROOT / "examples" / "upstream_api.py")]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store the proxies share, its schema created."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'quotad.db'}"
    provision_store(url, "warmup", 1)
    return url


def proxy_spec(name: str, upstream: Spec, store_url: str, *options: str) -> Spec:
    """``quotad proxy`` in front of ``upstream``; ready once it refuses a key-less call."""
    argv = [str(BIN / "quotad"), "proxy", "--upstream", upstream.base, "--service", "insights"]
    return Spec([*argv, "--store", store_url, *options], name, "/v1/usages")


@dataclass
class Processes:
    """The upstream and the two proxies in front of it."""

    upstream: Running
    proxy: Running
    keeping: Running


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory, store_url: str) -> Iterator[Processes]:
    """The stand-in upstream, the default proxy, and one with ``--keep-key --cost 2``."""
    upstream = Spec(UPSTREAM, "upstream", "/status/200")
    specs = (
        upstream,
        proxy_spec("proxy", upstream, store_url),
        proxy_spec("keeping", upstream, store_url, "--keep-key", "--cost", "2"),
    )
    with running_all(tmp_path_factory.mktemp("proxy"), *specs) as handles:
        yield Processes(*handles)


@pytest.fixture(scope="module")
def upstream(processes: Processes) -> Running:
    """The stand-in API of examples/upstream_api.py."""
    return processes.upstream


@pytest.fixture(scope="module")
def proxy(processes: Processes) -> Running:
    """The proxy with its defaults: cost 1, the customer's key stripped."""
    return processes.proxy


@pytest.fixture
def http(proxy: Running) -> Iterator[httpx2.Client]:
    """A client to the default proxy."""
    with httpx2.Client(base_url=proxy.base, timeout=30) as client:
        yield client


def new_key(store_url: str, total: int) -> str:
    """A fresh account with ``total`` insights a day; its key."""
    return provision_store(store_url, f"a{uuid.uuid4().hex[:10]}", total)


def bearer(key: str) -> dict[str, str]:
    """The key as a bearer token."""
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.slow
def test_quota_is_enforced_per_key_with_headers(store_url: str, http: httpx2.Client) -> None:
    """Three calls of a quota of three reach the upstream with quota headers; the fourth is 429."""
    key, other = new_key(store_url, 3), new_key(store_url, 3)
    answers = [http.get(f"/echo/item/{n}", params={"q": n}, headers=bearer(key)) for n in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[1].json()["path"] == "/echo/item/1"
    assert answers[1].json()["query"] == "q=1"
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == '"insights";q=3;w=86400'
        assert answer.headers["ratelimit"].startswith('"insights";r=')
        assert int(answer.headers["x-ratelimit-reset"]) > 0
    assert answers[3].json()["error"] == "QUOTA_EXCEEDED"
    assert int(answers[3].headers["retry-after"]) >= 1
    assert http.get("/echo", headers=bearer(other)).status_code == 200  # another key, its own quota
    missing = http.get("/echo")
    assert (missing.status_code, missing.json()["error"]) == (401, "MISSING_API_KEY")


@pytest.mark.slow
def test_the_customers_key_is_stripped_before_forwarding(
    store_url: str, upstream: Running, proxy: Running, http: httpx2.Client
) -> None:
    """Neither Authorization nor x-api-key reaches the upstream; other headers do."""
    key = new_key(store_url, 5)
    for headers in (bearer(key), {"x-api-key": key}):
        seen = http.get("/echo", headers={**headers, "X-Custom": "kept"}).json()["headers"]
        assert "authorization" not in seen
        assert "x-api-key" not in seen
        assert seen["x-custom"] == "kept"
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["host"] == upstream.base.removeprefix("http://")
        assert seen["x-forwarded-host"] == proxy.base.removeprefix("http://")


@pytest.mark.slow
def test_keep_key_forwards_the_key_and_cost_is_configurable(
    processes: Processes, store_url: str
) -> None:
    """With --keep-key --cost 2 the upstream sees the key and each call takes two units."""
    key = new_key(store_url, 5)
    with httpx2.Client(base_url=processes.keeping.base, timeout=30) as http:
        answer = http.get("/echo", headers={"x-api-key": key})
        assert answer.json()["headers"]["x-api-key"] == key
        assert answer.headers["x-ratelimit-remaining"] == "3"
        assert (
            http.get("/echo", headers=bearer(key)).json()["headers"]["authorization"]
            == f"Bearer {key}"
        )
        assert http.get("/echo", headers=bearer(key)).status_code == 429  # 1 left, 2 needed


@pytest.mark.slow
def test_the_proxy_serves_the_usage_endpoints_itself(store_url: str, http: httpx2.Client) -> None:
    """/v1/usages and /usage/insights come from quotad, unmetered, not from the upstream."""
    key = new_key(store_url, 10)
    http.get("/echo", headers=bearer(key))
    lines = http.get("/v1/usages", headers=bearer(key)).json()
    assert {
        "description": "Daily insights queries",
        "limit": 10,
        "name": "insights.daily_queries",
        "usage": 1,
    } in lines
    [today] = http.get("/usage/insights", headers={"x-api-key": key}).json()
    assert (today["used"], today["remaining"], today["total"]) == (1, 9, 10)
    bad = http.get("/usage/insights", headers={"x-api-key": "qd_bad"})
    assert (bad.status_code, bad.json()["error"]) == (403, "MALFORMED_API_KEY")
    assert http.get("/echo", headers=bearer(key)).headers["x-ratelimit-remaining"] == "8"


@pytest.mark.slow
def test_upstream_server_errors_pass_through_and_are_refunded(
    store_url: str, http: httpx2.Client
) -> None:
    """An upstream 502 reaches the client unchanged, with headers, and costs nothing."""
    key = new_key(store_url, 2)
    failed = http.get("/status/502", headers=bearer(key))
    assert (failed.status_code, failed.json()) == (502, {"status": 502})
    assert failed.headers["x-ratelimit-remaining"] == "2"
    assert http.get("/usage/insights", headers=bearer(key)).json() == []
    assert http.get("/status/404", headers=bearer(key)).status_code == 404  # a 4xx is charged
    assert http.get("/echo", headers=bearer(key)).headers["x-ratelimit-remaining"] == "0"


@pytest.mark.slow
def test_a_request_body_is_streamed_to_the_upstream(store_url: str, http: httpx2.Client) -> None:
    """A 5 MB upload arrives whole and intact, sent in chunks of unknown total length."""
    key = new_key(store_url, 5)
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(block * 5).hexdigest()
    answer = http.post(
        "/echo/upload",
        content=(block for _ in range(5)),
        headers={**bearer(key), "content-type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["body_bytes"], answer.json()["body_sha256"]) == (5 * MB, digest)
    assert answer.json()["method"] == "POST"


@pytest.mark.slow
def test_a_50mb_response_streams_through_with_bounded_memory(
    store_url: str, proxy: Running, http: httpx2.Client
) -> None:
    """50 MB pass through the proxy while its resident memory grows by far less than that."""
    key = new_key(store_url, 10)
    with http.stream("GET", "/bytes/1048576", headers=bearer(key)) as warmup:
        assert sum(len(c) for c in warmup.iter_raw()) == MB
    before = memory_status(proxy.pid)
    size = 50 * MB
    received = 0
    with http.stream("GET", f"/bytes/{size}", headers=bearer(key)) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(size)
        assert answer.headers["x-ratelimit-remaining"] == "8"
        for chunk in answer.iter_raw():
            received += len(chunk)
    after = memory_status(proxy.pid)
    growth = (after["VmRSS"] - before["VmRSS"]) / 1024
    peak_growth = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(
        f"proxy RSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MiB "
        f"(growth {growth:.1f} MiB, peak growth {peak_growth:.1f} MiB) for a 50 MiB stream"
    )
    assert received == size
    assert growth < 15, (before, after)
    assert peak_growth < 15, (before, after)


# In process ----------------------------------------------------------------------------
def test_target_url_keeps_the_upstream_prefix_and_the_raw_query() -> None:
    """The upstream's base path prefixes the request's raw path; the query is kept as sent."""
    scope = {"path": "/a b", "raw_path": b"/a%20b", "query_string": b"x=1&y=%2F"}
    url = target_url(httpx2.URL("http://up:9000/api/"), scope)
    assert str(url) == "http://up:9000/api/a%20b?x=1&y=%2F"


def test_forwarded_headers_drop_hop_by_hop_and_chosen_headers() -> None:
    """Connection-level headers and dropped ones are removed; X-Forwarded-* are added."""
    scope: dict[str, Any] = {
        "headers": [
            (b"host", b"proxy:8081"),
            (b"connection", b"keep-alive"),
            (b"authorization", b"Bearer k"),
            (b"x-api-key", b"k"),
            (b"accept", b"*/*"),
        ],
        "client": ("10.0.0.1", 5000),
        "scheme": "https",
    }
    headers = dict(forwarded_headers(scope, drop=(b"authorization", b"x-api-key")))
    assert headers == {
        b"accept": b"*/*",
        b"x-forwarded-for": b"10.0.0.1",
        b"x-forwarded-proto": b"https",
        b"x-forwarded-host": b"proxy:8081",
    }


async def test_an_unreachable_upstream_answers_502_and_is_refunded() -> None:
    """A dead upstream gives 502 with the contract's body, and the unit is given back."""
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://"))
    await ctx.stores.open()
    try:
        await admin.create_service(ctx, "insights", "")
        await admin.create_plan(ctx, "p", {"insights": Quota(3)}, [], "")
        await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
        key = (await admin.create_key(ctx, "acme", "k")).secret
        backend = EmbeddedBackend(ctx=ctx)
        relay = ProxyApp(f"http://127.0.0.1:{free_port()}", timeout=2)
        app = QuotadMiddleware(relay, service="insights", backend=backend)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
            answer = await client.get("/anything", headers=bearer(key))
        await relay.aclose()
        assert answer.status_code == 502
        assert answer.json()["error"] == "SERVICE_UNAVAILABLE"
        today = backend.now().date()
        assert [row.used for row in await ctx.counters.usage("acme", "insights", today, today)] in (
            [],
            [0],
        )
    finally:
        await ctx.stores.close()


async def test_build_proxy_serves_usage_endpoints_in_front_of_the_relay() -> None:
    """build_proxy's app answers /v1/usages itself (here: 401 without a key, quotad's body)."""
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://"))
    await ctx.stores.open()
    try:
        app = build_proxy(
            "http://127.0.0.1:9", service="insights", backend=EmbeddedBackend(ctx=ctx)
        )
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
            answer = await client.get("/v1/usages")
        assert (answer.status_code, answer.json()["error"]) == (401, "MISSING_API_KEY")
        assert answer.headers["api-version"] == "v1"
    finally:
        await ctx.stores.close()
