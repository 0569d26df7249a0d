"""Envoy's rate limit service (SPEC 12): ``quotad serve --grpc-port`` called with the
generated client of Envoy's API (xds-protos), and the service function behind its
``account_id`` descriptors.

Each gRPC test provisions its own account over the operator API of a real server, so the
tests sharing the module's server do not see each other's usage.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest
import yaml
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest, RateLimitResponse
from envoy.service.ratelimit.v3.rls_pb2_grpc import RateLimitServiceStub
from google.protobuf.wrappers_pb2 import UInt64Value

from quotad import envoy
from quotad.domain import keys
from quotad.domain.models import AccountStatus, Overrides, Quota
from quotad.errors import NotFound
from quotad.http.verify_body import COST_MAX
from quotad.service import admin, lifecycle, verify
from quotad.service.context import Context
from quotad.storage import stores_from_url
from tests.conftest import LOOPBACK, RedisProcess, make_settings, store_url
from tests.processes import BIN, OPERATOR, ROOT, Running, Spec, free_port, noon_zone, running_all

OK = RateLimitResponse.OK
OVER_LIMIT = RateLimitResponse.OVER_LIMIT
DAY = RateLimitResponse.RateLimit.DAY
QUOTA_HEADERS = {
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
}


def descriptor(hits: int | None = None, **entries: str) -> RateLimitDescriptor:
    """A descriptor of ``entries`` (in order), with its own ``hits_addend`` when given."""
    made = RateLimitDescriptor(
        entries=[RateLimitDescriptor.Entry(key=key, value=value) for key, value in entries.items()]
    )
    if hits is not None:
        made.hits_addend.CopyFrom(UInt64Value(value=hits))
    return made


def ask(domain: str, *descriptors: RateLimitDescriptor, hits: int = 0) -> RateLimitRequest:
    """A ``RateLimitRequest`` for ``domain`` (the service)."""
    return RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def by_key(answer: Any) -> dict[str, str]:
    """The answer's ``response_headers_to_add`` as a dict (none repeated)."""
    headers = {header.key: header.value for header in answer.response_headers_to_add}
    assert len(headers) == len(answer.response_headers_to_add), "a header is repeated"
    return headers


@dataclass
class Server:
    """A running ``quotad serve`` and a gRPC client of its rate limit service."""

    process: Running
    stub: Any
    grpc_address: str

    def provision(self, total: int) -> tuple[str, str]:
        """A fresh account whose plan grants ``total`` insights a day; its id and a key."""
        account_id = f"acct-{uuid.uuid4().hex[:10]}"
        with httpx2.Client(base_url=self.process.base, headers=OPERATOR, timeout=30) as http:
            for name in ("insights", "scoring"):
                response = http.post("/admin/v1/services", json={"name": name})
                assert response.status_code in (201, 409), response.text
            plan = {"id": f"plan-{account_id}", "quotas": {"insights": {"total": total}}}
            response = http.post("/admin/v1/plans", json=plan)
            assert response.status_code == 201, response.text
            body = {
                "id": account_id,
                "name": account_id,
                "plan": plan["id"],
                "timezone": noon_zone(),  # no test straddles the account's midnight
            }
            response = http.post("/admin/v1/accounts", json=body)
            assert response.status_code == 201, response.text
            response = http.post(f"/admin/v1/accounts/{account_id}/keys", json={"name": "k"})
            assert response.status_code == 201, response.text
            return account_id, response.json()["key"]

    def used(self, account_id: str) -> int:
        """Today's stored insights usage of the account, as the operator API reads it."""
        response = httpx2.get(
            f"{self.process.base}/admin/v1/accounts/{account_id}/usage/insights",
            headers=OPERATOR,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        rows = response.json()
        return int(rows[-1]["used"]) if rows else 0


def serve_spec(store: str, grpc_port: int, *, by_env: bool = False, **env: str) -> Spec:
    """``quotad serve`` on ``store``, its gRPC port a flag or QUOTAD_GRPC_PORT."""
    argv = [str(BIN / "quotad"), "serve", "--store", store]
    if by_env:
        return Spec(argv, "quotad", env={"QUOTAD_GRPC_PORT": str(grpc_port), **env})
    return Spec([*argv, "--grpc-port", str(grpc_port)], "quotad", env=env)


@contextmanager
def serving(workdir: Path, store: str, *, by_env: bool = False, **env: str) -> Iterator[Server]:
    """A started server with a connected client, stopped afterwards."""
    grpc_port = free_port()
    with running_all(workdir, serve_spec(store, grpc_port, by_env=by_env, **env)) as [handle]:
        address = f"127.0.0.1:{grpc_port}"
        with grpc.insecure_channel(address) as channel:
            yield Server(handle, RateLimitServiceStub(channel), address)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server on SQLite for the module, its gRPC port set by QUOTAD_GRPC_PORT."""
    workdir = tmp_path_factory.mktemp("envoy")
    with serving(workdir, f"sqlite:///{workdir / 'quotad.db'}", by_env=True) as started:
        yield started


# The answers -------------------------------------------------------------------------
@pytest.mark.slow
def test_ok_until_the_quota_then_over_limit(server: Server) -> None:
    """An api_key descriptor is OK, with its limit's status, until the quota; then OVER_LIMIT."""
    account_id, key = server.provision(3)
    for remaining in (2, 1, 0):
        answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
        assert answer.overall_code == OK
        [status] = answer.statuses
        assert status.code == OK
        assert status.current_limit.requests_per_unit == 3
        assert status.current_limit.unit == DAY
        assert status.current_limit.name == "insights.daily_queries"
        assert status.limit_remaining == remaining
        assert 0 < status.duration_until_reset.seconds <= 25 * 3600
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
    assert answer.overall_code == OVER_LIMIT
    [status] = answer.statuses
    assert (status.code, status.limit_remaining) == (OVER_LIMIT, 0)
    assert status.current_limit.requests_per_unit == 3
    assert by_key(answer)["x-quotad-error"] == "QUOTA_EXCEEDED"
    assert server.used(account_id) == 3


@pytest.mark.slow
def test_quota_headers(server: Server) -> None:
    """Every decided answer carries the quota headers; a refusal adds Retry-After."""
    _, key = server.provision(2)
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
    headers = by_key(answer)
    assert set(headers) == QUOTA_HEADERS
    reset_in = answer.statuses[0].duration_until_reset.seconds
    assert headers["ratelimit-policy"] == '"insights";q=2;w=86400'
    assert headers["ratelimit"] == f'"insights";r=1;t={reset_in}'
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "1"
    assert abs(int(headers["x-ratelimit-reset"]) - (time.time() + reset_in)) <= 2

    server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
    refused = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
    headers = by_key(refused)
    assert set(headers) == {*QUOTA_HEADERS, "retry-after", "x-quotad-error"}
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) == refused.statuses[0].duration_until_reset.seconds


@pytest.mark.slow
def test_hits_addend_is_the_cost(server: Server) -> None:
    """hits_addend is the cost (0 means 1), a descriptor's own wins over the request's, and
    a cost past what remains is refused without consuming anything."""
    account_id, key = server.provision(10)
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key), hits=3))
    assert answer.statuses[0].limit_remaining == 7
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key), hits=0))
    assert answer.statuses[0].limit_remaining == 6
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(4, api_key=key), hits=1))
    assert answer.statuses[0].limit_remaining == 2
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(0, api_key=key), hits=5))
    assert answer.statuses[0].limit_remaining == 1, "a descriptor's hits_addend of 0 means 1"
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key), hits=2))
    assert answer.overall_code == OVER_LIMIT
    assert answer.statuses[0].limit_remaining == 1
    assert server.used(account_id) == 9


@pytest.mark.slow
def test_hits_addend_past_the_largest_cost(server: Server) -> None:
    """A cost past verify's largest is OVER_LIMIT with VALIDATION_FAILED, consuming nothing."""
    account_id, key = server.provision(10)
    answer = server.stub.ShouldRateLimit(ask("insights", descriptor(COST_MAX + 1, api_key=key)))
    assert answer.overall_code == OVER_LIMIT
    assert by_key(answer) == {"x-quotad-error": "VALIDATION_FAILED"}
    assert server.used(account_id) == 0


@pytest.mark.slow
def test_per_descriptor_statuses(server: Server) -> None:
    """Two descriptors are two verifies with a status each, in order; the request is refused
    when one is, and what the other was granted is given back."""
    first_id, first = server.provision(5)
    second_id, second = server.provision(1)
    both = ask("insights", descriptor(api_key=first), descriptor(api_key=second))
    answer = server.stub.ShouldRateLimit(both)
    assert answer.overall_code == OK
    assert [(s.code, s.limit_remaining) for s in answer.statuses] == [(OK, 4), (OK, 0)]
    assert by_key(answer)["x-ratelimit-limit"] == "1", "the headers of the closest to its limit"

    answer = server.stub.ShouldRateLimit(both)
    assert answer.overall_code == OVER_LIMIT
    assert [(s.code, s.limit_remaining) for s in answer.statuses] == [(OK, 3), (OVER_LIMIT, 0)]
    headers = by_key(answer)
    assert headers["x-quotad-error"] == "QUOTA_EXCEEDED"
    assert headers["x-ratelimit-limit"] == "1", "the headers of the refused descriptor"
    assert "retry-after" in headers
    assert (server.used(first_id), server.used(second_id)) == (1, 1)


@pytest.mark.slow
def test_descriptor_naming_no_key_or_account(server: Server) -> None:
    """A descriptor naming neither api_key nor account_id is OK without a limit and consumes
    nothing, beside one that is decided."""
    account_id, key = server.provision(5)
    other = descriptor(generic_key="checkout")
    answer = server.stub.ShouldRateLimit(ask("insights", other, descriptor(api_key=key)))
    assert answer.overall_code == OK
    assert answer.statuses[0].code == OK
    assert not answer.statuses[0].HasField("current_limit")
    assert answer.statuses[1].limit_remaining == 4
    alone = server.stub.ShouldRateLimit(ask("insights", other))
    assert alone.overall_code == OK
    assert list(alone.response_headers_to_add) == []
    assert server.used(account_id) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("domain", "key", "code"),
    [
        ("insights", "unknown", "INVALID_AUTHORIZATION"),
        ("insights", "qd_not-a-key", "MALFORMED_API_KEY"),
        ("insights", "", "MALFORMED_API_KEY"),
        ("insights", "qd_" + "x" * 300, "VALIDATION_FAILED"),
        ("no-such-service", "valid", "NOT_FOUND"),
        ("", "valid", "NOT_FOUND"),
    ],
)
def test_refusals_name_their_code(server: Server, domain: str, key: str, code: str) -> None:
    """An unknown, malformed or overlong key, or an unknown domain, is OVER_LIMIT with
    x-quotad-error naming the code, no limit, and nothing consumed."""
    account_id, valid = server.provision(5)
    raw = {"unknown": keys.generate("qd"), "valid": valid}.get(key, key)
    answer = server.stub.ShouldRateLimit(ask(domain, descriptor(api_key=raw)))
    assert answer.overall_code == OVER_LIMIT
    [status] = answer.statuses
    assert status.code == OVER_LIMIT
    assert not status.HasField("current_limit")
    assert by_key(answer) == {"x-quotad-error": code}
    assert server.used(account_id) == 0


@pytest.mark.slow
def test_account_id_descriptor(server: Server) -> None:
    """An account_id descriptor consumes from that account's quota (shared with its keys);
    an unknown account is OVER_LIMIT with NOT_FOUND."""
    account_id, key = server.provision(2)
    by_account = ask("insights", descriptor(account_id=account_id))
    answer = server.stub.ShouldRateLimit(by_account)
    assert (answer.overall_code, answer.statuses[0].limit_remaining) == (OK, 1)
    server.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
    answer = server.stub.ShouldRateLimit(by_account)
    assert answer.overall_code == OVER_LIMIT
    assert by_key(answer)["x-quotad-error"] == "QUOTA_EXCEEDED"
    assert server.used(account_id) == 2
    unknown = server.stub.ShouldRateLimit(ask("insights", descriptor(account_id="nobody")))
    assert unknown.overall_code == OVER_LIMIT
    assert by_key(unknown) == {"x-quotad-error": "NOT_FOUND"}


@pytest.mark.slow
def test_no_descriptor_is_invalid_argument(server: Server) -> None:
    """A request without descriptors is refused as a gRPC INVALID_ARGUMENT error."""
    with pytest.raises(grpc.RpcError) as raised:
        server.stub.ShouldRateLimit(ask("insights"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
def test_suspended_account_is_forbidden(server: Server) -> None:
    """A suspended account's key and account_id are OVER_LIMIT with FORBIDDEN."""
    account_id, key = server.provision(5)
    response = httpx2.patch(
        f"{server.process.base}/admin/v1/accounts/{account_id}",
        json={"status": "suspended"},
        headers=OPERATOR,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    for entries in ({"api_key": key}, {"account_id": account_id}):
        answer = server.stub.ShouldRateLimit(ask("insights", descriptor(**entries)))
        assert answer.overall_code == OVER_LIMIT
        assert by_key(answer) == {"x-quotad-error": "FORBIDDEN"}


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["fail-closed", "fail-open"])
async def test_store_outage_follows_the_policy(tmp_path: Path, policy: str) -> None:
    """With the store down, fail-closed is a gRPC UNAVAILABLE error (Envoy's
    failure_mode_deny decides) and fail-open an OK without a limit."""
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.start()
    url = f"redis://{LOOPBACK}:{redis_server.port}/0?records=sqlite:///{tmp_path / 'records.db'}"
    settings = make_settings(url, on_store_error=policy, store_timeout_ms=500)
    ctx = Context(stores_from_url(url), settings)
    port = free_port()
    try:
        async with lifecycle.opened(ctx):
            await _provision(ctx)
            key = (await admin.create_key(ctx, "acme", "k")).secret
            grpc_server = await envoy.start(ctx, LOOPBACK, port)
            try:
                async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
                    stub = RateLimitServiceStub(channel)
                    request = ask("insights", descriptor(api_key=key))
                    answer = await stub.ShouldRateLimit(request, timeout=30)
                    assert answer.statuses[0].limit_remaining == 1
                    redis_server.kill()
                    if policy == "fail-closed":
                        with pytest.raises(grpc.aio.AioRpcError) as raised:
                            await stub.ShouldRateLimit(request, timeout=30)
                        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                        assert raised.value.details().startswith("SERVICE_UNAVAILABLE")
                    else:
                        answer = await stub.ShouldRateLimit(request, timeout=30)
                        assert answer.overall_code == OK
                        assert not answer.statuses[0].HasField("current_limit")
            finally:
                await grpc_server.stop(None)
    finally:
        redis_server.kill()


# Exactness, on every store -------------------------------------------------------------
CALLS = 600
IN_FLIGHT = 50
QUOTA = 250


@pytest.mark.slow
async def test_concurrent_calls_grant_exactly_the_quota(store_kind: str, tmp_path: Path) -> None:
    """600 concurrent calls (50 in flight) against a 250/day quota grant exactly 250, and the
    stored usage is 250."""
    with (
        store_url(store_kind, tmp_path) as url,
        serving(tmp_path, url) as started,
    ):
        account_id, key = started.provision(QUOTA)
        gate = asyncio.Semaphore(IN_FLIGHT)
        request = ask("insights", descriptor(api_key=key))
        async with grpc.aio.insecure_channel(started.grpc_address) as channel:
            stub = RateLimitServiceStub(channel)

            async def call() -> int:
                async with gate:
                    answer = await stub.ShouldRateLimit(request, timeout=60)
                    return int(answer.overall_code)

            codes = await asyncio.gather(*(call() for _ in range(CALLS)))
        assert codes.count(OK) == QUOTA
        assert codes.count(OVER_LIMIT) == CALLS - QUOTA
        assert started.used(account_id) == QUOTA


# Serving -------------------------------------------------------------------------------
@pytest.mark.slow
def test_stops_with_the_http_server(tmp_path: Path) -> None:
    """SIGTERM stops the gRPC service with the HTTP server: its stop runs, the port closes,
    and the process ends as uvicorn ends it (by the signal, re-raised after shutdown)."""
    store = f"sqlite:///{tmp_path / 'quotad.db'}"
    with serving(tmp_path, store, QUOTAD_LOG_LEVEL="info") as started:
        _, key = started.provision(5)
        answer = started.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)))
        assert answer.overall_code == OK
        started.process.process.terminate()
        status = started.process.process.wait(timeout=30)
        assert status == -signal.SIGTERM, started.process.output()
        assert "envoy rate limit service stopped" in started.process.output()
        with pytest.raises(grpc.RpcError) as raised:
            started.stub.ShouldRateLimit(ask("insights", descriptor(api_key=key)), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in started.process.output()


def test_grpc_is_imported_only_when_asked() -> None:
    """The CLI and the app load without gRPC; only a gRPC port imports it."""
    code = (
        "import sys; from quotad.cli import main; from quotad.cli import serve; "
        "from quotad.api.app import create_app; print('grpc' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_grpc_port_without_the_extra(tmp_path: Path) -> None:
    """--grpc-port without gRPC installed exits 2 naming the envoy extra, serving nothing."""
    code = (
        "import sys; sys.modules['grpc'] = None; from quotad.cli import main; "
        "sys.argv = ['quotad', 'serve', '--store', 'memory://', '--port', '0', "
        "'--grpc-port', '0']; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "QUOTAD_ADMIN_TOKEN": "t"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'quotad[envoy]'" in done.stderr


# The README's Envoy configuration --------------------------------------------------------
def _readme_envoy_config() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Envoy, Istio and gateways", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    loaded: dict[str, Any] = yaml.safe_load(block)
    return loaded


def test_readme_envoy_configuration_is_valid() -> None:
    """The README's Envoy configuration is a valid Envoy bootstrap (Envoy's own messages) that
    sends the x-api-key header as api_key, the service as domain, to the gRPC port's cluster."""
    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
    from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2,
    )
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
    from google.protobuf import json_format

    del router_pb2, http_protocol_options_pb2  # imported for their "@type" names
    bootstrap = json_format.ParseDict(_readme_envoy_config(), Bootstrap())
    [listener] = bootstrap.static_resources.listeners
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    limiter = rate_limit_pb2.RateLimit()
    assert manager.http_filters[0].typed_config.Unpack(limiter)
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    assert limiter.domain == "insights"
    assert limiter.failure_mode_deny
    assert limiter.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "quotad"
    routes = manager.route_config.virtual_hosts[0].routes
    metered = [route for route in routes if route.route.rate_limits]
    assert len(metered) == 2
    for route in metered:
        [header] = route.match.headers
        assert (header.name, header.present_match) == ("x-api-key", True)
        [action] = route.route.rate_limits[0].actions
        assert action.request_headers.header_name == "x-api-key"
        assert action.request_headers.descriptor_key == "api_key"
    assert metered[0].route.rate_limits[0].hits_addend.number.value == 5
    assert routes[-1].direct_response.status == 401
    [quotad] = [c for c in bootstrap.static_resources.clusters if c.name == "quotad"]
    endpoint = quotad.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.port_value == 8081


# The service function behind account_id ------------------------------------------------
async def _provision(ctx: Context) -> None:
    await admin.create_service(ctx, "insights", "")
    await admin.create_service(ctx, "scoring", "")
    await admin.create_plan(ctx, "free", {"insights": Quota.daily(2)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "free", "UTC", Overrides())
    await admin.create_account(
        ctx, "frozen", "Frozen", "free", "UTC", Overrides(), AccountStatus.SUSPENDED
    )


async def test_verify_account_consumes_all_or_nothing(ctx: Context) -> None:
    """verify_account grants until the quota, then refuses without consuming more."""
    await _provision(ctx)
    first = await verify.verify_account(ctx, "acme", "insights", 1)
    assert (first.valid, first.code, first.account_id, first.used, first.total) == (
        True,
        "VALID",
        "acme",
        1,
        2,
    )
    refused = await verify.verify_account(ctx, "acme", "insights", 2)
    assert (refused.valid, refused.code, refused.used) == (False, "QUOTA_EXCEEDED", 1)
    last = await verify.verify_account(ctx, "acme", "insights", 1)
    assert (last.valid, last.used, last.remaining) == (True, 2, 0)
    assert last.reset is not None


async def test_verify_account_refusals(ctx: Context) -> None:
    """An unknown account is NOT_FOUND, a suspended one or a service outside its plan is
    FORBIDDEN, and an unknown service raises NotFound, as verify does."""
    await _provision(ctx)
    assert (await verify.verify_account(ctx, "nobody", "insights", 1)).code == "NOT_FOUND"
    frozen = await verify.verify_account(ctx, "frozen", "insights", 1)
    assert (frozen.valid, frozen.code) == (False, "FORBIDDEN")
    outside = await verify.verify_account(ctx, "acme", "scoring", 1)
    assert (outside.valid, outside.code) == (False, "FORBIDDEN")
    with pytest.raises(NotFound):
        await verify.verify_account(ctx, "acme", "no-such-service", 1)
    assert (await verify.verify_account(ctx, "acme", "insights", 2)).used == 2
