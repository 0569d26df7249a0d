"""The records' reads of accounts by plan, on every store: the plans pages use them so
they stay fast whatever the number of accounts."""

from __future__ import annotations

from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context


async def provision(ctx: Context) -> None:
    """Plans free (3 accounts), pro (2) and empty (none)."""
    await admin.create_service(ctx, "insights", "")
    for plan in ("free", "pro", "empty"):
        await admin.create_plan(ctx, plan, {"insights": Quota.daily(10)}, [], "")
    for account, plan in (("a1", "free"), ("b2", "pro"), ("c3", "free"), ("d4", "pro")):
        await admin.create_account(ctx, account, account.upper(), plan, "UTC", Overrides())
    await admin.create_account(ctx, "e5", "E5", "free", "UTC", Overrides())


async def test_accounts_are_counted_per_plan(ctx: Context) -> None:
    """Each plan with accounts has its count; a plan without any is left out."""
    await provision(ctx)
    assert await admin.count_accounts_by_plan(ctx) == {"free": 3, "pro": 2}
    await admin.update_account(ctx, "a1", admin.AccountChanges(plan_id="pro"))
    assert await admin.count_accounts_by_plan(ctx) == {"free": 2, "pro": 3}


async def test_a_plans_accounts_are_listed_by_id_a_page_at_a_time(ctx: Context) -> None:
    """Listing by plan keeps to that plan, in id order, from after the cursor."""
    await provision(ctx)
    free = await admin.list_accounts(ctx, 2, None, None, "free")
    assert [a.id for a in free] == ["a1", "c3"]
    rest = await admin.list_accounts(ctx, 2, free[-1].id, None, "free")
    assert [a.id for a in rest] == ["e5"]
    assert [a.id for a in await admin.list_accounts(ctx, 10, None, "d", "pro")] == ["d4"]
    assert await admin.list_accounts(ctx, 10, None, None, "empty") == []
