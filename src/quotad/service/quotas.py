"""Which counters a limit keeps, and where each limit stands (SPEC 9's ``/v1/quotas``).

Every limit is one counter of the store keyed ``(name, period)``: an account's daily
quota is the service's day row (the service's name, the local date); any other window
is ``limits.span(...).period`` under the limit's name, and a rate its one bucket under
``limits.RATE_PERIOD``; a per-key limit's name ends in ``:<key id>``. ``counter`` is the
one place that says so: verify builds its slots from it, and the reading views below
read the same counters back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from quotad.domain import limits
from quotad.domain.limits import HARD, LimitSpec, Mode, Per, Slot, Span, Window
from quotad.domain.models import Account, ApiKey, Plan, service_limits
from quotad.service import admin, alerts
from quotad.service import credits as credit_service
from quotad.service.context import Context


@dataclass(frozen=True, slots=True)
class Counter:
    """Where one limit of one service counts at one instant."""

    service: str
    limit: LimitSpec
    name: str  # the counter's name: the service (account's day row) or the limit's name
    period: str
    span: Span | None  # the current window (None for a rate)

    @property
    def key(self) -> tuple[str, str]:
        """The ``(name, period)`` the store keeps this counter under."""
        return (self.name, self.period)

    @property
    def is_day_row(self) -> bool:
        """Whether this counter is the service's day row (version 1's counter)."""
        return "." not in self.name


def counter(
    service: str,
    limit: LimitSpec,
    now: datetime,
    timezone: str,
    anchor_day: int,
    key_id: str | None = None,
) -> Counter:
    """The counter ``limit`` of ``service`` moves at ``now`` (for a key, when per key).

    Raises ``ValueError`` for a per-key limit without a ``key_id``.
    """
    if limit.per is Per.KEY and key_id is None:
        msg = f"{limit.name(service)} counts per key: a key id is needed"
        raise ValueError(msg)
    if limit.window is None:
        name = limit.name(service)
        if limit.per is Per.KEY:
            name = f"{name}:{key_id}"
        return Counter(service, limit, name, limits.RATE_PERIOD, None)
    span = limits.span(limit.window, now, timezone, anchor_day if limit.billing else None)
    if limit.window is Window.DAY and limit.per is Per.ACCOUNT:
        return Counter(service, limit, service, span.period, span)
    name = limit.name(service)
    if limit.per is Per.KEY:
        name = f"{name}:{key_id}"
    return Counter(service, limit, name, span.period, span)


def slot(item: Counter, cost: int) -> Slot:
    """The store's slot of a counter for a call of ``cost``."""
    interval = 0 if item.limit.per_second == 0 else limits.interval_us(item.limit.per_second)
    return Slot(
        item.name, item.period, item.limit.total, limits.MODES[item.limit.mode], cost, interval
    )


def window_slots(account: Account, plan: Plan, service: str, at: datetime) -> tuple[Slot, ...]:
    """The account's window counters of ``service`` other than its day row, at ``at``:
    what a metering event or an adjustment of that instant moves besides the day row."""
    found = []
    for limit in service_limits(plan, account, service) or ():
        if limit.window is None or limit.per is Per.KEY:
            continue
        item = counter(service, limit, at, account.timezone, account.anchor_day)
        if not item.is_day_row:
            found.append(Slot(item.name, item.period, limit.total, HARD, 0))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One limit as ``GET /v1/quotas`` shows it."""

    service: str
    name: str
    limit: LimitSpec
    used: int
    total: int
    reset: datetime
    exhausted_at: datetime | None

    @property
    def remaining(self) -> int:
        """Units (or tokens) left, never negative."""
        return max(self.total - self.used, 0)


def account_limits(account: Account, plan: Plan) -> list[tuple[str, LimitSpec]]:
    """Every limit the account's keys share, by service (per-key limits left out)."""
    found = []
    for service in sorted(set(plan.quotas) | set(account.overrides.quotas)):
        for limit in service_limits(plan, account, service) or ():
            if limit.per is Per.ACCOUNT:
                found.append((service, limit))
    return found


def key_limits(account: Account, plan: Plan, key: ApiKey) -> list[tuple[str, LimitSpec]]:
    """Every limit that applies to calls made with ``key``, by service."""
    found = []
    for service in sorted(set(plan.quotas) | set(account.overrides.quotas)):
        applicable = service_limits(plan, account, service)
        if applicable is None:
            continue
        for limit in limits.narrowed(applicable, key.limits.get(service)):
            found.append((service, limit))
    return found


async def states(
    ctx: Context,
    account: Account,
    chosen: Iterable[tuple[str, LimitSpec]],
    key_id: str | None = None,
) -> list[QuotaState]:
    """Where each of ``chosen`` stands now, read from its counter in one store call."""
    now = ctx.clock.now()
    items = [
        counter(service, limit, now, account.timezone, account.anchor_day, key_id)
        for service, limit in chosen
    ]
    if not items:
        return []
    values = await ctx.counters.read_counters(account.id, [item.key for item in items])
    now_us = int(now.timestamp() * 1_000_000)
    found = []
    for item, value in zip(items, values, strict=True):
        limit = item.limit
        if item.span is None:
            bucket = slot(item, 0)
            used, full = limits.rate_state(value, bucket, now_us)
            name = limit.name(item.service)
            found.append(QuotaState(item.service, name, limit, used, limit.total, full, None))
            continue
        found.append(
            QuotaState(
                item.service,
                limit.name(item.service),
                limit,
                value,
                limit.total,
                item.span.end,
                limits.exhausted_at(value, limit.total, item.span, now),
            )
        )
    return found


async def of_account(ctx: Context, account: Account) -> list[QuotaState]:
    """Where every limit the account's keys share stands now (``GET
    /admin/v1/accounts/{id}/quotas``): per-key limits have a counter per key, shown by
    ``of_key``."""
    plan = await admin.require_plan(ctx, account.plan_id)
    return await states(ctx, account, account_limits(account, plan))


async def of_key(ctx: Context, key: ApiKey, account: Account | None = None) -> list[QuotaState]:
    """Where every limit that applies to ``key``'s calls stands now (``GET /v1/quotas``)."""
    if account is None:
        account = await admin.require_account(ctx, key.account_id)
    plan = await admin.require_plan(ctx, account.plan_id)
    return await states(ctx, account, key_limits(account, plan, key), key.id)


async def notice_reached(ctx: Context, account: Account, plan: Plan, services: set[str]) -> None:
    """Notice every alert threshold the account's current windows of ``services`` have
    reached (SPEC 11), after usage that verify did not see moved them (metering events).

    Level-triggered, where verify's noticing is edge-triggered: a threshold reached now
    was crossed by some change, and its event is written once whoever notices it (the
    dedupe key is the same). Per-key limits move only by verify; shadow limits tell
    nothing.
    """
    now = ctx.clock.now()
    items = [
        counter(service, limit, now, account.timezone, account.anchor_day)
        for service, limit in account_limits(account, plan)
        if service in services and limit.window is not None and limit.mode is not Mode.SHADOW
    ]
    if not items:
        return
    values = await ctx.counters.read_counters(account.id, [item.key for item in items])
    thresholds = alerts.thresholds_of(plan.alert_thresholds, account.overrides.alert_thresholds)
    for item, used in zip(items, values, strict=True):
        span = item.span
        assert span is not None  # noqa: S101 - windows only
        alerts.notice_window(
            ctx.noticer,
            thresholds,
            account.id,
            None,
            item.limit.name(item.service),
            span.start,
            span.end,
            0,
            used,
            item.limit.total,
            False,
            now,
        )


@dataclass(frozen=True, slots=True)
class CreditsState:
    """An account's credits as ``GET /v1/quotas`` shows them (micro-credits): what its
    live grants have given, and the balance they hold."""

    used: int
    remaining: int


async def credits_of(ctx: Context, account: Account) -> CreditsState | None:
    """The account's credits, when it has any grant or its plan a refill (else None)."""
    now = ctx.clock.now()
    grants = await credit_service.live_grants(ctx, account, now)
    if not grants:
        return None
    live = [grant for grant in grants if grant.live(now)]
    debited = await credit_service.debited(ctx, account.id, live)
    used = sum(min(d, g.amount) for g, d in zip(live, debited, strict=True))
    left = sum(max(g.amount - d, 0) for g, d in zip(live, debited, strict=True))
    return CreditsState(used, left)
