"""Credits' service layer (SPEC 10): grants, voids, the balance and the ledger, every store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from quotad.domain.credits import MICROS, LedgerKind
from quotad.errors import NotFound, ValidationFailed
from quotad.service import credits
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import Deployment

with_cluster = False


async def test_a_grant_adds_to_the_balance_and_the_ledger(
    ctx: Context, deployment: Deployment
) -> None:
    """A grant shows in the balance with all of it left, and as a ledger entry."""
    made = await credits.grant(ctx, "acme", 5 * MICROS, note="welcome")
    balance = await credits.balance(ctx, "acme")
    assert balance.balance == 5 * MICROS
    assert balance.grants == [(made, 5 * MICROS)]
    entries, cursor = await credits.ledger_page(ctx, "acme", 10, None)
    assert cursor is None
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [
        (LedgerKind.GRANT, 5 * MICROS, 5 * MICROS)
    ]


async def test_a_void_leaves_nothing_of_a_grant(ctx: Context, deployment: Deployment) -> None:
    """A voided grant has nothing left, and the ledger takes what was left away."""
    made = await credits.grant(ctx, "acme", 3 * MICROS)
    voided = await credits.void(ctx, "acme", made.id)
    assert voided.voided_at is not None
    balance = await credits.balance(ctx, "acme")
    assert balance.balance == 0
    entries, _ = await credits.ledger_page(ctx, "acme", 10, None)
    assert [e.kind for e in entries] == [LedgerKind.GRANT, LedgerKind.VOID]
    assert entries[-1].balance_after == 0


async def test_a_past_expiry_and_an_unknown_account_are_refused(
    ctx: Context, deployment: Deployment, clock: FakeClock
) -> None:
    """A grant expiring in the past is a validation failure; an unknown account NotFound."""
    with pytest.raises(ValidationFailed):
        await credits.grant(ctx, "acme", MICROS, expires_at=clock.now() - timedelta(seconds=1))
    with pytest.raises(NotFound):
        await credits.grant(ctx, "nobody", MICROS)
    with pytest.raises(NotFound):
        await credits.void(ctx, "acme", "gr_missing")
    assert (await credits.balance(ctx, "acme")).balance == 0


async def test_the_ledger_pages_by_cursor(ctx: Context, deployment: Deployment) -> None:
    """The ledger comes a page at a time, each page after the last entry of the one before."""
    for n in range(5):
        await credits.grant(ctx, "acme", (n + 1) * MICROS)
    first, cursor = await credits.ledger_page(ctx, "acme", 3, None)
    assert len(first) == 3
    assert cursor == first[-1].id
    second, end = await credits.ledger_page(ctx, "acme", 3, cursor)
    assert len(second) == 2
    assert end is None
    assert second[-1].balance_after == 15 * MICROS
