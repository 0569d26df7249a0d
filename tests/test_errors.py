"""Bad input of every kind gets a 4xx in the contract's error shape and changes nothing."""

from __future__ import annotations

import uuid

import httpx2
import pytest

from quotad.service.context import Context
from tests.conftest import OPERATOR, Deployment

ERROR_KEYS = {"error", "id", "note", "validationErrors"}


def assert_error(response: httpx2.Response, status: int, code: str) -> None:
    """The response is the contract's error body with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == code
    uuid.UUID(body["id"])
    assert isinstance(body["note"], str)
    assert body["note"]


async def test_malformed_json_is_bad_request(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A body that is not JSON is 400 BAD_REQUEST."""
    response = await client.post(
        "/admin/v1/services",
        content=b'{"name": "x"',
        headers={**OPERATOR, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_bad_request(
    client: httpx2.AsyncClient, deployment: Deployment, content_type: str | None
) -> None:
    """A body sent as anything but JSON is 400 BAD_REQUEST and creates nothing."""
    headers = dict(OPERATOR)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(
        "/admin/v1/services", content=b'{"name": "weather"}', headers=headers
    )
    assert_error(response, 400, "BAD_REQUEST")
    listed = await client.get("/admin/v1/services", headers=OPERATOR)
    assert "weather" not in listed.text


async def test_body_over_the_limit_is_413(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A body larger than the configured maximum is 413 PAYLOAD_TOO_LARGE."""
    huge = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    response = await client.post(
        "/admin/v1/services", content=huge, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_the_limit_is_413(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A body without Content-Length is counted as it streams and refused past the limit."""

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/admin/v1/services",
        content=chunks(),
        headers={**OPERATOR, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_wrong_method_is_405_with_error_body(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A known path with an unsupported method answers 405 with the error body."""
    response = await client.delete("/v1/usages", headers=deployment.bearer)
    assert_error(response, 405, "BAD_REQUEST")


async def test_unexpected_errors_are_500_without_details(
    client: httpx2.AsyncClient,
    deployment: Deployment,
    ctx: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected exception is 500 INTERNAL_SERVER_ERROR with no stack trace in the body."""

    async def boom(*_args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ctx.counters, "gauges", boom)
    response = await client.get("/v1/usages", headers=deployment.bearer)
    assert_error(response, 500, "INTERNAL_SERVER_ERROR")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


async def test_each_error_has_a_fresh_id(client: httpx2.AsyncClient) -> None:
    """Two identical failures carry different error ids."""
    first = await client.get("/v1/usages")
    second = await client.get("/v1/usages")
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.parametrize("account_id", ["../etc", "a" * 65, "ünïcode", "with space", "semi;colon"])
async def test_odd_ids_are_refused(
    client: httpx2.AsyncClient, deployment: Deployment, account_id: str
) -> None:
    """Account ids outside [A-Za-z0-9._-]{1,64} are 400 VALIDATION_FAILED."""
    body = {"id": account_id, "name": "x", "plan": "plan-acme"}
    response = await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert_error(response, 400, "VALIDATION_FAILED")
    assert response.json()["validationErrors"][0]["path"] == "/body/id"


async def test_customer_throttle_answers_429_with_retry_after(
    stores: object, clock: object, deployment: Deployment, client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Past the per-key burst, customer endpoints answer 429 RATE_LIMITED with Retry-After."""
    from quotad.service.throttle import LocalThrottle

    now = [100.0]
    ctx.throttle = LocalThrottle(1.0, 3, monotonic=lambda: now[0])
    for _ in range(3):
        assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 200
    refused = await client.get("/usage/insights", headers=deployment.bearer)
    assert_error(refused, 429, "RATE_LIMITED")
    assert refused.headers["Retry-After"] == "1"
    now[0] += 1.0
    assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 200


async def test_repeated_bad_keys_from_one_client_are_slowed_down(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Past its failure budget a client's failures get 429 RATE_LIMITED until it refills."""
    from quotad.domain import keys
    from quotad.service.throttle import FailureBudget

    now = [0.0]
    ctx.failures = FailureBudget(5, monotonic=lambda: now[0])
    for _ in range(5):
        guess = await client.get("/v1/usages", headers={"x-api-key": keys.generate("qd")})
        assert guess.status_code == 401
    refused = await client.get("/v1/usages", headers={"x-api-key": keys.generate("qd")})
    assert_error(refused, 429, "RATE_LIMITED")
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 200
    now[0] += 12.0
    again = await client.get("/v1/usages", headers={"x-api-key": keys.generate("qd")})
    assert_error(again, 401, "INVALID_AUTHORIZATION")
