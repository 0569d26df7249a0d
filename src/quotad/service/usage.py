"""Reading and correcting usage: day history, the usage overview, adjustments, events.

A day's ``total`` is the one stored with it (the total in force that day). Days with
no stored row report zero use against the total in force that day, read from the
account's dated history of totals (``RecordStore.total_changes``), not today's total.

Limits v2 (SPEC 9): a service without a daily quota reports each day against its
narrowest longer calendar window (week, month or year) as it stood at the end of that
day: that window's total then (its history is noted under the limit's name,
``models.history_name``) and what was left of it after the day's use.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from quotad.domain import days, limits
from quotad.domain.limits import Limits, LimitSpec, Per, Window
from quotad.domain.models import (
    Account,
    EventsOutcome,
    UsageDay,
    UsageEvent,
    day_total,
    effective_limits,
    effective_total,
    history_name,
    service_limits,
)
from quotad.errors import FieldError, ValidationFailed
from quotad.lazy_logger import LazyLogger
from quotad.service import admin, audit, quotas
from quotad.service.claims import operator_claim
from quotad.service.context import Context

log = LazyLogger("quotad.usage")  # structlog only when something goes wrong

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


async def totals_by_day(
    ctx: Context, account: Account, service: str, limit: LimitSpec | None = None
) -> Callable[[date], int]:
    """The total in force on each of the account's local days, from its noted history:
    the service's daily total, or ``limit``'s (one of its other windows).

    A change holds from the local day it was made on (the last change of a day wins).
    A day before the first change takes the first total; an account with no history
    (written to the store directly, not through this layer) takes its current total.
    """
    name = service if limit is None else history_name(service, limit)
    changes = await ctx.records.total_changes(account.id, name)
    if not changes:
        total = (
            limit.total if limit is not None else await current_total(ctx, account, service) or 0
        )
        return lambda _day: total
    starts = [days.local_day(change.effective_from, account.timezone) for change in changes]
    totals = [change.total for change in changes]

    def on(day: date) -> int:
        return totals[max(bisect.bisect_right(starts, day) - 1, 0)]

    return on


@dataclass(frozen=True, slots=True)
class WindowDay(UsageDay):
    """A day of a service without a daily quota: its use, its longer window's total, and
    what was left of that window at the end of the day."""

    left: int = 0

    @property
    def remaining(self) -> int:
        """What the window had left at the end of the day."""
        return self.left


_LONGER = (Window.WEEK, Window.MONTH, Window.YEAR)


def longer_window(current: Limits) -> LimitSpec | None:
    """The narrowest per-account window longer than a day among ``current``, if any."""
    found = [limit for limit in current if limit.per is Per.ACCOUNT and limit.window in _LONGER]
    return min(found, key=lambda limit: _LONGER.index(limit.window), default=None)


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
    plan = await admin.require_plan(ctx, account.plan_id)
    current = service_limits(plan, account, service) or ()
    longer = None if day_total(current) is not None else longer_window(current)
    if longer is not None:
        return await _window_days(ctx, account, service, longer, start, end)
    total_on = await totals_by_day(ctx, account, service)
    return [
        stored.get(day) or UsageDay(day, 0, total_on(day)) for day in days.days_between(start, end)
    ]


async def _window_days(
    ctx: Context, account: Account, service: str, limit: LimitSpec, start: date, end: date
) -> list[UsageDay]:
    """Days ``start``..``end`` against ``limit``'s window: the window's use runs from its
    first day (read back that far), so each day's ``remaining`` is the window's after it."""
    assert limit.window is not None  # noqa: S101  (longer_window picks windows only)
    tz = account.timezone
    anchor = account.anchor_day if limit.billing else None

    def period(day: date) -> str:
        return limits.span(limit.window, days.day_start(day, tz), tz, anchor).period  # type: ignore[arg-type]

    first = date.fromisoformat(period(start))
    used = {row.day: row.used for row in await ctx.counters.usage(account.id, service, first, end)}
    total_on = await totals_by_day(ctx, account, service, limit)
    rows: list[UsageDay] = []
    running: dict[str, int] = {}
    for day in days.days_between(first, end):
        window = period(day)
        running[window] = running.get(window, 0) + used.get(day, 0)
        if day >= start:
            total = total_on(day)
            left = max(total - running[window], 0)
            rows.append(WindowDay(day, used.get(day, 0), total, 0, left))
    return rows


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One object of ``GET /v1/usages``."""

    description: str
    limit: int
    name: str
    usage: int


async def overview(ctx: Context, account: Account) -> list[UsageLine]:
    """Every resource limit and every window quota of an account (SPEC 9: one item per
    window, named ``limits.usage_item_name``), with the current window's use."""
    plan = await admin.require_plan(ctx, account.plan_id)
    gauges = await ctx.counters.gauges(account.id)
    lines = [
        UsageLine(item.description, item.limit, item.name, gauges.get(item.name, 0))
        for item in effective_limits(plan, account)
    ]
    now = ctx.clock.now()
    now_day = today(ctx, account)
    windows: list[tuple[UsageLine, tuple[str, str]]] = []
    for service in sorted(set(plan.quotas) | set(account.overrides.quotas)):
        chosen = [
            limit
            for limit in service_limits(plan, account, service) or ()
            if limit.window is not None and limit.per is Per.ACCOUNT
        ]
        for limit in sorted(chosen, key=lambda x: limits.WINDOW_ORDER.index(x.window)):
            assert limit.window is not None  # noqa: S101  (rates were left out above)
            name = limits.usage_item_name(service, limit.window)
            adjective = limits.ADJECTIVES[limit.window].capitalize()
            line = UsageLine(f"{adjective} {service} queries", limit.total, name, 0)
            if limit.window is Window.DAY:
                # Version 1's line, read as it always was (the day row).
                rows = await ctx.counters.usage(account.id, service, now_day, now_day)
                lines.append(line if not rows else _with_usage(line, rows[0].used))
                continue
            item = quotas.counter(service, limit, now, account.timezone, account.anchor_day)
            lines.append(line)
            windows.append((line, item.key))
    if windows:
        values = await ctx.counters.read_counters(account.id, [key for _, key in windows])
        read = {id(line): value for (line, _), value in zip(windows, values, strict=True)}
        lines = [_with_usage(x, read[id(x)]) if id(x) in read else x for x in lines]
    return lines


def _with_usage(line: UsageLine, usage: int) -> UsageLine:
    return UsageLine(line.description, line.limit, line.name, usage)


async def adjust(
    ctx: Context,
    account_id: str,
    service: str,
    day_text: str,
    delta: int,
    idempotency_key: str | None = None,
) -> UsageDay:
    """Correct or credit one day's use (never below zero, never a future day).

    With ``idempotency_key``, a repeat of the same adjustment within the idempotency
    window moves nothing and answers the day as it stands (the audit log keeps the first).
    """
    account = await admin.require_account(ctx, account_id)
    await admin.require_service(ctx, service)
    day = parse_date(day_text, "/body/date")
    if day > today(ctx, account):
        raise ValidationFailed.at("/body/date", "cannot adjust a future day", "maximum")
    # A day without a row gets the total in force that day, not today's.
    total_on = await totals_by_day(ctx, account, service)
    before = await ctx.counters.usage(account.id, service, day, day)
    # The account's longer windows holding that day move with it (SPEC 9).
    plan = await admin.require_plan(ctx, account.plan_id)
    extra = quotas.window_slots(account, plan, service, days.day_start(day, account.timezone))
    async with audit.with_counters(ctx):
        if idempotency_key is not None:
            claim = operator_claim(ctx, "adjust", idempotency_key, service, day.isoformat(), delta)
            row, repeated = await ctx.counters.adjust_once(
                account.id, service, day, delta, total_on(day), extra, claim, ctx.clock.now()
            )
            if repeated:
                return row
        elif extra:
            row = await ctx.counters.adjust(account.id, service, day, delta, total_on(day), extra)
        else:  # version 1's call, as it always was
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
        plan = await admin.require_plan(ctx, account.plan_id)
        if service_limits(plan, account, item.service) is None:
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
        row_total = totals[(account.id, item.service)](day)  # a new row: that day's total
        windows = tuple(
            (slot.name, slot.period)
            for slot in quotas.window_slots(account, plan, item.service, item.timestamp)
        )
        resolved.append(
            UsageEvent(
                item.id,
                account.id,
                item.service,
                item.amount,
                day,
                row_total,
                item.timestamp,
                windows,
            )
        )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} of {len(batch)} events are invalid; none were recorded",
            validation_errors=problems,
        )
    outcome = await ctx.counters.record_events(resolved)
    if outcome.accepted:
        await _notice_thresholds(ctx, accounts, resolved)
    return outcome


async def _notice_thresholds(
    ctx: Context, accounts: dict[str, Account | None], recorded: list[UsageEvent]
) -> None:
    """Notice the alert thresholds the batch's accounts have reached (never failing the
    batch, which is recorded by now: an event not noticed here is noticed by the next)."""
    touched: dict[str, set[str]] = {}
    for event in recorded:
        touched.setdefault(event.account_id, set()).add(event.service)
    for account_id, services in touched.items():
        account = accounts[account_id]
        if account is None:
            continue
        try:
            plan = await admin.require_plan(ctx, account.plan_id)
            await quotas.notice_reached(ctx, account, plan, services)
        except Exception as exc:  # the events are recorded: their answer must not fail now
            log.warning("alert thresholds not checked after events", error=str(exc))
