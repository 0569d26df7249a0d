"""The SDK's credits and reservations (SPEC 10) against a real ``quotad serve``, sync and
async: grants, balance, ledger, void, prices, refills, reserve/commit/cancel and the
``reservation`` context manager."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from quotad.sdk import (
    ConflictError,
    CreditsExhausted,
    CreditsExhaustedError,
    NotFoundError,
    QuotaExceededError,
    Refill,
    ValidationFailedError,
    Verdict,
)
from quotad.sdk._reservations import refusal_error
from tests import sdk_harness
from tests.processes import noon_zone
from tests.sdk_harness import Api, uid

pytestmark = pytest.mark.slow
# The shared harness's fixtures, by name: the module's `quotad serve` and its clients.
server = sdk_harness.server
api = sdk_harness.api


async def new_account(api: Api, total: int = 100) -> tuple[str, str, str]:
    """A fresh service with ``total`` a day, a plan, an account and its key."""
    service = uid("s")
    await api.create_service(service)
    plan = await api.create_plan(uid("p"), {service: total})
    account = await api.create_account("Test", plan.id, account_id=uid("a"), timezone=noon_zone())
    return account.id, (await api.create_key(account.id, "k")).key, service


async def used(api: Api, account_id: str, service: str) -> int:
    """What the account used of ``service`` on its current day."""
    days = await api.account_usage(account_id, service)
    return days[-1].used if days else 0


async def test_grant_show_ledger_and_void(api: Api) -> None:
    """A grant is listed with what is left, written in the ledger, and voided to nothing."""
    account_id, _key, _service = await new_account(api)
    expires = datetime.now(UTC) + timedelta(days=30)
    grant = await api.grant_credits(account_id, 12.5, expires, priority=3, note="welcome")
    assert (grant.amount, grant.remaining, grant.priority, grant.note) == (12.5, 12.5, 3, "welcome")
    assert grant.expires_at is not None
    assert abs((grant.expires_at - expires).total_seconds()) < 1
    await api.grant_credits(account_id, 5)
    balance = await api.credits(account_id)
    assert balance.balance == 17.5
    assert {g.id for g in balance.grants} >= {grant.id}
    page = await api.credit_ledger(account_id)
    assert [e.kind for e in page.items] == ["grant", "grant"]
    assert page.items[-1].balance_after == 17.5
    first = await api.credit_ledger(account_id, limit=1)
    assert len(first.items) == 1
    assert first.next_cursor is not None
    rest = await api.credit_ledger(account_id, cursor=first.next_cursor)
    assert [e.id for e in first.items + rest.items] == [e.id for e in page.items]
    voided = await api.void_grant(account_id, grant.id)
    assert (voided.remaining, voided.voided_at is not None) == (0, True)
    assert (await api.credits(account_id)).balance == 5


async def test_bad_grants_raise_typed_errors(api: Api) -> None:
    """A past expiry or too many decimals is a ValidationFailedError at its field; an
    unknown account is a NotFoundError."""
    account_id, _key, _service = await new_account(api)
    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(ValidationFailedError) as caught:
        await api.grant_credits(account_id, 1, past)
    assert [p.path for p in caught.value.validation_errors] == ["/body/expires_at"]
    with pytest.raises(ValidationFailedError) as caught:
        await api.grant_credits(account_id, 0.0000001)
    assert [p.path for p in caught.value.validation_errors] == ["/body/amount"]
    with pytest.raises(NotFoundError):
        await api.grant_credits(uid("nobody"), 1)
    assert (await api.credits(account_id)).balance == 0


async def test_service_prices_and_plan_refills_round_trip(api: Api) -> None:
    """credit_price is set on create, changed and removed by update_service; a plan's
    refill is sent and read back."""
    name = uid("s")
    service = await api.create_service(name, credit_price=0.25)
    assert service.credit_price == 0.25
    assert (await api.update_service(name, credit_price=2)).credit_price == 2
    assert (await api.update_service(name, credit_price=None)).credit_price is None
    assert (await api.update_service(name, description="d")).description == "d"
    refill = Refill(1000, "month", "top_up", "billing")
    plan = await api.create_plan(uid("p"), {name: 10}, refill=refill)
    assert plan.refill == refill
    assert (await api.get_plan(plan.id)).refill == refill
    assert (await api.replace_plan(plan.id, {name: 10})).refill is None


async def test_verify_reserve_commit_and_cancel(api: Api) -> None:
    """A reserving verify answers an id and a deadline; commit settles the difference and
    is idempotent; cancel gives everything back; a second settlement conflicts."""
    account_id, key, service = await new_account(api)
    verdict = await api.verify(key, service, 10, reserve=True, ttl_seconds=60)
    assert verdict.valid
    assert verdict.reservation_id is not None
    assert verdict.expires_at is not None
    committed = await api.commit_reservation(verdict.reservation_id, 4)
    assert (committed.status, committed.reserved, committed.committed) == ("committed", 10, 4)
    assert (await api.commit_reservation(verdict.reservation_id, 4)).committed == 4
    assert await used(api, account_id, service) == 4
    with pytest.raises(ConflictError):
        await api.cancel_reservation(verdict.reservation_id)
    other = await api.verify(key, service, 6, reserve=True)
    assert other.reservation_id is not None
    cancelled = await api.cancel_reservation(other.reservation_id)
    assert cancelled.status == "cancelled"
    assert await used(api, account_id, service) == 4
    with pytest.raises(NotFoundError):
        await api.commit_reservation("rs_unknown", 1)
    with pytest.raises(ValueError, match="reserve=True"):
        await api.verify(key, service, 1, ttl_seconds=5)


async def test_the_reservation_context_manager(api: Api) -> None:
    """A clean block commits the cost it reports (else the reserved one); a raising block
    cancels; a refused reservation raises QuotaExceededError and takes nothing."""
    account_id, key, service = await new_account(api, total=100)
    client = api.client

    async def block(cost: int, report: int | None, fail: bool = False) -> None:
        if client.is_async:
            async with client.reservation(key, service, cost) as r:
                if report is not None:
                    r.cost = report
                if fail:
                    raise RuntimeError("the work failed")
        else:
            with client.reservation(key, service, cost, ttl_seconds=30) as r:
                if report is not None:
                    r.commit(report)
                if fail:
                    raise RuntimeError("the work failed")
        assert r.result is not None
        assert r.result.status == "committed"

    await block(10, 3)
    assert await used(api, account_id, service) == 3
    await block(5, None)
    assert await used(api, account_id, service) == 8
    with pytest.raises(RuntimeError, match="the work failed"):
        await block(20, 1, fail=True)
    assert await used(api, account_id, service) == 8
    with pytest.raises(QuotaExceededError) as caught:
        await block(500, None)
    assert (caught.value.status, caught.value.error) == (429, "QUOTA_EXCEEDED")
    assert await used(api, account_id, service) == 8


async def reserve_nothing(api: Api, key: str, service: str, cost: int) -> None:
    """Enter and leave a reservation block of either client."""
    client = api.client
    if client.is_async:
        async with client.reservation(key, service, cost):
            pass
    else:
        with client.reservation(key, service, cost):
            pass


def test_a_credits_refusal_raises_credits_exhausted() -> None:
    """A verdict refused for credits becomes CreditsExhaustedError (alias CreditsExhausted),
    a 429 with the verdict's note."""
    verdict = Verdict(
        valid=False,
        code="CREDITS_EXHAUSTED",
        service="llm",
        account_id="a",
        used=None,
        remaining=None,
        total=None,
        reset=None,
        note="the balance of 1.5 credits does not cover 2",
    )
    error = refusal_error(verdict)
    assert CreditsExhausted is CreditsExhaustedError
    assert isinstance(error, CreditsExhausted)
    assert (error.status, error.note, error.retry_after) == (429, verdict.note, None)


async def test_priced_verify_answers_its_debit_or_credits_exhausted(api: Api) -> None:
    """A verify of a priced service answers its debit and the balance left; past the
    balance it is refused CREDITS_EXHAUSTED, which reservation() raises."""
    account_id, key, _service = await new_account(api)
    priced = uid("s")
    await api.create_service(priced, credit_price=0.5)
    plan = await api.create_plan(uid("p"), {priced: 1000})
    await api.update_account(account_id, plan=plan.id)
    await api.grant_credits(account_id, 5)
    verdict = await api.verify(key, priced, 4)
    if verdict.credits is None:
        pytest.skip("this server does not price verify yet (cr-credits' verify path)")
    assert (verdict.credits.debited, verdict.credits.remaining) == (2, 3)
    refused = await api.verify(key, priced, 7)
    assert (refused.valid, refused.code) == (False, "CREDITS_EXHAUSTED")
    with pytest.raises(CreditsExhaustedError):
        await reserve_nothing(api, key, priced, 7)
    assert (await api.credits(account_id)).balance == 3
    with contextlib.suppress(ConflictError):
        await api.delete_plan(plan.id)
