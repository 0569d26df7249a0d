"""The OpenAPI document is served and the committed copy matches the code."""

from __future__ import annotations

from pathlib import Path

import httpx2
import orjson

from quotad.cli.serve import openapi_json
from tests.conftest import Deployment

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


def test_document_says_what_the_server_answers() -> None:
    """No 422 or HTTPValidationError; 400 is Error; /usage/{service} has no 401; no null suggestion."""
    document = orjson.loads(COMMITTED.read_bytes())
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            error = responses["400"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (method, path)
            versions = [p for p in operation["parameters"] if p["name"] == "api-version"]
            assert versions == [
                {**versions[0], "schema": {"type": "string", "enum": ["v1"]}, "in": "header"}
            ]
    assert sorted(document["paths"]["/usage/{service}"]["get"]["responses"]) == [
        "200", "400", "403", "404", "429", "500", "503",
    ]  # fmt: skip
    assert schemas["ValidationErrorItem"]["properties"]["suggestion"]["type"] == "string"
    limits = schemas["OverridesIn"]["properties"]["limits"]
    assert limits["propertyNames"]["pattern"] == "^[A-Za-z][A-Za-z0-9_.-]{0,127}$"
    links = document["paths"]["/admin/v1/accounts"]["post"]["responses"]["201"]["links"]
    assert links["GetAccount"]["parameters"] == {"account_id": "$response.body#/id"}


async def test_server_agrees_with_the_document(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An integral 3.0 is an integer, 3.5 is not; a foreign cursor of the documented shape pages."""
    operator = {"Authorization": "Bearer test-operator-token"}
    verify = {"key": deployment.key, "service": "insights", "cost": 2.0}
    verdict = await client.post("/v1/verify", json=verify, headers=operator)
    assert (verdict.status_code, verdict.json()["used"]) == (200, 2), verdict.text
    fraction = await client.post("/v1/verify", json={**verify, "cost": 2.5}, headers=operator)
    assert fraction.status_code == 400
    gauge = "/admin/v1/accounts/acme/limits/cohort.max_count"
    accepted = await client.put(gauge, json={"usage": 3.0}, headers=operator)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["usage"] == 3
    refused = await client.put(gauge, json={"usage": 3.5}, headers=operator)
    assert refused.status_code == 400
    for cursor in ("AA", "zzzz", "_-_-_-"):  # not quotad's, but of the documented shape
        page = await client.get(f"/admin/v1/accounts?cursor={cursor}", headers=operator)
        assert page.status_code == 200, (cursor, page.text)
    bad = await client.get("/admin/v1/accounts?cursor=abcde", headers=operator)  # 4n + 1
    assert bad.status_code == 400
    empty_version = await client.get("/admin/v1/services", headers={**operator, "api-version": ""})
    assert empty_version.status_code == 400  # the document's enum is v1 only


async def test_overrides_are_documented_shape_and_replaced_whole(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Overrides read back in the README's shape, and a PATCH replaces them whole."""
    operator = {"Authorization": "Bearer test-operator-token"}
    account = f"/admin/v1/accounts/{deployment.account_id}"
    both = {"quotas": {"insights": {"total": 500}}, "limits": {"cohort.max_count": 20}}
    first = await client.patch(account, json={"overrides": both}, headers=operator)
    assert first.json()["overrides"] == both, first.text
    second = await client.patch(
        account, json={"overrides": {"limits": {"cohort.max_count": 5}}}, headers=operator
    )
    assert second.json()["overrides"] == {"quotas": {}, "limits": {"cohort.max_count": 5}}
