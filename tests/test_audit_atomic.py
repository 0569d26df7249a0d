"""A change and its audit entry are one transaction where records are SQL: when the
entry cannot be written, the change is not kept either (SPEC 12, "every change appears").

The entry's write is broken for real, in the database: a trigger refuses every insert
into ``audit_log``, as a full disk or a dropped connection would at that moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from quotad.domain.models import Overrides, Quota
from quotad.domain.operators import AuditQuery, Role
from quotad.errors import Conflict
from quotad.service import admin, credits, tokens, webhooks
from quotad.service.context import Context
from quotad.storage import Stores
from tests.conftest import make_settings

SQLITE_REFUSAL = """
CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit refused'); END
"""
# unique_violation: the driver's IntegrityError, which the store reports as a Conflict.
PG_REFUSAL = (
    """
CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit refused' USING ERRCODE = 'unique_violation'; END $$
""",
    """
CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
FOR EACH ROW EXECUTE FUNCTION refuse_audit()
""",
)


async def refuse_audit_entries(stores: Stores) -> None:
    """From now on the records' database refuses every audit entry."""
    db = stores.records._db  # type: ignore[attr-defined]  # the store's own database
    statements = (SQLITE_REFUSAL,) if db.sqlite else PG_REFUSAL
    async with db.write() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))


@pytest.fixture
async def sql_ctx(stores: Stores, store_kind: str) -> Context:
    """A context over a store whose records are SQL, with a service, plan and account (and
    the account's own webhook endpoint, which deleting it deletes)."""
    if store_kind == "memory":
        pytest.skip("memory holds no transaction (base.RecordStore.atomic): nothing survives")
    ctx = Context(stores, make_settings(stores.url, webhook_allow_private=True))
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "free", {"insights": Quota.daily(10)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "free", "UTC", Overrides())
    await webhooks.create(ctx, "http://127.0.0.1:9/acme", ["quota.exceeded"], account_id="acme")
    return ctx


async def state(ctx: Context) -> dict[str, Any]:
    """Everything the changes below could touch, as read from the store."""
    return {
        "services": await ctx.stores.records.list_services(),
        "plans": await ctx.stores.records.list_plans(100, None),
        "accounts": await ctx.stores.records.list_accounts(100, None),
        "keys": await ctx.stores.records.list_keys("acme"),
        "grants": await ctx.stores.credits.list_grants("acme"),
        "webhooks": await ctx.stores.alerts.list_webhooks(),
        "tokens": await ctx.stores.records.list_operator_tokens(),
    }


CHANGES: dict[str, Callable[[Context], Awaitable[object]]] = {
    "service.create": lambda ctx: admin.create_service(ctx, "search", ""),
    "plan.create": lambda ctx: admin.create_plan(ctx, "pro", {"insights": Quota.daily(5)}, [], ""),
    "plan.replace": lambda ctx: admin.replace_plan(
        ctx, "free", {"insights": Quota.daily(99)}, [], ""
    ),
    "account.create": lambda ctx: admin.create_account(
        ctx, "globex", "Globex", "free", "UTC", Overrides()
    ),
    "account.update": lambda ctx: admin.update_account(
        ctx, "acme", admin.AccountChanges(name="Acme 2")
    ),
    "account.delete": lambda ctx: admin.delete_account(ctx, "acme"),
    "key.create": lambda ctx: admin.create_key(ctx, "acme", "k"),
    "credits.grant": lambda ctx: credits.grant(ctx, "acme", 1_000_000),
    "webhook.create": lambda ctx: webhooks.create(ctx, "http://127.0.0.1:9/h", ["quota.exceeded"]),
    "token.create": lambda ctx: tokens.create_token(ctx, "ops", Role.READ),
}


@pytest.mark.parametrize("action", sorted(CHANGES))
async def test_a_change_whose_audit_entry_fails_is_not_kept(
    sql_ctx: Context, stores: Stores, action: str
) -> None:
    """With the audit entry refused by the database, the change is rolled back with it."""
    before = await state(sql_ctx)
    await refuse_audit_entries(stores)
    with pytest.raises(Conflict):
        await CHANGES[action](sql_ctx)
    assert await state(sql_ctx) == before


async def test_a_change_and_its_entry_are_kept_together(sql_ctx: Context) -> None:
    """Without the fault, the same change is kept and logged (the test above can fail)."""
    await CHANGES["key.create"](sql_ctx)
    assert len(await sql_ctx.stores.records.list_keys("acme")) == 1
    logged = await sql_ctx.stores.records.audit_entries(AuditQuery(limit=10))
    assert [entry.action for entry in logged].count("key.create") == 1


async def test_another_task_does_not_see_a_transaction_before_it_ends(sql_ctx: Context) -> None:
    """A task started inside a transaction reads what is committed, not what is held open."""
    records = sql_ctx.stores.records
    async with records.atomic():
        await admin.create_service(sql_ctx, "search", "")
        assert await records.get_service("search") is not None  # its own writes it sees
        other = asyncio.create_task(records.get_service("search"))
        assert await other is None
    assert await records.get_service("search") is not None
