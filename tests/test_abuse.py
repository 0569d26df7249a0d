"""Abuse from one address: failure budgets that lock no valid caller out, forwarded
addresses believed only from configured proxies, and one rule for the two key headers."""

from __future__ import annotations

import uuid
from collections import Counter
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
from quotad.asgi.proxy import build_proxy
from quotad.domain import keys
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.service.throttle import FailureBudget
from quotad.settings import Settings
from quotad.storage import stores_from_url
from tests.conftest import ADMIN_TOKEN, OPERATOR, Deployment, Example, make_settings, seed
from tests.processes import BIN, Running, Spec, running_all
from tests.test_dashboard import sign_in

ERROR_KEYS = {"error", "id", "note", "validationErrors"}
BUDGET = 60  # QUOTAD_AUTH_FAILURES_PER_MINUTE's default
WRONG_TOKEN = {"Authorization": "Bearer not-the-operator-token"}
BASIC = {"Authorization": "Basic dXNlcjpwYXNz"}


def frozen_budget(ctx: Context) -> None:
    """The default failure budget on a clock that stands still, so nothing refills mid-test."""
    ctx.failures = FailureBudget(BUDGET, lambda: 0.0)


def guess() -> dict[str, str]:
    """A well-formed key nobody was given, as ``x-api-key``."""
    return {"x-api-key": keys.generate("qd")}


def assert_error(response: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is the contract's error body with this status and code; its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == code
    uuid.UUID(body["id"])
    return body


def assert_throttled(response: httpx2.Response) -> None:
    """A 429 RATE_LIMITED with ``Retry-After``."""
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["retry-after"]) >= 1


async def failed_reads(http: httpx2.AsyncClient, times: int) -> list[int]:
    """The statuses of ``times`` customer reads with keys nobody was given."""
    return [(await http.get("/v1/usages", headers=guess())).status_code for _ in range(times)]


async def failed_operator_calls(http: httpx2.AsyncClient, times: int) -> list[int]:
    """The statuses of ``times`` operator calls with a wrong token."""
    return [
        (await http.get("/admin/v1/services", headers=WRONG_TOKEN)).status_code
        for _ in range(times)
    ]


# A failure budget never refuses a valid credential -------------------------------------
async def test_failed_customer_reads_lock_no_valid_caller_out(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """After 65 failed reads from one address, the operator's verify and valid keys get 200."""
    other = await seed(client, "globex")
    frozen_budget(ctx)
    statuses = await failed_reads(client, BUDGET + 5)
    assert statuses == [401] * BUDGET + [429] * 5
    assert_throttled(await client.get("/v1/usages", headers=guess()))
    body = {"key": other.key, "service": "insights", "cost": 1}
    verdict = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert verdict.status_code == 200, verdict.text
    assert verdict.json()["valid"] is True
    for who in (other, deployment):
        for headers in (who.bearer, {"x-api-key": who.key}):
            for path in ("/v1/usages", "/usage/insights"):
                answer = await client.get(path, headers=headers)
                assert answer.status_code == 200, answer.text
    assert (await client.get("/admin/v1/services", headers=OPERATOR)).status_code == 200


async def test_customer_and_operator_failure_budgets_are_separate(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A spent customer budget leaves operator failures at 401, and the other way round."""
    frozen_budget(ctx)
    assert (await failed_reads(client, BUDGET + 1))[-1] == 429
    assert_error(
        await client.get("/admin/v1/services", headers=WRONG_TOKEN), 401, "INVALID_AUTHORIZATION"
    )
    frozen_budget(ctx)  # a fresh minute
    statuses = await failed_operator_calls(client, BUDGET + 1)
    assert statuses == [401] * BUDGET + [429]
    assert_throttled(await client.get("/admin/v1/services", headers=WRONG_TOKEN))
    wrong_verify = await client.post(
        "/v1/verify", json={"key": deployment.key, "service": "insights"}, headers=WRONG_TOKEN
    )
    assert_throttled(wrong_verify)
    assert_error(await client.get("/v1/usages", headers=guess()), 401, "INVALID_AUTHORIZATION")
    assert_error(await client.get("/usage/insights", headers=guess()), 403, "INVALID_AUTHORIZATION")
    assert (await client.get("/admin/v1/services", headers=OPERATOR)).status_code == 200


async def test_sign_ins_spend_their_own_budget_and_valid_ones_pass(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Customer budget spent: a wrong key's sign-in is 429; the right key and the operator sign in."""
    frozen_budget(ctx)
    assert (await failed_reads(client, BUDGET))[-1] == 401
    throttled = await sign_in(client, "portal", keys.generate("qd"))
    assert throttled.status_code == 429
    assert "Too many failed sign-ins" in throttled.text
    portal = await sign_in(client, "portal", deployment.key)
    assert (portal.status_code, portal.headers.get("location")) == (303, "/portal")
    wrong = await sign_in(client, "dashboard", "not-the-operator-token")
    assert wrong.status_code == 401
    dashboard = await sign_in(client, "dashboard", ADMIN_TOKEN)
    assert (dashboard.status_code, dashboard.headers.get("location")) == (303, "/dashboard")


# ... through the ASGI middleware, over HTTP (embedded and remote) ------------------------


@pytest.mark.slow
def test_an_attacker_on_the_same_address_never_fails_a_victims_calls(example: Example) -> None:
    """While one client fails 100 times, another's valid calls from that address all get 200."""
    victim = example.provision(1000)
    seen: Counter[int] = Counter()
    attacker: list[httpx2.Response] = []
    with httpx2.Client(base_url=example.app.base, timeout=10) as http:
        for n in range(100):
            attacker.append(http.get("/v1/usages", headers=guess()))
            attacker.append(http.get("/insights/ai", headers=guess()))
            if n % 5 == 0:
                for path in ("/insights/ai", "/v1/usages", "/usage/insights"):
                    seen[http.get(path, headers={"x-api-key": victim}).status_code] += 1
        assert seen == Counter({200: 60}), seen
    # The attacker's budget was spent, and only the attacker's. (Not asked of its last
    # call: on a busy machine the loop can outlast the refill of a failure or two.)
    throttled = [answer for answer in attacker if answer.status_code == 429]
    assert throttled, Counter(answer.status_code for answer in attacker)
    assert_throttled(throttled[-1])


async def hello(_request: Any) -> JSONResponse:
    """A JSON answer."""
    return JSONResponse({"hello": "world"})


def fronted(front: str, backend: Any) -> Any:
    """The middleware on a small app, or the proxy in front of that app."""
    upstream = Starlette(routes=[Route("/hello", hello)])
    if front == "proxy":
        return build_proxy(
            "http://upstream",
            service="insights",
            backend=backend,
            transport=httpx2.ASGITransport(app=upstream),
        )
    upstream.add_middleware(QuotadMiddleware, service="insights", backend=backend)
    mount_usage_endpoints(upstream, backend)
    return upstream


@pytest.mark.parametrize("front", ["middleware", "proxy"])
async def test_a_quotad_429_reaches_the_client_as_429(front: str) -> None:
    """quotad's own error answers to the remote backend reach the client as they are, never 500."""
    ctx = Context(
        stores_from_url("memory://"), make_settings("memory://", auth_failures_per_minute=1)
    )
    await ctx.stores.open()
    quotad = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
    remote = RemoteBackend("http://quotad", "not-the-operator-token", transport=quotad)
    app = fronted(front, remote)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://app"
    ) as http:
        first = await http.get("/hello", headers=guess())
        assert_error(first, 401, "INVALID_AUTHORIZATION")
        second = await http.get("/hello", headers=guess())
        assert_throttled(second)
        assert "failed authentications" in second.json()["note"]
    await remote.close()
    await ctx.stores.close()


# X-Forwarded-For only from configured proxies -------------------------------------------
def quotad_server(name: str, workdir: Path, **env: str) -> Spec:
    """``quotad serve`` on its own SQLite file, allowing 3 failures a minute."""
    argv = [str(BIN / "quotad"), "serve", "--store", f"sqlite:///{workdir / name}.db"]
    return Spec(argv, name, env={"QUOTAD_AUTH_FAILURES_PER_MINUTE": "3", **env})


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """Two quotad servers: trusting no proxy (the default), and trusting 127.0.0.1 and 127.0.0.2/31."""
    workdir = tmp_path_factory.mktemp("forwarded")
    specs = (
        quotad_server("untrusting", workdir),
        quotad_server("trusting", workdir, QUOTAD_TRUSTED_PROXIES="127.0.0.1, 127.0.0.2/31"),
    )
    with running_all(workdir, *specs) as handles:
        yield {spec.name: handle for spec, handle in zip(specs, handles, strict=True)}


def failed_reads_from(server: Running, peer: str, forwarded: list[str]) -> list[int]:
    """Statuses of failed customer reads sent from ``peer``, one per X-Forwarded-For value."""
    transport = httpx2.HTTPTransport(local_address=peer)
    with httpx2.Client(base_url=server.base, transport=transport, timeout=10) as http:
        return [
            http.get("/v1/usages", headers={**guess(), "X-Forwarded-For": value}).status_code
            for value in forwarded
        ]


@pytest.mark.slow
def test_rotating_x_forwarded_for_does_not_reset_the_budget(
    servers: dict[str, Running],
) -> None:
    """Without trusted proxies, a local client's X-Forwarded-For is ignored: the 4th failure is 429."""
    rotating = [f"10.0.0.{n}" for n in range(6)]
    assert failed_reads_from(servers["untrusting"], "127.0.0.1", rotating) == [401] * 3 + [429] * 3


@pytest.mark.slow
def test_x_forwarded_for_from_a_trusted_proxy_is_honoured(servers: dict[str, Running]) -> None:
    """From a peer in QUOTAD_TRUSTED_PROXIES each forwarded address has its own budget."""
    server = servers["trusting"]
    for peer in ("127.0.0.1", "127.0.0.3"):  # an address, and one of a network
        rotating = [f"10.{peer[-1]}.0.{n}" for n in range(6)]
        assert failed_reads_from(server, peer, rotating) == [401] * 6
    same = ["10.9.9.9"] * 4
    assert failed_reads_from(server, "127.0.0.1", same) == [401] * 3 + [429]
    untrusted = [f"10.4.0.{n}" for n in range(4)]  # 127.0.0.4 is not a trusted proxy
    assert failed_reads_from(server, "127.0.0.4", untrusted) == [401] * 3 + [429]


# Which key header wins -------------------------------------------------------------------
async def test_a_key_in_either_header_authenticates_and_two_different_keys_are_400(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Basic + a valid x-api-key is 200, one key in both headers too; two different keys are 400."""
    other = await seed(client, "globex")
    for path, key_status in (("/v1/usages", 401), ("/usage/insights", 403)):
        with_basic = await client.get(path, headers={**BASIC, "x-api-key": deployment.key})
        assert with_basic.status_code == 200, with_basic.text
        same = await client.get(path, headers={**deployment.bearer, "x-api-key": deployment.key})
        assert same.status_code == 200, same.text
        two = await client.get(path, headers={**other.bearer, "x-api-key": deployment.key})
        body = assert_error(two, 400, "VALIDATION_FAILED")
        assert [item["path"] for item in body["validationErrors"]] == ["/header/x-api-key"]
        assert deployment.key not in two.text
        assert other.key not in two.text
        assert_error(await client.get(path, headers=BASIC), key_status, "INVALID_AUTHORIZATION")


@pytest.fixture
async def embedded() -> AsyncIterator[tuple[EmbeddedBackend, list[str]]]:
    """An embedded backend on the memory store with two accounts' keys."""
    settings = Settings(_env_file=None, store_url="memory://")
    ctx = Context(stores_from_url("memory://"), settings)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "p", {"insights": Quota.daily(10)}, [], "")
    secrets = []
    for account in ("acme", "globex"):
        await admin.create_account(ctx, account, account.title(), "p", "UTC", Overrides())
        secrets.append((await admin.create_key(ctx, account, "k")).secret)
    yield EmbeddedBackend(ctx=ctx), secrets
    await ctx.stores.close()


@pytest.mark.parametrize("front", ["middleware", "proxy"])
async def test_the_header_rule_holds_in_the_middleware_and_the_proxy(
    front: str, embedded: tuple[EmbeddedBackend, list[str]]
) -> None:
    """Metered and usage routes: Basic + x-api-key passes; two different keys are 400."""
    backend, (key, other) = embedded
    app = fronted(front, backend)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://app"
    ) as http:
        for path in ("/hello", "/v1/usages"):
            passed = await http.get(path, headers={**BASIC, "x-api-key": key})
            assert passed.status_code == 200, passed.text
            same = await http.get(
                path, headers={"Authorization": f"Bearer {key}", "x-api-key": key}
            )
            assert same.status_code == 200, same.text
            two = await http.get(
                path, headers={"Authorization": f"Bearer {other}", "x-api-key": key}
            )
            body = assert_error(two, 400, "VALIDATION_FAILED")
            assert [item["path"] for item in body["validationErrors"]] == ["/header/x-api-key"]
