"""Operator use cases: services, plans, accounts, keys and resource limits.

Each change writes its audit entry (``quotad.service.audit``) once it is made.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from quotad.domain import credits, days, keys, limits
from quotad.domain.credits import Refill
from quotad.domain.limits import LimitError, Limits
from quotad.domain.models import (
    Account,
    AccountStatus,
    ApiKey,
    GaugeChange,
    IdempotencyClaim,
    Limit,
    Overrides,
    Plan,
    Quota,
    Service,
    effective_limits,
    service_limits,
)
from quotad.domain.webhooks import parse_thresholds
from quotad.errors import Conflict, FieldError, MaxResourcesReached, NotFound, ValidationFailed
from quotad.service import audit
from quotad.service.audit import target
from quotad.service.claims import operator_claim
from quotad.service.context import Context

KEY_SCOPES = ("usage:read", "consume:*")


def new_id(prefix: str) -> str:
    """A random identifier such as ``acct_3fK9…``."""
    return f"{prefix}_{''.join(secrets.choice(keys.BASE62) for _ in range(16))}"


# Services -------------------------------------------------------------------
def service_state(service: Service) -> dict[str, Any]:
    """A service as the log keeps it, its credit price (micro-credits) when priced."""
    state = audit.service_state(service)
    if service.credit_price is not None:
        state["credit_price"] = credits.from_micros(service.credit_price)
    return state


def plan_state(plan: Plan) -> dict[str, Any]:
    """A plan as the log keeps it, its refill when it has one."""
    state = audit.plan_state(plan)
    if plan.refill is not None:
        state["refill"] = plan.refill.to_json()
    return state


def _check_price(credit_price: int | None) -> None:
    if credit_price is not None and not 0 < credit_price <= credits.MAX_CREDITS * credits.MICROS:
        raise ValidationFailed.at(
            "/body/credit_price", "credit_price must be above 0 (or null)", "range"
        )


async def create_service(
    ctx: Context, name: str, description: str, credit_price: int | None = None
) -> Service:
    """Register a service; ``credit_price`` micro-credits a unit of cost (None: unpriced)."""
    _check_price(credit_price)
    service = Service(name, description, ctx.clock.now(), credit_price)
    async with ctx.records.atomic():
        await ctx.records.create_service(service)
        await audit.record(
            ctx, "service.create", target("service", name), None, service_state(service)
        )
    return service


class Unchanged:
    """A field of an update that was not given (None may be a value: no price)."""


UNCHANGED = Unchanged()


async def update_service(
    ctx: Context,
    name: str,
    description: str | None = None,
    credit_price: int | Unchanged | None = UNCHANGED,
) -> Service:
    """Change a service's description or credit price (None: unpriced from now)."""
    before = await require_service(ctx, name)
    after = before
    if description is not None:
        after = replace(after, description=description)
    if not isinstance(credit_price, Unchanged):
        _check_price(credit_price)
        after = replace(after, credit_price=credit_price)
    async with ctx.records.atomic():
        await ctx.records.update_service(after)
        await audit.record(
            ctx,
            "service.update",
            target("service", name),
            service_state(before),
            service_state(after),
        )
    return after


async def require_service(ctx: Context, name: str) -> Service:
    """The named service, or ``NotFound``."""
    service = await ctx.records.get_service(name)
    if service is None:
        raise NotFound(f"service {name!r} is not configured")
    return service


async def list_services(ctx: Context) -> list[Service]:
    """Every service, by name."""
    return await ctx.records.list_services()


# Limits ---------------------------------------------------------------------
def _pointer(where: str, location: tuple[str | int, ...]) -> str:
    parts = [str(part).replace("~", "~0").replace("/", "~1") for part in location]
    return "/".join([where, *parts])


def parse_quotas(raw: Mapping[str, object], where: str) -> dict[str, Limits]:
    """Each service's limits from the API's JSON (version 1's ``{"total": N}`` or SPEC 9's
    list), or ``ValidationFailed`` naming every problem by JSON pointer under ``where``
    (e.g. ``/body/quotas/insights/0/window``); nothing is written on a failure."""
    parsed: dict[str, Limits] = {}
    problems: list[FieldError] = []
    for service, value in raw.items():
        try:
            parsed[service] = limits.parse_limits(value, (service,))
        except LimitError as exc:
            problems += [
                FieldError(
                    _pointer(where, location),
                    message,
                    "duplicate" if message.startswith(limits.DUPLICATE) else "limits",
                )
                for location, message in exc.problems
            ]
    if problems:
        raise ValidationFailed("the limits are not valid", validation_errors=problems)
    return parsed


def _check_anchor(anchor: int | None) -> None:
    if anchor is not None and not 1 <= anchor <= 31:
        raise ValidationFailed.at(
            "/body/billing_anchor", "billing_anchor is a day of the month, 1 to 31", "range"
        )


async def _check_key_limits(
    ctx: Context, account: Account, own: Mapping[str, Limits], where: str
) -> None:
    """Refuse key limits naming a service the account has no limits for, or wider than
    the account's own limit of the same window or rate (a key's limits only narrow)."""
    plan = await require_plan(ctx, account.plan_id)
    problems: list[FieldError] = []
    for service, given in own.items():
        applicable = service_limits(plan, account, service)
        if applicable is None:
            problems.append(
                FieldError(
                    f"{where}/{service}",
                    f"the plan of account {account.id!r} has no limits for {service!r}",
                    "unknown",
                )
            )
            continue
        problems += [
            FieldError(f"{where}/{service}/{index}", reason, "maximum")
            for index, reason in limits.wider_than(given, applicable)
        ]
    if problems:
        raise ValidationFailed("the key's limits are not valid", validation_errors=problems)


# Alert thresholds -------------------------------------------------------------
THRESHOLDS_AT = "/body/alert_thresholds"


def parse_alert_thresholds(raw: object, where: str = THRESHOLDS_AT) -> tuple[int, ...] | None:
    """``alert_thresholds`` as given (JSON, or any caller's list), sorted (None: unset, the
    defaults apply), or ``ValidationFailed`` at ``where`` saying what is wrong."""
    if raw is None:
        return None
    try:
        return parse_thresholds(raw)
    except ValueError as exc:
        raise ValidationFailed.at(where, str(exc), "thresholds") from exc


LOW_CREDITS_AT = "/body/low_credits"


def check_low_credits(micros: int | None, where: str = LOW_CREDITS_AT) -> int | None:
    """A ``low_credits`` mark in micro-credits (None: none), or ``ValidationFailed``: the
    embedded and CLI callers pass micro-credits without the API's parsing."""
    if micros is None:
        return None
    if isinstance(micros, bool) or not isinstance(micros, int) or micros <= 0:
        raise ValidationFailed.at(where, "low_credits must be above 0", "invalid")
    return micros


# Plans ----------------------------------------------------------------------
async def _check_plan(ctx: Context, quotas: dict[str, Quota], limits: list[Limit]) -> None:
    known = {s.name for s in await ctx.records.list_services()}
    problems = [
        FieldError(
            f"/body/quotas/{name}",
            f"service {name!r} is not registered",
            "unknown",
            "register it with POST /admin/v1/services first",
        )
        for name in quotas
        if name not in known
    ]
    seen: set[str] = set()
    for index, item in enumerate(limits):
        if item.name in seen:
            problems.append(
                FieldError(f"/body/limits/{index}/name", f"limit {item.name!r} appears twice")
            )
        seen.add(item.name)
    if problems:
        raise ValidationFailed("the plan is not valid", validation_errors=problems)


async def create_plan(
    ctx: Context,
    plan_id: str,
    quotas: dict[str, Quota],
    limits: list[Limit],
    description: str,
    alert_thresholds: Sequence[int] | None = None,
    refill: Refill | None = None,
    low_credits: int | None = None,
) -> Plan:
    """Create a plan whose quotas name registered services; ``alert_thresholds`` None:
    the defaults apply; ``refill``: credits given every window; ``low_credits``: the
    balance (micro-credits) below which ``credits.low`` is told (None: never)."""
    await _check_plan(ctx, quotas, limits)
    thresholds = parse_alert_thresholds(alert_thresholds)
    plan = Plan(
        plan_id,
        quotas,
        tuple(limits),
        ctx.clock.now(),
        description,
        thresholds,
        refill,
        check_low_credits(low_credits),
    )
    async with ctx.records.atomic():
        await ctx.records.create_plan(plan)
        await audit.record(ctx, "plan.create", target("plan", plan_id), None, plan_state(plan))
    return plan


async def replace_plan(
    ctx: Context,
    plan_id: str,
    quotas: dict[str, Quota],
    limits: list[Limit],
    description: str,
    alert_thresholds: Sequence[int] | None = None,
    refill: Refill | None = None,
    low_credits: int | None = None,
) -> Plan:
    """Replace a plan's quotas, limits, alert thresholds (None: the defaults), refill and
    low-credits mark; today's totals follow on the next consume."""
    await _check_plan(ctx, quotas, limits)
    low = check_low_credits(low_credits)
    before = await require_plan(ctx, plan_id)
    now = ctx.clock.now()
    thresholds = parse_alert_thresholds(alert_thresholds)
    async with ctx.records.atomic():
        await ctx.records.replace_plan(
            Plan(plan_id, quotas, tuple(limits), now, description, thresholds, refill, low)
        )
        # Noted after the write, from the records as they now stand: a note raced by
        # another change, or repeated, still ends on what the records say.
        await ctx.records.record_totals(now, plan_id=plan_id)
        after = await require_plan(ctx, plan_id)
        await audit.record(
            ctx,
            "plan.replace",
            target("plan", plan_id),
            plan_state(before),
            plan_state(after),
        )
    return after


async def require_plan(ctx: Context, plan_id: str) -> Plan:
    """The plan, or ``NotFound``."""
    plan = await ctx.records.get_plan(plan_id)
    if plan is None:
        raise NotFound(f"plan {plan_id!r} not found")
    return plan


async def list_plans(ctx: Context, limit: int, after: str | None = None) -> list[Plan]:
    """Up to ``limit`` plans with ids after ``after``, by id."""
    return await ctx.records.list_plans(limit, after)


async def delete_plan(ctx: Context, plan_id: str) -> None:
    """Delete a plan; ``NotFound`` if absent, ``Conflict`` while an account uses it."""
    before = await require_plan(ctx, plan_id)
    async with ctx.records.atomic():
        await ctx.records.delete_plan(plan_id)
        await audit.record(ctx, "plan.delete", target("plan", plan_id), plan_state(before), None)


# Accounts -------------------------------------------------------------------
def _check_timezone(timezone: str) -> None:
    if not days.is_timezone(timezone):
        raise ValidationFailed.at(
            "/body/timezone",
            f"{timezone!r} is not an IANA timezone",
            "format",
            "use a name such as UTC or Europe/Paris",
        )


async def _check_plan_exists(ctx: Context, plan_id: str) -> None:
    if await ctx.records.get_plan(plan_id) is None:
        raise ValidationFailed.at("/body/plan", f"plan {plan_id!r} does not exist", "unknown")


async def create_account(
    ctx: Context,
    account_id: str | None,
    name: str,
    plan_id: str,
    timezone: str,
    overrides: Overrides,
    status: AccountStatus = AccountStatus.ACTIVE,
    billing_anchor: int | None = None,
    alert_thresholds: Sequence[int] | None = None,
) -> Account:
    """Create an account on an existing plan; without a ``billing_anchor`` (1-31) its
    month windows anchored on billing start on the local day of its creation (SPEC 9).

    Its own ``alert_thresholds`` are kept in its overrides: given here, they replace the
    overrides' (None: those of ``overrides``, if any, else the plan's apply).
    """
    _check_timezone(timezone)
    _check_anchor(billing_anchor)
    overrides = _with_thresholds(overrides, alert_thresholds, "/body/overrides/alert_thresholds")
    await _check_plan_exists(ctx, plan_id)
    account = Account(
        id=account_id or new_id("acct"),
        name=name,
        plan_id=plan_id,
        timezone=timezone,
        status=status,
        overrides=overrides,
        created_at=ctx.clock.now(),
        billing_anchor=billing_anchor,
    )
    async with ctx.records.atomic():
        await ctx.records.create_account(account)
        await ctx.records.record_totals(account.created_at, account_id=account.id)
        await audit.record(
            ctx, "account.create", target("account", account.id), None, audit.account_state(account)
        )
    # Once the account is its own (created, not a name taken already): no counter of an
    # earlier account of that id is left to it.
    await ctx.counters.open_account(account.id)
    return account


async def require_account(ctx: Context, account_id: str) -> Account:
    """The account, or ``NotFound``."""
    account = await ctx.records.get_account(account_id)
    if account is None:
        raise NotFound(f"account {account_id!r} not found")
    return account


async def list_accounts(
    ctx: Context,
    limit: int,
    after: str | None = None,
    search: str | None = None,
    plan_id: str | None = None,
) -> list[Account]:
    """Up to ``limit`` accounts with ids after ``after``, by id; ``search`` filters id or
    name, ``plan_id`` the plan."""
    return await ctx.records.list_accounts(limit, after, search, plan_id)


async def count_accounts_by_plan(ctx: Context) -> dict[str, int]:
    """How many accounts each plan has."""
    return await ctx.records.count_accounts_by_plan()


async def delete_account(ctx: Context, account_id: str) -> None:
    """Delete an account with its keys and its own webhook endpoints, then its counters;
    ``NotFound`` if absent."""
    before = await require_account(ctx, account_id)
    async with ctx.records.atomic():
        await ctx.records.delete_account(account_id)
        # Nobody could see or change them any more, and they would keep the URL's secret.
        for endpoint in await ctx.stores.alerts.list_webhooks(account_id):
            await ctx.stores.alerts.delete_webhook(endpoint.id)
            state = {"id": endpoint.id, "url": endpoint.url, "account_id": account_id}
            await audit.record(ctx, "webhook.delete", target("webhook", endpoint.id), state, None)
        await audit.record(
            ctx, "account.delete", target("account", account_id), audit.account_state(before), None
        )
    await ctx.counters.forget_account(account_id)


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """The fields a PATCH may change; ``None`` leaves a field as it is."""

    name: str | None = None
    plan_id: str | None = None
    timezone: str | None = None
    status: AccountStatus | None = None
    overrides: Overrides | None = None
    billing_anchor: int | None = None
    # Replaces the overrides' thresholds (those of ``overrides`` when it is given too).
    alert_thresholds: Sequence[int] | None = None


def _with_thresholds(
    overrides: Overrides, alert_thresholds: Sequence[int] | None, where: str
) -> Overrides:
    """The overrides with their alert thresholds checked, and replaced by any given."""
    given = overrides.alert_thresholds if alert_thresholds is None else alert_thresholds
    return replace(overrides, alert_thresholds=parse_alert_thresholds(given, where))


async def update_account(ctx: Context, account_id: str, changes: AccountChanges) -> Account:
    """Change an account's plan, overrides, timezone, name or status."""
    account = await require_account(ctx, account_id)
    if changes.timezone is not None:
        _check_timezone(changes.timezone)
    if changes.plan_id is not None:
        await _check_plan_exists(ctx, changes.plan_id)
    _check_anchor(changes.billing_anchor)
    overrides = account.overrides if changes.overrides is None else changes.overrides
    if changes.overrides is not None or changes.alert_thresholds is not None:
        overrides = _with_thresholds(
            overrides, changes.alert_thresholds, "/body/overrides/alert_thresholds"
        )
    updated = replace(
        account,
        name=account.name if changes.name is None else changes.name,
        plan_id=account.plan_id if changes.plan_id is None else changes.plan_id,
        timezone=account.timezone if changes.timezone is None else changes.timezone,
        status=account.status if changes.status is None else changes.status,
        overrides=overrides,
        billing_anchor=(
            account.billing_anchor if changes.billing_anchor is None else changes.billing_anchor
        ),
    )
    async with ctx.records.atomic():
        await ctx.records.update_account(updated)
        if changes.plan_id is not None or changes.overrides is not None:
            await ctx.records.record_totals(ctx.clock.now(), account_id=account.id)
        await audit.record(
            ctx,
            "account.update",
            target("account", account.id),
            audit.account_state(account),
            audit.account_state(updated),
        )
    return updated


# Keys -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key record together with its secret, which exists only in this answer."""

    record: ApiKey
    secret: str


def _check_expiry(ctx: Context, expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= ctx.clock.now():
        raise ValidationFailed.at("/body/expires_at", "expires_at must be in the future", "minimum")


def _issue(
    ctx: Context,
    account_id: str,
    name: str,
    scopes: tuple[str, ...] | None,
    expires_at: datetime | None,
    own: dict[str, Limits] | None = None,
) -> IssuedKey:
    secret = keys.generate(ctx.settings.key_prefix)
    record = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        name=name,
        digest=keys.digest(secret),
        prefix=ctx.settings.key_prefix,
        last4=secret[-4:],
        scopes=scopes,
        created_at=ctx.clock.now(),
        expires_at=expires_at,
        limits=dict(own or {}),
    )
    return IssuedKey(record, secret)


async def create_key(
    ctx: Context,
    account_id: str,
    name: str,
    expires_at: datetime | None = None,
    scopes: tuple[str, ...] | None = None,
    own: dict[str, Limits] | None = None,
) -> IssuedKey:
    """Issue a key for an account; the secret is returned once and stored only hashed.

    ``own`` are the key's own limits by service (SPEC 9: they only narrow the account's).
    """
    account = await require_account(ctx, account_id)
    _check_expiry(ctx, expires_at)
    if own:
        await _check_key_limits(ctx, account, own, "/body/limits")
    issued = _issue(ctx, account_id, name, scopes, expires_at, own)
    async with ctx.records.atomic():
        await ctx.records.create_key(issued.record)
        await audit.record(
            ctx, "key.create", target("key", issued.record.id), None, audit.key_state(issued.record)
        )
    return issued


async def set_key_limits(ctx: Context, key_id: str, own: dict[str, Limits]) -> ApiKey:
    """Replace a key's own limits (``{}``: none), checked against its account's."""
    before = await require_key(ctx, key_id)
    account = await require_account(ctx, before.account_id)
    await _check_key_limits(ctx, account, own, "/body/limits")
    async with ctx.records.atomic():
        after = await ctx.records.set_key_limits(key_id, own)
        await audit.record(
            ctx,
            "key.update",
            target("key", key_id),
            audit.key_state(before),
            audit.key_state(after),
        )
    return after


async def require_key(ctx: Context, key_id: str) -> ApiKey:
    """The key record, or ``NotFound``."""
    key = await ctx.records.get_key(key_id)
    if key is None:
        raise NotFound(f"key {key_id!r} not found")
    return key


async def list_keys(ctx: Context, account_id: str) -> list[ApiKey]:
    """Every key of an account, oldest first; ``NotFound`` if the account does not exist."""
    await require_account(ctx, account_id)
    return await ctx.records.list_keys(account_id)


async def revoke_key(ctx: Context, key_id: str) -> ApiKey:
    """Revoke a key now (a key revoked already is left as it is, and logged no more)."""
    before = await require_key(ctx, key_id)
    async with ctx.records.atomic():
        after = await ctx.records.revoke_key(key_id, ctx.clock.now())
        if after != before:
            await audit.record(
                ctx,
                "key.revoke",
                target("key", key_id),
                audit.key_state(before),
                audit.key_state(after),
            )
    return after


async def rotate_key(ctx: Context, key_id: str, grace_seconds: int) -> IssuedKey:
    """Issue a replacement key; the old one keeps working for ``grace_seconds``."""
    old = await require_key(ctx, key_id)
    now = ctx.clock.now()
    if old.revoked(now) or old.expired(now):
        raise Conflict(f"key {key_id!r} is no longer valid and cannot be rotated")
    if old.replaced_by is not None:
        raise Conflict(f"key {key_id!r} was already rotated to {old.replaced_by!r}")
    issued = _issue(ctx, old.account_id, old.name, old.scopes, old.expires_at, old.limits)
    async with ctx.records.atomic():
        await ctx.records.rotate_key(key_id, issued.record, now + timedelta(seconds=grace_seconds))
        ended = await require_key(ctx, key_id)
        await audit.record(
            ctx, "key.rotate", target("key", key_id), audit.key_state(old), audit.key_state(ended)
        )
        await audit.record(
            ctx, "key.create", target("key", issued.record.id), None, audit.key_state(issued.record)
        )
    return issued


def key_status(key: ApiKey, now: datetime) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if key.revoked(now):
        return "revoked"
    if key.expired(now):
        return "expired"
    return "active"


# Resource limits ------------------------------------------------------------
async def _limit_of(ctx: Context, account: Account, name: str) -> Limit:
    plan = await require_plan(ctx, account.plan_id)
    for item in effective_limits(plan, account):
        if item.name == name:
            return item
    raise NotFound(f"the plan of account {account.id!r} has no limit {name!r}")


async def set_gauge(ctx: Context, account_id: str, name: str, usage: int) -> GaugeChange:
    """Set a limit's usage (for reconciling with the provider's own records)."""
    account = await require_account(ctx, account_id)
    limit = await _limit_of(ctx, account, name)
    before = (await ctx.counters.gauges(account.id)).get(name, 0)
    async with audit.with_counters(ctx):
        value = await ctx.counters.set_gauge(account.id, name, usage)
        await audit.record(
            ctx,
            "limit.set",
            target("account", account.id),
            {"limit": name, "usage": before},
            {"limit": name, "usage": value},
        )
    return GaugeChange(name, value, limit.limit)


async def _moved_once(
    ctx: Context, account_id: str, name: str, delta: int, limit: int, claim: IdempotencyClaim
) -> int | None:
    usage, _ = await ctx.counters.move_gauge_once(
        account_id, name, delta, limit, claim, ctx.clock.now()
    )
    return usage


async def acquire(
    ctx: Context, account_id: str, name: str, amount: int, idempotency_key: str | None = None
) -> GaugeChange:
    """Take ``amount`` units of a limit, or refuse with ``MaxResourcesReached``.

    With ``idempotency_key``, once: a repeat within the idempotency window moves nothing and
    answers the usage as it stands.
    """
    account = await require_account(ctx, account_id)
    limit = await _limit_of(ctx, account, name)
    if idempotency_key is None:
        usage = await ctx.counters.acquire(account.id, name, amount, limit.limit)
    else:
        claim = operator_claim(ctx, "gauge", idempotency_key, "acquire", name, amount)
        usage = await _moved_once(ctx, account.id, name, amount, limit.limit, claim)
    if usage is None:
        current = (await ctx.counters.gauges(account.id)).get(name, 0)
        raise MaxResourcesReached(
            f"{name}: {current} of {limit.limit} in use; {amount} more would pass the limit"
        )
    return GaugeChange(name, usage, limit.limit)


async def release(
    ctx: Context, account_id: str, name: str, amount: int, idempotency_key: str | None = None
) -> GaugeChange:
    """Give back ``amount`` units of a limit; more than is in use is a ``Conflict``.

    With ``idempotency_key``, once (as ``acquire``).
    """
    account = await require_account(ctx, account_id)
    limit = await _limit_of(ctx, account, name)
    if idempotency_key is None:
        usage = await ctx.counters.release(account.id, name, amount)
    else:
        claim = operator_claim(ctx, "gauge", idempotency_key, "release", name, amount)
        usage = await _moved_once(ctx, account.id, name, -amount, limit.limit, claim)
    if usage is None:
        current = (await ctx.counters.gauges(account.id)).get(name, 0)
        raise Conflict(f"{name}: cannot release {amount}, only {current} in use")
    return GaugeChange(name, usage, limit.limit)
