"""Credits as operators manage them (SPEC 10): grants, voids, the balance and the ledger.

What is left of a grant is the counter store's (its ``credits.<id>`` counters, moved by
verify in the same atomic step as the limits); the grants themselves are records of
``stores.credits``. Every entry point (the API, the CLI, the dashboard) calls these;
grants and voids are audited. A grant or void goes through ``audit.record``, a record
write, so it clears this node's record cache (and the admissions verify keeps there with
the grants); other nodes see it within ``record_cache_seconds``.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from quotad.domain import credits, days
from quotad.domain.credits import (
    BACK_PREFIX,
    GRANT_PERIOD,
    MAX_CREDITS,
    MICROS,
    Grant,
    GrantKind,
    GrantUse,
    LedgerEntry,
    RefillMode,
)
from quotad.domain.keys import BASE62
from quotad.domain.models import Account, Plan
from quotad.errors import Conflict, NotFound, ValidationFailed
from quotad.service import audit
from quotad.service.admin import new_id, require_account
from quotad.service.context import Context

MAX_PRIORITY = 1000
MAX_NOTE = 500
MAX_LEDGER_PAGE = 500


class Balance(NamedTuple):
    """An account's balance (micro-credits) and every grant with what is left of it."""

    balance: int
    grants: list[tuple[Grant, int]]


def grant_state(grant: Grant) -> dict[str, Any]:
    """A grant as the audit log keeps it."""
    return {
        "id": grant.id,
        "account_id": grant.account_id,
        "kind": grant.kind.value,
        "amount": credits.from_micros(grant.amount),
        "priority": grant.priority,
        "note": grant.note,
        "expires_at": None if grant.expires_at is None else days.rfc3339(grant.expires_at),
        "voided_at": None if grant.voided_at is None else days.rfc3339(grant.voided_at),
        "voided": credits.from_micros(grant.voided),
    }


def _target(account_id: str, grant_id: str) -> str:
    """Grants are audited on their account (``account:<id>``): its log shows them."""
    del grant_id
    return audit.target("account", account_id)


async def grant(
    ctx: Context,
    account_id: str,
    amount: int,
    expires_at: datetime | None = None,
    priority: int = 0,
    note: str = "",
    idempotency_key: str | None = None,
) -> Grant:
    """Give ``amount`` micro-credits to an account (audited ``credits.grant``).

    With ``idempotency_key``, once: the grant's id comes from the account and the key, so
    a repeat finds the grant the first call made and answers it (another grant under the
    key raises ``Conflict``), at any time later.
    """
    if isinstance(amount, bool) or not 0 < amount <= MAX_CREDITS * MICROS:
        raise ValidationFailed.at(
            "/body/amount", f"amount must be above 0 and at most {MAX_CREDITS}", "range"
        )
    if isinstance(priority, bool) or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValidationFailed.at(
            "/body/priority",
            f"priority must be a whole number from {-MAX_PRIORITY} to {MAX_PRIORITY}",
            "range",
        )
    if len(note) > MAX_NOTE:
        raise ValidationFailed.at(
            "/body/note", f"note must be at most {MAX_NOTE} characters", "maxLength"
        )
    now = ctx.clock.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed.at("/body/expires_at", "expires_at must be in the future", "range")
    await require_account(ctx, account_id)
    made = Grant(
        id=new_id("gr") if idempotency_key is None else keyed_id(account_id, idempotency_key),
        account_id=account_id,
        amount=amount,
        created_at=now,
        expires_at=expires_at,
        priority=priority,
        note=note,
    )
    async with ctx.records.atomic():  # grants are kept with the records
        if not await ctx.stores.credits.create_grant(made):
            return _same_grant(await ctx.stores.credits.list_grants(account_id), made)
        await audit.record(
            ctx, "credits.grant", _target(account_id, made.id), None, grant_state(made)
        )
    return made


async def void(ctx: Context, account_id: str, grant_id: str) -> Grant:
    """Void what is left of a grant (audited ``credits.void``); a voided grant stays so."""
    await require_account(ctx, account_id)
    before = _find(await ctx.stores.credits.list_grants(account_id), grant_id)
    if before.voided_at is not None:
        return before
    now = ctx.clock.now()
    (used,) = await debited(ctx, account_id, [before])
    async with ctx.records.atomic():
        voided = await ctx.stores.credits.void_grant(account_id, grant_id, now)
        # What was left when voided, for the log (verifies in flight may still draw on it).
        voided = replace(voided, voided=max(voided.amount - used, 0) if before.live(now) else 0)
        await audit.record(
            ctx,
            "credits.void",
            _target(account_id, grant_id),
            grant_state(before),
            grant_state(voided),
        )
    return voided


def keyed_id(account_id: str, idempotency_key: str) -> str:
    """The id of the grant an Idempotency-Key makes on an account: shaped as ``new_id``'s."""
    digest = int.from_bytes(hashlib.sha256(f"{account_id}\n{idempotency_key}".encode()).digest())
    letters = []
    for _ in range(16):
        digest, index = divmod(digest, len(BASE62))
        letters.append(BASE62[index])
    return "gr_" + "".join(letters)


def _same_grant(grants: list[Grant], asked: Grant) -> Grant:
    """The grant already made under ``asked``'s id: it, when the same grant was asked."""
    made = _find(grants, asked.id)
    same = (made.amount, made.expires_at, made.priority, made.note) == (
        asked.amount,
        asked.expires_at,
        asked.priority,
        asked.note,
    )
    if not same:
        raise Conflict("Idempotency-Key was used with a different request")
    return made


def _find(grants: list[Grant], grant_id: str) -> Grant:
    for one in grants:
        if one.id == grant_id:
            return one
    raise NotFound(f"grant {grant_id!r} not found")


async def debited(ctx: Context, account_id: str, grants: list[Grant]) -> list[int]:
    """Each grant's cumulative debit (its CREDIT counter), in order."""
    if not grants:
        return []
    keys = [(credits.counter_name(g.id), GRANT_PERIOD) for g in grants]
    return await ctx.counters.read_counters(account_id, keys)


async def ensure_refill(
    ctx: Context, account: Account, plan: Plan, grants: list[Grant], now: datetime
) -> list[Grant]:
    """``grants`` with the refill grant of the window holding ``now`` (made if missing,
    once whichever node makes it: its id is the window's)."""
    refill = plan.refill
    if refill is None:
        return grants
    probe = credits.refill_grant(refill, account.id, account.timezone, account.anchor_day, now, 0)
    if any(g.id == probe.id for g in grants):
        return grants
    left = 0
    if refill.mode is RefillMode.TOP_UP:
        earlier = [g for g in grants if g.kind is GrantKind.REFILL and g.live(now)]
        used = await debited(ctx, account.id, earlier)
        left = sum(max(g.amount - u, 0) for g, u in zip(earlier, used, strict=True))
    made = credits.refill_grant(refill, account.id, account.timezone, account.anchor_day, now, left)
    if await ctx.stores.credits.create_grant(made):
        return [*grants, made]
    return await ctx.stores.credits.list_grants(account.id)


async def live_grants(ctx: Context, account: Account, now: datetime) -> list[Grant]:
    """Every grant of an account, the current refill made when its plan has one."""
    grants = await ctx.stores.credits.list_grants(account.id)
    plan = await ctx.records.get_plan(account.plan_id)
    if plan is not None and plan.refill is not None:
        grants = await ensure_refill(ctx, account, plan, grants, now)
    return grants


async def balance(ctx: Context, account_id: str) -> Balance:
    """The account's balance and each grant with what is left of it (micro-credits)."""
    account = await require_account(ctx, account_id)
    now = ctx.clock.now()
    grants = await live_grants(ctx, account, now)
    used = await debited(ctx, account_id, grants)
    rows = [
        (g, credits.remaining(g, GrantUse(u, {}, {}), now))
        for g, u in zip(grants, used, strict=True)
    ]
    return Balance(sum(left for _, left in rows), rows)


async def uses(
    ctx: Context, account: Account, grants: list[Grant], now: datetime
) -> dict[str, GrantUse]:
    """What each grant's counters say (cumulative, per day debits and give-backs)."""
    keys: list[tuple[str, str]] = []
    spans = []
    for one in grants:
        name = credits.counter_name(one.id)
        grant_days = credits.ledger_days(one, account.timezone, now)
        spans.append(grant_days)
        keys.append((name, GRANT_PERIOD))
        for day in grant_days:
            keys.append((name, day.isoformat()))
            keys.append((name, f"{BACK_PREFIX}{day.isoformat()}"))
    values = await ctx.counters.read_counters(account.id, keys) if keys else []
    result: dict[str, GrantUse] = {}
    at = 0
    for one, grant_days in zip(grants, spans, strict=True):
        total = values[at]
        at += 1
        debits = {}
        backs = {}
        for day in grant_days:
            debits[day] = values[at]
            backs[day] = values[at + 1]
            at += 2
        result[one.id] = GrantUse(total, debits, backs)
    return result


async def ledger_page(
    ctx: Context, account_id: str, limit: int, cursor: str | None
) -> tuple[list[LedgerEntry], str | None]:
    """A page of the account's ledger, oldest first, after the entry ``cursor`` names;
    the cursor of the next page (the last entry's id) or None."""
    account = await require_account(ctx, account_id)
    now = ctx.clock.now()
    grants = await live_grants(ctx, account, now)
    entries = credits.ledger(grants, await uses(ctx, account, grants, now), account.timezone, now)
    start = 0
    if cursor:
        ids = [entry.id for entry in entries]
        # A cursor that names no entry (not ours) points past the end, like other pages.
        start = ids.index(cursor) + 1 if cursor in ids else len(entries)
    page = entries[start : start + limit]
    more = start + limit < len(entries)
    return page, (page[-1].id if more and page else None)
