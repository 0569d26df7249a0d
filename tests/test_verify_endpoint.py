"""``POST /v1/verify``: one ASGI endpoint inside the app answers it, refusals included.

Requests go straight into the app through ASGI, with the exact header bytes and body
messages a server would pass (HTTP clients would correct most of them). Each refusal is
checked for its status, code, note and the pointer, message and type of each validation
error: those of the API's pydantic models everywhere else, which the body parser is
also held to on generated bodies. The last tests check that the endpoint is part of the
app: middleware added to the app sees it, and OpenAPI documents it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx2
import orjson
import pytest
import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError

from quotad.api.app import create_app
from quotad.api.schemas import VerifyIn
from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import BadRequest, StorageError, ValidationFailed
from quotad.http.ids import new_request_id
from quotad.http.quota import verdict_headers
from quotad.http.types import Receive, Scope, Send
from quotad.http.verify_body import verify_body
from quotad.service.context import Context
from quotad.service.verify import Verdict
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.asgi import http_scope
from tests.conftest import ADMIN_TOKEN, make_settings, seed

ERROR_KEYS = {"error", "id", "note", "validationErrors"}
JSON = (b"content-type", b"application/json")
TOKEN = (b"authorization", f"Bearer {ADMIN_TOKEN}".encode())
Headers = list[tuple[bytes, bytes]]


@dataclass
class Answer:
    """What the app sent back for one request."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, if sent."""
        return next((value for key, value in self.headers if key == name), None)

    def error(self) -> tuple[int, str, str, list[tuple[str, str, str]]]:
        """Status, code, note and (pointer, message, type) of each validation error."""
        body = self.json()
        assert set(body) == ERROR_KEYS, body
        uuid.UUID(body["id"])
        problems = [
            (item["path"], item["message"], item["context"]["errorType"])
            for item in body["validationErrors"]
        ]
        return self.status, body["error"], body["note"], problems


@dataclass
class Deployment:
    """An app over a memory store holding acme (insights 250 a day) and its key."""

    app: FastAPI
    ctx: Context
    key: str


async def deploy(
    clock: FakeClock, store_class: type[MemoryStore] = MemoryStore, **options: Any
) -> Deployment:
    """A fresh deployment with ``options`` as settings."""
    ctx = Context(Stores.of(store_class()), make_settings("memory://", **options), clock)
    app = create_app(ctx, manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        seeded = await seed(http)
    return Deployment(app, ctx, seeded.key)


@pytest.fixture
async def deployment(clock: FakeClock) -> Deployment:
    """A deployment with the default settings."""
    return await deploy(clock)


def messages_of(body: bytes, chunks: int) -> list[dict[str, Any]]:
    """``body`` as ``chunks`` ASGI request messages."""
    size = -(-len(body) // chunks) if body else 0
    pieces = [body[i : i + size] for i in range(0, len(body), size)] if size else [b""]
    return [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]


async def call(
    app: Any,
    headers: Headers,
    body: bytes = b"",
    *,
    length: bool = True,
    chunks: int = 1,
    scope_extra: dict[str, Any] | None = None,
) -> Answer:
    """``POST /v1/verify`` straight into ``app``, the body in ``chunks`` messages."""
    if length:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    scope = {**http_scope("POST", "/v1/verify", headers), **(scope_extra or {})}
    pending = messages_of(body, chunks)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], list(start["headers"]), content)


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every event logged meanwhile, with its bound context and level, none written."""
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    events: list[dict[str, Any]] = []

    def capture(_logger: Any, _method: str, event_dict: Any) -> Any:
        events.append(dict(event_dict))
        raise structlog.DropEvent

    # In place: the loggers already in use hold this very list.
    processors[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        capture,
    ]
    try:
        yield events
    finally:
        processors[:] = saved


def verify_json(key: str, service: str = "insights", cost: int | None = 1) -> bytes:
    """A verify body (without ``cost`` when None)."""
    content: dict[str, Any] = {"key": key, "service": service}
    if cost is not None:
        content["cost"] = cost
    return orjson.dumps(content)


# Answers ------------------------------------------------------------------------------
async def test_a_granted_consume_has_its_verdict_headers_and_one_access_line(
    deployment: Deployment,
) -> None:
    """A granted consume: the verdict, quota and echoed headers, one access line with its id."""
    with captured_logs() as events:
        answer = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key, cost=3))
    assert answer.status == 200
    assert answer.json()["remaining"] == 247
    request_id = answer.header(b"x-request-id")
    assert request_id is not None
    assert uuid.UUID(request_id.decode()).version == 4
    assert answer.headers == [
        (b"ratelimit-policy", b'"insights";q=250;w=86400'),
        (b"ratelimit", b'"insights";r=247;t=43200'),
        (b"x-ratelimit-limit", b"250"),
        (b"x-ratelimit-remaining", b"247"),
        (b"x-ratelimit-reset", b"1731024000"),
        (b"content-length", str(len(answer.body)).encode()),
        JSON,
        (b"api-version", b"v1"),
        (b"x-request-id", request_id),
    ]
    [line] = events
    assert (line["event"], line["status"], line["path"]) == ("request", 200, "/v1/verify")
    assert line["request_id"] == request_id.decode()


async def test_consumes_until_the_quota_runs_out(deployment: Deployment) -> None:
    """Consumes and peeks add up to the total; past it, a refused verdict with Retry-After."""
    for cost in (None, 0, 200, 49, 1, 0):
        answer = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key, cost=cost))
        assert answer.status == 200
    assert answer.json()["used"] == 250
    refused = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key, cost=1))
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    assert refused.header(b"retry-after") == b"43200"


@pytest.mark.parametrize(
    ("key", "service", "status", "code"),
    [
        ("garbage", "insights", 200, "MALFORMED_API_KEY"),
        ("qd_" + "A" * 36, "insights", 200, "MALFORMED_API_KEY"),
        ("KEY", "weather", 404, "NOT_FOUND"),
        ("KEY", "ins\x00ights", 404, "NOT_FOUND"),
        ("KEY", "Ünïcode", 404, "NOT_FOUND"),
    ],
    ids=["malformed key", "unknown key", "unknown service", "NUL in service", "unicode service"],
)
async def test_bad_keys_are_verdicts_and_unknown_services_404(
    deployment: Deployment, key: str, service: str, status: int, code: str
) -> None:
    """Invalid keys are 200 verdicts without quota headers; an unknown service is 404."""
    body = verify_json(deployment.key if key == "KEY" else key, service)
    answer = await call(deployment.app, [JSON, TOKEN], body)
    assert answer.status == status
    assert answer.json()["code" if status == 200 else "error"] == code
    assert answer.header(b"ratelimit") is None


async def test_a_service_outside_the_plan_is_a_forbidden_verdict(deployment: Deployment) -> None:
    """A registered service the plan has no quota for is a FORBIDDEN verdict."""
    transport = httpx2.ASGITransport(app=deployment.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created = await http.post("/admin/v1/services", json={"name": "weather"}, headers=operator)
    assert created.status_code == 201
    answer = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key, "weather"))
    assert (answer.status, answer.json()["code"]) == (200, "FORBIDDEN")


async def test_idempotent_replays_and_conflicts(deployment: Deployment) -> None:
    """The first answer is replayed; the same key with another cost is 409 CONFLICT."""
    replayed = [JSON, TOKEN, (b"idempotency-key", b"req-1")]
    first = await call(deployment.app, replayed, verify_json(deployment.key, cost=5))
    again = await call(deployment.app, replayed, verify_json(deployment.key, cost=5))
    assert first.json() == again.json()
    assert again.json()["used"] == 5
    conflict = await call(deployment.app, replayed, verify_json(deployment.key, cost=6))
    assert conflict.error()[:2] == (409, "CONFLICT")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"api-version", b"v1")],
        [(b"api-version", b" v1 ")],
        [(b"content-type", b"Application/JSON; charset=utf-8")],
        [(b"content-type", b"application/vnd.quotad+json")],
        [(b"authorization", f"bearer   {ADMIN_TOKEN}  ".encode())],
        [(b"idempotency-key", b"~!visible-ASCII:only!~")],
        [(b"idempotency-key", b"first"), (b"idempotency-key", b"has space")],
        [TOKEN, (b"authorization", b"Bearer wrong")],
        [(b"x-forwarded-for", b"10.0.0.1"), (b"user-agent", b"wrk")],
    ],
    ids=[
        "api-version",
        "api-version with spaces",
        "json with charset",
        "vendor json",
        "lower-case bearer and spaces",
        "idempotency key",
        "first idempotency key counts",
        "first authorization counts",
        "other headers",
    ],
)
async def test_accepted_header_variants_are_served(
    deployment: Deployment, headers: Headers
) -> None:
    """Header spellings the API accepts are served like the plain ones."""
    names = {name for name, _ in headers}
    base = [header for header in (JSON, TOKEN) if header[0] not in names]
    answer = await call(deployment.app, [*base, *headers], verify_json(deployment.key))
    assert (answer.status, answer.json()["code"]) == (200, "VALID")


@pytest.mark.parametrize(
    ("headers", "length", "chunks"),
    [
        ([JSON, TOKEN], True, 4),
        ([JSON, TOKEN], False, 1),
        ([JSON, TOKEN, (b"transfer-encoding", b"chunked")], False, 3),
    ],
    ids=["several messages", "no content-length", "chunked"],
)
async def test_bodies_in_pieces_or_without_a_length_are_read_whole(
    deployment: Deployment, headers: Headers, length: bool, chunks: int
) -> None:
    """A body in several ASGI messages, or without Content-Length, is read whole and served."""
    answer = await call(
        deployment.app, headers, verify_json(deployment.key), length=length, chunks=chunks
    )
    assert (answer.status, answer.json()["code"]) == (200, "VALID")


async def test_a_client_that_leaves_mid_body_consumes_nothing(deployment: Deployment) -> None:
    """A disconnect before the body is whole gets no answer and consumes nothing."""
    body = verify_json(deployment.key, cost=7)
    scope = http_scope(
        "POST", "/v1/verify", [JSON, TOKEN, (b"content-length", str(len(body)).encode())]
    )
    pending: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with captured_logs() as events:
        await deployment.app(scope, receive, send)
    assert sent == []
    assert [(e["event"], e["status"]) for e in events] == [("request", None)]
    peek = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key, cost=0))
    assert peek.json()["used"] == 0


class FailingConsume(MemoryStore):
    """A memory store whose consume fails as an unreachable store (or a bug) would."""

    error: Exception = StorageError("the store is down (test)")

    async def consume(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
    ) -> ConsumeOutcome:
        """Fail."""
        raise self.error


class CrashingConsume(FailingConsume):
    """A memory store whose consume raises an exception nobody expects."""

    error = RuntimeError("boom (test)")


@pytest.mark.parametrize(
    ("store_class", "policy", "status", "code"),
    [
        (FailingConsume, "fail-closed", 503, "SERVICE_UNAVAILABLE"),
        (FailingConsume, "fail-open", 200, "VALID"),
        (CrashingConsume, "fail-closed", 500, "INTERNAL_SERVER_ERROR"),
    ],
    ids=["store down, fail-closed", "store down, fail-open", "unexpected exception"],
)
async def test_store_failures(
    clock: FakeClock, store_class: type[MemoryStore], policy: str, status: int, code: str
) -> None:
    """A failing store is 503 or a fail-open verdict; a crash a 500 logged once, no details."""
    deployment = await deploy(clock, store_class, on_store_error=policy)
    with captured_logs() as events:
        answer = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key))
    assert answer.status == status
    assert answer.json()["code" if status == 200 else "error"] == code
    assert b"boom" not in answer.body
    assert answer.header(b"x-request-id") is not None
    crashes = [e for e in events if e["event"] == "unexpected error"]
    assert len(crashes) == (status == 500)
    assert events[-1]["event"] == "request"


async def test_each_verify_counts_one_consume_and_one_timing(deployment: Deployment) -> None:
    """A verify adds one consume of its verdict and one timing to the metrics."""

    def counted() -> tuple[float, float]:
        labels = {"service": "insights", "result": "VALID"}
        consumes = REGISTRY.get_sample_value("quotad_consumes_total", labels) or 0.0
        timings = REGISTRY.get_sample_value("quotad_consume_seconds_count") or 0.0
        return consumes, timings

    before = counted()
    assert (await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key))).status == 200
    after = counted()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


# Refusals -----------------------------------------------------------------------------
FIELD_REQUIRED = "Field required"
NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"
NOT_AN_INTEGER = "Input should be a valid integer"
NOT_A_STRING = "Input should be a valid string"
NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"
EXTRA = "Extra inputs are not permitted"
FAILED = "the request failed validation"
NOT_JSON = (400, "BAD_REQUEST", "the request body is not valid JSON", [])
UNPARSABLE = (400, "BAD_REQUEST", "There was an error parsing the body", [])


def invalid(*problems: tuple[str, str, str]) -> tuple[int, str, str, list[tuple[str, str, str]]]:
    """The 400 VALIDATION_FAILED answer with these (pointer, message, type) problems."""
    return 400, "VALIDATION_FAILED", FAILED, list(problems)


def cost_problem(message: str, error_type: str) -> tuple[int, str, str, list[Any]]:
    """The answer to a bad cost."""
    return invalid(("/body/cost", message, error_type))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b"",
            (
                400,
                "VALIDATION_FAILED",
                "a JSON body is required",
                [("/body", FIELD_REQUIRED, "missing")],
            ),
        ),
        (b"{not json", NOT_JSON),
        (b'{"key": "k", "service": "insights"} trailing', NOT_JSON),
        (b"\x00", NOT_JSON),
        (b"[]", invalid(("/body", NOT_AN_OBJECT, "model_attributes_type"))),
        (b"null", invalid(("/body", NOT_AN_OBJECT, "model_attributes_type"))),
        (b'"key"', invalid(("/body", NOT_AN_OBJECT, "model_attributes_type"))),
        (
            b"{}",
            invalid(
                ("/body/key", FIELD_REQUIRED, "missing"),
                ("/body/service", FIELD_REQUIRED, "missing"),
            ),
        ),
        (b'{"service": "insights"}', invalid(("/body/key", FIELD_REQUIRED, "missing"))),
        (b'{"key": "k"}', invalid(("/body/service", FIELD_REQUIRED, "missing"))),
        (
            b'{"extra": 1, "key": 12, "service": "insights", "more": 2}',
            invalid(
                ("/body/key", NOT_A_STRING, "string_type"),
                ("/body/extra", EXTRA, "extra_forbidden"),
                ("/body/more", EXTRA, "extra_forbidden"),
            ),
        ),
        (
            b'{"a/b~c": 1, "key": "k", "service": "insights"}',
            invalid(("/body/a/b~c", EXTRA, "extra_forbidden")),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": true}',
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": 1.5}',  # 1.0 is the integer 1
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": "5"}',
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": null}',
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": NaN}',
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": 1e400}',
            cost_problem(NOT_AN_INTEGER, "int_type"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": -1}',
            cost_problem("Input should be greater than or equal to 0", "greater_than_equal"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": 1000000001}',
            cost_problem("Input should be less than or equal to 1000000000", "less_than_equal"),
        ),
        (
            b'{"key": "k", "service": "insights", "cost": 100000000000000000000}',
            cost_problem("Input should be less than or equal to 1000000000", "less_than_equal"),
        ),
        (b'{"key": "k", "service": "insights", "cost": ' + b"9" * 5000 + b"}", UNPARSABLE),
        (
            b'{"key": "", "service": "insights"}',
            invalid(("/body/key", "String should have at least 1 character", "string_too_short")),
        ),
        (
            b'{"key": "' + b"k" * 257 + b'", "service": "insights"}',
            invalid(("/body/key", "String should have at most 256 characters", "string_too_long")),
        ),
        (
            b'{"key": "k", "service": "' + b"s" * 65 + b'"}',
            invalid(
                ("/body/service", "String should have at most 64 characters", "string_too_long")
            ),
        ),
        (
            b'{"key": null, "service": [], "cost": {}}',
            invalid(
                ("/body/key", NOT_A_STRING, "string_type"),
                ("/body/service", NOT_A_STRING, "string_type"),
                ("/body/cost", NOT_AN_INTEGER, "int_type"),
            ),
        ),
        (
            b'{"key": "\\ud800", "service": "insights"}',
            invalid(("/body/key", NOT_UNICODE, "string_unicode")),
        ),
        (b'{"key": "\xff", "service": "insights"}', UNPARSABLE),
        (b"[" * 100_000 + b"]" * 100_000, UNPARSABLE),
    ],
    ids=[
        "empty",
        "not JSON",
        "trailing text",
        "NUL",
        "array",
        "null",
        "string",
        "empty object",
        "no key",
        "no service",
        "number as key and extra fields",
        "extra field named like a pointer",
        "boolean cost",
        "float cost",
        "string cost",
        "null cost",
        "NaN cost",
        "infinite cost",
        "negative cost",
        "cost over the bound",
        "cost past 64 bits",
        "5000-digit cost",
        "empty key",
        "key too long",
        "service too long",
        "every field of the wrong type",
        "lone surrogate",
        "invalid UTF-8",
        "deep nesting",
    ],
)
async def test_bodies_that_fail_are_refused_with_pointers_and_codes(
    deployment: Deployment, body: bytes, expected: tuple[int, str, str, list[Any]]
) -> None:
    """Each body the API refuses gets its status, code, note and a pointer to each problem."""
    answer = await call(deployment.app, [JSON, TOKEN], body)
    assert answer.error() == expected


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ('{"key": "KEY", "service": "insights"}', "utf-8-sig"),
        ('{"key": "KEY", "service": "insights"}', "utf-16"),
        (' {"key": "KEY", "key": "KEY", "service": "insights", "cost": -0} ', "utf-8"),
    ],
    ids=["byte order mark", "UTF-16", "spaces, a repeated field and minus zero"],
)
async def test_json_that_only_the_exact_reading_accepts_is_served(
    deployment: Deployment, text: str, encoding: str
) -> None:
    """Bodies JSON allows but the quick reading does not take are still served."""
    body = text.replace("KEY", deployment.key).encode(encoding)
    answer = await call(deployment.app, [JSON, TOKEN], body)
    assert (answer.status, answer.json()["code"]) == (200, "VALID")


async def test_the_token_is_checked_after_the_json_and_before_the_fields(
    deployment: Deployment,
) -> None:
    """Bad JSON without a token is 400, a bad body without a token 401: it learns nothing."""
    bad_json = await call(deployment.app, [JSON], b"{not json")
    assert bad_json.error() == NOT_JSON
    invalid_body = await call(deployment.app, [JSON], b'{"key": 1}')
    assert invalid_body.error()[:2] == (401, "MISSING_API_KEY")
    bad_key = await call(
        deployment.app, [JSON, (b"idempotency-key", b"has space")], verify_json(deployment.key)
    )
    assert bad_key.error()[:2] == (401, "MISSING_API_KEY")


IDEMPOTENCY = (
    400,
    "VALIDATION_FAILED",
    "must be 1 to 255 visible ASCII characters",
    [("/header/Idempotency-Key", "must be 1 to 255 visible ASCII characters", "pattern")],
)
NOT_JSON_TYPE = (400, "BAD_REQUEST", "the body must be JSON (Content-Type: application/json)", [])
API_VERSION = (
    400,
    "VALIDATION_FAILED",
    "unknown api-version; supported: v1",
    [("/header/api-version", "api-version must be one of: v1", "enum")],
)
BEARER_ONLY = (401, "INVALID_AUTHORIZATION", "the Authorization header must be 'Bearer <key>'", [])
WRONG_TOKEN = (401, "INVALID_AUTHORIZATION", "the operator token is not valid", [])
NO_TOKEN = (401, "MISSING_API_KEY", "the operator token is required", [])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([JSON], NO_TOKEN),
        ([JSON, (b"authorization", b"")], NO_TOKEN),
        ([JSON, (b"authorization", b"Bearer wrong-token")], WRONG_TOKEN),
        ([JSON, (b"authorization", b"Basic dXNlcjpwYXNz")], BEARER_ONLY),
        ([JSON, (b"authorization", b"Bearer")], BEARER_ONLY),
        ([JSON, (b"authorization", b"Bearer a b")], BEARER_ONLY),
        ([(b"authorization", b"Bearer wrong"), TOKEN, JSON], WRONG_TOKEN),
        ([JSON, TOKEN, (b"api-version", b"v9")], API_VERSION),
        ([JSON, TOKEN, (b"api-version", b"")], API_VERSION),
        ([TOKEN, (b"content-type", b"text/plain")], NOT_JSON_TYPE),
        ([TOKEN], NOT_JSON_TYPE),
        ([TOKEN, (b"content-type", b"application/json, text/plain")], NOT_JSON_TYPE),
        ([JSON, TOKEN, (b"idempotency-key", b"")], IDEMPOTENCY),
        ([JSON, TOKEN, (b"idempotency-key", b"has space")], IDEMPOTENCY),
        ([JSON, TOKEN, (b"idempotency-key", b"x" * 256)], IDEMPOTENCY),
        ([JSON, TOKEN, (b"idempotency-key", "ключ".encode())], IDEMPOTENCY),
        ([JSON, TOKEN, (b"idempotency-key", b"a\r\nx-injected: yes")], IDEMPOTENCY),
    ],
    ids=[
        "no token",
        "empty authorization",
        "wrong token",
        "basic auth",
        "bearer without token",
        "two words",
        "first authorization is wrong",
        "unknown api-version",
        "empty api-version",
        "text/plain",
        "no content type",
        "two media types",
        "empty idempotency key",
        "idempotency key with a space",
        "idempotency key too long",
        "non-ASCII idempotency key",
        "CRLF in idempotency key",
    ],
)
async def test_refused_headers(
    deployment: Deployment, headers: Headers, expected: tuple[int, str, str, list[Any]]
) -> None:
    """A missing or wrong token, or a header the API refuses, gets its contract answer."""
    answer = await call(deployment.app, headers, verify_json(deployment.key))
    assert answer.error() == expected
    assert answer.header(b"api-version") == b"v1"


async def test_a_body_over_the_limit_is_413(clock: FakeClock) -> None:
    """A Content-Length over max_body_bytes, or a chunked body past it, is 413."""
    deployment = await deploy(clock, max_body_bytes=1024)
    body = verify_json(deployment.key)[:-1] + b', "pad": "' + b"x" * 2000 + b'"}'
    declared = await call(deployment.app, [JSON, TOKEN], body)
    chunked = [JSON, TOKEN, (b"transfer-encoding", b"chunked")]
    streamed = await call(deployment.app, chunked, body, length=False, chunks=3)
    for answer in (declared, streamed):
        assert answer.error() == (
            413,
            "PAYLOAD_TOO_LARGE",
            "the body is larger than the limit of 1024 bytes",
            [],
        )


@pytest.mark.parametrize(
    ("length", "status"),
    [
        (b"9" * 5000, 400),
        (b"eighty", 400),
        (b"0", 200),
        (b" 80", 200),
        (b"+80", 200),
        (b"8_0", 200),
        (b"10", 200),
    ],
    ids=[
        "5000 digits",
        "not a number",
        "zero",
        "leading space",
        "plus sign",
        "underscore",
        "short",
    ],
)
async def test_unusual_content_lengths(deployment: Deployment, length: bytes, status: int) -> None:
    """A Content-Length int() cannot read is 400; any other leaves the body to be read whole."""
    headers = [JSON, TOKEN, (b"content-length", length)]
    answer = await call(deployment.app, headers, verify_json(deployment.key), length=False)
    if status == 400:
        assert answer.error() == (400, "BAD_REQUEST", "invalid Content-Length", [])
    else:
        assert (answer.status, answer.json()["code"]) == (200, "VALID")


async def test_header_names_that_are_not_bytes_are_read(deployment: Deployment) -> None:
    """A header name given as a bytearray (the ASGI spec says bytes) is still read."""
    headers: list[Any] = [JSON, (bytearray(b"authorization"), TOKEN[1])]
    answer = await call(deployment.app, headers, verify_json(deployment.key))
    assert (answer.status, answer.json()["code"]) == (200, "VALID")


async def test_wrong_tokens_spend_the_failure_budget_and_the_right_one_passes(
    clock: FakeClock,
) -> None:
    """Each wrong token counts a failure; past the budget 429, while the right token is served."""
    deployment = await deploy(clock, auth_failures_per_minute=2)
    wrong = [JSON, (b"authorization", b"Bearer wrong-token")]
    for _ in range(2):
        refused = await call(deployment.app, wrong, verify_json(deployment.key))
        assert refused.error() == WRONG_TOKEN
    limited = await call(deployment.app, wrong, verify_json(deployment.key))
    assert limited.error()[:2] == (429, "RATE_LIMITED")
    assert limited.header(b"retry-after") is not None
    served = await call(deployment.app, [JSON, TOKEN], verify_json(deployment.key))
    assert (served.status, served.json()["code"]) == (200, "VALID")


async def test_a_request_under_a_root_path_is_served(deployment: Deployment) -> None:
    """Mounted under a root path, the app still answers verify."""
    extra = {"root_path": "/quotad", "path": "/quotad/v1/verify"}
    answer = await call(
        deployment.app, [JSON, TOKEN], verify_json(deployment.key), scope_extra=extra
    )
    assert (answer.status, answer.json()["code"]) == (200, "VALID")


# The endpoint in the app ---------------------------------------------------------------
class Seeing:
    """Middleware that records the path of every HTTP request it sees."""

    seen: list[str]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the path, then pass the request on."""
        if scope["type"] == "http":
            Seeing.seen.append(scope["path"])
        await self.app(scope, receive, send)


async def test_middleware_added_to_the_app_sees_verify(deployment: Deployment) -> None:
    """A middleware added with app.add_middleware sees /v1/verify, granted or refused."""
    Seeing.seen = []
    app = create_app(deployment.ctx, manage_store=False)
    app.add_middleware(Seeing)
    granted = await call(app, [JSON, TOKEN], verify_json(deployment.key))
    refused = await call(app, [JSON], verify_json(deployment.key))
    assert (granted.status, refused.status) == (200, 401)
    assert Seeing.seen == ["/v1/verify", "/v1/verify"]


async def test_another_method_on_verify_is_the_contract_405(deployment: Deployment) -> None:
    """GET /v1/verify is 405 with the error body and Allow: POST, answered by the endpoint."""
    app = create_app(deployment.ctx, manage_store=False)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://quotad"
    ) as http:
        response = await http.get("/v1/verify", headers={"authorization": TOKEN[1].decode()})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == "BAD_REQUEST"
    assert response.headers["x-request-id"]


async def test_middleware_added_to_the_app_sees_the_api_and_the_web_ui_too(
    deployment: Deployment,
) -> None:
    """The app's middleware runs for the mounted API and dashboard as for verify."""
    Seeing.seen = []
    app = create_app(deployment.ctx, manage_store=False)
    app.add_middleware(Seeing)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://quotad"
    ) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/dashboard/login")).status_code == 200
    assert Seeing.seen == ["/healthz", "/dashboard/login"]


async def test_openapi_documents_verify_and_no_fastapi_route_answers_it(
    deployment: Deployment,
) -> None:
    """OpenAPI describes POST /v1/verify; the router has no FastAPI route for it to fall back to."""
    api = deployment.app.state.api
    operation = api.openapi()["paths"]["/v1/verify"]["post"]
    assert operation["operationId"] == "verify_key_v1_verify_post"
    assert operation["security"] == [{"OperatorToken": []}]
    routed = [
        route
        for route in api.router.routes
        if isinstance(route, APIRoute) and route.path == "/v1/verify"
    ]
    assert routed == []


# The pieces ---------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=4,
)
FIELD_VALUES = (
    JSON_VALUES
    | st.text(min_size=0, max_size=260)
    | st.integers(min_value=-2, max_value=10**9 + 2)
    | st.sampled_from([0, 1, 10**9, 10**9 + 1, -1, True, False, 1.0, "1", "", "\ud800"])
    | st.sampled_from(["k" * 64, "k" * 65, "k" * 256, "k" * 257])  # the bounds of the lengths
)
BODIES = (
    st.dictionaries(st.sampled_from(["key", "service", "cost", "extra"]), FIELD_VALUES, max_size=4)
    | JSON_VALUES
)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(BODIES)
def test_the_body_parser_judges_every_body_as_verify_in_does(body: Any) -> None:
    """verify_body accepts a JSON body iff VerifyIn does, with its values or its errors."""
    raw = json.dumps(body).encode()
    try:
        # As FastAPI validates a body: attributes of any value, so a non-object is refused
        # as such (model_attributes_type).
        model = VerifyIn.model_validate(json.loads(raw), from_attributes=True)
    except ValidationError as exc:
        expected: Any = [
            (
                "/" + "/".join(str(part) for part in ("body", *item["loc"])),
                item["msg"],
                item["type"],
            )
            for item in exc.errors()
        ]
    else:
        expected = (model.key, model.service, model.cost)
    parsed = verify_body(raw)
    if isinstance(parsed, ValidationFailed):
        assert parsed.note == "the request failed validation"
        parsed = [(e.path, e.message, e.error_type) for e in parsed.validation_errors]
    assert parsed == expected


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff", b"1" * 5000],
    ids=["not JSON", "empty", "not UTF-8", "digits"],
)
def test_the_body_parser_refuses_what_is_not_json(body: bytes) -> None:
    """A body that is not JSON raises BadRequest; an empty one is a missing body."""
    if not body:
        missing = verify_body(body)
        assert isinstance(missing, ValidationFailed)
        assert missing.note == "a JSON body is required"
        return
    with pytest.raises(BadRequest):
        verify_body(body)


RESET = datetime(2024, 11, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("verdict", "now", "expected"),
    [
        (
            Verdict(True, "VALID", "insights", "acme", 3, 250, RESET, 86_400),
            RESET.timestamp() - 43_200,
            [
                (b"ratelimit-policy", b'"insights";q=250;w=86400'),
                (b"ratelimit", b'"insights";r=247;t=43200'),
                (b"x-ratelimit-limit", b"250"),
                (b"x-ratelimit-remaining", b"247"),
                (b"x-ratelimit-reset", b"1731024000"),
            ],
        ),
        (
            Verdict(False, "QUOTA_EXCEEDED", "insights", "acme", 300, 250, RESET, None),
            RESET.timestamp() + 1,
            [
                (b"ratelimit-policy", b'"insights";q=250;w=86400'),
                (b"ratelimit", b'"insights";r=0;t=0'),
                (b"x-ratelimit-limit", b"250"),
                (b"x-ratelimit-remaining", b"0"),
                (b"x-ratelimit-reset", b"1731024000"),
                (b"retry-after", b"1"),
            ],
        ),
        (Verdict(False, "MALFORMED_API_KEY", "insights", note="malformed"), 0.0, []),
        (
            Verdict(True, "VALID", "insights", note="allowed uncounted by the fail-open policy"),
            0.0,
            [],
        ),
    ],
    ids=["granted", "used past the total, after the reset", "no quota", "fail-open"],
)
def test_quota_headers(verdict: Verdict, now: float, expected: Headers) -> None:
    """The quota headers of a verdict: IETF and X-RateLimit-*, Retry-After when refused."""
    assert verdict_headers(verdict, now) == expected


def test_request_ids_are_uuid4_hex() -> None:
    """A request id is 32 hex digits of a fresh version-4 UUID."""
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, request_id)


async def test_only_the_verify_path_itself_is_answered_by_the_endpoint(
    deployment: Deployment,
) -> None:
    """/v1/verify/ and /v1/verifyx, and /v1/verify beside a root path it is not under, are
    the contract's 404, not verify answers."""
    for path, extra in (
        ("/v1/verify/", {}),
        ("/v1/verifyx", {}),
        ("/quotadx/v1/verify", {"root_path": "/quotad"}),
    ):
        answer = await call(
            deployment.app,
            [JSON, TOKEN],
            verify_json(deployment.key),
            scope_extra={"path": path, **extra},
        )
        assert (answer.status, answer.json()["error"]) == (404, "NOT_FOUND"), path
