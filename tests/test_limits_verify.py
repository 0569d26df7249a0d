"""Verify with every limit (SPEC 9): one atomic check of windows, rates and modes, items."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY

from quotad.domain.limits import parse_limits
from quotad.domain.models import Quota
from quotad.service import verify
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment

with_cluster = True  # also run the store-backed tests on a Redis Cluster


async def set_limits(ctx: Context, **quotas: list[dict[str, Any]]) -> None:
    """Give the deployment's plan these services' limits (in SPEC 9's JSON form)."""
    plan = await ctx.records.get_plan("plan-acme")
    assert plan is not None
    changed = dict(plan.quotas)
    for service, limits in quotas.items():
        changed[service] = Quota(parse_limits(limits))
    await ctx.records.replace_plan(dataclasses.replace(plan, quotas=changed))
    if ctx.cache is not None:
        ctx.cache.clear()


async def post(
    client: httpx2.AsyncClient,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """POST /v1/verify as the operator, with the body as given."""
    return await client.post("/v1/verify", json=body, headers={**OPERATOR, **(headers or {})})


async def consume(
    client: httpx2.AsyncClient, key: str, cost: int = 1, service: str = "insights"
) -> dict[str, Any]:
    """One verify's answer body (the call must be answered 200)."""
    response = await post(client, {"key": key, "service": service, "cost": cost})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An answer's limits entries by name."""
    return {entry["name"]: entry for entry in answer["limits"]}


async def test_three_limits_are_checked_and_moved_in_one_call(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A rate, a day and a month all move by the cost; the body and headers list each."""
    await set_limits(
        ctx,
        insights=[
            {"rate": {"per_second": 10, "burst": 20}},
            {"window": "day", "total": 100},
            {"window": "month", "total": 1000},
        ],
    )
    response = await post(client, {"key": deployment.key, "service": "insights", "cost": 3})
    answer = response.json()
    assert (answer["valid"], answer["code"], answer["refused_by"]) == (True, "VALID", None)
    assert (answer["overage"], answer["would_refuse"]) == (0, [])
    limits = by_name(answer)
    assert list(limits) == ["insights.rate", "insights.day", "insights.month"]
    # A rate's bucket is full again 0.3 s after the store's clock (Redis's own, not ours).
    assert limits["insights.rate"].pop("reset").endswith("Z")
    assert limits["insights.rate"] == {
        "name": "insights.rate",
        "rate": {"per_second": 10, "burst": 20},
        "per": "account",
        "mode": "hard",
        "used": 3,
        "remaining": 17,
        "total": 20,
    }
    assert limits["insights.day"] == {
        "name": "insights.day",
        "window": "day",
        "per": "account",
        "mode": "hard",
        "used": 3,
        "remaining": 97,
        "total": 100,
        "reset": "2024-11-08T00:00:00Z",
    }
    assert limits["insights.month"]["used"] == 3
    assert limits["insights.month"]["reset"] == "2024-12-01T00:00:00Z"
    # The version-1 fields are the least room's: the rate's 17 tokens.
    assert (answer["used"], answer["remaining"], answer["total"]) == (3, 17, 20)
    assert response.headers["RateLimit-Policy"] == (
        '"insights.rate";q=20;w=2, "insights.day";q=100;w=86400, "insights.month";q=1000;w=2592000'
    )
    assert response.headers["RateLimit"].startswith('"insights.rate";r=17;t=')
    assert response.headers["X-RateLimit-Remaining"] == "17"
    assert "Retry-After" not in response.headers


async def test_the_policy_header_follows_the_window_it_is_in(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """RateLimit-Policy gives each window its own length (November's 30 days, then
    December's 31) and a rate its refill time, at every verify; the limit the verdict's own
    fields describe is the one RateLimit names."""
    await set_limits(
        ctx,
        insights=[
            {"rate": {"per_second": 10, "burst": 20}},
            {"window": "month", "total": 1000},
        ],
    )
    november = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert november.headers["RateLimit-Policy"] == (
        '"insights.rate";q=20;w=2, "insights.month";q=1000;w=2592000'
    )
    clock.advance(days=30)  # 2024-12-07
    december = await post(client, {"key": deployment.key, "service": "insights", "cost": 19})
    assert december.headers["RateLimit-Policy"] == (
        '"insights.rate";q=20;w=2, "insights.month";q=1000;w=2678400'
    )
    # The rate has 1 token left, the month 981: the rate is shown.
    assert december.json()["remaining"] == 1
    assert december.headers["RateLimit"].startswith('"insights.rate";r=1;t=')


async def test_the_third_limit_refusing_moves_none(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """When the month refuses, the minute and the day do not move either."""
    await set_limits(
        ctx,
        insights=[
            {"window": "minute", "total": 50},
            {"window": "day", "total": 100},
            {"window": "month", "total": 10},
        ],
    )
    assert (await consume(client, deployment.key, 8))["valid"] is True
    refused = await post(client, {"key": deployment.key, "service": "insights", "cost": 5})
    answer = refused.json()
    assert (answer["valid"], answer["code"]) == (False, "QUOTA_EXCEEDED")
    assert answer["refused_by"] == "insights.month"
    assert (answer["used"], answer["total"], answer["remaining"]) == (8, 10, 2)
    assert refused.headers["Retry-After"] == str(24 * 86_400 - 43_200)  # to Dec 1st
    peek = by_name(await consume(client, deployment.key, 0))
    assert [entry["used"] for entry in peek.values()] == [8, 8, 8]


async def test_a_soft_limit_lets_the_call_through_and_reports_its_overage(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A soft month past its total never refuses; its excess is the overage."""
    await set_limits(
        ctx,
        insights=[
            {"window": "day", "total": 100},
            {"window": "month", "total": 10, "mode": "soft"},
        ],
    )
    assert (await consume(client, deployment.key, 8))["overage"] == 0
    answer = await consume(client, deployment.key, 5)
    assert (answer["valid"], answer["code"], answer["overage"]) == (True, "VALID", 3)
    month = by_name(answer)["insights.month"]
    assert (month["used"], month["remaining"], month["overage"], month["mode"]) == (
        13,
        0,
        3,
        "soft",
    )
    assert "overage" not in by_name(answer)["insights.day"]


async def test_a_shadow_limit_only_says_it_would_refuse_and_counts_it(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A shadow hour over its total passes, is named in would_refuse, and is counted."""
    await set_limits(
        ctx,
        insights=[
            {"window": "day", "total": 100},
            {"window": "hour", "total": 5, "mode": "shadow"},
        ],
    )
    labels = {"service": "insights", "limit": "insights.hour"}
    counted = REGISTRY.get_sample_value("quotad_shadow_refusals_total", labels) or 0.0
    assert (await consume(client, deployment.key, 5))["would_refuse"] == []
    answer = await consume(client, deployment.key, 1)
    assert (answer["valid"], answer["would_refuse"], answer["overage"]) == (
        True,
        ["insights.hour"],
        0,
    )
    assert by_name(answer)["insights.hour"]["used"] == 6
    assert REGISTRY.get_sample_value("quotad_shadow_refusals_total", labels) == counted + 1


async def test_a_rate_passes_its_burst_then_refuses_until_the_tokens_are_back(
    client: httpx2.AsyncClient,
    deployment: Deployment,
    ctx: Context,
    clock: FakeClock,
) -> None:
    """Burst 4 at one token per 2 s: 4 calls pass, the 5th is RATE_LIMITED for 2 s."""
    await set_limits(
        ctx,
        insights=[{"rate": {"per_second": 0.5, "burst": 4}}, {"window": "day", "total": 100}],
    )
    for _ in range(4):
        assert (await consume(client, deployment.key))["valid"] is True
    refused = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    answer = refused.json()
    assert (answer["valid"], answer["code"], answer["refused_by"]) == (
        False,
        "RATE_LIMITED",
        "insights.rate",
    )
    assert refused.headers["Retry-After"] == "2"
    assert by_name(answer)["insights.day"]["used"] == 4  # the refusal moved nothing
    clock.advance(seconds=1)
    assert (await consume(client, deployment.key))["code"] == "RATE_LIMITED"
    clock.advance(seconds=1)
    assert (await consume(client, deployment.key))["valid"] is True


async def test_a_cost_above_a_hard_rate_burst_is_refused_without_a_wait(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A cost no bucket could ever hold is RATE_LIMITED with a note, and no Retry-After."""
    await set_limits(
        ctx,
        insights=[{"rate": {"per_second": 1, "burst": 4}}, {"window": "day", "total": 100}],
    )
    refused = await post(client, {"key": deployment.key, "service": "insights", "cost": 5})
    answer = refused.json()
    assert (answer["valid"], answer["code"], answer["refused_by"]) == (
        False,
        "RATE_LIMITED",
        "insights.rate",
    )
    assert "can never pass" in answer["note"]
    assert "Retry-After" not in refused.headers
    assert by_name(await consume(client, deployment.key, 0))["insights.day"]["used"] == 0


async def test_items_pass_together_or_not_at_all(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Items of two services: one refusing refuses both; both fitting move both."""
    items = [{"service": "insights", "cost": 5}, {"service": "scoring", "cost": 101}]
    answer = (await post(client, {"key": deployment.key, "items": items})).json()
    assert (answer["valid"], answer["code"], answer["refused_by"]) == (
        False,
        "QUOTA_EXCEEDED",
        "scoring.day",
    )
    assert by_name(answer)["insights.day"]["used"] == 0
    items[1]["cost"] = 100
    answer = (await post(client, {"key": deployment.key, "items": items})).json()
    assert answer["valid"] is True
    assert {name: entry["used"] for name, entry in by_name(answer).items()} == {
        "insights.day": 5,
        "scoring.day": 100,
    }
    assert (await consume(client, deployment.key, 0, "scoring"))["used"] == 100


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"service": "insights", "items": [{"service": "insights"}]}, "/body/service"),
        ({"cost": 1, "items": [{"service": "insights"}]}, "/body/cost"),
        ({"items": []}, "/body/items"),
        ({"items": "insights"}, "/body/items"),
        ({"items": [{"service": "insights"}, {"service": "insights"}]}, "/body/items/1/service"),
        ({"items": [{"service": "insights", "cost": -1}]}, "/body/items/0/cost"),
        ({"items": [{"cost": 1}]}, "/body/items/0/service"),
        ({"items": [{"service": "insights", "what": 1}]}, "/body/items/0/what"),
    ],
    ids=[
        "service too",
        "cost too",
        "empty",
        "not a list",
        "twice",
        "bad cost",
        "no service",
        "extra",
    ],
)
async def test_bad_items_are_refused_with_a_pointer(
    client: httpx2.AsyncClient, deployment: Deployment, body: dict[str, Any], pointer: str
) -> None:
    """Both forms at once, no items, a service twice or a bad item: 400 VALIDATION_FAILED."""
    response = await post(client, {"key": deployment.key, **body})
    assert response.status_code == 400
    assert response.json()["error"] == "VALIDATION_FAILED"
    assert pointer in [error["path"] for error in response.json()["validationErrors"]]
    assert (await consume(client, deployment.key, 0))["used"] == 0


async def test_a_per_key_limit_keeps_a_counter_per_key(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Two keys of one account: each has its own per-key day, both share the account's."""
    await set_limits(
        ctx,
        insights=[
            {"window": "day", "total": 100},
            {"window": "day", "total": 3, "per": "key"},
        ],
    )
    created = await client.post(
        "/admin/v1/accounts/acme/keys", json={"name": "second"}, headers=OPERATOR
    )
    other = created.json()["key"]
    assert (await consume(client, deployment.key, 3))["valid"] is True
    refused = await consume(client, deployment.key, 1)
    assert (refused["code"], refused["refused_by"]) == ("QUOTA_EXCEEDED", "insights.day.key")
    answer = await consume(client, other, 2)
    assert answer["valid"] is True
    assert {name: entry["used"] for name, entry in by_name(answer).items()} == {
        "insights.day": 5,
        "insights.day.key": 2,
    }
    assert by_name(answer)["insights.day.key"]["per"] == "key"


async def test_a_version_1_plan_answers_as_before_with_its_one_daily_limit(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A v1 plan keeps every v1 field and header, and lists its daily quota as the one limit."""
    response = await post(client, {"key": deployment.key, "service": "insights", "cost": 3})
    # The whole body is test_verify_api's: every v1 field, then this one limit.
    assert [entry["name"] for entry in response.json()["limits"]] == ["insights.day"]
    assert response.headers["RateLimit-Policy"] == '"insights";q=250;w=86400'
    refused = (await consume(client, deployment.key, 248))["refused_by"]
    assert refused == "insights.day"


async def test_a_v2_replay_consumes_nothing_more(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A repeated Idempotency-Key on a multi-limit verify moves no counter again."""
    await set_limits(
        ctx, insights=[{"window": "day", "total": 100}, {"window": "week", "total": 500}]
    )
    body = {"key": deployment.key, "service": "insights", "cost": 4}
    first = await post(client, body, {"Idempotency-Key": "once"})
    again = await post(client, body, {"Idempotency-Key": "once"})
    assert (first.json()["valid"], again.json()["valid"]) == (True, True)
    assert [entry["used"] for entry in again.json()["limits"]] == [4, 4]
    changed = await post(client, {**body, "cost": 5}, {"Idempotency-Key": "once"})
    assert changed.status_code == 409


async def test_refund_gives_back_every_window_of_a_v2_verdict(
    deployment: Deployment, ctx: Context
) -> None:
    """verify.refund of a granted multi-limit verdict moves its day and its windows back."""
    await set_limits(
        ctx, insights=[{"window": "day", "total": 100}, {"window": "month", "total": 500}]
    )
    granted = await verify.verify(ctx, deployment.key, "insights", 7)
    assert [state.used for state in granted.limits] == [7, 7]
    await verify.refund(ctx, granted, 7)
    peek = await verify.verify(ctx, deployment.key, "insights", 0)
    assert [state.used for state in peek.limits] == [0, 0]


async def test_an_accounts_verify_checks_every_limit_but_the_per_key_ones(
    deployment: Deployment, ctx: Context
) -> None:
    """verify_account (Envoy's account descriptor) moves the account's limits, never a key's."""
    await set_limits(
        ctx,
        insights=[
            {"window": "day", "total": 100},
            {"window": "week", "total": 6},
            {"window": "day", "total": 1, "per": "key"},
        ],
    )
    granted = await verify.verify_account(ctx, "acme", "insights", 5)
    assert granted.valid is True
    assert [state.name for state in granted.limits] == ["insights.day", "insights.week"]
    refused = await verify.verify_account(ctx, "acme", "insights", 2)
    assert (refused.valid, refused.code, refused.refused_by) == (
        False,
        "QUOTA_EXCEEDED",
        "insights.week",
    )
