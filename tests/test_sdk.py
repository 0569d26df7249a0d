"""The SDK: every endpoint against a real ``quotad serve``, sync and async; errors; retries."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.errors import ErrorCode
from quotad.sdk import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    Event,
    IssuedKey,
    Limit,
    MaxResourcesReachedError,
    NotFoundError,
    Overrides,
    Quota,
    QuotadAPIError,
    QuotadConnectionError,
    QuotadTimeoutError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TooManyRequestsError,
    UnexpectedResponseError,
    ValidationFailedError,
)
from quotad.sdk.errors import BY_CODE
from tests.processes import ADMIN_TOKEN, ROOT, Running, noon_zone
from tests.sdk_harness import Api, api, server, uid  # noqa: F401 - fixtures, by name

FAST_RETRY = RetryPolicy(retries=2, backoff=0.001, jitter=0)


async def new_account(api: Api, total: int = 5, service: str | None = None) -> tuple[str, str]:
    """A service (insights unless named), a plan with ``total`` of it, an account and a key."""
    service = service or "insights"
    with contextlib.suppress(ConflictError):
        await api.create_service(service)
    plan = await api.create_plan(
        uid("p"), {service: total}, [Limit("cohort.max_count", 2, "Cohorts allowed")]
    )
    account = await api.create_account("Test", plan.id, account_id=uid("a"), timezone=noon_zone())
    issued: IssuedKey = await api.create_key(account.id, "test")
    return account.id, issued.key


# Every endpoint against the real server -------------------------------------------------
@pytest.mark.slow
async def test_health_and_services(api: Api) -> None:
    """health() is true; create_service returns the record, list_services lists it, twice is a conflict."""
    assert await api.health() is True
    name = uid("s")
    service = await api.create_service(name, "described")
    assert (service.name, service.description) == (name, "described")
    assert service.created_at.tzinfo is not None
    assert name in [s.name for s in await api.list_services()]
    with pytest.raises(ConflictError) as caught:
        await api.create_service(name)
    assert (caught.value.status, caught.value.error) == (409, "CONFLICT")
    assert caught.value.id


@pytest.mark.slow
async def test_plans_create_get_list_replace_delete(api: Api) -> None:
    """Plans round-trip with typed quotas and limits, page by cursor, are replaced and deleted."""
    with contextlib.suppress(ConflictError):
        await api.create_service("insights")
    first, second = uid("pa"), uid("pb")
    created = await api.create_plan(
        first, {"insights": 10}, [Limit("cohort.max_count", 3, "Cohorts")], "first"
    )
    assert created.quotas == {"insights": Quota(10, "day")}
    assert created.limits == (Limit("cohort.max_count", 3, "Cohorts"),)
    await api.create_plan(second, {"insights": Quota(20)})
    assert (await api.get_plan(first)).description == "first"
    page = await api.list_plans(limit=1)
    assert len(page.items) == 1
    assert page.next_cursor is not None
    following = await api.list_plans(limit=1, cursor=page.next_cursor)
    assert following.items[0].id > page.items[0].id
    replaced = await api.replace_plan(first, {"insights": 99}, [], "replaced")
    assert (replaced.quotas["insights"].total, replaced.limits, replaced.description) == (
        99,
        (),
        "replaced",
    )
    assert await api.delete_plan(second) is None
    with pytest.raises(NotFoundError) as caught:
        await api.get_plan(second)
    assert (caught.value.status, caught.value.error) == (404, "NOT_FOUND")


@pytest.mark.slow
async def test_accounts_create_get_list_update_delete(api: Api) -> None:
    """Accounts round-trip with overrides, are found by search, patched, and deleted."""
    account_id, _key = await new_account(api)
    account = await api.get_account(account_id)
    assert (account.id, account.status, account.overrides) == (account_id, "active", Overrides())
    found = await api.list_accounts(search=account_id)
    assert [a.id for a in found.items] == [account_id]
    updated = await api.update_account(
        account_id,
        name="Renamed",
        status="suspended",
        timezone="Europe/Paris",
        overrides=Overrides({"insights": 7}, {"cohort.max_count": 4}),
    )
    assert (updated.name, updated.status, updated.timezone) == (
        "Renamed",
        "suspended",
        "Europe/Paris",
    )
    assert updated.overrides == Overrides({"insights": 7}, {"cohort.max_count": 4})
    generated = await api.create_account("No id given", account.plan)
    assert generated.id
    await api.delete_account(generated.id)
    with pytest.raises(NotFoundError):
        await api.get_account(generated.id)


@pytest.mark.slow
async def test_validation_errors_are_typed_with_their_items(api: Api) -> None:
    """A bad timezone raises ValidationFailedError carrying path, message, type and suggestion."""
    account_id, _key = await new_account(api)
    plan = (await api.get_account(account_id)).plan
    with pytest.raises(ValidationFailedError) as caught:
        await api.create_account("Bad zone", plan, timezone="Mars/Olympus")
    error = caught.value
    assert (error.status, error.error) == (400, "VALIDATION_FAILED")
    [problem] = error.validation_errors
    assert (problem.path, problem.error_type) == ("/body/timezone", "format")
    assert problem.suggestion
    assert error.body()["validationErrors"][0]["context"] == {"errorType": "format"}


@pytest.mark.slow
async def test_keys_create_list_rotate_revoke(api: Api) -> None:
    """Keys are issued once with scopes and expiry, listed without secrets, rotated and revoked."""
    account_id, _key = await new_account(api)
    expires = datetime.now(UTC) + timedelta(days=30)
    issued = await api.create_key(account_id, "scoped", expires_at=expires, scopes=["usage:read"])
    assert issued.key.startswith("qd_")
    assert issued.scopes == ("usage:read",)
    assert issued.expires_at is not None
    assert abs((issued.expires_at - expires).total_seconds()) < 1
    assert issued.key not in repr(issued)
    listed = await api.list_keys(account_id)
    assert issued.id in [k.id for k in listed]
    assert all(not hasattr(k, "key") for k in listed)
    rotated = await api.rotate_key(issued.id, grace_seconds=60)
    assert rotated.key != issued.key
    old = next(k for k in await api.list_keys(account_id) if k.id == issued.id)
    assert old.replaced_by == rotated.id
    revoked = await api.revoke_key(rotated.id)
    assert revoked.status == "revoked"
    verdict = await api.verify(rotated.key, "insights")
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


@pytest.mark.slow
async def test_verify_consumes_replays_and_refuses_past_the_quota(api: Api) -> None:
    """verify consumes, replays an Idempotency-Key, and refuses past the total with headers."""
    account_id, key = await new_account(api, total=2)
    first = await api.verify(key, "insights", 1, idempotency_key="same")
    again = await api.verify(key, "insights", 1, idempotency_key="same")
    assert (first.valid, first.used, first.remaining, first.total) == (True, 1, 1, 2)
    assert again.used == 1
    assert first.account_id == account_id
    assert first.window_seconds == 86_400
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert (await api.verify(key, "insights")).used == 2
    refused = await api.verify(key, "insights")
    assert (refused.valid, refused.code, refused.used) == (False, "QUOTA_EXCEEDED", 2)
    assert refused.retry_after is not None
    assert refused.retry_after > 0
    assert refused.reset is not None
    assert refused.reset > datetime.now(UTC)


@pytest.mark.slow
async def test_events_usage_history_adjust_and_export(api: Api) -> None:
    """Events are recorded once, show in the day rows, can be adjusted, and are exported."""
    account_id, _key = await new_account(api, total=100)
    now = datetime.now(UTC)
    events = [Event(uid("e"), account_id, "insights", 3, now) for _ in range(2)]
    result = await api.record_events(events)
    assert (result.accepted, result.duplicates) == (2, 0)
    assert (await api.record_events(events[:1])).duplicates == 1
    [today] = await api.account_usage(account_id, "insights")
    assert (today.used, today.remaining, today.total) == (6, 94, 100)
    adjusted = await api.adjust_usage(account_id, "insights", today.date, -4)
    assert adjusted.used == 2
    window = await api.account_usage(
        account_id, "insights", today.date - timedelta(days=2), today.date
    )
    assert [row.used for row in window] == [0, 0, 2]
    rows = [row for row in await api.export() if row.account_id == account_id]
    assert [(r.service, r.date, r.used, r.total) for r in rows] == [
        ("insights", today.date, 2, 100)
    ]


@pytest.mark.slow
async def test_limits_set_acquire_release(api: Api) -> None:
    """Gauges are set, acquired up to the limit, refused past it (typed 403), and released."""
    account_id, _key = await new_account(api)
    assert (await api.set_limit(account_id, "cohort.max_count", 1)).usage == 1
    gauge = await api.acquire(account_id, "cohort.max_count")
    assert (gauge.name, gauge.usage, gauge.limit) == ("cohort.max_count", 2, 2)
    with pytest.raises(MaxResourcesReachedError) as caught:
        await api.acquire(account_id, "cohort.max_count", 1)
    assert (caught.value.status, caught.value.error) == (403, "MAX_RESOURCES_REACHED")
    assert (await api.release(account_id, "cohort.max_count", 2)).usage == 0
    with pytest.raises(ConflictError):
        await api.release(account_id, "cohort.max_count", 1)


@pytest.mark.slow
async def test_customer_endpoints_with_the_customers_key(api: Api, server: Running) -> None:
    """usages() and usage() answer with the customer's key, per call or set on the client."""
    account_id, key = await new_account(api, total=4)
    await api.verify(key, "insights", 3)
    lines = {line.name: line for line in await api.usages(key=key)}
    assert (lines["insights.daily_queries"].usage, lines["insights.daily_queries"].limit) == (3, 4)
    assert lines["cohort.max_count"].limit == 2
    [today] = await api.usage("insights", key=key, api_version="v1")
    assert (today.used, today.remaining, today.total) == (3, 1, 4)
    start = today.date - timedelta(days=1)
    assert [d.date for d in await api.usage("insights", start, today.date, key=key)] == [
        start,
        today.date,
    ]
    async with AsyncClient(server.base, api_key=key) as customer:
        assert [d.used for d in await customer.usage("insights")] == [3]
    with Client(server.base, api_key=key) as customer_sync:
        assert len(customer_sync.usages()) == 2
    assert account_id


@pytest.mark.slow
async def test_customer_errors_are_typed(api: Api) -> None:
    """Key problems are AuthenticationError (401, or 403 on /usage); bad dates are validation errors."""
    _account_id, key = await new_account(api)
    with pytest.raises(AuthenticationError) as on_usages:
        await api.usages(key="qd_not-a-key")
    assert (on_usages.value.status, on_usages.value.error) == (401, "MALFORMED_API_KEY")
    with pytest.raises(AuthenticationError) as on_usage:
        await api.usage("insights", key="qd_not-a-key")
    assert (on_usage.value.status, on_usage.value.error) == (403, "MALFORMED_API_KEY")
    with pytest.raises(ValidationFailedError) as caught:
        await api.usage("insights", end_date=date(2024, 1, 1), key=key)
    assert caught.value.validation_errors[0].path == "/query/start_date"
    with pytest.raises(NotFoundError):
        await api.usage("no-such-service", key=key)


@pytest.mark.slow
async def test_wrong_operator_token_is_an_authentication_error(server: Running) -> None:
    """An operator call with a wrong token raises AuthenticationError INVALID_AUTHORIZATION."""
    async with AsyncClient(server.base, operator_token="wrong") as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.list_services()
    assert (caught.value.status, caught.value.error) == (401, "INVALID_AUTHORIZATION")


@pytest.mark.slow
def test_sdk_example_script_runs(server: Running, tmp_path: Path) -> None:
    """examples/sdk_example.py runs against a real server: 3 calls allowed, the 4th refused."""
    env = {**os.environ, "QUOTAD_URL": server.base, "QUOTAD_ADMIN_TOKEN": ADMIN_TOKEN}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sdk_example.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "call 3: allowed" in result.stdout
    assert "call 4: refused (QUOTA_EXCEEDED)" in result.stdout
    assert "typed error: NOT_FOUND (status 404" in result.stdout
    assert "async: ['QUOTA_EXCEEDED', 'QUOTA_EXCEEDED', 'QUOTA_EXCEEDED']" in result.stdout


# Errors and retries, with a mock transport ---------------------------------------------
Handler = Callable[[httpx2.Request], httpx2.Response]


def error(status: int, code: str, **headers: str) -> httpx2.Response:
    """An answer with the contract's error body."""
    body = {"error": code, "id": "e-1", "note": "n", "validationErrors": []}
    return httpx2.Response(status, json=body, headers=headers)


def script(*steps: httpx2.Response | Exception) -> tuple[Handler, list[httpx2.Request]]:
    """A handler playing ``steps`` in order (the last one repeats), and the requests seen."""
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        step = steps[min(len(seen) - 1, len(steps) - 1)]
        if isinstance(step, Exception):
            raise step
        return step

    return handle, seen


SERVICES = {"items": [{"name": "x", "description": "", "created_at": "2024-11-01T00:00:00Z"}]}
VERDICT = {
    "valid": True,
    "code": "VALID",
    "account_id": "a",
    "service": "insights",
    "used": 1,
    "remaining": 9,
    "total": 10,
    "reset": "2024-11-02T00:00:00Z",
}


async def perform(mode: str, handler: Handler, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``name`` on a sync or async client over a mock transport."""
    transport = httpx2.MockTransport(handler)
    if mode == "sync":
        with Client("http://q", operator_token="t", retry=FAST_RETRY, transport=transport) as c:
            return getattr(c, name)(*args, **kwargs)
    async with AsyncClient(
        "http://q", operator_token="t", retry=FAST_RETRY, transport=transport
    ) as ac:
        return await getattr(ac, name)(*args, **kwargs)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
async def test_idempotent_get_is_retried_after_5xx(mode: str) -> None:
    """A GET answered 503, 502, then 200 succeeds on the third attempt."""
    handler, seen = script(
        error(503, "SERVICE_UNAVAILABLE"), httpx2.Response(502), httpx2.Response(200, json=SERVICES)
    )
    services = await perform(mode, handler, "list_services")
    assert [s.name for s in services] == ["x"]
    assert len(seen) == 3


@MODES
async def test_retries_stop_after_the_policy_and_raise_server_error(mode: str) -> None:
    """A GET that keeps failing is sent 1 + retries times, then raises ServerError."""
    handler, seen = script(error(503, "SERVICE_UNAVAILABLE"))
    with pytest.raises(ServerError) as caught:
        await perform(mode, handler, "get_plan", "p")
    assert (caught.value.status, caught.value.error) == (503, "SERVICE_UNAVAILABLE")
    assert len(seen) == 3


@MODES
async def test_non_idempotent_post_is_never_retried(mode: str) -> None:
    """A POST answered 500 raises at once: it may have been applied."""
    handler, seen = script(error(500, "INTERNAL_SERVER_ERROR"), httpx2.Response(201))
    with pytest.raises(ServerError):
        await perform(mode, handler, "create_service", "x")
    assert len(seen) == 1


@MODES
async def test_verify_is_retried_only_with_an_idempotency_key(mode: str) -> None:
    """verify with an Idempotency-Key is retried (same key each time); without one it is not."""
    handler, seen = script(httpx2.Response(503), httpx2.Response(200, json=VERDICT))
    verdict = await perform(mode, handler, "verify", "k", "insights", idempotency_key="req-1")
    assert verdict.valid
    assert [r.headers["Idempotency-Key"] for r in seen] == ["req-1", "req-1"]
    handler, seen = script(httpx2.Response(503), httpx2.Response(200, json=VERDICT))
    with pytest.raises(ServerError):
        await perform(mode, handler, "verify", "k", "insights")
    assert len(seen) == 1


@MODES
async def test_adjust_usage_is_retried_under_one_idempotency_key(mode: str) -> None:
    """adjust_usage is sent with an Idempotency-Key and retried under that same key after a
    503; each call has a key of its own unless one is given."""
    day = {"date": "2024-11-06", "used": 40, "total": 250, "remaining": 210, "rejected": 0}
    handler, seen = script(httpx2.Response(503), httpx2.Response(200, json=day))
    assert (
        await perform(mode, handler, "adjust_usage", "a", "insights", "2024-11-06", 40)
    ).used == 40
    handler, later = script(httpx2.Response(200, json=day))
    await perform(mode, handler, "adjust_usage", "a", "insights", "2024-11-06", 40)
    handler, given = script(httpx2.Response(200, json=day))
    await perform(mode, handler, "adjust_usage", "a", "insights", "2024-11-06", 40, "fix-1")
    keys = [r.headers["Idempotency-Key"] for r in (*seen, *later, *given)]
    assert keys[0] == keys[1] != keys[2] != "fix-1" == keys[3]
    assert all(keys)


@MODES
async def test_grant_credits_is_retried_under_one_idempotency_key(mode: str) -> None:
    """grant_credits is sent with an Idempotency-Key and retried under that same key after
    a 503; a key given is the one sent."""
    made = {
        "id": "gr_1",
        "kind": "grant",
        "amount": 5,
        "remaining": 5,
        "expires_at": None,
        "priority": 0,
        "note": "",
        "created_at": "2024-11-07T12:00:00Z",
        "voided_at": None,
    }
    handler, seen = script(httpx2.Response(503), httpx2.Response(201, json=made))
    assert (await perform(mode, handler, "grant_credits", "a", 5)).id == "gr_1"
    handler, given = script(httpx2.Response(201, json=made))
    await perform(mode, handler, "grant_credits", "a", 5, idempotency_key="payment-1")
    keys = [r.headers["Idempotency-Key"] for r in (*seen, *given)]
    assert keys[0] == keys[1] != "payment-1" == keys[2]
    assert keys[0]


@MODES
async def test_acquire_and_release_are_retried_under_one_idempotency_key(mode: str) -> None:
    """acquire and release are each sent with an Idempotency-Key and retried under that same
    key after a 503."""
    gauge = {"name": "cohorts", "usage": 1, "limit": 10}
    keys = []
    for move in ("acquire", "release"):
        handler, seen = script(httpx2.Response(503), httpx2.Response(200, json=gauge))
        assert (await perform(mode, handler, move, "a", "cohorts")).usage == 1
        keys.append([r.headers["Idempotency-Key"] for r in seen])
    assert [len(set(sent)) for sent in keys] == [1, 1]
    assert keys[0][0] != keys[1][0]


@MODES
async def test_connection_errors_are_retried_for_idempotent_calls(mode: str) -> None:
    """A refused connection, then an answer: an idempotent call succeeds."""
    handler, seen = script(httpx2.ConnectError("refused"), httpx2.Response(200, json=SERVICES))
    assert len(await perform(mode, handler, "list_services")) == 1
    assert len(seen) == 2


@MODES
async def test_connection_errors_raise_after_retries(mode: str) -> None:
    """A server that never answers raises QuotadConnectionError; a POST tries once."""
    handler, seen = script(httpx2.ConnectError("refused"))
    with pytest.raises(QuotadConnectionError):
        await perform(mode, handler, "list_services")
    assert len(seen) == 3
    handler, seen = script(httpx2.ConnectError("refused"))
    with pytest.raises(QuotadConnectionError):
        await perform(mode, handler, "create_service", "x")
    assert len(seen) == 1


@MODES
async def test_timeouts_raise_quotad_timeout_error(mode: str) -> None:
    """A read timeout becomes QuotadTimeoutError, a kind of QuotadConnectionError."""
    handler, _seen = script(httpx2.ReadTimeout("slow"))
    with pytest.raises(QuotadTimeoutError) as caught:
        await perform(mode, handler, "create_service", "x")
    assert isinstance(caught.value, QuotadConnectionError)


def test_timeout_is_configurable() -> None:
    """The client's timeout reaches every request it sends."""
    handler, seen = script(httpx2.Response(200, json=SERVICES))
    with Client("http://q", timeout=1.5, transport=httpx2.MockTransport(handler)) as client:
        client.list_services()
    assert seen[0].extensions["timeout"]["read"] == 1.5
    timeout = httpx2.Timeout(3.0, connect=0.5)
    with Client("http://q", timeout=timeout, transport=httpx2.MockTransport(handler)) as client:
        client.list_services()
    assert seen[1].extensions["timeout"]["connect"] == 0.5


def test_backoff_grows_exponentially_is_capped_and_honours_retry_after() -> None:
    """Waits double from ``backoff`` up to ``max_backoff``; Retry-After lengthens a wait."""
    policy = RetryPolicy(backoff=0.1, multiplier=2, max_backoff=0.5, jitter=0)
    assert [policy.delay(n) for n in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert policy.delay(0, retry_after=2) == 0.5
    jittered = RetryPolicy(backoff=1, jitter=0.1)
    assert all(0.9 <= jittered.delay(0) <= 1.1 for _ in range(50))


async def test_429_and_other_errors_map_to_their_classes() -> None:
    """RATE_LIMITED is a RateLimitedError with retry_after; each contract code has a class."""
    handler, _seen = script(error(429, "RATE_LIMITED", **{"Retry-After": "3"}))
    with pytest.raises(RateLimitedError) as caught:
        await perform("async", handler, "usages", key="k")
    assert isinstance(caught.value, TooManyRequestsError)
    assert caught.value.retry_after == 3
    assert set(BY_CODE) == {code.value for code in ErrorCode}


async def test_answers_without_the_contract_body_still_raise_typed_errors() -> None:
    """A proxy's HTML 502 is a ServerError; a 404 without JSON is a NotFoundError."""
    handler, _seen = script(httpx2.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ServerError) as caught:
        await perform("sync", handler, "create_service", "x")
    assert caught.value.note.startswith("<html>")
    assert caught.value.id == ""
    handler, _seen = script(httpx2.Response(404, text="nope"))
    with pytest.raises(NotFoundError):
        await perform("sync", handler, "create_service", "x")


async def test_a_successful_answer_of_the_wrong_shape_is_unexpected() -> None:
    """A 200 whose body is not the documented shape raises UnexpectedResponseError."""
    handler, _seen = script(httpx2.Response(200, json={"items": [{"name": 3}]}))
    with pytest.raises(UnexpectedResponseError):
        await perform("async", handler, "list_services")
    handler, _seen = script(httpx2.Response(200, text="not json"))
    with pytest.raises(UnexpectedResponseError):
        await perform("sync", handler, "get_plan", "p")


def test_every_api_error_is_a_quotad_api_error() -> None:
    """Every class of the error table derives from QuotadAPIError and keeps the body fields."""
    for code, cls in BY_CODE.items():
        exc = cls(400, code, "id-1", "note")
        assert isinstance(exc, QuotadAPIError)
        assert exc.body() == {"error": code, "id": "id-1", "note": "note", "validationErrors": []}


def test_requests_carry_credentials_and_encode_path_segments() -> None:
    """Operator calls send the token, customer calls the key, and ids are percent-encoded."""
    handler, seen = script(
        httpx2.Response(200, json={"name": "a/b", "usage": 1, "limit": 2}),
        httpx2.Response(200, json=[]),
    )
    transport = httpx2.MockTransport(handler)
    with Client("http://q", operator_token="op", api_key="cust", transport=transport) as client:
        client.set_limit("acme", "a/b", 1)
        client.usages()
    assert seen[0].url.raw_path == b"/admin/v1/accounts/acme/limits/a%2Fb"
    assert seen[0].headers["Authorization"] == "Bearer op"
    assert seen[0].method == "PUT"
    assert seen[1].headers["Authorization"] == "Bearer cust"


@pytest.mark.parametrize("shell", [Client, AsyncClient])
@pytest.mark.parametrize("credential", ["operator_token", "api_key"])
@pytest.mark.parametrize("value", ["", "   ", "\t", "tok\n", "to ken"])
def test_an_empty_or_blank_credential_is_refused_at_construction(
    shell: type[Client] | type[AsyncClient], credential: str, value: str
) -> None:
    """An empty, blank or whitespace-carrying token or key raises ValueError naming it."""
    with pytest.raises(ValueError, match=credential) as caught:
        shell("http://q", **{credential: value})  # type: ignore[arg-type]
    assert "Illegal header" not in str(caught.value)
    if not value.strip():
        assert ("empty" if not value else "blank") in str(caught.value)


async def test_a_blank_per_call_key_is_refused_before_anything_is_sent() -> None:
    """usages(key="  ") raises ValueError and sends no request, sync and async alike."""
    handler, seen = script(httpx2.Response(200, json=[]))
    with (
        Client("http://q", api_key="cust", transport=httpx2.MockTransport(handler)) as client,
        pytest.raises(ValueError, match="key is blank"),
    ):
        client.usages(key="  ")
    async with AsyncClient("http://q", transport=httpx2.MockTransport(handler)) as client:
        with pytest.raises(ValueError, match="key is empty"):
            await client.usage("insights", key="")
    assert seen == []


def test_a_credential_that_is_not_a_string_is_a_type_error() -> None:
    """A token passed as bytes raises TypeError naming the credential, before any request."""
    with pytest.raises(TypeError, match="operator_token must be a string, not bytes"):
        Client("http://q", operator_token=b"token")  # type: ignore[arg-type]
