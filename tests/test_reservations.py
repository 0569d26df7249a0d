"""Reservations (SPEC 10): reserve on verify, commit, cancel, and expire exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.domain.credits import Hold, Reservation, ReservationStatus
from quotad.domain.limits import parse_limits
from quotad.domain.models import Quota
from quotad.errors import StorageError
from quotad.service import maintenance, reservations
from quotad.service.context import Context
from quotad.storage import Stores, memory_reservations
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings
from tests.nodes import three_nodes


async def verify(
    client: httpx2.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx2.Response:
    """POST /v1/verify as the operator."""
    return await client.post("/v1/verify", json=body, headers={**OPERATOR, **(headers or {})})


async def reserve(client: httpx2.AsyncClient, key: str, cost: int, **extra: Any) -> dict[str, Any]:
    """A granted verify with reserve: its answer."""
    body = {"key": key, "service": "insights", "cost": cost, "reserve": True, **extra}
    response = await verify(client, body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def used(client: httpx2.AsyncClient, key: str, name: str = "insights.day") -> int:
    """What a limit has used (a verify of cost 0)."""
    response = await verify(client, {"key": key, "service": "insights", "cost": 0})
    answer = response.json()
    for entry in answer["limits"]:
        if entry["name"] == name:
            value: int = entry["used"]
            return value
    raise AssertionError(answer)


async def commit(client: httpx2.AsyncClient, rid: str, cost: int) -> httpx2.Response:
    """POST /v1/reservations/{id}/commit."""
    return await client.post(
        f"/v1/reservations/{rid}/commit", json={"cost": cost}, headers=OPERATOR
    )


async def cancel(client: httpx2.AsyncClient, rid: str) -> httpx2.Response:
    """DELETE /v1/reservations/{id}."""
    return await client.delete(f"/v1/reservations/{rid}", headers=OPERATOR)


async def set_limits(ctx: Context, **quotas: list[dict[str, Any]]) -> None:
    """Give the deployment's plan these services' limits (SPEC 9's JSON form)."""
    plan = await ctx.records.get_plan("plan-acme")
    assert plan is not None
    changed = dict(plan.quotas)
    for service, limits in quotas.items():
        changed[service] = Quota(parse_limits(limits))
    await ctx.records.replace_plan(dataclasses.replace(plan, quotas=changed))
    if ctx.cache is not None:
        ctx.cache.clear()


async def test_reserve_answers_an_id_and_consumes_at_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A granted verify with reserve consumes the cost and answers reservation_id and expires_at."""
    answer = await reserve(client, deployment.key, 10, ttl_seconds=60)
    assert answer["valid"] is True
    assert answer["reservation_id"].startswith("rsv_")
    assert answer["expires_at"] == "2024-11-07T12:01:00Z"
    assert await used(client, deployment.key) == 10


async def test_a_refused_verify_reserves_nothing(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A refused verify with reserve answers no reservation_id."""
    answer = await reserve(client, deployment.key, 251)
    assert answer["valid"] is False
    assert "reservation_id" not in answer


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"ttl_seconds": 60}, "/body/ttl_seconds"),
        ({"reserve": "yes"}, "/body/reserve"),
        ({"reserve": True, "ttl_seconds": 0}, "/body/ttl_seconds"),
        ({"reserve": True, "ttl_seconds": 604_801}, "/body/ttl_seconds"),
    ],
)
async def test_bad_reservation_fields_are_refused(
    client: httpx2.AsyncClient, deployment: Deployment, body: dict[str, Any], where: str
) -> None:
    """A bad reserve or ttl_seconds is 400 VALIDATION_FAILED at its field; nothing moves."""
    response = await verify(client, {"key": deployment.key, "service": "insights", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_FAILED"
    assert [e["path"] for e in response.json()["validationErrors"]] == [where]
    assert await used(client, deployment.key) == 0


async def test_an_idempotent_replay_answers_the_same_reservation(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A verify with reserve replayed by its Idempotency-Key answers the same reservation."""
    body = {"key": deployment.key, "service": "insights", "cost": 5, "reserve": True}
    first = (await verify(client, body, {"Idempotency-Key": "k1"})).json()
    again = (await verify(client, body, {"Idempotency-Key": "k1"})).json()
    assert first["reservation_id"] == again["reservation_id"]
    assert await used(client, deployment.key) == 5


async def test_a_key_reused_after_its_window_reserves_anew(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """An Idempotency-Key reused once its window has passed charges anew, and so holds a
    reservation of its own (never the first, already settled one)."""
    body = {"key": deployment.key, "service": "insights", "cost": 5, "reserve": True}
    first = (await verify(client, body, {"Idempotency-Key": "k1"})).json()
    assert (await commit(client, first["reservation_id"], 5)).status_code == 200
    clock.advance(seconds=ctx.settings.idempotency_ttl_seconds + 1)
    later = (await verify(client, body, {"Idempotency-Key": "k1"})).json()
    assert later["reservation_id"] != first["reservation_id"]
    assert await used(client, deployment.key) == 5  # charged anew (on a later day)
    response = await cancel(client, later["reservation_id"])
    assert response.status_code == 200, response.text
    assert await used(client, deployment.key) == 0


@pytest.mark.parametrize(("actual", "after"), [(4, 4), (10, 10), (15, 15), (0, 0)])
async def test_commit_settles_the_difference(
    client: httpx2.AsyncClient, deployment: Deployment, actual: int, after: int
) -> None:
    """A commit smaller gives back, equal moves nothing, larger consumes the extra."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    response = await commit(client, rid, actual)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": rid,
        "status": "committed",
        "reserved": 10,
        "committed": actual,
        "overage": 0,
        "expires_at": "2024-11-07T12:05:00Z",
    }
    assert await used(client, deployment.key) == after


async def test_a_customer_key_named_like_a_settlement_cannot_block_it(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A verify whose Idempotency-Key is the name quotad gives a reservation's settlement
    (``reservation:<id>``) counts as its own call: the commit still settles, once."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    for _ in range(2):
        body = {"key": deployment.key, "service": "insights", "cost": 1}
        answer = await verify(client, body, {"Idempotency-Key": f"reservation:{rid}"})
        assert answer.status_code == 200, answer.text
    response = await commit(client, rid, 3)
    assert (response.status_code, response.json().get("committed")) == (200, 3), response.text
    assert await used(client, deployment.key) == 3 + 1


async def test_commit_gives_back_to_every_window(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A smaller commit gives the difference back to the day and the month alike."""
    await set_limits(
        ctx, insights=[{"window": "day", "total": 100}, {"window": "month", "total": 1000}]
    )
    rid = (await reserve(client, deployment.key, 30))["reservation_id"]
    assert (await commit(client, rid, 12)).status_code == 200
    assert await used(client, deployment.key, "insights.day") == 12
    assert await used(client, deployment.key, "insights.month") == 12


async def test_a_larger_commit_without_room_is_overage(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A larger commit a hard limit has no room for is consumed anyway and reported as overage."""
    await set_limits(
        ctx, insights=[{"window": "day", "total": 100}, {"window": "month", "total": 50}]
    )
    rid = (await reserve(client, deployment.key, 40))["reservation_id"]
    response = await commit(client, rid, 60)
    assert response.status_code == 200, response.text
    assert (response.json()["committed"], response.json()["overage"]) == (60, 20)
    assert await used(client, deployment.key, "insights.month") == 60
    assert await used(client, deployment.key, "insights.day") == 60


async def test_cancel_gives_everything_back_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Cancel gives the whole cost back; cancelling again answers the same, moving nothing."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    await reserve(client, deployment.key, 3)
    first = await cancel(client, rid)
    again = await cancel(client, rid)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["status"] == "cancelled"
    assert await used(client, deployment.key) == 3


async def test_a_double_commit_moves_once_and_another_settlement_conflicts(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """The same commit twice moves once; another commit or a cancel after it is 409."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    assert (await commit(client, rid, 4)).status_code == 200
    assert (await commit(client, rid, 4)).status_code == 200
    assert (await commit(client, rid, 5)).status_code == 409
    assert (await cancel(client, rid)).status_code == 409
    assert await used(client, deployment.key) == 4


async def test_commit_after_cancel_conflicts(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A commit of a cancelled reservation is 409 CONFLICT."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    assert (await cancel(client, rid)).status_code == 200
    response = await commit(client, rid, 10)
    assert response.status_code == 409
    assert response.json()["error"] == "CONFLICT"
    assert await used(client, deployment.key) == 0


async def test_an_unknown_reservation_is_404(client: httpx2.AsyncClient) -> None:
    """Commit and cancel of an unknown id are 404."""
    assert (await commit(client, "rsv_nope", 1)).status_code == 404
    assert (await cancel(client, "rsv_nope")).status_code == 404


async def test_commit_after_expiry_conflicts_and_the_sweep_gives_back_once(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """After its deadline a commit is 409 and moves nothing; the sweep gives back, once."""
    rid = (await reserve(client, deployment.key, 10, ttl_seconds=30))["reservation_id"]
    clock.advance(seconds=31)
    assert (await commit(client, rid, 20)).status_code == 409
    assert await used(client, deployment.key) == 10
    assert await reservations.sweep(ctx) == 1
    assert await reservations.sweep(ctx) == 0
    assert await used(client, deployment.key) == 0
    response = await cancel(client, rid)
    assert response.status_code == 409


async def test_nodes_racing_to_expire_give_back_once(
    stores: Stores, client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """Three nodes sweeping at once give each reservation back exactly once."""
    async with AsyncExitStack() as stack:
        nodes = await three_nodes(stores, clock, stack)
        for _ in range(5):
            await reserve(client, deployment.key, 7, ttl_seconds=10)
        await reserve(client, deployment.key, 2, ttl_seconds=600)
        clock.advance(seconds=11)
        counts = await asyncio.gather(*(reservations.sweep(node) for _, node in nodes))
        assert sum(counts) == 5
        assert await used(client, deployment.key) == 2


class FailingSettle:
    """The credit store, whose settle_reservation fails once after the counters moved."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def settle_reservation(self, reservation: Any, claim: str) -> bool:
        if not self.failed:
            self.failed = True
            raise OSError("the node died before recording the settlement")
        result: bool = await self.inner.settle_reservation(reservation, claim)
        return result


async def test_an_interrupted_settlement_is_not_applied_twice(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A commit that died after moving the counters is finished, not re-applied, next time."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    failing = dataclasses.replace(ctx.stores, credits=FailingSettle(ctx.stores.credits))
    broken = Context(failing, ctx.settings, clock)
    with pytest.raises(OSError, match="died"):
        await reservations.commit(broken, rid, 4)
    assert await used(client, deployment.key) == 4
    clock.advance(seconds=31)  # the dead node's claim lapses
    response = await commit(client, rid, 4)
    assert response.status_code == 200, response.text
    assert await used(client, deployment.key) == 4


async def test_a_sweep_finishes_an_interrupted_commit(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """The sweep finishes an interrupted commit as committed; it never gives it all back."""
    rid = (await reserve(client, deployment.key, 10, ttl_seconds=10))["reservation_id"]
    failing = dataclasses.replace(ctx.stores, credits=FailingSettle(ctx.stores.credits))
    with pytest.raises(OSError, match="died"):
        await reservations.commit(Context(failing, ctx.settings, clock), rid, 4)
    clock.advance(seconds=60)
    assert await reservations.sweep(ctx) == 1
    found = await ctx.stores.credits.get_reservation(rid)
    assert found is not None
    assert (found.status.value, found.committed) == ("committed", 4)
    assert await used(client, deployment.key) == 4


async def test_a_commit_of_the_reserved_cost_never_overrides_an_interrupted_cancel(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A commit moving nothing, after a cancel that died once the units were given back,
    finishes the cancel (its claim names it): the units are never charged again."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    failing = dataclasses.replace(ctx.stores, credits=FailingSettle(ctx.stores.credits))
    with pytest.raises(OSError, match="died"):
        await reservations.cancel(Context(failing, ctx.settings, clock), rid)
    assert await used(client, deployment.key) == 0
    clock.advance(seconds=31)  # the dead node's claim lapses
    response = await commit(client, rid, 10)
    assert response.status_code == 409, response.text
    assert await used(client, deployment.key) == 0
    found = await ctx.stores.credits.get_reservation(rid)
    assert found is not None
    assert found.status.value == "cancelled"


async def test_a_commit_of_the_reserved_cost_settles_once_against_a_racing_sweep(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A commit that moves nothing and a sweep of the same reservation at its deadline:
    one wins, and the units are given back only if the sweep did."""
    rid = (await reserve(client, deployment.key, 10, ttl_seconds=5))["reservation_id"]
    clock.advance(seconds=5)  # at the deadline: the commit is late, the sweep is due
    answer, swept = await asyncio.gather(commit(client, rid, 10), reservations.sweep(ctx))
    found = await ctx.stores.credits.get_reservation(rid)
    assert found is not None
    assert answer.status_code == 409
    assert (swept, found.status.value) == (1, "expired")
    assert await used(client, deployment.key) == 0


async def test_a_larger_commit_of_a_zero_reservation_is_counted(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A reservation of cost 0 committed at 7 counts the 7 units in every window."""
    await set_limits(
        ctx, insights=[{"window": "day", "total": 100}, {"window": "month", "total": 1000}]
    )
    rid = (await reserve(client, deployment.key, 0))["reservation_id"]
    response = await commit(client, rid, 7)
    assert response.status_code == 200, response.text
    assert response.json()["committed"] == 7
    assert await used(client, deployment.key, "insights.day") == 7
    assert await used(client, deployment.key, "insights.month") == 7


async def test_a_commit_cost_written_as_a_whole_float_is_taken(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A commit's cost of 4.0 (JSON Schema's integer 4) settles as 4; 4.5 is a 400."""
    rid = (await reserve(client, deployment.key, 10, ttl_seconds=60.0))["reservation_id"]
    half = await client.post(f"/v1/reservations/{rid}/commit", json={"cost": 4.5}, headers=OPERATOR)
    assert half.status_code == 400, half.text
    whole = await client.post(
        f"/v1/reservations/{rid}/commit", json={"cost": 4.0}, headers=OPERATOR
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["committed"] == 4
    assert await used(client, deployment.key) == 4


class UnconfirmedCreate:
    """The credit store, whose reservation writes are never confirmed: each fails with a
    StorageError, after the write went through (``kept``) or not, or never answers."""

    def __init__(self, inner: Any, *, kept: bool = False, hangs: bool = False) -> None:
        self.inner = inner
        self.kept = kept
        self.hangs = hangs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_reservation(self, reservation: Any) -> None:
        if self.hangs:
            await asyncio.Event().wait()
        if self.kept:
            await self.inner.create_reservation(reservation)
        raise StorageError("the database could not complete the write")


class HoldsElsewhere:
    """The counters, keeping no reservation with them (as Redis's): a reserve writes its
    reservation after the consume, through the credit store."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def consume(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("hold", None)
        return await self.inner.consume(*args, **kwargs)


def unconfirmed(
    ctx: Context, counters: Any = None, **settings: Any
) -> tuple[Context, httpx2.AsyncClient]:
    """A node over ``ctx``'s stores (its ``counters`` if given) that writes reservations
    after their consume, and whose writes are unconfirmed; a client to it. ``settings``
    override the test settings."""
    kept, hangs = settings.pop("kept", False), settings.pop("hangs", False)
    failing = dataclasses.replace(
        ctx.stores,
        credits=UnconfirmedCreate(ctx.stores.credits, kept=kept, hangs=hangs),
        counters=HoldsElsewhere(counters or ctx.stores.counters),
    )
    node = Context(failing, make_settings(ctx.stores.url, **settings), ctx.clock)
    transport = httpx2.ASGITransport(app=create_app(node, manage_store=False))
    return node, httpx2.AsyncClient(transport=transport, base_url="http://quotad")


async def test_a_reserve_the_store_did_not_confirm_is_503_and_charged_nothing(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A reservation the store failed to write: 503 in the error shape, the grant given back."""
    _, broken = unconfirmed(ctx)
    async with broken:
        body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
        response = await verify(broken, body)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "SERVICE_UNAVAILABLE"
    assert await used(client, deployment.key) == 0


async def test_a_reservation_kept_but_unconfirmed_is_given_back_once(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """Kept by the store though its write failed: given back once, its expiry replays that."""
    await reserve(client, deployment.key, 5, ttl_seconds=600)
    _, broken = unconfirmed(ctx, kept=True)
    async with broken:
        body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
        body["ttl_seconds"] = 30
        assert (await verify(broken, body)).status_code == 503
    assert await used(client, deployment.key) == 5
    clock.advance(seconds=31)
    assert await reservations.sweep(ctx) == 1  # the kept one, expired
    assert await used(client, deployment.key) == 5


async def test_a_reservation_write_that_hangs_is_503_within_the_store_timeout(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A reservation write that never answers ends at the store timeout: 503, nothing charged."""
    _, broken = unconfirmed(ctx, hangs=True, store_timeout_ms=300)
    async with broken:
        body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
        response = await asyncio.wait_for(verify(broken, body), timeout=10)
    assert response.status_code == 503, response.text
    assert await used(client, deployment.key) == 0


async def test_an_unconfirmed_idempotent_reserve_is_kept_for_its_retry(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Fail-closed with an Idempotency-Key, a 503'd reserve stays charged for its retry: once."""
    _, broken = unconfirmed(ctx)
    body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
    retry_key = {"Idempotency-Key": "job-7"}
    async with broken:
        assert (await verify(broken, body, retry_key)).status_code == 503
    response = await verify(client, body, retry_key)
    assert response.status_code == 200, response.text
    assert await used(client, deployment.key) == 10
    assert (await cancel(client, response.json()["reservation_id"])).status_code == 200
    assert await used(client, deployment.key) == 0


async def test_an_unconfirmed_reserve_under_fail_open_is_an_uncounted_allow(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Under fail-open an unwritten reservation is an uncounted allow naming none, given back."""
    _, broken = unconfirmed(ctx, on_store_error="fail-open")
    async with broken:
        body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
        response = await verify(broken, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["valid"] is True
    assert "fail-open" in answer["note"]
    assert "reservation_id" not in answer
    assert await used(client, deployment.key) == 0


class FailingGiveBack:
    """The counters, whose first settlement consume (a reservation's claim) fails."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def consume(self, *args: Any, **kwargs: Any) -> Any:
        claim = args[5] if len(args) > 5 else kwargs.get("claim")
        if claim is not None and claim.key.startswith("reservation:") and not self.failed:
            self.failed += 1
            raise StorageError("the database could not complete the write")
        return await self.inner.consume(*args, **kwargs)


async def test_a_give_back_the_store_refuses_is_retried_in_the_background(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """An unconfirmed reservation whose give-back fails too is given back by a retry."""
    counters = FailingGiveBack(ctx.stores.counters)
    _, broken = unconfirmed(ctx, counters)
    async with broken:
        body = {"key": deployment.key, "service": "insights", "cost": 10, "reserve": True}
        assert (await verify(broken, body)).status_code == 503
    assert counters.failed == 1
    for _ in range(40):  # the first retry is 0.25 s later
        if await used(client, deployment.key) == 0:
            break
        await asyncio.sleep(0.1)
    assert await used(client, deployment.key) == 0


async def test_settled_reservations_are_deleted_once_their_claims_are_forgotten(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """The upkeep deletes settled reservations REPLAY_DAYS past due; pending and recent stay."""
    old = (await reserve(client, deployment.key, 4, ttl_seconds=30))["reservation_id"]
    assert (await commit(client, old, 4)).status_code == 200
    pending = (await reserve(client, deployment.key, 3, ttl_seconds=30))["reservation_id"]
    clock.advance(days=reservations.REPLAY_DAYS, seconds=31)
    recent = (await reserve(client, deployment.key, 2, ttl_seconds=30))["reservation_id"]
    assert (await cancel(client, recent)).status_code == 200
    await maintenance.purge_once(ctx)
    assert await ctx.stores.credits.get_reservation(old) is None
    assert (await commit(client, old, 4)).status_code == 404
    assert await ctx.stores.credits.get_reservation(recent) is not None
    assert await ctx.stores.credits.get_reservation(pending) is not None
    assert await reservations.sweep(ctx) == 1  # the pending one, expired only now
    clock.advance(days=reservations.REPLAY_DAYS, seconds=1)
    await maintenance.purge_once(ctx)
    assert await ctx.stores.credits.get_reservation(pending) is None


@pytest.mark.memory
async def test_a_memory_store_keeps_only_its_newest_settled_reservations_of_consumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_SETTLED, a memory store drops its oldest settled reservation made by a
    verify's consume (as the upkeep drops one 60 days old), so a steady rate of reserves
    does not fill its memory; one made under an Idempotency-Key (which a replay answers)
    and pending ones are kept."""
    monkeypatch.setattr(memory_reservations, "MAX_SETTLED", 3)
    store = MemoryStore()
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=5)
    replayable = Reservation(
        "rsv_key", "acme", None, (("insights", 1),), now.date(), (), {}, 0, now, expires
    )
    await store.create_reservation(replayable)  # as a reserve with an Idempotency-Key
    done = replayable.settled_as(ReservationStatus.COMMITTED, 1, 0, now)
    assert await store.finish_reservation(done, now)
    made = []
    for n in range(6):
        hold = Hold(f"rsv_{n}", (("insights", 1),), now, expires)
        outcome = await store.consume("acme", "insights", now.date(), 1, 100, now=now, hold=hold)
        assert outcome.granted
        assert hold.made is not None
        made.append(hold.made)
    for reservation in made[:5]:  # the last stays pending
        settled = reservation.settled_as(ReservationStatus.COMMITTED, 1, 0, now)
        assert await store.finish_reservation(settled, now)
    kept = [await store.get_reservation(reservation.id) for reservation in made]
    assert [found is not None for found in kept] == [False, False, True, True, True, True]
    assert [found.status for found in kept[2:] if found] == [ReservationStatus.COMMITTED] * 3 + [
        ReservationStatus.PENDING
    ]
    assert await store.get_reservation("rsv_key") == done


def test_random_reservation_ids_sort_in_the_order_they_were_made() -> None:
    """Ids without an Idempotency-Key are 32 hex digits, the first 14 the time they were
    made (µs), so each sorts at or after the one before it; none repeats."""
    made = [reservations.reservation_id("acme", None) for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert all(len(rid) == 36 and rid.startswith("rsv_") for rid in made)
    assert all(int(rid[4:], 16) >= 0 for rid in made)
    times = [int(rid[4:18], 16) for rid in made]
    assert times == sorted(times)
    assert abs(times[0] / 1e6 - datetime.now(UTC).timestamp()) < 60
    assert reservations.reservation_id("acme", "k1") == reservations.reservation_id("acme", "k1")
