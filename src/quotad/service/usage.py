"""Reading and correcting usage: day history, the usage overview, adjustments, events.

A day's ``total`` is the one stored with it (the total in force that day). Days with
no stored row report zero use against the total in force that day, read from the
account's dated history of totals (``RecordStore.total_changes``), not today's total.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from quotad.domain import days
from quotad.domain.models import (
    Account,
    EventsOutcome,
    UsageDay,
    UsageEvent,
    effective_limits,
    effective_total,
)
from quotad.errors import FieldError, ValidationFailed
from quotad.service import admin, audit
from quotad.service.context import Context

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FUTURE_EVENT_TOLERANCE = timedelta(minutes=5)


def parse_date(value: str, path: str) -> date:
    """A strict ``YYYY-MM-DD`` date."""
    if _DATE_RE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationFailed.at(
        path, f"{value!r} is not a real date in the form YYYY-MM-DD", "format", "e.g. 2024-11-01"
    )


def today(ctx: Context, account: Account) -> date:
    """The account's current local date."""
    return days.local_day(ctx.clock.now(), account.timezone)


def history_window(
    ctx: Context, account: Account, start_date: str | None, end_date: str | None
) -> tuple[date, date]:
    """The date range of a usage query, checked against the rules of SPEC 3.2."""
    now_day = today(ctx, account)
    if start_date is None:
        if end_date is not None:
            raise ValidationFailed.at(
                "/query/start_date",
                "start_date is required when end_date is given",
                "required",
                "add start_date=YYYY-MM-DD",
            )
        return now_day, now_day
    start = parse_date(start_date, "/query/start_date")
    end = now_day if end_date is None else parse_date(end_date, "/query/end_date")
    for value, path in ((start, "/query/start_date"), (end, "/query/end_date")):
        if value > now_day:
            raise ValidationFailed.at(
                path,
                f"{value.isoformat()} is after today ({now_day.isoformat()}) in {account.timezone}",
                "maximum",
            )
    if start > end:
        raise ValidationFailed.at(
            "/query/start_date", "start_date must not be after end_date", "order"
        )
    if (end - start).days + 1 > days.MAX_WINDOW_DAYS:
        raise ValidationFailed.at(
            "/query/end_date",
            f"the window may cover at most {days.MAX_WINDOW_DAYS} days",
            "maximum",
            f"pick an end_date within {days.MAX_WINDOW_DAYS - 1} days of start_date",
        )
    return start, end


async def current_total(ctx: Context, account: Account, service: str) -> int | None:
    """The account's daily total for a service under its current plan."""
    plan = await admin.require_plan(ctx, account.plan_id)
    return effective_total(plan, account, service)


async def totals_by_day(ctx: Context, account: Account, service: str) -> Callable[[date], int]:
    """The total in force on each of the account's local days, from its noted history.

    A change holds from the local day it was made on (the last change of a day wins).
    A day before the first change takes the first total; an account with no history
    (written to the store directly, not through this layer) takes its current total.
    """
    changes = await ctx.records.total_changes(account.id, service)
    if not changes:
        total = await current_total(ctx, account, service) or 0
        return lambda _day: total
    starts = [days.local_day(change.effective_from, account.timezone) for change in changes]
    totals = [change.total for change in changes]

    def on(day: date) -> int:
        return totals[max(bisect.bisect_right(starts, day) - 1, 0)]

    return on


async def history(
    ctx: Context,
    account: Account,
    service: str,
    start_date: str | None,
    end_date: str | None,
) -> list[UsageDay]:
    """One row per day of the window, or none when nothing was used in it (SPEC 3.2)."""
    await admin.require_service(ctx, service)
    start, end = history_window(ctx, account, start_date, end_date)
    stored = {row.day: row for row in await ctx.counters.usage(account.id, service, start, end)}
    if not any(row.used for row in stored.values()):
        return []
    total_on = await totals_by_day(ctx, account, service)
    return [
        stored.get(day) or UsageDay(day, 0, total_on(day)) for day in days.days_between(start, end)
    ]


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One object of ``GET /v1/usages``."""

    description: str
    limit: int
    name: str
    usage: int


async def overview(ctx: Context, account: Account) -> list[UsageLine]:
    """Every resource limit and every daily quota of an account, with today's use."""
    plan = await admin.require_plan(ctx, account.plan_id)
    gauges = await ctx.counters.gauges(account.id)
    lines = [
        UsageLine(item.description, item.limit, item.name, gauges.get(item.name, 0))
        for item in effective_limits(plan, account)
    ]
    now_day = today(ctx, account)
    for service in sorted(set(plan.quotas) | set(account.overrides.quotas)):
        total = effective_total(plan, account, service)
        if total is None:
            continue
        rows = await ctx.counters.usage(account.id, service, now_day, now_day)
        used = rows[0].used if rows else 0
        lines.append(UsageLine(f"Daily {service} queries", total, f"{service}.daily_queries", used))
    return lines


async def adjust(
    ctx: Context, account_id: str, service: str, day_text: str, delta: int
) -> UsageDay:
    """Correct or credit one day's use (never below zero, never a future day)."""
    account = await admin.require_account(ctx, account_id)
    await admin.require_service(ctx, service)
    day = parse_date(day_text, "/body/date")
    if day > today(ctx, account):
        raise ValidationFailed.at("/body/date", "cannot adjust a future day", "maximum")
    # A day without a row gets the total in force that day, not today's.
    total_on = await totals_by_day(ctx, account, service)
    before = await ctx.counters.usage(account.id, service, day, day)
    row = await ctx.counters.adjust(account.id, service, day, delta, total_on(day))
    await audit.record(
        ctx,
        "usage.adjust",
        audit.target("account", account.id),
        audit.usage_state(service, before[0]) if before else None,
        {**audit.usage_state(service, row), "delta": delta},
    )
    return row


@dataclass(frozen=True, slots=True)
class EventInput:
    """A metering event as received."""

    id: str
    account_id: str
    service: str
    amount: int
    timestamp: datetime


async def record_events(ctx: Context, batch: list[EventInput]) -> EventsOutcome:
    """Record a batch of events, all or none: any invalid event refuses the batch."""
    problems: list[FieldError] = []
    resolved: list[UsageEvent] = []
    accounts: dict[str, Account | None] = {}
    totals: dict[tuple[str, str], Callable[[date], int]] = {}
    services = {s.name for s in await ctx.records.list_services()}
    now = ctx.clock.now()
    latest, earliest = now + FUTURE_EVENT_TOLERANCE, now - days.EVENT_RETENTION
    for index, item in enumerate(batch):
        path = f"/body/events/{index}"
        if item.account_id not in accounts:
            accounts[item.account_id] = await ctx.records.get_account(item.account_id)
        account = accounts[item.account_id]
        if account is None:
            problems.append(
                FieldError(
                    f"{path}/account_id", f"account {item.account_id!r} not found", "unknown"
                )
            )
            continue
        if item.service not in services:
            problems.append(
                FieldError(
                    f"{path}/service", f"service {item.service!r} is not configured", "unknown"
                )
            )
            continue
        if not earliest <= item.timestamp <= latest:
            problems.append(
                FieldError(
                    f"{path}/timestamp",
                    "timestamp must be within the last 90 days and not in the future",
                    "range",
                )
            )
            continue
        total = await current_total(ctx, account, item.service)
        if total is None:
            problems.append(
                FieldError(
                    f"{path}/service",
                    f"the plan of account {account.id!r} has no quota for {item.service!r}",
                    "unknown",
                )
            )
            continue
        day = days.local_day(item.timestamp, account.timezone)
        if (account.id, item.service) not in totals:
            totals[(account.id, item.service)] = await totals_by_day(ctx, account, item.service)
        day_total = totals[(account.id, item.service)](day)  # a new row: that day's total
        resolved.append(
            UsageEvent(
                item.id, account.id, item.service, item.amount, day, day_total, item.timestamp
            )
        )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} of {len(batch)} events are invalid; none were recorded",
            validation_errors=problems,
        )
    return await ctx.counters.record_events(resolved)
