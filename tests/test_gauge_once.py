"""A resource limit's acquire or release under an Idempotency-Key moves the gauge once
(``Store.move_gauge_once``): a repeat moves nothing, a refused move keeps no key, a reuse
with another move is refused, on every store and over HTTP."""

from __future__ import annotations

from datetime import timedelta

import httpx2
import pytest

from quotad.domain.models import IdempotencyClaim
from quotad.errors import Conflict
from quotad.storage import Stores
from tests.conftest import OPERATOR, Deployment
from tests.test_limits_store import NOON, add_account

LATER = NOON + timedelta(hours=1)
COHORTS = "cohort.max_count"


def claim(fingerprint: str = "fp", key: str = "gauge k1", hours: int = 24) -> IdempotencyClaim:
    """A gauge move's claim, kept ``hours`` from noon."""
    return IdempotencyClaim(key, fingerprint, NOON + timedelta(hours=hours))


async def test_a_repeated_key_moves_the_gauge_once(stores: Stores) -> None:
    """The same acquire twice takes its units once; the repeat answers the usage as it
    stands; a release under a key of its own gives units back once too."""
    await add_account(stores)
    move = stores.counters.move_gauge_once
    assert await move("acme", COHORTS, 3, 10, claim(), NOON) == (3, False)
    await stores.counters.acquire("acme", COHORTS, 2, 10)
    assert await move("acme", COHORTS, 3, 10, claim(), LATER) == (5, True)
    back = claim("back", "gauge k2")
    assert await move("acme", COHORTS, -4, 10, back, NOON) == (1, False)
    assert await move("acme", COHORTS, -4, 10, back, LATER) == (1, True)
    assert (await stores.counters.gauges("acme"))[COHORTS] == 1


async def test_a_refused_move_keeps_no_key(stores: Stores) -> None:
    """An acquire past the limit (or a release of more than is in use) is refused and its
    key is not kept: the same key succeeds once there is room."""
    await add_account(stores)
    move = stores.counters.move_gauge_once
    assert await move("acme", COHORTS, -1, 10, claim("back", "gauge k2"), NOON) == (None, False)
    await stores.counters.set_gauge("acme", COHORTS, 9)
    assert await move("acme", COHORTS, 3, 10, claim(), NOON) == (None, False)
    await stores.counters.set_gauge("acme", COHORTS, 7)
    assert await move("acme", COHORTS, 3, 10, claim(), LATER) == (10, False)


async def test_a_key_reused_for_another_move_is_refused(stores: Stores) -> None:
    """A claim seen with another fingerprint raises Conflict and moves nothing; an expired
    one is taken afresh."""
    await add_account(stores)
    move = stores.counters.move_gauge_once
    await move("acme", COHORTS, 3, 10, claim(hours=2), NOON)
    with pytest.raises(Conflict):
        await move("acme", COHORTS, 4, 10, claim("other"), LATER)
    assert (await stores.counters.gauges("acme"))[COHORTS] == 3
    assert await move("acme", COHORTS, 3, 10, claim(), NOON + timedelta(hours=3)) == (6, False)


async def test_over_http_a_retried_acquire_and_release_move_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """POST …/acquire and …/release, each sent twice under its Idempotency-Key, move the
    gauge once each; the acquire's key on a release is 409, and a malformed key 400."""
    base = f"/admin/v1/accounts/{deployment.account_id}/limits/{COHORTS}"
    taking = {**OPERATOR, "Idempotency-Key": "job-17-start"}
    giving = {**OPERATOR, "Idempotency-Key": "job-17-end"}
    for _ in range(2):
        taken = await client.post(f"{base}/acquire", json={"amount": 4}, headers=taking)
        assert taken.json() == {"name": COHORTS, "usage": 4, "limit": 10}, taken.text
    reused = await client.post(f"{base}/release", json={"amount": 4}, headers=taking)
    assert (reused.status_code, reused.json()["error"]) == (409, "CONFLICT")
    malformed = {**OPERATOR, "Idempotency-Key": ""}
    refused = await client.post(f"{base}/acquire", json={"amount": 1}, headers=malformed)
    assert (refused.status_code, refused.json()["error"]) == (400, "VALIDATION_FAILED")
    for _ in range(2):
        given = await client.post(f"{base}/release", json={"amount": 3}, headers=giving)
        assert given.json()["usage"] == 1, given.text
