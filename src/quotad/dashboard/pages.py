"""What each page shows, read through the service layer (no HTML here).

Days are each account's own: "today" on the overview is, for every account, its local
date in its timezone, the same day its quota counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from quotad.dashboard.charts import (
    Gauge,
    SeriesChart,
    UsageChart,
    series_chart,
    usage_chart,
)
from quotad.domain import days, limits
from quotad.domain.limits import LimitSpec, Window
from quotad.domain.models import (
    Account,
    ApiKey,
    Plan,
    UsageDay,
    effective_limits,
    effective_total,
    service_limits,
)
from quotad.domain.operators import AuditEntry, AuditQuery
from quotad.errors import QuotadError
from quotad.service import admin, audit, quotas, usage
from quotad.service.context import Context

DEFAULT_RANGE_DAYS = 30
HIGH_USE = 0.8
TOP_ACCOUNTS = 10
TREND_DAYS = 30
PRESET_DAYS = (7, 30, 90)
LONGER_WINDOWS = (Window.WEEK, Window.MONTH, Window.YEAR)
PAGE_SIZE = 50
SCAN_PAGE = 500


@dataclass
class ServiceToday:
    """One service's use today, summed over every account."""

    name: str
    granted: int = 0
    refused: int = 0
    accounts: int = 0


@dataclass(frozen=True, slots=True)
class HighUse:
    """An account at or past 80 % of a daily quota today."""

    account: Account
    service: str
    used: int
    total: int

    @property
    def percent(self) -> int:
        """Use as a whole percentage of the total."""
        return round(self.used / self.total * 100) if self.total else 100


@dataclass
class AccountToday:
    """One account's use today, all services together."""

    account: Account
    used: int = 0
    refused: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


@dataclass
class Overview:
    """The operator's view of today."""

    services: list[ServiceToday]
    high_use: list[HighUse]
    top: list[AccountToday]
    accounts: int
    trend: Trend


async def _plan(ctx: Context, plans: dict[str, Plan | None], plan_id: str) -> Plan | None:
    if plan_id not in plans:
        plans[plan_id] = await ctx.records.get_plan(plan_id)
    return plans[plan_id]


def quota_services(plan: Plan, account: Account) -> list[str]:
    """The services an account has a daily quota for, by name."""
    return sorted(
        name
        for name in set(plan.quotas) | set(account.overrides.quotas)
        if effective_total(plan, account, name) is not None
    )


def charted_services(plan: Plan, account: Account) -> list[str]:
    """The services drawn day by day: those with a daily quota, and those counted against
    a week, month or year window only (their days drawn against that window, as
    ``usage.history`` reports them)."""
    return sorted(
        name
        for name in set(plan.quotas) | set(account.overrides.quotas)
        if effective_total(plan, account, name) is not None
        or usage.longer_window(service_limits(plan, account, name) or ()) is not None
    )


async def overview(ctx: Context) -> Overview:
    """Today's use per service, the accounts near a quota, and the busiest accounts."""
    services = {s.name: ServiceToday(s.name) for s in await ctx.records.list_services()}
    plans: dict[str, Plan | None] = {}
    high_use: list[HighUse] = []
    busiest: list[AccountToday] = []
    sums = TrendSums()
    count = 0
    after: str | None = None
    while True:
        page = await ctx.records.list_accounts(SCAN_PAGE, after)
        for account in page:
            count += 1
            plan = await _plan(ctx, plans, account.plan_id)
            if plan is None:
                continue
            today = usage.today(ctx, account)
            summary = AccountToday(account)
            first = today - timedelta(days=TREND_DAYS - 1)
            for name in charted_services(plan, account):
                # One read of the trend's days serves today's numbers too.
                rows = await ctx.counters.usage(account.id, name, first, today)
                sums.add(today, rows)
                last = rows[-1] if rows and rows[-1].day == today else None
                used = last.used if last else 0
                refused = last.rejected if last else 0
                daily = effective_total(plan, account, name)
                total = daily or 0
                line = services.setdefault(name, ServiceToday(name))
                line.granted += used
                line.refused += refused
                line.accounts += 1 if used or refused else 0
                summary.used += used
                summary.refused += refused
                summary.by_service[name] = used
                if daily is None:
                    continue  # no daily quota to be near: its windows are on its page
                if (total and used >= HIGH_USE * total) or (not total and refused):
                    high_use.append(HighUse(account, name, used, total))
            if summary.used or summary.refused:
                busiest.append(summary)
        if len(page) < SCAN_PAGE:
            break
        after = page[-1].id
    high_use.sort(key=lambda item: (-item.percent, item.account.id, item.service))
    busiest.sort(key=lambda item: (-item.used, -item.refused, item.account.id))
    return Overview(
        sorted(services.values(), key=lambda s: s.name),
        high_use,
        busiest[:TOP_ACCOUNTS],
        count,
        sums.trend(days.local_day(ctx.clock.now(), "UTC")),
    )


@dataclass(frozen=True, slots=True)
class AccountsPage:
    """A page of the accounts list."""

    accounts: list[Account]
    search: str
    next_after: str | None


async def accounts_page(ctx: Context, search: str, after: str | None) -> AccountsPage:
    """Up to ``PAGE_SIZE`` accounts whose id or name contains ``search``."""
    found = await ctx.records.list_accounts(PAGE_SIZE + 1, after or None, search or None)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return AccountsPage(found, search, found[-1].id if more and found else None)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the account page lists it."""

    key: ApiKey
    status: str

    @property
    def active(self) -> bool:
        """Whether the key still works (so it may be revoked or rotated)."""
        return self.status == "active"


@dataclass
class UsageView:
    """Charts and gauges of one account over a date range."""

    account: Account
    start: date
    end: date
    today: date
    charts: list[UsageChart]
    quotas_today: list[Gauge]
    limits: list[Gauge]
    range_error: str | None = None
    presets: list[Preset] = field(default_factory=list)
    windows: list[Gauge] = field(default_factory=list)

    @property
    def range_query(self) -> str:
        """The shown range as an address's query (for the download links)."""
        return f"start={self.start.isoformat()}&end={self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class Preset:
    """A range offered as a link beside the From/To fields."""

    key: str
    label: str
    start: date
    end: date

    @property
    def query(self) -> str:
        """The range as an address's query, as the From/To form sends it."""
        return f"start={self.start.isoformat()}&end={self.end.isoformat()}"


def presets(ctx: Context, account: Account, today: date) -> list[Preset]:
    """Today, the last 7, 30 and 90 days, this calendar month and this billing cycle.

    The billing cycle is the month window on the account's billing anchor, as its
    billing-anchored limits count it (``limits.span``), up to today.
    """
    cycle = limits.span(Window.MONTH, ctx.clock.now(), account.timezone, account.anchor_day)
    found = [Preset("today", "Today", today, today)]
    found += [
        Preset(f"{n}d", f"{n} days", today - timedelta(days=n - 1), today) for n in PRESET_DAYS
    ]
    found.append(Preset("month", "This month", today.replace(day=1), today))
    found.append(Preset("cycle", "This billing cycle", date.fromisoformat(cycle.period), today))
    return found


def default_range(today: date) -> tuple[date, date]:
    """The last ``DEFAULT_RANGE_DAYS`` days, today included."""
    return today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today


async def usage_view(
    ctx: Context, account: Account, start_text: str | None, end_text: str | None
) -> UsageView:
    """An account's charts over a range (default: the last 30 days), and its gauges.

    A range the customer API would refuse (SPEC 3.2: real dates, not after today, at
    most 90 days) is reported in ``range_error`` and the default range is shown instead.
    """
    plan = await admin.require_plan(ctx, account.plan_id)
    today = usage.today(ctx, account)
    start, end = default_range(today)
    range_error = None
    if start_text or end_text:
        try:
            start, end = usage.history_window(ctx, account, start_text or None, end_text or None)
        except QuotadError as exc:
            problems = "; ".join(item.message for item in exc.validation_errors)
            range_error = problems or exc.note
    charts, quotas_today = [], []
    for name in charted_services(plan, account):
        rows = await usage.history(ctx, account, name, start.isoformat(), end.isoformat())
        stored = await ctx.counters.usage(account.id, name, start, end)
        refused = {row.day: row.rejected for row in stored}
        daily = effective_total(plan, account, name)
        longer = usage.longer_window(service_limits(plan, account, name) or ())
        label = "Daily total" if daily is not None or longer is None else _total_words(longer)
        charts.append(usage_chart(name, start, end, rows, refused, label))
        today_rows = await ctx.counters.usage(account.id, name, today, today)
        used = today_rows[0].used if today_rows else 0
        if daily is not None:
            quotas_today.append(Gauge(name, f"Daily {name} quota, today", used, daily))
    gauges = await ctx.counters.gauges(account.id)
    limits = [
        Gauge(item.name, item.description, gauges.get(item.name, 0), item.limit)
        for item in effective_limits(plan, account)
    ]
    return UsageView(
        account,
        start,
        end,
        today,
        charts,
        quotas_today,
        limits,
        range_error,
        presets(ctx, account, today),
        await window_gauges(ctx, account),
    )


def _total_words(limit: LimitSpec) -> str:
    billing = " (billing cycle)" if limit.billing else ""
    return f"Total per {limit.window}{billing}"


async def window_gauges(ctx: Context, account: Account) -> list[Gauge]:
    """The account's week, month and year windows now, as ``GET
    /admin/v1/accounts/{id}/quotas`` reads them (the daily ones have their own gauges)."""
    return [
        Gauge(state.name, _window_words(state), state.used, state.total)
        for state in await quotas.of_account(ctx, account)
        if state.limit.window in LONGER_WINDOWS
    ]


def _window_words(state: quotas.QuotaState) -> str:
    window = state.limit.window
    anchor = " (billing cycle)" if state.limit.billing else ""
    shadow = ", not enforced" if state.limit.mode.value == "shadow" else ""
    resets = days.rfc3339(state.reset)
    return f"{state.service} per {window}{anchor}{shadow}; resets {resets}"


async def key_rows(ctx: Context, account: Account) -> list[KeyRow]:
    """An account's keys, newest first, with their status now."""
    now: datetime = ctx.clock.now()
    found = await ctx.records.list_keys(account.id)
    return [KeyRow(key, admin.key_status(key, now)) for key in reversed(found)]


AUDIT_ROWS = 50
MAX_SHOWN = 60  # characters of a value shown in a change


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One audit entry of an account's page, with what it changed in words."""

    entry: AuditEntry
    changes: list[str]


def _shown(value: object) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _changes(entry: AuditEntry) -> list[str]:
    before, after = entry.before or {}, entry.after or {}
    if not entry.before or not entry.after:
        return []  # created or deleted: the action says it
    return [
        f"{name}: {_shown(before.get(name))} → {_shown(after.get(name))}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


async def audit_rows(ctx: Context, account: Account, key_ids: list[str]) -> list[ChangeRow]:
    """The latest changes of an account (its credit grants and voids among them) and of
    its keys, newest first."""
    targets = (audit.target("account", account.id), *(audit.target("key", k) for k in key_ids))
    found = await audit.entries(ctx, AuditQuery(limit=AUDIT_ROWS, targets=targets))
    return [ChangeRow(entry, _changes(entry)) for entry in found]


def rfc3339(value: datetime | None) -> str:
    """A timestamp as the API writes it, or an empty string."""
    return "" if value is None else days.rfc3339(value)


@dataclass(frozen=True, slots=True)
class TrendDay:
    """Units granted and calls refused on one day, over every account and service."""

    day: date
    granted: int
    refused: int


@dataclass(frozen=True, slots=True)
class Trend:
    """The overview's last ``TREND_DAYS`` days, drawn as two charts with one table."""

    days: list[TrendDay]
    granted: SeriesChart
    refused: SeriesChart


class TrendSums:
    """Granted and refused per day, added up account by account (see ``overview``)."""

    def __init__(self) -> None:
        self.granted: dict[date, int] = {}
        self.refused: dict[date, int] = {}
        self.latest: date | None = None

    def add(self, today: date, rows: list[UsageDay]) -> None:
        """Count one account-service's stored days; ``today`` is the account's local today."""
        self.latest = today if self.latest is None else max(self.latest, today)
        for row in rows:
            self.granted[row.day] = self.granted.get(row.day, 0) + row.used
            self.refused[row.day] = self.refused.get(row.day, 0) + row.rejected

    def trend(self, fallback: date) -> Trend:
        """The last ``TREND_DAYS`` days up to the latest local today of any account
        (``fallback`` when there is no account), every day present."""
        end = self.latest or fallback
        shown = days.days_between(end - timedelta(days=TREND_DAYS - 1), end)
        rows = [TrendDay(day, self.granted.get(day, 0), self.refused.get(day, 0)) for day in shown]
        return Trend(
            rows,
            series_chart("Units granted", "units", [(row.day, row.granted) for row in rows]),
            series_chart("Calls refused", "calls", [(row.day, row.refused) for row in rows]),
        )


async def trend(ctx: Context) -> Trend:
    """Granted units and refused calls per day over the last ``TREND_DAYS`` days, every
    account on its own local days (the overview's trend, for its download)."""
    return (await overview(ctx)).trend


def changes_of(entry: AuditEntry) -> list[str]:
    """What an audit entry changed, one line a field (none for a creation or deletion)."""
    return _changes(entry)
