"""The OpenAPI document is served and the committed copy matches the code."""

from __future__ import annotations

from pathlib import Path

import httpx2
import orjson

from quotad.cli.serve import openapi_json

COMMITTED = Path(__file__).parent.parent / "openapi.json"


def test_committed_openapi_is_current() -> None:
    """openapi.json equals what the code generates (regenerate with `quotad openapi -o openapi.json`)."""
    assert COMMITTED.read_text() == openapi_json()


async def test_openapi_and_docs_are_served(client: httpx2.AsyncClient) -> None:
    """/openapi.json and /docs answer without credentials and list every route of the contract."""
    document = orjson.loads((await client.get("/openapi.json")).content)
    paths = set(document["paths"])
    for path in (
        "/v1/usages",
        "/usage/{service}",
        "/v1/verify",
        "/v1/events",
        "/admin/v1/services",
        "/admin/v1/plans",
        "/admin/v1/plans/{plan_id}",
        "/admin/v1/accounts",
        "/admin/v1/accounts/{account_id}",
        "/admin/v1/accounts/{account_id}/keys",
        "/admin/v1/keys/{key_id}",
        "/admin/v1/keys/{key_id}/rotate",
        "/admin/v1/accounts/{account_id}/usage/{service}",
        "/admin/v1/accounts/{account_id}/usage/{service}/adjust",
        "/admin/v1/accounts/{account_id}/limits/{name}",
        "/admin/v1/accounts/{account_id}/limits/{name}/acquire",
        "/admin/v1/accounts/{account_id}/limits/{name}/release",
        "/admin/v1/export",
    ):
        assert path in paths, path
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
