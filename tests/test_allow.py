"""Every 405 carries ``Allow`` with every method its path takes (RFC 9110, issue 17).

The API's paths are those of the committed OpenAPI document (one route per method, so
Starlette's own 405 would name only the first route's methods), ``/v1/verify`` answers its
own 405, and the web UI's pages answer theirs as HTML.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from tests.conftest import OPERATOR

SPEC = json.loads((Path(__file__).parent.parent / "openapi.json").read_text())
EXAMPLE_VALUES = {
    "account_id": "acme",
    "service": "insights",
    "name": "cohort.max_count",
    "key_id": "key_x",
    "plan_id": "free",
}
PROBES = ["TRACE", "OPTIONS", "HEAD", "PATCH", "PUT", "DELETE", "POST", "GET"]


def _concrete(path: str) -> str:
    for name, value in EXAMPLE_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


PROBES = {"/healthz", "/readyz"}  # the health checks also take HEAD (load balancers use it)


def _api_paths() -> list[tuple[str, set[str]]]:
    """Each documented path with the methods it takes (FastAPI adds no HEAD to a GET)."""
    return [
        (path, {m.upper() for m in operations} | ({"HEAD"} if path in PROBES else set()))
        for path, operations in SPEC["paths"].items()
    ]


API_PATHS = _api_paths()
WEB_PATHS = [
    ("/dashboard/login", {"GET", "HEAD", "POST"}),
    ("/dashboard/accounts", {"GET", "HEAD", "POST"}),  # POST: create an account
    ("/portal/logout", {"POST"}),
]


@pytest.fixture
def stores() -> Stores:
    """Routing alone is tested: the memory store, empty."""
    return Stores.of(MemoryStore())


def _allow(response: httpx2.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize(("path", "methods"), API_PATHS, ids=[p for p, _ in API_PATHS])
async def test_api_405_lists_every_method_of_the_path(
    client: httpx2.AsyncClient, path: str, methods: set[str]
) -> None:
    """Each method a documented path does not take is a 405 whose Allow lists all it takes."""
    probes = [m for m in PROBES if m not in methods]
    assert probes
    for method in probes:
        response = await client.request(method, _concrete(path), headers=OPERATOR)
        assert response.status_code == 405, (method, path, response.text)
        assert _allow(response) == methods, (method, path, response.headers)
        if method != "HEAD":  # a HEAD answer has no body
            assert response.json()["error"] == "BAD_REQUEST"


async def test_verify_405_allows_post(client: httpx2.AsyncClient) -> None:
    """/v1/verify answers any other method with 405 and Allow: POST."""
    for method in ("GET", "PUT", "DELETE", "TRACE"):
        response = await client.request(method, "/v1/verify", headers=OPERATOR)
        assert response.status_code == 405
        assert _allow(response) == {"POST"}


@pytest.mark.parametrize(("path", "methods"), WEB_PATHS, ids=[p for p, _ in WEB_PATHS])
async def test_web_ui_405_lists_every_method_of_the_page(
    client: httpx2.AsyncClient, path: str, methods: set[str]
) -> None:
    """A web UI page refuses another method with its HTML 405 page and the full Allow."""
    for method in [m for m in ("DELETE", "PUT", "PATCH", "POST") if m not in methods]:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["content-type"].startswith("text/html")
        assert _allow(response) == methods, (method, path, response.headers)
