"""Every non-2xx answer of quotad carries the contract's error body, and none leaves the host.

The requests go over raw sockets to a real ``quotad serve``: client libraries refuse to
send most of them (an unparsable request line, a made-up method) or would fix them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from quotad.api import server
from quotad.api.app import create_app
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from tests.processes import quotad_serve
from tests.rawhttp import Answer, exchange, parse
from tests.test_server import RecordingTransport, next_turn


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a ``quotad serve`` on the memory store, for the whole module."""
    with quotad_serve("memory://", tmp_path_factory.mktemp("contract")) as server:
        yield int(server.base.rsplit(":", 1)[1])


def get(port: int, target: str, host: str = "evil.example", method: str = "GET") -> Answer:
    """One request with ``Host: host``, on its own connection."""
    request = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return exchange(port, request.encode())


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        "/usage/insights/",
        "/v1/usages/",
        "/healthz/",
        "/admin/v1/accounts/",
        "/docs/",
        "http://evil.example/usage/insights/",  # absolute form
    ],
)
def test_a_trailing_slash_is_404_with_the_error_body_and_never_a_redirect(
    port: int, target: str
) -> None:
    """A path that only differs by its trailing slash is 404 NOT_FOUND, not a 307 to Host."""
    answer = get(port, target)
    assert answer.status == 404, answer
    assert "location" not in answer.headers
    body = answer.error()
    assert body["error"] == "NOT_FOUND"
    if target.endswith("/"):
        assert "trailing slash" in str(body["note"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/",
        "/portal/",
        "/dashboard/static",  # a mount, which Starlette would redirect to its slash
        "http://evil.example/portal/",
    ],
)
def test_a_trailing_slash_in_the_web_ui_is_its_404_page_and_never_a_redirect(
    port: int, target: str
) -> None:
    """Under /dashboard and /portal the 404 is the web UI's own HTML page, not a 307 to Host."""
    answer = get(port, target)
    assert answer.status == 404, answer
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.body.decode()
    assert "Page not found" in page
    if target.endswith("/"):
        assert "ends in a slash" in page


@pytest.mark.slow
def test_the_dashboard_redirects_only_to_its_own_paths(port: int) -> None:
    """The pages' own redirects name a path on this server, whatever ``Host`` says."""
    for target in ("/dashboard", "/portal"):
        answer = get(port, target)
        assert answer.status == 303, answer
        location = answer.headers["location"]
        assert location.startswith("/"), location
        assert not location.startswith("//"), location


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"FOO /healthz HTTP/1.1\r\nHost: quotad\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: quo\x01tad\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: quotad\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: quotad\r\n\r\n",
        b"GET /he\x00althz HTTP/1.1\r\nHost: quotad\r\n\r\n",
    ],
    ids=["garbage", "bad-method", "control-char-in-host", "two-lengths", "version", "nul-in-path"],
)
def test_an_unparsable_request_is_400_with_the_error_body(port: int, request_bytes: bytes) -> None:
    """What the HTTP parser refuses gets 400 BAD_REQUEST in the contract's shape, then a close."""
    answer = exchange(port, request_bytes)
    assert answer.status == 400, answer
    assert answer.error()["error"] == "BAD_REQUEST"
    assert answer.headers["connection"] == "close"
    assert answer.headers["api-version"] == "v1"
    assert len(answer.headers["x-request-id"]) == 32


@pytest.mark.slow
def test_a_good_request_after_the_bad_ones_is_answered(port: int) -> None:
    """The server is unharmed by what it refused."""
    answer = get(port, "/healthz", host="127.0.0.1")
    assert answer.status == 200, answer


async def raising_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that fails before answering."""
    raise RuntimeError("boom")


async def silent_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that returns without answering."""


@pytest.mark.parametrize("app", [raising_app, silent_app], ids=["raises", "no-answer"])
async def test_the_servers_own_500_has_the_error_body(app: Any) -> None:
    """When the app fails to answer, the 500 the server writes is the contract's error body."""
    protocol_class = server.protocol_for(server.Limits())
    config = Config(app=app, http=protocol_class, lifespan="off", log_config=None)
    config.load()
    protocol = protocol_class(config, ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: quotad\r\n\r\n")
    for _ in range(10):
        await next_turn()
    answer = parse(b"".join(transport.writes))
    assert answer.status == 500
    body = answer.error()
    assert body["error"] == "INTERNAL_SERVER_ERROR"
    assert "boom" not in answer.body.decode()
    protocol.connection_lost(None)


class Exploding:
    """Middleware outside quotad's request guard that fails."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Fail for every HTTP request."""
        if scope["type"] == "http":
            raise RuntimeError("outside the guard")
        await self.app(scope, receive, send)


async def test_an_exception_outside_the_request_guard_is_500_with_the_error_body() -> None:
    """Starlette's own last-resort 500 is the contract's error body too."""
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://"))
    app = create_app(ctx, manage_store=False)
    app.add_middleware(Exploding)
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as client:
        response = await client.get("/healthz")
    assert response.status_code == 500
    answer = Answer(500, dict(response.headers), response.content)
    assert answer.error()["error"] == "INTERNAL_SERVER_ERROR"


async def test_a_path_no_route_takes_is_the_contract_404() -> None:
    """A path with a newline (which no route's pattern matches) is 404 with the error body."""
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://"))
    app = create_app(ctx, manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as client:
        response = await client.get("/admin/v1/accounts/a%0Ab")
    assert response.status_code == 404
    answer = Answer(404, dict(response.headers), response.content)
    assert answer.error()["error"] == "NOT_FOUND"
    assert response.headers["x-request-id"]
