"""The fast path of ``POST /v1/verify`` answers exactly as the FastAPI route does.

Two apps over twin deployments (the same records and the same fake clock, each on its own
memory store): one with the fast path, one without. Each request goes to both, straight
through ASGI with the exact header bytes, and the two answers must be the same byte for
byte, but for the ids each answer makes afresh (``x-request-id`` and an error's ``id``),
and so must their log lines. The fast path answers the common cases itself and hands
everything else to the route: every test also checks which of the two answered, so a
fast path that quietly handed everything over would fail.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx2
import orjson
import pytest
import structlog
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import ValidationError

from quotad.api.app import create_app
from quotad.api.fastpath import FastPathAPI, VerifyRoute, verify_args
from quotad.api.middleware import new_request_id
from quotad.api.responses import verdict_headers, verdict_raw_headers
from quotad.api.schemas import VerifyIn
from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import StorageError
from quotad.service.context import Context
from quotad.service.verify import Verdict
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.asgi import http_scope
from tests.conftest import ADMIN_TOKEN, OPERATOR, make_settings, seed

ERROR_KEYS = {"error", "id", "note", "validationErrors"}
VERIFY = ("POST", "/v1/verify")
JSON = (b"content-type", b"application/json")
TOKEN = (b"authorization", f"Bearer {ADMIN_TOKEN}".encode())


@dataclass
class Answer:
    """What an app sent back for one request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Twins:
    """The app with the fast path, the app without, and the key both deployments know."""

    fast: FastPathAPI
    route: FastAPI
    key: str
    taken: list[str] = field(default_factory=list)  # requests the fast path was given
    handed_over: list[str] = field(default_factory=list)  # ... and passed on to the route


async def make_twins(
    clock: FakeClock, store_class: type[MemoryStore] = MemoryStore, **options: Any
) -> Twins:
    """Twin deployments (acme: insights 250 a day) behind the two apps."""
    contexts = [
        Context(Stores.of(store_class()), make_settings("memory://", **options), clock)
        for _ in range(2)
    ]
    fast = create_app(contexts[0], manage_store=False)
    route = create_app(contexts[1], manage_store=False, fast_verify=False)
    assert isinstance(fast, FastPathAPI)
    deployments = []
    for app in (fast, route):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            deployments.append(await seed(http))
    record = await contexts[0].records.get_key(deployments[0].key_id)
    assert record is not None
    await contexts[1].records.create_key(record)  # the same key now opens both
    twins = Twins(fast, route, deployments[0].key)

    handler = fast.fast_routes[VERIFY]
    assert isinstance(handler, VerifyRoute)
    fallback = handler.fallback

    async def taking(scope: Any, receive: Any, send: Any) -> None:
        twins.taken.append(scope["path"])
        await handler(scope, receive, send)

    async def handing_over(scope: Any, receive: Any, send: Any) -> None:
        twins.handed_over.append(scope["path"])
        await fallback(scope, receive, send)

    handler.fallback = handing_over
    fast.fast_routes[VERIFY] = taking
    return twins


@pytest.fixture
async def twins(clock: FakeClock) -> Twins:
    """Twin deployments with the default settings."""
    return await make_twins(clock)


async def call(
    app: Any,
    headers: list[tuple[bytes, bytes]],
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
    size = -(-len(body) // chunks) if body else 0
    pieces = [body[i : i + size] for i in range(0, len(body), size)] if size else [b""]
    pending = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
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


def comparable(answer: Answer, events: list[dict[str, Any]]) -> tuple[Any, ...]:
    """The answer and its log lines with their fresh ids checked and set aside."""
    [request_id] = [value for name, value in answer.headers if name == b"x-request-id"]
    assert uuid.UUID(request_id.decode()).version == 4
    body = answer.body
    error_id = None
    parsed = json.loads(body)
    if isinstance(parsed, dict) and set(parsed) == ERROR_KEYS:
        error_id = parsed["id"]
        assert uuid.UUID(error_id)
        body = body.replace(error_id.encode(), b"<error id>")
    lines = []
    for event in events:
        assert event.pop("request_id") == request_id.decode(), event
        if "error_id" in event:
            assert event.pop("error_id") == error_id
        event.pop("ms", None)
        lines.append(event)
    assert lines[-1]["event"] == "request", lines  # the access line, last
    headers = [(name, value) for name, value in answer.headers if name != b"x-request-id"]
    return answer.status, headers, body, lines


async def same_answer(
    twins: Twins,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    answered_by: str,
    **options: Any,
) -> Answer:
    """Send one request to both apps; their answers must match, and ``answered_by`` gave it."""
    taken, handed_over = len(twins.taken), len(twins.handed_over)
    with captured_logs() as fast_events:
        fast = await call(twins.fast, headers, body, **options)
    with captured_logs() as route_events:
        route = await call(twins.route, headers, body, **options)
    assert comparable(fast, fast_events) == comparable(route, route_events)
    fast_answered = len(twins.taken) > taken and len(twins.handed_over) == handed_over
    assert fast_answered == (answered_by == "fast"), (fast.status, fast.body)
    return fast


def verify_body(key: str, service: str = "insights", cost: int | None = 1) -> bytes:
    """A verify body (without ``cost`` when None)."""
    content: dict[str, Any] = {"key": key, "service": service}
    if cost is not None:
        content["cost"] = cost
    return orjson.dumps(content)


# What the fast path answers itself ------------------------------------------------------
async def test_a_granted_consume_is_answered_alike(twins: Twins) -> None:
    """A granted consume gets the same verdict, quota headers and log line from both."""
    answer = await same_answer(
        twins, [JSON, TOKEN], verify_body(twins.key, cost=3), answered_by="fast"
    )
    assert answer.status == 200
    assert json.loads(answer.body)["remaining"] == 247
    assert (b"ratelimit", b'"insights";r=247;t=43200') in answer.headers


async def test_consumes_until_the_quota_runs_out_are_answered_alike(twins: Twins) -> None:
    """Consumes, a peek, the refusal past the total (with Retry-After): the same on both."""
    for cost in (None, 0, 200, 49, 1, 0):
        answer = await same_answer(
            twins, [JSON, TOKEN], verify_body(twins.key, cost=cost), answered_by="fast"
        )
    assert json.loads(answer.body)["used"] == 250
    refused = await same_answer(
        twins, [JSON, TOKEN], verify_body(twins.key, cost=1), answered_by="fast"
    )
    assert json.loads(refused.body)["code"] == "QUOTA_EXCEEDED"
    assert (b"retry-after", b"43200") in refused.headers


@pytest.mark.parametrize(
    ("key", "service"),
    [
        ("garbage", "insights"),
        ("qd_" + "A" * 36, "insights"),
        ("KEY", "weather"),
        ("KEY", "ins\x00ights"),
        ("KEY", "Ünïcode"),
    ],
    ids=["malformed key", "unknown key", "unknown service", "NUL in service", "unicode service"],
)
async def test_bad_keys_and_unknown_services_are_answered_alike(
    twins: Twins, key: str, service: str
) -> None:
    """Invalid keys are the same 200 verdicts; an unknown service the same 404 error."""
    body = verify_body(twins.key if key == "KEY" else key, service)
    await same_answer(twins, [JSON, TOKEN], body, answered_by="fast")


async def test_a_service_outside_the_plan_is_answered_alike(twins: Twins) -> None:
    """A registered service the plan has no quota for is the same FORBIDDEN verdict."""
    for app in (twins.fast, twins.route):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            created = await http.post(
                "/admin/v1/services", json={"name": "weather"}, headers=OPERATOR
            )
        assert created.status_code == 201
    answer = await same_answer(
        twins, [JSON, TOKEN], verify_body(twins.key, "weather"), answered_by="fast"
    )
    assert json.loads(answer.body)["code"] == "FORBIDDEN"


async def test_idempotent_replays_and_conflicts_are_answered_alike(twins: Twins) -> None:
    """The first answer is replayed alike; the key reused with another cost is the same 409."""
    replayed = [JSON, TOKEN, (b"idempotency-key", b"req-1")]
    first = await same_answer(twins, replayed, verify_body(twins.key, cost=5), answered_by="fast")
    again = await same_answer(twins, replayed, verify_body(twins.key, cost=5), answered_by="fast")
    assert json.loads(first.body) == json.loads(again.body)
    conflict = await same_answer(
        twins, replayed, verify_body(twins.key, cost=6), answered_by="fast"
    )
    assert conflict.status == 409


@pytest.mark.parametrize(
    "headers",
    [
        [(b"api-version", b"v1")],
        [(b"api-version", b" v1 ")],
        [(b"content-type", b"Application/JSON; charset=utf-8")],
        [(b"authorization", f"bearer   {ADMIN_TOKEN}  ".encode())],
        [(b"idempotency-key", b"~!visible-ASCII:only!~")],
        [TOKEN, (b"authorization", b"Bearer wrong")],
        [(b"x-forwarded-for", b"10.0.0.1"), (b"user-agent", b"wrk")],
    ],
    ids=[
        "api-version",
        "api-version with spaces",
        "json with charset",
        "lower-case bearer and spaces",
        "idempotency key",
        "first authorization counts",
        "other headers",
    ],
)
async def test_accepted_header_variants_are_answered_alike(
    twins: Twins, headers: list[tuple[bytes, bytes]]
) -> None:
    """Header variants the route accepts as they are get the same answer from the fast path."""
    names = {name for name, _ in headers}
    base = [header for header in (JSON, TOKEN) if header[0] not in names]
    await same_answer(twins, [*base, *headers], verify_body(twins.key), answered_by="fast")


async def test_a_body_in_several_messages_is_answered_alike(twins: Twins) -> None:
    """A body that arrives in several ASGI messages is read whole and answered alike."""
    await same_answer(twins, [JSON, TOKEN], verify_body(twins.key), answered_by="fast", chunks=4)


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
    ("store_class", "policy", "status"),
    [
        (FailingConsume, "fail-closed", 503),
        (FailingConsume, "fail-open", 200),
        (CrashingConsume, "fail-closed", 500),
    ],
    ids=["store down, fail-closed", "store down, fail-open", "unexpected exception"],
)
async def test_store_failures_are_answered_alike(
    clock: FakeClock, store_class: type[MemoryStore], policy: str, status: int
) -> None:
    """A failing store gets the same 503 or fail-open verdict, a crash the same 500."""
    twins = await make_twins(clock, store_class, on_store_error=policy)
    answer = await same_answer(twins, [JSON, TOKEN], verify_body(twins.key), answered_by="fast")
    assert answer.status == status


async def test_both_count_the_same_metrics(twins: Twins) -> None:
    """Each path adds one consume of its verdict and one timing to the same metrics."""

    def counted() -> tuple[float, float]:
        labels = {"service": "insights", "result": "VALID"}
        consumes = REGISTRY.get_sample_value("quotad_consumes_total", labels) or 0.0
        timings = REGISTRY.get_sample_value("quotad_consume_seconds_count") or 0.0
        return consumes, timings

    for app in (twins.fast, twins.route):
        before = counted()
        assert (await call(app, [JSON, TOKEN], verify_body(twins.key))).status == 200
        after = counted()
        assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


# What the fast path hands to the route -------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b"null",
        b'"key"',
        b'{"service": "insights"}',
        b'{"key": "k"}',
        b'{"key": "k", "service": "insights", "extra": true}',
        b'{"key": "k", "service": "insights", "cost": true}',
        b'{"key": "k", "service": "insights", "cost": 1.0}',
        b'{"key": "k", "service": "insights", "cost": "5"}',
        b'{"key": "k", "service": "insights", "cost": -1}',
        b'{"key": "k", "service": "insights", "cost": 1000000001}',
        b'{"key": "k", "service": "insights", "cost": 100000000000000000000}',
        b'{"key": "k", "service": "insights", "cost": 1e400}',
        b'{"key": "k", "service": "insights", "cost": NaN}',
        b'{"key": "k", "service": "insights", "cost": ' + b"9" * 5000 + b"}",
        b'{"key": "", "service": "insights"}',
        b'{"key": "' + b"k" * 257 + b'", "service": "insights"}',
        b'{"key": "k", "service": "' + b"s" * 65 + b'"}',
        b'{"key": 12, "service": "insights"}',
        b'{"key": "\\ud800", "service": "insights"}',
        b"\xef\xbb\xbf" + b'{"key": "k", "service": "insights"}',
        '{"key": "k", "service": "insights"}'.encode("utf-16"),
        b'{"key": "\xff", "service": "insights"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=[
        "empty",
        "not JSON",
        "array",
        "null",
        "string",
        "no key",
        "no service",
        "extra field",
        "boolean cost",
        "float cost",
        "string cost",
        "negative cost",
        "cost over the bound",
        "cost past 64 bits",
        "infinite cost",
        "NaN cost",
        "5000-digit cost",
        "empty key",
        "key too long",
        "service too long",
        "number as key",
        "lone surrogate",
        "byte order mark",
        "UTF-16",
        "invalid UTF-8",
        "deep nesting",
    ],
)
async def test_bodies_that_fail_validation_are_the_routes_to_answer(
    twins: Twins, body: bytes
) -> None:
    """Every body VerifyIn refuses gets the route's own answer, pointers and codes included."""
    await same_answer(twins, [JSON, TOKEN], body, answered_by="route")


async def test_bad_bodies_without_the_token_are_the_routes_to_answer(twins: Twins) -> None:
    """Bad JSON without a token is 400 and a bad body without a token 401, as on the route."""
    bad_json = await same_answer(twins, [JSON], b"{not json", answered_by="route")
    assert bad_json.status == 400
    invalid = await same_answer(twins, [JSON], b'{"key": 1}', answered_by="route")
    assert invalid.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        [JSON],
        [JSON, (b"authorization", b"")],
        [JSON, (b"authorization", b"Bearer wrong-token")],
        [JSON, (b"authorization", b"Basic dXNlcjpwYXNz")],
        [JSON, (b"authorization", b"Bearer")],
        [JSON, (b"authorization", b"Bearer a b")],
        [JSON, TOKEN, (b"api-version", b"v9")],
        [JSON, TOKEN, (b"api-version", b"")],
        [TOKEN, (b"content-type", b"text/plain")],
        [TOKEN],
        [TOKEN, (b"content-type", b"application/vnd.quotad+json")],
        [TOKEN, (b"content-type", b"application/json, text/plain")],
        [JSON, TOKEN, (b"idempotency-key", b"")],
        [JSON, TOKEN, (b"idempotency-key", b"has space")],
        [JSON, TOKEN, (b"idempotency-key", b"x" * 256)],
        [JSON, TOKEN, (b"idempotency-key", "ключ".encode())],
        [JSON, TOKEN, (b"idempotency-key", b"a\r\nx-injected: yes")],
        [(b"authorization", b"Bearer wrong"), TOKEN, JSON],
    ],
    ids=[
        "no token",
        "empty authorization",
        "wrong token",
        "basic auth",
        "bearer without token",
        "two words",
        "unknown api-version",
        "empty api-version",
        "text/plain",
        "no content type",
        "vendor json",
        "two media types",
        "empty idempotency key",
        "idempotency key with a space",
        "idempotency key too long",
        "non-ASCII idempotency key",
        "CRLF in idempotency key",
        "first authorization is wrong",
    ],
)
async def test_refused_headers_are_the_routes_to_answer(
    twins: Twins, headers: list[tuple[bytes, bytes]]
) -> None:
    """A missing or wrong token, or a header the guard or route refuses, gets the route's answer."""
    await same_answer(twins, headers, verify_body(twins.key), answered_by="route")


@pytest.mark.parametrize(
    ("length", "chunks"),
    [(False, 1), (False, 3)],
    ids=["no content-length", "chunked"],
)
async def test_bodies_without_a_length_are_the_routes_to_answer(
    twins: Twins, length: bool, chunks: int
) -> None:
    """A body without Content-Length (chunked) is read by the guard and answered by the route."""
    headers = [JSON, TOKEN, (b"transfer-encoding", b"chunked")] if chunks > 1 else [JSON, TOKEN]
    await same_answer(
        twins, headers, verify_body(twins.key), answered_by="route", length=length, chunks=chunks
    )


async def test_a_body_over_the_limit_is_the_routes_to_answer(clock: FakeClock) -> None:
    """A Content-Length over max_body_bytes gets the guard's 413."""
    twins = await make_twins(clock, max_body_bytes=1024)
    body = verify_body(twins.key)[:-1] + b', "pad": "' + b"x" * 2000 + b'"}'
    answer = await same_answer(twins, [JSON, TOKEN], body, answered_by="route")
    assert answer.status == 413


@pytest.mark.parametrize(
    "length",
    [b"9" * 5000, b"0", b" 80", b"+80", b"8_0", b"eighty"],
    ids=["5000 digits", "zero", "leading space", "plus sign", "underscore", "not a number"],
)
async def test_unusual_content_lengths_are_the_routes_to_answer(
    twins: Twins, length: bytes
) -> None:
    """A Content-Length that is not plain digits within the limit gets the route's answer."""
    headers = [JSON, TOKEN, (b"content-length", length)]
    await same_answer(twins, headers, verify_body(twins.key), answered_by="route", length=False)


async def test_header_names_that_are_not_bytes_are_the_routes_to_answer(twins: Twins) -> None:
    """A header name given as a bytearray (the ASGI spec says bytes) gets the route's answer."""
    headers: list[Any] = [JSON, (bytearray(b"authorization"), TOKEN[1])]
    await same_answer(twins, headers, verify_body(twins.key), answered_by="route")


async def test_a_body_longer_than_declared_is_the_routes_to_answer(twins: Twins) -> None:
    """A body longer than its Content-Length is left to the route to read and judge."""
    body = verify_body(twins.key)
    headers = [JSON, TOKEN, (b"content-length", b"10")]
    await same_answer(twins, headers, body, answered_by="route", length=False)


async def test_a_spent_failure_budget_refuses_wrong_tokens_only(clock: FakeClock) -> None:
    """After too many bad tokens, a bad one gets the route's 429; the right one the fast 200."""
    twins = await make_twins(clock, auth_failures_per_minute=2)
    wrong = [JSON, (b"authorization", b"Bearer wrong-token")]
    for _ in range(2):
        refused = await same_answer(twins, wrong, verify_body(twins.key), answered_by="route")
        assert refused.status == 401
    limited = await same_answer(twins, wrong, verify_body(twins.key), answered_by="route")
    assert limited.status == 429
    assert any(name == b"retry-after" for name, _ in limited.headers)
    served = await same_answer(twins, [JSON, TOKEN], verify_body(twins.key), answered_by="fast")
    assert served.status == 200


async def test_a_request_under_a_root_path_is_left_to_routing(twins: Twins) -> None:
    """Under a root path, the request goes through FastAPI's routing, not the fast path."""
    taken = len(twins.taken)
    extra = {"root_path": "/quotad", "path": "/quotad/v1/verify"}
    fast = await call(twins.fast, [JSON, TOKEN], verify_body(twins.key), scope_extra=extra)
    route = await call(twins.route, [JSON, TOKEN], verify_body(twins.key), scope_extra=extra)
    assert len(twins.taken) == taken
    assert (fast.status, fast.body) == (route.status, route.body)


# The pieces ---------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
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
    | st.sampled_from([0, 1, 10**9, 10**9 + 1, -1, True, False, 1.0, "1", ""])
)
BODIES = (
    st.dictionaries(st.sampled_from(["key", "service", "cost", "extra"]), FIELD_VALUES, max_size=4)
    | JSON_VALUES
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(BODIES)
def test_verify_args_accepts_exactly_what_verify_in_accepts(body: Any) -> None:
    """verify_args accepts a JSON body if and only if VerifyIn does, with the same values."""
    raw = json.dumps(body).encode()
    try:
        model: VerifyIn | None = VerifyIn.model_validate(json.loads(raw))
    except ValidationError:
        model = None
    expected = None if model is None else (model.key, model.service, model.cost)
    assert verify_args(raw) == expected


RESET = datetime(2024, 11, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "verdict",
    [
        Verdict(True, "VALID", "insights", "acme", 3, 250, RESET, 86_400),
        Verdict(False, "QUOTA_EXCEEDED", "insights", "acme", 250, 250, RESET, 90_000),
        Verdict(False, "QUOTA_EXCEEDED", "insights", "acme", 300, 250, RESET, None),
        Verdict(False, "MALFORMED_API_KEY", "insights", note="the API key is malformed"),
        Verdict(True, "VALID", "insights", note="allowed uncounted by the fail-open policy"),
    ],
    ids=["granted", "refused", "used past the total", "no quota", "fail-open"],
)
@pytest.mark.parametrize("now", [RESET.timestamp() - 43_200.5, RESET.timestamp() + 1])
def test_raw_quota_headers_are_the_starlette_form_of_the_dict(verdict: Verdict, now: float) -> None:
    """verdict_raw_headers is verdict_headers as Starlette would send it, in order."""
    expected = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in verdict_headers(verdict, now).items()
    ]
    assert verdict_raw_headers(verdict, now) == expected


def test_request_ids_are_uuid4_hex() -> None:
    """A request id is 32 hex digits of a fresh version-4 UUID."""
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, request_id)
