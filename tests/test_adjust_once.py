"""An adjustment under an Idempotency-Key applies once (``Store.adjust_once``): a repeat
moves nothing, a reuse with another adjustment is refused, on every store and over HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx2
import pytest

from quotad.domain.models import IdempotencyClaim
from quotad.errors import Conflict
from quotad.storage import Stores
from tests.conftest import OPERATOR, Deployment
from tests.test_limits_store import DAY, MONTH, NOON, add_account, day_key, window

with_cluster = True  # also run the store-backed tests on a Redis Cluster
LATER = NOON + timedelta(hours=1)


def claim(fingerprint: str = "fp", hours: int = 24) -> IdempotencyClaim:
    """An adjustment's claim, kept ``hours`` from noon."""
    return IdempotencyClaim("adjust k1", fingerprint, NOON + timedelta(hours=hours))


async def test_a_repeated_key_moves_nothing_and_answers_the_day_as_it_stands(
    stores: Stores,
) -> None:
    """The same claim twice: the first moves the day and its month, the second moves
    nothing, is told it repeated, and answers the day with what changed in between."""
    await add_account(stores)
    extra = (window(MONTH, 5000, 0),)
    adjust_once = stores.counters.adjust_once
    first, repeated = await adjust_once("acme", "insights", DAY, 7, 1000, extra, claim(), NOON)
    assert (first.used, first.total, repeated) == (7, 1000, False)
    await stores.counters.consume("acme", "insights", DAY, 2, 1000)
    again, repeated = await adjust_once("acme", "insights", DAY, 7, 1000, extra, claim(), LATER)
    assert (again.day, again.used, again.total, repeated) == (DAY, 9, 1000, True)
    assert await stores.counters.read_counters("acme", [day_key(), MONTH]) == [9, 7]


async def test_a_key_reused_for_another_adjustment_is_refused_and_moves_nothing(
    stores: Stores,
) -> None:
    """A claim seen with another fingerprint raises Conflict; the day stays as it was."""
    await add_account(stores)
    adjust_once = stores.counters.adjust_once
    await adjust_once("acme", "insights", DAY, 7, 1000, (), claim(), NOON)
    with pytest.raises(Conflict):
        await adjust_once("acme", "insights", DAY, 8, 1000, (), claim("other"), LATER)
    assert await stores.counters.read_counters("acme", [day_key()]) == [7]


async def test_an_expired_key_applies_again(stores: Stores) -> None:
    """A claim past its expiry is taken afresh: the adjustment applies a second time."""
    await add_account(stores)
    adjust_once = stores.counters.adjust_once
    await adjust_once("acme", "insights", DAY, 7, 1000, (), claim(hours=1), NOON)
    later = NOON + timedelta(hours=2)
    day, repeated = await adjust_once("acme", "insights", DAY, 7, 1000, (), claim(), later)
    assert (day.used, repeated) == (14, False)


async def test_a_plain_adjust_is_not_held_by_any_key(stores: Stores) -> None:
    """Adjustments without a key always apply, beside keyed ones."""
    await add_account(stores)
    await stores.counters.adjust_once("acme", "insights", DAY, 7, 1000, (), claim(), NOON)
    await stores.counters.adjust("acme", "insights", DAY, 7, 1000)
    await stores.counters.adjust("acme", "insights", DAY, 7, 1000)
    assert await stores.counters.read_counters("acme", [day_key()]) == [21]


async def test_over_http_a_retried_adjustment_applies_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """POST …/adjust with an Idempotency-Key, sent twice: the day moves once, both answers
    carry the day, the audit log has one entry; the key with another delta is 409, and a
    key that is not 1 to 255 visible ASCII characters is 400; none of them moves it."""
    path = f"/admin/v1/accounts/{deployment.account_id}/usage/insights/adjust"
    body = {"date": "2024-11-06", "delta": 40}
    keyed = {**OPERATOR, "Idempotency-Key": "fix-ticket-4411"}
    first = await client.post(path, json=body, headers=keyed)
    again = await client.post(path, json=body, headers=keyed)
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert first.json()["used"] == again.json()["used"] == 40
    reused = await client.post(path, json={**body, "delta": 41}, headers=keyed)
    assert (reused.status_code, reused.json()["error"]) == (409, "CONFLICT")
    for bad in ("has space", "x" * 256):
        refused = await client.post(path, json=body, headers={**OPERATOR, "Idempotency-Key": bad})
        assert (refused.status_code, refused.json()["error"]) == (400, "VALIDATION_FAILED")
    rows = await client.get(
        f"/admin/v1/accounts/{deployment.account_id}/usage/insights",
        params={"start_date": "2024-11-06", "end_date": "2024-11-06"},
        headers=OPERATOR,
    )
    assert [row["used"] for row in rows.json()] == [40]
    target = {"target": f"account:{deployment.account_id}"}
    audit = await client.get("/admin/v1/audit", params=target, headers=OPERATOR)
    assert [e["action"] for e in audit.json()["items"]].count("usage.adjust") == 1
