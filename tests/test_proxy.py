"""``quotad proxy`` in front of a real upstream process: quota, headers, keys, usage, streaming."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
import pytest

from quotad.asgi import EmbeddedBackend, QuotadMiddleware
from quotad.asgi.forward import forwarded_headers, target_url
from quotad.asgi.proxy import ProxyApp, build_proxy
from quotad.asgi.routes import CostMap, ServiceRoute, service_routes
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
    """``quotad proxy`` in front of ``upstream`` (service insights unless ``options`` name
    theirs); ready once it refuses a key-less call."""
    argv = [str(BIN / "quotad"), "proxy", "--upstream", upstream.base]
    service = () if "--service" in options else ("--service", "insights")
    return Spec([*argv, *service, "--store", store_url, *options], name, "/v1/usages")


@dataclass
class Processes:
    """The upstream and the three proxies in front of it."""

    upstream: Running
    proxy: Running
    keeping: Running
    routed: Running


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory, store_url: str) -> Iterator[Processes]:
    """The stand-in upstream, the default proxy, one with ``--keep-key --cost 2``, and one
    metering only ``/echo/`` with a cost map."""
    upstream = Spec(UPSTREAM, "upstream", "/status/200")
    routed = (
        *("--service", "insights=/echo/", "--service", "insights=/status/"),
        *("--cost", "2", "--cost", "POST /echo/upload=3", "--no-refund"),
    )
    specs = (
        upstream,
        proxy_spec("proxy", upstream, store_url),
        proxy_spec("keeping", upstream, store_url, "--keep-key", "--cost", "2"),
        proxy_spec("routed", upstream, store_url, *routed),
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
    """An upstream 502, 404 or 405 reaches the client unchanged, with headers, and costs nothing."""
    key = new_key(store_url, 2)
    failed = http.get("/status/502", headers=bearer(key))
    assert (failed.status_code, failed.json()) == (502, {"status": 502})
    assert failed.headers["x-ratelimit-remaining"] == "2"
    assert http.get("/usage/insights", headers=bearer(key)).json() == []
    for status in (404, 405):
        missing = http.get(f"/status/{status}", headers=bearer(key))
        assert (missing.status_code, missing.headers["x-ratelimit-remaining"]) == (status, "2")
    assert http.get("/status/400", headers=bearer(key)).status_code == 400  # a 400 is charged
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
        await admin.create_plan(ctx, "p", {"insights": Quota.daily(3)}, [], "")
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


# Services by path, a cost map, refunds of 404, headers kept from the upstream ----------
class Streamed(httpx2.AsyncByteStream):
    """A body the proxy can stream (a plain ``content=`` one is read at construction)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def mock_upstream(seen: list[httpx2.Request]) -> httpx2.MockTransport:
    """An upstream answering its request's method, path and headers (``/status/N``: N)."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        path = request.url.path
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
        body = {"method": request.method, "path": path, "headers": dict(request.headers)}
        return httpx2.Response(
            status,
            headers={"content-type": "application/json"},
            stream=Streamed(orjson.dumps(body)),
        )

    return httpx2.MockTransport(handle)


@pytest.fixture
async def two_services() -> AsyncIterator[tuple[Context, str]]:
    """A memory store with services insights (10 a day) and scoring (10 a day), and a key."""
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://"))
    await ctx.stores.open()
    for name in ("insights", "scoring"):
        await admin.create_service(ctx, name, "")
    await admin.create_plan(
        ctx, "p", {"insights": Quota.daily(10), "scoring": Quota.daily(10)}, [], ""
    )
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = (await admin.create_key(ctx, "acme", "k")).secret
    yield ctx, key
    await ctx.stores.close()


async def used(ctx: Context, service: str) -> int:
    """What acme used of ``service`` today."""
    today = ctx.clock.now().date()
    rows = await ctx.counters.usage("acme", service, today, today)
    return rows[0].used if rows else 0


def proxy_client(app: Any) -> httpx2.AsyncClient:
    """An HTTP client to a proxy app, in process."""
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://proxy")


async def test_services_are_chosen_by_path_and_other_paths_are_404(
    two_services: tuple[Context, str],
) -> None:
    """/insights/… consumes insights, /scoring/… scoring; a path of neither is 404, not relayed."""
    ctx, key = two_services
    seen: list[httpx2.Request] = []
    routes = [ServiceRoute.parse("insights=/insights/"), ServiceRoute.parse("scoring=/scoring/")]
    app = build_proxy(
        "http://up", service=routes, backend=EmbeddedBackend(ctx=ctx), transport=mock_upstream(seen)
    )
    async with proxy_client(app) as client:
        first = await client.get("/insights/ai", headers=bearer(key))
        await client.get("/scoring/x", headers=bearer(key))
        await client.get("/scoring/y", headers=bearer(key))
        other = await client.get("/elsewhere", headers=bearer(key))
        bare = await client.get("/insights", headers=bearer(key))
        usage = await client.get("/usage/scoring", headers=bearer(key))
    assert first.headers["ratelimit-policy"] == '"insights";q=10;w=86400'
    assert (await used(ctx, "insights"), await used(ctx, "scoring")) == (1, 2)
    assert (other.status_code, other.json()["error"]) == (404, "NOT_FOUND")
    assert set(other.json()) == {"error", "id", "note", "validationErrors"}
    assert bare.status_code == 404  # /insights/ covers what is under it, not /insights itself
    assert [request.url.path for request in seen] == ["/insights/ai", "/scoring/x", "/scoring/y"]
    assert usage.json()[0]["used"] == 2


async def test_a_cost_map_prices_routes_by_method_and_path(
    two_services: tuple[Context, str],
) -> None:
    """'POST /insights/search=5', '/insights/reports/=3' and a default of 2, most specific first."""
    ctx, key = two_services
    costs = CostMap.parse(["2", "POST /insights/search=5", "/insights/reports/=3"])
    app = build_proxy(
        "http://up",
        service="insights",
        backend=EmbeddedBackend(ctx=ctx),
        cost=costs,
        transport=mock_upstream([]),
    )
    async with proxy_client(app) as client:
        answers = [
            await client.post("/insights/search", headers=bearer(key)),  # 5
            await client.get("/insights/search", headers=bearer(key)),  # 2: another method
            await client.get("/insights/reports/q1", headers=bearer(key)),  # 3
        ]
        refused = await client.post("/insights/search", headers=bearer(key))  # 5 > 0 left
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["5", "3", "0"]
    assert (refused.status_code, refused.json()["error"]) == (429, "QUOTA_EXCEEDED")
    assert await used(ctx, "insights") == 10


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("GET /x /y=1", "PATH=UNITS"),
        ("/x", ">= 0"),
        ("x=1", "must start with /"),
        ("/x=-1", ">= 0"),
        ("/x=two", ">= 0"),
        ("P0ST /x=1", "not an HTTP method"),
    ],
)
def test_bad_cost_specs_are_refused_with_the_reason(spec: str, problem: str) -> None:
    """A --cost value that is not UNITS or '[METHOD ]PATH=UNITS' raises a ValueError saying why."""
    with pytest.raises(ValueError, match=re.escape(problem)):
        CostMap.parse([spec])


def test_the_most_specific_cost_rule_wins() -> None:
    """Exact path over prefix, longer prefix over shorter, a named method over any method."""
    costs = CostMap.parse(
        ["/v1/=2", "/v1/search/=3", "/v1/search/deep=4", "POST /v1/search/=5", "7"]
    )
    assert costs.cost("GET", "/v1/other") == 2
    assert costs.cost("GET", "/v1/search/x") == 3
    assert costs.cost("POST", "/v1/search/x") == 5
    assert costs.cost("POST", "/v1/search/deep") == 4
    assert costs.cost("GET", "/v1") == 7  # /v1/ covers what is under it, not /v1 itself
    assert costs.cost("GET", "/elsewhere") == 7
    assert CostMap.parse([]).cost("GET", "/") == 1


def test_two_services_on_one_path_are_refused() -> None:
    """service_routes refuses the same path for two services, and no service at all."""
    with pytest.raises(ValueError, match="two services"):
        service_routes(["a=/x/", "b=/x/"])
    with pytest.raises(ValueError, match="at least one"):
        service_routes([])
    assert service_routes(["insights"]) == [ServiceRoute("insights", "/")]


async def test_an_upstream_404_or_405_is_refunded_and_400_is_not(
    two_services: tuple[Context, str],
) -> None:
    """404 and 405 from the upstream cost nothing (headers say so); a 400 is charged."""
    ctx, key = two_services
    app = build_proxy(
        "http://up",
        service="insights",
        backend=EmbeddedBackend(ctx=ctx),
        transport=mock_upstream([]),
    )
    async with proxy_client(app) as client:
        missing = await client.get("/status/404", headers=bearer(key))
        method = await client.get("/status/405", headers=bearer(key))
        assert await used(ctx, "insights") == 0
        bad = await client.get("/status/400", headers=bearer(key))
    assert [a.status_code for a in (missing, method, bad)] == [404, 405, 400]
    assert [a.headers["x-ratelimit-remaining"] for a in (missing, method, bad)] == ["10", "10", "9"]
    assert await used(ctx, "insights") == 1


async def test_include_quota_is_answered_by_the_proxy_and_not_forwarded(
    two_services: tuple[Context, str],
) -> None:
    """X-Quotad-Include-Quota adds the quota object; the upstream never sees the header."""
    ctx, key = two_services
    seen: list[httpx2.Request] = []
    app = build_proxy(
        "http://up",
        service="insights",
        backend=EmbeddedBackend(ctx=ctx),
        transport=mock_upstream(seen),
    )
    async with proxy_client(app) as client:
        answer = await client.get(
            "/echo", headers={**bearer(key), "X-Quotad-Include-Quota": "true", "X-Other": "1"}
        )
    assert answer.json()["quota"]["used"] == 1
    assert "x-quotad-include-quota" not in seen[0].headers
    assert seen[0].headers["x-other"] == "1"


async def test_the_upstreams_docs_are_relayed_unmetered(two_services: tuple[Context, str]) -> None:
    """/docs and /openapi.json reach the upstream without a key, whatever the services' paths."""
    ctx, _key = two_services
    seen: list[httpx2.Request] = []
    app = build_proxy(
        "http://up",
        service=[ServiceRoute("insights", "/insights/")],
        backend=EmbeddedBackend(ctx=ctx),
        transport=mock_upstream(seen),
    )
    async with proxy_client(app) as client:
        answers = [await client.get(path) for path in ("/docs", "/openapi.json", "/redoc")]
        metered = await client.get("/insights/docs")
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert "x-ratelimit-remaining" not in answers[0].headers
    assert [r.url.path for r in seen] == ["/docs", "/openapi.json", "/redoc"]
    assert (metered.status_code, metered.json()["error"]) == (401, "MISSING_API_KEY")


@pytest.mark.slow
def test_the_cli_routes_by_service_path_and_prices_by_cost_map(
    processes: Processes, store_url: str
) -> None:
    """--service insights=/echo/ (and /status/) --cost 2 --cost 'POST /echo/upload=3'
    --no-refund: priced per route, other paths 404, an upstream 404 charged."""
    key = new_key(store_url, 10)
    with httpx2.Client(base_url=processes.routed.base, timeout=30) as http:
        get = http.get("/echo/a", headers=bearer(key))
        post = http.post("/echo/upload", content=b"x", headers=bearer(key))
        missing = http.get("/status/404", headers=bearer(key))
        outside = http.get("/bytes/10", headers=bearer(key))
        docs = http.get("/docs")
    assert (get.status_code, get.headers["x-ratelimit-remaining"]) == (200, "8")
    assert (post.status_code, post.headers["x-ratelimit-remaining"]) == (200, "5")
    assert (missing.status_code, missing.headers["x-ratelimit-remaining"]) == (404, "3")
    assert (outside.status_code, outside.json()["error"]) == (404, "NOT_FOUND")
    assert "x-ratelimit-remaining" not in docs.headers  # relayed unmetered, the upstream's 404
    assert docs.status_code == 404


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (("--service", "insights=docs"), "must start with /"),
        (("--service", "a=/x/", "--service", "b=/x/"), "two services"),
        (("--service", "insights", "--cost", "GET /x=lots"), ">= 0"),
        (("--service", "insights", "--cost", "1", "--cost", "2"), "given twice"),
    ],
)
def test_bad_proxy_options_exit_2_with_the_reason(options: tuple[str, ...], problem: str) -> None:
    """quotad proxy refuses bad --service and --cost values before opening anything."""
    result = subprocess.run(
        [str(BIN / "quotad"), "proxy", "--upstream", "http://127.0.0.1:9", *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert problem in " ".join(result.stderr.split()), result.stderr


@pytest.mark.slow
def test_the_cost_header_option_reserves_and_settles(
    store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``quotad proxy --cost-header``: a call whose upstream names no cost commits the
    reserved one; an upstream 5xx gives the reservation back."""
    upstream = Spec(UPSTREAM, "upstream", "/status/200")
    settled = proxy_spec("settled", upstream, store_url, "--cost", "5", "--cost-header", "x-tokens")
    with running_all(tmp_path_factory.mktemp("settled"), upstream, settled) as [_up, proxy]:
        key = new_key(store_url, 100)
        with httpx2.Client(base_url=proxy.base, timeout=30) as client:
            assert client.get("/echo/x", headers=bearer(key)).status_code == 200
            assert client.get("/status/503", headers=bearer(key)).status_code == 503
            [today] = client.get("/usage/insights", headers=bearer(key)).json()
    assert (today["used"], today["remaining"]) == (5, 95)
