"""QuotadMiddleware: the FastAPI example app over HTTP (embedded and remote), and ASGI details."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from quotad.api.app import create_app
from quotad.asgi import EmbeddedBackend, QuotadMiddleware, RemoteBackend, mount_usage_endpoints
from quotad.domain import keys
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from tests.conftest import ADMIN_TOKEN as TEST_TOKEN
from tests.conftest import Example, make_settings
from tests.processes import (
    free_port,
)

QUOTA_HEADERS = (
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
ERROR_KEYS = {"error", "id", "note", "validationErrors"}


@pytest.fixture
def http(example: Example) -> Iterator[httpx2.Client]:
    """A client to the example app."""
    with httpx2.Client(base_url=example.app.base, timeout=10) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    """The key as a bearer token."""
    return {"Authorization": f"Bearer {key}"}


def remaining(response: httpx2.Response) -> int:
    """``X-RateLimit-Remaining`` of an answer."""
    return int(response.headers["x-ratelimit-remaining"])


# Over HTTP, embedded and remote --------------------------------------------------------
@pytest.mark.slow
def test_calls_pass_until_the_quota_then_429_with_headers_on_every_answer(
    example: Example, http: httpx2.Client
) -> None:
    """Three calls of a quota of 3 pass (either key header), the next ones are 429 QUOTA_EXCEEDED."""
    key = example.provision(3)
    answers = [
        http.get("/insights/ai", headers=bearer(key)),
        http.get("/insights/bio", headers={"x-api-key": key}),
        http.get("/insights/chem", headers=bearer(key)),
        http.get("/insights/ai", headers=bearer(key)),
        http.get("/insights/ai", headers={"x-api-key": key}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert [remaining(a) for a in answers] == [2, 1, 0, 0, 0]
    for answer in answers:
        assert all(name in answer.headers for name in QUOTA_HEADERS), answer.headers
        assert answer.headers["x-ratelimit-limit"] == "3"
        assert answer.headers["ratelimit-policy"] == '"insights";q=3;w=86400'
        assert answer.headers["ratelimit"].startswith('"insights";r=')
    assert answers[0].json()["topic"] == "ai"
    refused = answers[3]
    assert set(refused.json()) == ERROR_KEYS
    assert refused.json()["error"] == "QUOTA_EXCEEDED"
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_cost_is_a_function_of_the_request(example: Example, http: httpx2.Client) -> None:
    """/reports costs 5 and is refused whole when fewer are left; free routes need no key."""
    key = example.provision(7)
    report = http.get("/reports", headers=bearer(key))
    assert (report.status_code, remaining(report)) == (200, 2)
    refused = http.get("/reports", headers=bearer(key))
    assert (refused.status_code, remaining(refused)) == (429, 2)
    assert remaining(http.get("/insights/x", headers=bearer(key))) == 1
    free = http.get("/healthz")
    assert free.status_code == 200
    assert "x-ratelimit-remaining" not in free.headers


@pytest.mark.slow
def test_key_problems_answer_401_with_the_contract_error_body(
    example: Example, http: httpx2.Client
) -> None:
    """Missing, malformed, unknown and unparseable keys get 401 with their precise code."""
    cases = [
        ({}, "MISSING_API_KEY"),
        ({"x-api-key": "qd_short"}, "MALFORMED_API_KEY"),
        (bearer(keys.generate("qd")), "INVALID_AUTHORIZATION"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "INVALID_AUTHORIZATION"),
    ]
    for headers, code in cases:
        answer = http.get("/insights/ai", headers=headers)
        assert answer.status_code == 401, (code, answer.text)
        body = answer.json()
        assert set(body) == ERROR_KEYS
        assert (body["error"], body["validationErrors"]) == (code, [])
        assert uuid.UUID(body["id"])


@pytest.mark.slow
def test_server_errors_are_refunded(example: Example, http: httpx2.Client) -> None:
    """A 503 from the app gives the unit back before the client sees it; the headers say so."""
    key = example.provision(2)
    failed = http.get("/unstable", headers=bearer(key))
    assert failed.status_code == 503
    assert failed.json() == {"detail": "upstream model is warming up"}
    assert remaining(failed) == 2
    assert http.get("/usage/insights", headers=bearer(key)).json() == []  # nothing used today
    assert remaining(http.get("/insights/a", headers=bearer(key))) == 1
    assert remaining(http.get("/insights/b", headers=bearer(key))) == 0


@pytest.mark.slow
def test_mounted_usage_endpoints_answer_like_quotad(example: Example, http: httpx2.Client) -> None:
    """/v1/usages and /usage/insights answer in the seeds' shapes and are not metered."""
    key = example.provision(10)
    for _ in range(2):
        http.get("/insights/ai", headers=bearer(key))
    lines = http.get("/v1/usages", headers={"x-api-key": key})
    assert lines.status_code == 200
    quota = next(x for x in lines.json() if x["name"] == "insights.daily_queries")
    assert quota == {
        "description": "Daily insights queries",
        "limit": 10,
        "name": "insights.daily_queries",
        "usage": 2,
    }
    days = http.get("/usage/insights", headers=bearer(key), params={"include_quota": "true"})
    [today] = days.json()
    assert set(today) == {"used", "remaining", "total", "date"}
    assert (today["used"], today["remaining"], today["total"]) == (2, 8, 10)
    assert days.headers["api-version"] == "v1"
    bad = http.get("/usage/insights", headers={"x-api-key": "qd_short"})
    assert (bad.status_code, bad.json()["error"]) == (403, "MALFORMED_API_KEY")
    early = http.get("/usage/insights", headers=bearer(key), params={"end_date": "2024-01-01"})
    assert (early.status_code, early.json()["error"]) == (400, "VALIDATION_FAILED")
    assert remaining(http.get("/insights/ai", headers=bearer(key))) == 7


@pytest.mark.slow
def test_include_quota_adds_a_quota_object_to_json_answers(
    example: Example, http: httpx2.Client
) -> None:
    """The header or the query flag adds {used, remaining, total, reset}; others are untouched."""
    key = example.provision(5)
    plain = http.get("/insights/ai", headers=bearer(key))
    assert "quota" not in plain.json()
    by_header = http.get("/insights/ai", headers={**bearer(key), "X-Quotad-Include-Quota": "true"})
    quota = by_header.json()["quota"]
    assert (quota["used"], quota["remaining"], quota["total"]) == (2, 3, 5)
    assert quota["reset"].endswith("Z")
    assert by_header.json()["topic"] == "ai"
    assert int(by_header.headers["content-length"]) == len(by_header.content)
    by_query = http.get("/insights/bio", headers=bearer(key), params={"include_quota": "true"})
    assert by_query.json()["quota"] == {**quota, "used": 3, "remaining": 2}
    csv = http.get(
        "/insights-export.csv", headers={**bearer(key), "X-Quotad-Include-Quota": "true"}
    )
    assert csv.text == "topic,score\nai,42\n"
    assert remaining(csv) == 1
    refused = http.get("/reports", headers=bearer(key), params={"include_quota": "true"})
    assert refused.status_code == 429
    assert set(refused.json()) == ERROR_KEYS


# In process: ASGI details --------------------------------------------------------------
class KeyedBackend(EmbeddedBackend):
    """An embedded backend that also holds the key of its one account."""

    key = ""


@pytest.fixture
async def backend() -> AsyncIterator[KeyedBackend]:
    """An embedded backend on the memory store with one account (insights: 3 a day)."""
    settings = Settings(_env_file=None, store_url="memory://")
    ctx = Context(stores_from_url("memory://"), settings)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "p", {"insights": Quota.daily(3)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    embedded = KeyedBackend(ctx=ctx)
    embedded.key = (await admin.create_key(ctx, "acme", "k")).secret
    yield embedded
    await ctx.stores.close()


async def boom(_request: Any) -> JSONResponse:
    """An endpoint that raises."""
    raise RuntimeError("boom")


async def hello(_request: Any) -> JSONResponse:
    """A JSON answer."""
    return JSONResponse({"hello": "world"})


def starlette_app(backend: KeyedBackend, **options: Any) -> Any:
    """A bare Starlette app behind the middleware, with the usage endpoints mounted."""
    app = Starlette(routes=[Route("/hello", hello), Route("/boom", boom)])
    app.add_middleware(QuotadMiddleware, service="insights", backend=backend, **options)
    mount_usage_endpoints(app, backend)
    return app


async def used_today(backend: KeyedBackend) -> int:
    """What account acme used today."""
    rows = await backend.ctx.counters.usage("acme", "insights", *([backend.now().date()] * 2))
    return rows[0].used if rows else 0


async def test_an_exception_in_the_app_is_refunded(backend: KeyedBackend) -> None:
    """When the app raises, the unit is given back and the exception goes on."""
    app = starlette_app(backend)
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = await client.get("/boom", headers=bearer(backend.key))
        assert answer.status_code == 500
        assert await used_today(backend) == 0
        assert (await client.get("/hello", headers=bearer(backend.key))).status_code == 200
        assert await used_today(backend) == 1


async def test_refunds_can_be_turned_off(backend: KeyedBackend) -> None:
    """With refund_on_error=False a failing call still costs its unit."""
    app = starlette_app(backend, refund_on_error=False)
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.get("/boom", headers=bearer(backend.key))
    assert await used_today(backend) == 1


async def test_non_http_scopes_pass_through_untouched(backend: KeyedBackend) -> None:
    """A websocket scope reaches the app without a key or a consume."""
    seen: list[str] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.append(scope["type"])

    middleware = QuotadMiddleware(app, service="insights", backend=backend)
    await middleware({"type": "websocket", "path": "/ws", "headers": []}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket"]
    assert await used_today(backend) == 0


async def test_lifespan_passes_through_and_shutdown_closes_the_backend(tmp_path: Path) -> None:
    """The app sees the lifespan; the middleware opens its store at startup and closes it after."""
    backend = EmbeddedBackend(f"sqlite:///{tmp_path / 'q.db'}", settings=Settings(_env_file=None))
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        await backend.ctx.stores.ping()  # opened before the app's own startup
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        await send({"type": "lifespan.shutdown.complete"})

    await QuotadMiddleware(app, service="insights", backend=backend)(
        {"type": "lifespan"}, receive, send
    )
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert (tmp_path / "q.db").exists()


async def test_an_unreachable_quotad_answers_503() -> None:
    """A remote backend whose server is down refuses with 503 SERVICE_UNAVAILABLE."""
    remote = RemoteBackend(f"http://127.0.0.1:{free_port()}", "token", timeout=1)
    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(QuotadMiddleware, service="insights", backend=remote)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = await client.get("/hello", headers=bearer(keys.generate("qd")))
    await remote.close()
    assert answer.status_code == 503
    assert answer.json()["error"] == "SERVICE_UNAVAILABLE"


async def test_an_unknown_service_gets_quotads_own_answer(backend: KeyedBackend) -> None:
    """Metering a service quotad does not know answers quotad's 404, embedded and remote alike."""
    ctx = Context(stores_from_url("memory://"), make_settings("memory://"))
    await ctx.stores.open()
    quotad = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
    remote = RemoteBackend("http://quotad", TEST_TOKEN, transport=quotad)
    for chosen in (backend, remote):
        app = Starlette(routes=[Route("/hello", hello)])
        app.add_middleware(QuotadMiddleware, service="nope", backend=chosen)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.get("/hello", headers=bearer(backend.key))
        assert (answer.status_code, answer.json()["error"]) == (404, "NOT_FOUND")
        assert set(answer.json()) == ERROR_KEYS
    await remote.close()
    await ctx.stores.close()


async def test_a_json_body_over_the_buffer_limit_passes_unchanged(backend: KeyedBackend) -> None:
    """A streamed JSON answer larger than max_quota_buffer is relayed as it is."""
    chunks = [b'{"a": "', b"x" * 100, b'"}']

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        for n, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": n < 2})

    middleware = QuotadMiddleware(app, service="insights", backend=backend, max_quota_buffer=50)
    transport = httpx2.ASGITransport(app=middleware)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = await client.get("/big?include_quota=true", headers=bearer(backend.key))
        assert answer.content == b"".join(chunks)
    small = QuotadMiddleware(app, service="insights", backend=backend)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=small), base_url="http://app"
    ) as client:
        answer = await client.get("/big?include_quota=yes", headers=bearer(backend.key))
    assert answer.json()["quota"]["used"] == 2


# Excluded paths and refunds of 404/405 ---------------------------------------------------
async def status_of(request: Any) -> JSONResponse:
    """An answer with the status in the path."""
    code = int(request.path_params["code"])
    return JSONResponse({"status": code}, status_code=code)


def fastapi_app(backend: KeyedBackend, **options: Any) -> Any:
    """A FastAPI app (its /docs, /redoc, /openapi.json on) behind the middleware."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        """A metered route."""
        return {"item": item}

    app.add_route("/status/{code:int}", status_of)
    app.add_middleware(QuotadMiddleware, service="insights", backend=backend, **options)
    return app


async def test_the_apps_api_docs_are_free_and_need_no_key(backend: KeyedBackend) -> None:
    """/docs, /docs/oauth2-redirect, /redoc and /openapi.json answer without a key, for free."""
    transport = httpx2.ASGITransport(app=fastapi_app(backend))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        answers = [
            await client.get(path)
            for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
        ]
        with_key = await client.get("/openapi.json", headers=bearer(backend.key))
        metered = await client.get("/items/a")
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert "/items/{item}" in answers[3].json()["paths"]
    assert all("x-ratelimit-remaining" not in a.headers for a in [*answers, with_key])
    assert await used_today(backend) == 0
    assert (metered.status_code, metered.json()["error"]) == (401, "MISSING_API_KEY")


async def test_exclude_paths_replace_the_defaults_and_take_prefixes(backend: KeyedBackend) -> None:
    """exclude_paths=["/items/"] frees what is under it only, and meters the docs again."""
    app = fastapi_app(backend, exclude_paths=["/items/"])
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        free = await client.get("/items/x")
        exact = await client.get("/items")
        docs = await client.get("/docs")
    assert free.status_code == 200
    assert "x-ratelimit-remaining" not in free.headers
    assert exact.status_code == 401
    assert (docs.status_code, docs.json()["error"]) == (401, "MISSING_API_KEY")
    with pytest.raises(ValueError, match="must start with /"):
        QuotadMiddleware(hello, service="insights", backend=backend, exclude_paths=["docs"])


async def test_404_and_405_are_refunded_other_4xx_are_charged(backend: KeyedBackend) -> None:
    """An unknown route (404), a wrong method (405) cost nothing and say so; a 400 costs 1."""
    transport = httpx2.ASGITransport(app=fastapi_app(backend))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        unknown = await client.get("/nowhere", headers=bearer(backend.key))
        method = await client.post("/items/a", headers=bearer(backend.key))
        gone = await client.get("/status/404", headers=bearer(backend.key))
        assert await used_today(backend) == 0
        bad = await client.get("/status/400", headers=bearer(backend.key))
    assert [a.status_code for a in (unknown, method, gone, bad)] == [404, 405, 404, 400]
    assert [remaining(a) for a in (unknown, method, gone, bad)] == [3, 3, 3, 2]
    assert await used_today(backend) == 1


async def test_refund_statuses_are_configurable(backend: KeyedBackend) -> None:
    """refund_statuses=() charges a 404; {400} refunds a 400; a 5xx is refused as a 4xx choice."""
    transport = httpx2.ASGITransport(app=fastapi_app(backend, refund_statuses=()))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.get("/nowhere", headers=bearer(backend.key))
    assert await used_today(backend) == 1
    transport = httpx2.ASGITransport(app=fastapi_app(backend, refund_statuses={400}))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.get("/status/400", headers=bearer(backend.key))
        await client.get("/status/404", headers=bearer(backend.key))
    assert await used_today(backend) == 2
    with pytest.raises(ValueError, match="4xx"):
        QuotadMiddleware(hello, service="insights", backend=backend, refund_statuses={503})


async def test_an_app_raising_after_a_refunded_404_is_refunded_once(backend: KeyedBackend) -> None:
    """A 404 start followed by an exception gives the unit back once, not twice."""
    await backend.consume(backend.key, "insights", 1)  # so a double refund would show

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        raise RuntimeError("after the start")

    middleware = QuotadMiddleware(app, service="insights", backend=backend)
    transport = httpx2.ASGITransport(app=middleware, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.get("/x", headers=bearer(backend.key))
    assert await used_today(backend) == 1


async def test_a_cost_map_is_the_middlewares_cost(backend: KeyedBackend) -> None:
    """cost=CostMap.parse(["2", "GET /items/cheap=1"]) prices each route as the proxy would."""
    from quotad.asgi import CostMap

    app = fastapi_app(backend, cost=CostMap.parse(["2", "GET /items/cheap=1"]))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        cheap = await client.get("/items/cheap", headers=bearer(backend.key))
        dear = await client.get("/items/dear", headers=bearer(backend.key))
    assert [remaining(cheap), remaining(dear)] == [2, 0]
