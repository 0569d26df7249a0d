"""Schemathesis against the committed ``openapi.json``, on the in-process app (issue 6).

Every operation of the committed spec is fuzzed on the ASGI app over the memory store,
with the credentials it needs (the operator token on ``/admin/v1``, ``/v1/verify`` and
``/v1/events``; a customer key on ``/v1/usages`` and ``/usage/{service}``), in positive
mode (schema-valid input) and negative mode (schema-violating input). A smaller pass
sends the *other* credential to every operation, which must be refused.

Each generated case runs on a freshly seeded deployment (services, plans, two accounts
with keys, a week of usage, a gauge), so one case's DELETE cannot starve the next, and
positive cases have some of their path parameters, query dates and body fields replaced
by ids and values that exist, so routes are exercised past "not found".

Checks on every response:

- every check schemathesis has (``validate_response`` with its default, the full set: no
  5xx, status code, content type, headers and body conform to the spec, a
  schema-violating request is refused, a request without credentials is refused, …),
  except that ``positive_data_acceptance`` is replaced by ``positive_data_accepted``,
  which allows the operations of ``tests/fuzz_hooks.py``'s ``SEMANTIC_400`` to refuse
  schema-valid data 400 for the reasons listed there (what exists, the time, how two
  fields relate), and nothing else;
- every non-2xx body is exactly the contract's error shape (``error``, ``id``, ``note``,
  ``validationErrors``) with a known code and a UUID id;
- every 4xx leaves the deployment as it was (services, plans, accounts, keys, usage
  days, gauges);
- every answer echoes ``api-version``.

A last test runs schemathesis's own CLI the way an outside fuzz run does: ``--checks
all``, every phase (examples, coverage with its undeclared methods, fuzzing, and the
stateful phase following the document's ``links``), against a ``quotad serve`` process.

Bounded and deterministic: ``derandomize=True``, a few dozen examples per operation and
mode, no shrinking. The number of generated cases is written to
``artifacts/fuzz-summary.txt`` and to the terminal at the end of the module.

The module ends with fixed hostile inputs on every store (schemathesis above runs on the
memory store only): huge and fractional numbers, negative costs, unicode and bidi ids,
100k-deep JSON, CR/LF and NUL in headers (sent as raw ASGI), NUL in strings and paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.core.parameters import ParameterLocation

from quotad.api.app import create_app
from quotad.domain import keys
from quotad.domain.models import (
    Account,
    AccountStatus,
    ApiKey,
    Limit,
    Overrides,
    Plan,
    Quota,
    Service,
)
from quotad.errors import ErrorCode
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests import fuzz_hooks
from tests.asgi import http_scope
from tests.conftest import ADMIN_TOKEN, OPERATOR, create_account
from tests.snapshots import store_snapshot

ROOT = Path(__file__).parent.parent
SPEC = ROOT / "openapi.json"
SUMMARY = ROOT / "artifacts" / "fuzz-summary.txt"
ERROR_KEYS = {"error", "id", "note", "validationErrors"}
ITEM_KEYS = {"path", "message", "context", "suggestion"}  # of each validationErrors item
ERROR_CODES = {code.value for code in ErrorCode}
CREATED = datetime(2024, 11, 1, tzinfo=UTC)
TODAY = date(2024, 11, 7)  # FakeClock's day
USAGE_WINDOW = (date(2024, 1, 1), date(2024, 12, 31))  # the days a snapshot compares

# Examples per operation and mode: the whole module stays well under a minute on 2 cores.
# QUOTAD_FUZZ_SCALE=10 multiplies them for a longer hunt (a release check, not CI).
SCALE = float(os.environ.get("QUOTAD_FUZZ_SCALE", "1"))
EXAMPLES = {
    name: max(1, round(count * SCALE))
    for name, count in {"positive": 20, "negative": 12, "customer": 30, "crossed": 3}.items()
}

# The deployment every case starts from ---------------------------------------------
ACCOUNT, OTHER = "acme", "globex"
PLAN, SPARE_PLAN = "plan-acme", "spare"
LIMIT_NAME = "cohort.max_count"
KEY, OTHER_KEY = keys.generate("qd"), keys.generate("qd")
KEY_ID, OTHER_KEY_ID = "key_fuzzacme000000001", "key_fuzzglobex000001"
CUSTOMER = {"Authorization": f"Bearer {KEY}"}
CUSTOMER_X_API_KEY = {"x-api-key": KEY}


def fuzz_settings() -> Settings:
    """Known operator token, no throttling, no failure budget (fuzzing sends many bad keys)."""
    return Settings(
        _env_file=None,
        store_url="memory://",
        admin_token=ADMIN_TOKEN,
        rate_limit_per_second=0,
        rate_limit_burst=1,
        auth_failures_per_minute=0,
    )


def _key(key_id: str, account_id: str, secret: str) -> ApiKey:
    return ApiKey(key_id, account_id, "fuzz", keys.digest(secret), "qd", secret[-4:], None, CREATED)


async def seed(stores: Stores) -> None:
    """Two services, two plans (one unused), two accounts with a key each, usage, a gauge."""
    records, counters = stores.records, stores.counters
    for name in ("insights", "scoring"):
        await records.create_service(Service(name, f"{name} queries", CREATED))
    limits = (Limit(LIMIT_NAME, "Number of known contacts (KCs) allowed", 10),)
    quotas = {"insights": Quota.daily(250), "scoring": Quota.daily(100)}
    await records.create_plan(Plan(PLAN, quotas, limits, CREATED, "the fuzzed plan"))
    await records.create_plan(Plan(SPARE_PLAN, {"insights": Quota.daily(5)}, (), CREATED))
    for account_id in (ACCOUNT, OTHER):
        await create_account(
            stores,
            Account(
                account_id,
                account_id.title(),
                PLAN,
                "UTC",
                AccountStatus.ACTIVE,
                Overrides(),
                CREATED,
            ),
        )
    await records.create_key(_key(KEY_ID, ACCOUNT, KEY))
    await records.create_key(_key(OTHER_KEY_ID, OTHER, OTHER_KEY))
    for offset in range(7):
        day = TODAY - timedelta(days=offset)
        await counters.consume(ACCOUNT, "insights", day, 3 + offset, 250)
        await counters.consume(OTHER, "scoring", day, 1, 100)
    await counters.set_gauge(ACCOUNT, LIMIT_NAME, 3)


async def snapshot(stores: Stores) -> dict[str, Any]:
    """Everything a request could change, over this module's usage window."""
    return await store_snapshot(stores, USAGE_WINDOW)


class World:
    """The app under test and, per case, a fresh seeded store behind it."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self.runner = runner
        self.settings = fuzz_settings()
        self.app = create_app(self._fresh_ctx(), manage_store=False)

    def _fresh_ctx(self) -> Context:
        stores = Stores.of(MemoryStore())
        self.runner.run(seed(stores))
        return Context(stores, self.settings, FakeClock())  # 2024-11-07T12:00:00Z

    def reset(self) -> Stores:
        """Point the app at a freshly seeded deployment; returns its stores."""
        ctx = self._fresh_ctx()
        self.app.state.ctx = ctx
        return ctx.stores

    def snapshot(self, stores: Stores) -> dict[str, Any]:
        """See ``snapshot``."""
        return self.runner.run(snapshot(stores))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """One app (and event loop for seeding) for the module."""
    with asyncio.Runner() as runner:
        world = World(runner)
        # Checks that send a request of their own (``ignored_auth``) send it to the app too.
        for operation in (*OPERATIONS.values(), *NEGATIVE_OPERATIONS.values()):
            operation.schema.app = world.app
        yield world


# Counting and reporting --------------------------------------------------------------
CASES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
BY_PASS: defaultdict[str, Counter[int]] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: the number of generated cases, to artifacts/ and the terminal."""
    yield
    total = sum(CASES.values())
    lines = [f"schemathesis: {total} generated cases against {SPEC.name}"]
    lines += [f"  {name}: {count}" for name, count in sorted(CASES.items())]
    lines.append("  statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(STATUSES.items())))
    details = [
        f"  {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        for name, counts in sorted(BY_PASS.items())
    ]
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text("\n".join([*lines, "per pass (status=count):", *details]) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(f"fuzz summary ({SUMMARY.relative_to(ROOT)}): {lines[0]}")


# The operations ------------------------------------------------------------------------
def _without_security(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec without its security declarations (credentials are sent by the test).

    In negative mode schemathesis otherwise spends most cases on dropping the required
    ``Authorization`` header (and then drops ours too), which only ever tests "no
    credentials: 401"; without them, every negative case violates a parameter or body.
    """
    stripped = json.loads(json.dumps(raw))
    for methods in stripped["paths"].values():
        for operation in methods.values():
            operation.pop("security", None)
    stripped.get("components", {}).pop("securitySchemes", None)
    return stripped


SCHEMA = schemathesis.openapi.from_path(SPEC)
NEGATIVE_SCHEMA = schemathesis.openapi.from_dict(_without_security(json.loads(SPEC.read_text())))


def _operations(schema: Any) -> dict[str, Any]:
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


OPERATIONS = _operations(SCHEMA)
NEGATIVE_OPERATIONS = _operations(NEGATIVE_SCHEMA)
CUSTOMER_OPS = {"GET /v1/usages", "GET /v1/quotas", "GET /usage/{service}"}
PUBLIC_OPS = {"GET /healthz", "GET /readyz"}
OPERATOR_OPS = sorted(set(OPERATIONS) - CUSTOMER_OPS - PUBLIC_OPS)


def has_input(label: str) -> bool:
    """Whether an operation has a query, a header or a body that negative mode can violate.

    (A path parameter that is any string cannot be violated: hypothesis finds no case.)
    """
    op = NEGATIVE_OPERATIONS[label]
    return bool(op.query or op.headers or op.body)


# Replacing generated values with ones that exist ---------------------------------------
REAL_PATH = {
    "account_id": ACCOUNT,
    "service": "insights",
    "name": LIMIT_NAME,
    "key_id": KEY_ID,
    "plan_id": SPARE_PLAN,
}
REAL_QUERY = {"start_date": "2024-11-01", "end_date": TODAY.isoformat()}
REAL_BODY = {
    "key": KEY,
    "service": "insights",
    "account_id": ACCOUNT,
    "plan": PLAN,
    "timezone": "Europe/Paris",
    "date": "2024-11-05",
    "timestamp": "2024-11-07T10:00:00Z",
}


def _real_body(body: Any) -> Any:
    if isinstance(body, dict):
        replaced = {k: REAL_BODY.get(k, v) if isinstance(v, str) else v for k, v in body.items()}
        if isinstance(body.get("events"), list):
            replaced["events"] = [_real_body(item) for item in body["events"]]
        return replaced
    return body


def make_real(case: Any, choice: int) -> None:
    """Replace path parameters, query dates and body fields with values that exist.

    Each of the three is replaced unless its bit in ``choice`` is set (so hypothesis's
    simplest case is fully real), and never where negative mode put its violation.
    """
    meta = case.meta

    def may(bit: int, location: ParameterLocation) -> bool:
        return not choice & bit and not (meta is not None and meta.is_negative_at(location))

    if may(1, ParameterLocation.PATH) and case.path_parameters:
        for name in list(case.path_parameters):
            if name in REAL_PATH:
                case.path_parameters[name] = REAL_PATH[name]
    if may(2, ParameterLocation.QUERY) and case.query:
        for name in list(case.query):
            if name in REAL_QUERY:
                case.query[name] = REAL_QUERY[name]
    if may(4, ParameterLocation.BODY) and isinstance(case.body, dict):
        case.body = _real_body(case.body)


# Checks ----------------------------------------------------------------------------------
# Every check schemathesis has runs on every answer (``validate_response`` with no list:
# the built-ins, those of a stateful run or of the coverage phase having nothing to judge
# in a single generated case), but one: ``positive_data_acceptance`` is replaced by
# ``positive_data_accepted``, which lets the operations of ``fuzz_hooks.SEMANTIC_400``
# refuse schema-valid data 400 for the reasons named there, and for no other.
EXCLUDED_CHECKS = [st_checks.positive_data_acceptance]


def positive_data_accepted(response: Any, case: Any, run: Pass) -> None:
    """A schema-valid request is accepted (or refused for its credentials, a missing record,
    a conflict or a throttle: schemathesis's statuses), or refused 400 only for what no
    schema can state."""
    status = response.status_code
    if run.mode != "positive" or run.crossed or status < 400 or status in (401, 403, 404, 409, 429):
        return
    assert status == 400, f"schema-valid data answered {status}: {response.text}"
    allowed = fuzz_hooks.SEMANTIC_400.get(run.label)
    items = response.json()["validationErrors"]
    assert allowed is not None, f"schema-valid data refused: {response.text}"
    assert items, f"schema-valid data refused: {response.text}"
    for item in items:
        assert not fuzz_hooks.unexplained_refusal(item, allowed), response.text


def assert_error_shape(response: Any) -> None:
    """A non-2xx body is the contract's error body: exactly the four keys, a known code."""
    body = response.json()
    assert isinstance(body, dict), response.text
    assert set(body) == ERROR_KEYS, response.text
    assert body["error"] in ERROR_CODES, response.text
    uuid.UUID(body["id"])
    assert isinstance(body["note"], str), response.text
    assert body["note"], response.text
    assert isinstance(body["validationErrors"], list), response.text
    for item in body["validationErrors"]:
        assert {"path", "message", "context"} <= set(item) <= ITEM_KEYS, response.text
        assert isinstance(item["context"].get("errorType"), str), response.text


@dataclass(frozen=True)
class Pass:
    """One schemathesis pass: an operation, a generation mode and the credentials sent."""

    label: str
    mode: str  # positive | negative
    who: str  # operator | customer | customer-x-api-key | nobody
    examples: int
    crossed: bool = False  # the wrong credentials on purpose: must be refused

    @property
    def id(self) -> str:
        """The pytest id."""
        tag = "crossed" if self.crossed else self.mode
        return f"{self.label} [{self.who}, {tag}]"

    @property
    def headers(self) -> dict[str, str]:
        """The credentials to send."""
        return {
            "operator": OPERATOR,
            "customer": CUSTOMER,
            "customer-x-api-key": CUSTOMER_X_API_KEY,
            "nobody": {},
        }[self.who]


def passes() -> list[Pass]:
    """Every operation with its own credentials in both modes, and crossed credentials."""
    found: list[Pass] = []
    for label in OPERATOR_OPS:
        found.append(Pass(label, "positive", "operator", EXAMPLES["positive"]))
        if has_input(label):
            found.append(Pass(label, "negative", "operator", EXAMPLES["negative"]))
        found.append(Pass(label, "positive", "customer", EXAMPLES["crossed"], crossed=True))
    for label in sorted(CUSTOMER_OPS):
        who = "customer"
        found.append(Pass(label, "positive", who, EXAMPLES["customer"]))
        if label == "GET /usage/{service}":
            found.append(Pass(label, "positive", "customer-x-api-key", EXAMPLES["customer"] // 2))
            found.append(Pass(label, "negative", who, EXAMPLES["customer"]))
        found.append(Pass(label, "positive", "operator", EXAMPLES["crossed"], crossed=True))
    found.append(Pass("GET /healthz", "positive", "nobody", 1))
    found.append(Pass("GET /readyz", "positive", "nobody", 1))
    return found


PASSES = passes()


def check_case(world: World, run: Pass, case: Any, choice: int) -> None:
    """Send one case to a fresh deployment and check its answer."""
    if not run.crossed:
        make_real(case, choice)
    if run.who == "customer-x-api-key" and case.headers:
        case.headers.pop("Authorization", None)  # it would win over x-api-key
    stores = world.reset()
    before = world.snapshot(stores)
    response = case.call(headers=run.headers, app=world.app)
    CASES[f"{run.who}/{run.mode}{'/crossed' if run.crossed else ''}"] += 1
    STATUSES[response.status_code] += 1
    BY_PASS[run.id][response.status_code] += 1
    case.validate_response(
        response,
        excluded_checks=EXCLUDED_CHECKS,
        headers=run.headers,
        transport_kwargs={"app": world.app, "headers": run.headers},
    )
    positive_data_accepted(response, case, run)
    assert response.headers.get("api-version") == ["v1"], response.headers
    if response.status_code >= 300:
        assert_error_shape(response)
    if 400 <= response.status_code < 500:
        assert world.snapshot(stores) == before, f"a {response.status_code} changed the deployment"
    if run.crossed:
        # The other party's credentials open nothing: refused before any data is read
        # (404 "no such path" when the generated path matches no route at all).
        body = response.json()
        assert response.status_code in (400, 401, 403, 404), (response.status_code, body)
        if response.status_code == 404:
            assert body["note"] == "no such path", body


@pytest.mark.parametrize("run", PASSES, ids=[p.id for p in PASSES])
def test_schemathesis(world: World, run: Pass) -> None:
    """No 5xx, spec-conformant answers, the contract's error body, no change on a 4xx."""
    mode = GenerationMode.POSITIVE if run.mode == "positive" else GenerationMode.NEGATIVE
    operations = OPERATIONS if mode is GenerationMode.POSITIVE else NEGATIVE_OPERATIONS
    strategy = operations[run.label].as_strategy(generation_mode=mode)
    before = sum(CASES.values())

    @settings(
        max_examples=run.examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, choice=st.integers(min_value=0, max_value=7))
    def fuzz(case: Any, choice: int) -> None:
        check_case(world, run, case, choice)

    fuzz()
    assert sum(CASES.values()) > before, "schemathesis generated no case"


# Abuse, on every store ---------------------------------------------------------------
# The schemathesis passes above run on the memory store; these fixed cases of hostile
# input run on every store (conftest's ``store_kind``), each expected to be refused with
# the contract's error body and to change nothing.
Raw = tuple[int, dict[str, str], bytes]


async def raw_request(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Raw:
    """One request straight into the ASGI app, with header bytes no HTTP client would send."""
    scope = http_scope(method, path, headers)
    messages: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    answer_headers = {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], answer_headers, content


def abusive_requests(key: str) -> list[tuple[str, str, str, dict[str, str], Any]]:
    """(name, method, path, headers, JSON body or raw bytes) of hostile requests."""
    verify = {"key": key, "service": "insights", "cost": 1}
    event = {
        "id": "ev-ok",
        "account_id": "acme",
        "service": "insights",
        "amount": 1,
        "timestamp": "2024-11-07T10:00:00Z",
    }
    op = OPERATOR
    return [
        ("huge cost", "POST", "/v1/verify", op, {**verify, "cost": 10**30}),
        ("negative cost", "POST", "/v1/verify", op, {**verify, "cost": -1}),
        ("fractional cost", "POST", "/v1/verify", op, {**verify, "cost": 1.5}),
        (
            "infinite cost",
            "POST",
            "/v1/verify",
            op,
            b'{"key": "k", "service": "insights", "cost": 1e400}',
        ),
        (
            "5000-digit cost",
            "POST",
            "/v1/verify",
            op,
            b'{"key": "k", "service": "insights", "cost": ' + b"9" * 5000 + b"}",
        ),
        ("100k-deep JSON", "POST", "/v1/verify", op, b"[" * 100_000 + b"]" * 100_000),
        ("10k-char key", "POST", "/v1/verify", op, {**verify, "key": "qd_" + "A" * 10_000}),
        (
            "negative event amount",
            "POST",
            "/v1/events",
            op,
            {"events": [event, {**event, "id": "ev-2", "amount": -5}]},
        ),
        (
            "huge event amount",
            "POST",
            "/v1/events",
            op,
            {"events": [event, {**event, "id": "ev-2", "amount": 10**20}]},
        ),
        (
            "1001 events",
            "POST",
            "/v1/events",
            op,
            {"events": [{**event, "id": f"e{n}"} for n in range(1001)]},
        ),
        (
            "unicode account id in event",
            "POST",
            "/v1/events",
            op,
            {"events": [event, {**event, "id": "ev-2", "account_id": "ünïcode"}]},
        ),
        (
            "bidi override in account id",
            "POST",
            "/v1/events",
            op,
            {"events": [event, {**event, "id": "ev-2", "account_id": "acme\u202e"}]},
        ),
        (
            "huge adjust",
            "POST",
            "/admin/v1/accounts/acme/usage/insights/adjust",
            op,
            {"date": "2024-11-07", "delta": 10**13},
        ),
        (
            "negative gauge",
            "PUT",
            "/admin/v1/accounts/acme/limits/cohort.max_count",
            op,
            {"usage": -1},
        ),
        (
            "fullwidth account id",
            "POST",
            "/admin/v1/accounts",
            op,
            {"id": "\uff41\uff43\uff4d\uff45", "name": "x", "plan": "plan-acme"},
        ),
        ("emoji plan id", "POST", "/admin/v1/plans", op, {"id": "plan-\U0001f4a5", "quotas": {}}),
        (
            "huge plan total",
            "POST",
            "/admin/v1/plans",
            op,
            {"id": "big", "quotas": {"insights": {"total": 10**16}}},
        ),
        ("unicode path id", "DELETE", "/admin/v1/accounts/%C3%BCn%C3%AFcode", op, None),
        ("traversal path id", "DELETE", "/admin/v1/accounts/..%2F..%2Fetc", op, None),
    ]


HEADER_INJECTIONS: list[tuple[str, str, str, list[tuple[bytes, bytes]]]] = [
    (
        "CRLF in api-version",
        "GET",
        "/admin/v1/services",
        [(b"api-version", b"v1\r\nx-injected: yes")],
    ),
    (
        "CRLF in Idempotency-Key",
        "POST",
        "/v1/verify",
        [(b"idempotency-key", b"a\r\nx-injected: yes")],
    ),
    ("non-ASCII Idempotency-Key", "POST", "/v1/verify", [(b"idempotency-key", "ключ".encode())]),
    ("NUL in Idempotency-Key", "POST", "/v1/verify", [(b"idempotency-key", b"a\x00b")]),
    (
        "CRLF in Authorization",
        "GET",
        "/admin/v1/services",
        [(b"authorization", b"Bearer x\r\nx-injected: yes")],
    ),
    ("CRLF in x-api-key", "GET", "/v1/usages", [(b"x-api-key", b"qd_x\r\nx-injected: yes")]),
]


def assert_refused_unchanged(name: str, status: int, body: bytes, before: Any, after: Any) -> None:
    """A 4xx with the contract's error body, and the deployment as it was."""
    assert 400 <= status < 500, (name, status, body[:300])
    parsed = json.loads(body)
    assert set(parsed) == ERROR_KEYS, (name, parsed)
    assert parsed["error"] in ERROR_CODES, (name, parsed)
    assert after == before, f"{name}: a refused request changed the deployment"


async def test_abusive_input_is_refused_and_changes_nothing(
    client: Any, ctx: Context, deployment: Any
) -> None:
    """Huge numbers, negative costs, unicode ids, deep JSON, header injection: 4xx, no change."""
    app = create_app(ctx, manage_store=False)
    for name, method, path, headers, body in abusive_requests(deployment.key):
        before = await snapshot(ctx.stores)
        if isinstance(body, bytes):
            as_json = {**headers, "Content-Type": "application/json"}
            response = await client.request(method, path, content=body, headers=as_json)
        else:
            response = await client.request(method, path, json=body, headers=headers)
        after = await snapshot(ctx.stores)
        assert_refused_unchanged(name, response.status_code, response.content, before, after)

    authorization = [(b"authorization", OPERATOR["Authorization"].encode())]
    verify = json.dumps({"key": deployment.key, "service": "insights", "cost": 1}).encode()
    for name, method, path, injected in HEADER_INJECTIONS:
        headers = [(b"content-type", b"application/json")]
        if not any(k in (b"authorization", b"x-api-key") for k, _ in injected):
            headers += authorization
        body = verify if method == "POST" else b""
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        before = await snapshot(ctx.stores)
        status, answer_headers, content = await raw_request(
            app, method, path, [*headers, *injected], body
        )
        after = await snapshot(ctx.stores)
        assert_refused_unchanged(name, status, content, before, after)
        assert "x-injected" not in answer_headers, name
        assert not any("\r" in v or "\n" in v for v in answer_headers.values()), name


NUL_REQUESTS: list[tuple[str, str, str, Any]] = [
    (
        "NUL in account name",
        "POST",
        "/admin/v1/accounts",
        {"id": "nul", "name": "a\x00b", "plan": "plan-acme"},
    ),
    (
        "NUL in service description",
        "POST",
        "/admin/v1/services",
        {"name": "nulsvc", "description": "a\x00b"},
    ),
    ("NUL in key name", "POST", "/admin/v1/accounts/acme/keys", {"name": "a\x00b"}),
    (
        "NUL in event id",
        "POST",
        "/v1/events",
        {
            "events": [
                {
                    "id": "e\x00",
                    "account_id": "acme",
                    "service": "insights",
                    "amount": 1,
                    "timestamp": "2024-11-07T10:00:00Z",
                }
            ]
        },
    ),
    (
        "NUL in verify service",
        "POST",
        "/v1/verify",
        {"key": "KEY", "service": "ins\x00", "cost": 1},
    ),
    ("NUL in search", "GET", "/admin/v1/accounts?search=a%00b", None),
    ("NUL in cursor", "GET", "/admin/v1/accounts?cursor=YQA", None),  # base64 of "a\0"
    ("NUL in account id", "GET", "/admin/v1/accounts/a%00b", None),
    ("NUL in plan id", "GET", "/admin/v1/plans/p%00", None),
    ("NUL in key id", "DELETE", "/admin/v1/keys/k%00", None),
    ("NUL in service path", "GET", "/admin/v1/accounts/acme/usage/ins%00ights", None),
    ("NUL in the customer's service path", "GET", "/usage/ins%00ights", None),  # customer key
]


async def test_nul_characters_never_cause_a_server_error(
    client: Any, ctx: Context, deployment: Any, store_kind: str, request: pytest.FixtureRequest
) -> None:
    """A NUL (U+0000) in any string, body or path, is answered without a 5xx on every store."""
    # PostgreSQL text cannot hold NUL: the SQL store answers such input as VALIDATION_FAILED.
    del store_kind, request
    failures = []
    for name, method, path, template in NUL_REQUESTS:
        body = template
        if isinstance(template, dict) and template.get("key") == "KEY":
            body = {**template, "key": deployment.key}
        headers = deployment.bearer if path.startswith("/usage/") else OPERATOR
        before = await snapshot(ctx.stores)
        response = await client.request(method, path, json=body, headers=headers)
        after = await snapshot(ctx.stores)
        if response.status_code >= 500:
            failures.append(f"{name}: {response.status_code} {response.json()['error']}")
            continue
        if response.status_code >= 400:
            assert_refused_unchanged(name, response.status_code, response.content, before, after)
    assert not failures, failures


# Every check, every phase, against a real ``quotad serve`` ------------------------------
# What an outside fuzz run does (issue 17): schemathesis's own CLI with ``--checks all``
# and its four phases (examples, coverage, fuzzing, and the stateful phase following the
# document's ``links``), against the server process, with the operator token and a
# customer key given per security scheme. The failure budget is off (the ``ignored_auth``
# check sends many requests without credentials, which would otherwise be answered 429).
#
# A schema-valid request is refused 400 only where the refusal depends on what no schema
# can state: what exists (a plan, a service, an account named in the body), what time it
# is (a key's expiry in the past, a date after today), or how two fields relate (a limit
# name twice in a plan, end_date without start_date, a range of more than 90 days, as
# seed 003 documents). Those operations, and only those, may answer 400 to positive data.
FUZZ_SECONDS = max(10, round(60 * SCALE))
# The operations whose schema-valid requests may be refused 400, and which refusals
# (tests/fuzz_hooks.py checks that such a 400 names nothing else).
SEMANTIC_400 = fuzz_hooks.SEMANTIC_400


def _cli_config(key: str) -> str:
    from tests.processes import ADMIN_TOKEN as SERVE_TOKEN

    lines = [
        "[auth.openapi.OperatorToken]",
        f'api_key = "Bearer {SERVE_TOKEN}"',
        "[auth.openapi.BearerKey]",
        f'api_key = "Bearer {key}"',
        "[auth.openapi.ApiKeyHeader]",
        f'api_key = "{key}"',
    ]
    for label in sorted(SEMANTIC_400):
        lines += [
            "[[operations]]",
            f'include-name = "{label}"',
            "checks.positive_data_acceptance.expected-statuses = "
            '["2xx", "3xx", "400", "401", "403", "404", "409", "429"]',
        ]
    return "\n".join(lines) + "\n"


def test_schemathesis_cli_every_check_and_phase_against_quotad_serve(tmp_path: Path) -> None:
    """schemathesis run --checks all, stateful phase included, finds nothing on quotad serve."""
    import subprocess
    import sys

    import httpx2

    from tests.processes import OPERATOR as SERVE_OPERATOR
    from tests.processes import running

    bin_dir = Path(sys.executable).parent
    with running(
        [str(bin_dir / "quotad"), "serve", "--store", "memory://"],
        tmp_path,
        "quotad",
        QUOTAD_AUTH_FAILURES_PER_MINUTE="0",
    ) as server:
        admin = f"{server.base}/admin/v1"
        for name in ("insights", "scoring"):
            httpx2.post(f"{admin}/services", json={"name": name}, headers=SERVE_OPERATOR)
        plan = {
            "id": "free",
            "quotas": {"insights": {"total": 250}},
            "limits": [{"name": LIMIT_NAME, "description": "KCs", "limit": 10}],
        }
        httpx2.post(f"{admin}/plans", json=plan, headers=SERVE_OPERATOR).raise_for_status()
        account = {"id": ACCOUNT, "name": "Acme", "plan": "free"}
        httpx2.post(f"{admin}/accounts", json=account, headers=SERVE_OPERATOR).raise_for_status()
        issued = httpx2.post(
            f"{admin}/accounts/{ACCOUNT}/keys", json={"name": "fuzz"}, headers=SERVE_OPERATOR
        )
        issued.raise_for_status()
        config = tmp_path / "schemathesis.toml"
        config.write_text(_cli_config(issued.json()["key"]))
        junit = tmp_path / "junit.xml"
        result = subprocess.run(
            [
                str(bin_dir / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{server.base}/openapi.json",
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-time",
                str(FUZZ_SECONDS),
                "--seed",
                "17",
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-junit-path",
                str(junit),
            ],
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=FUZZ_SECONDS + 120,
            check=False,
        )
    output = result.stdout + result.stderr
    import re

    generated = re.search(r"^\s*(\d+) generated", output, re.MULTILINE)
    CASES["cli (every check, every phase)"] += int(generated.group(1)) if generated else 0
    assert result.returncode == 0, output[-6000:]
    scenarios = re.search(r"Scenarios:\s+(\d+)", output)  # the stateful phase ran
    assert scenarios is not None, output[-3000:]
    assert int(scenarios.group(1)) > 0, output[-3000:]
    assert "only_semantic_refusals" not in output, output[-6000:]
