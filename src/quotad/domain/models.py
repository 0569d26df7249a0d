"""The records quotad keeps, as plain immutable values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import NamedTuple

from quotad.domain.credits import Refill
from quotad.domain.days import local_day
from quotad.domain.limits import Limits, LimitSpec, Per, Window, daily, merged


class AccountStatus(StrEnum):
    """Whether an account's keys are honoured."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Service:
    """A metered product line, such as ``insights``."""

    name: str
    description: str
    created_at: datetime
    credit_price: int | None = None  # micro-credits a unit of cost (SPEC 10); None: unpriced


@dataclass(frozen=True, slots=True)
class Limit:
    """A resource limit of a plan, such as ``cohort.max_count`` = 10."""

    name: str
    description: str
    limit: int


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits of one service in a plan (SPEC 9): window quotas and rates."""

    limits: Limits

    @classmethod
    def daily(cls, total: int) -> Quota:
        """Version 1's quota: ``total`` units a day, shared by the account's keys."""
        return cls(daily(total))

    @property
    def total(self) -> int | None:
        """The daily total the account shares, if it has one (version 1's ``total``)."""
        return day_total(self.limits)


@dataclass(frozen=True, slots=True)
class Plan:
    """A named bundle of quotas (by service) and resource limits."""

    id: str
    quotas: dict[str, Quota]
    limits: tuple[Limit, ...]
    created_at: datetime
    description: str = ""
    alert_thresholds: tuple[int, ...] | None = None  # None: webhooks.DEFAULT_THRESHOLDS
    refill: Refill | None = None  # credits given every window (SPEC 10)
    low_credits: int | None = None  # micro-credits: credits.low below it (SPEC 11); None: none


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-account replacements for plan limits (by service) and resource limits (by name).

    Each service's list replaces the plan's limits of the same identity or adds to them
    (``limits.merged``); version 1's ``{"insights": 500}`` is a daily total.
    """

    quotas: dict[str, Limits] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    alert_thresholds: tuple[int, ...] | None = None  # None: the plan's
    low_credits: int | None = None  # micro-credits, replacing the plan's mark; None: the plan's


@dataclass(frozen=True, slots=True)
class Account:
    """A customer of the provider."""

    id: str
    name: str
    plan_id: str
    timezone: str
    status: AccountStatus
    overrides: Overrides
    created_at: datetime
    billing_anchor: int | None = None  # 1-31; None: the day of ``created_at`` (local)

    @property
    def anchor_day(self) -> int:
        """The day of the month a billing-anchored month window starts on."""
        if self.billing_anchor is not None:
            return self.billing_anchor
        return local_day(self.created_at, self.timezone).day


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the secret, only its digest and display hint."""

    id: str
    account_id: str
    name: str
    digest: str
    prefix: str
    last4: str
    scopes: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    replaced_by: str | None = None
    limits: dict[str, Limits] = field(default_factory=dict)  # its own, per key: only narrow

    @property
    def hint(self) -> str:
        """What is shown of the key after creation."""
        return f"{self.prefix}_…{self.last4}"

    def expired(self, now: datetime) -> bool:
        """Whether the key is past its expiry at ``now``."""
        return self.expires_at is not None and now >= self.expires_at

    def revoked(self, now: datetime) -> bool:
        """Whether the key has been revoked by ``now``."""
        return self.revoked_at is not None and now >= self.revoked_at


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One account's use of one service on one local day."""

    day: date
    used: int
    total: int
    rejected: int = 0

    @property
    def remaining(self) -> int:
        """Units left that day; never negative, even after late events."""
        return max(self.total - self.used, 0)


class ConsumeOutcome(NamedTuple):
    """The result of one atomic consume, as the store decided it.

    A named tuple rather than a dataclass: it is built once per verify, and a tuple is
    the cheapest immutable value Python can build (see ``MemoryStore.consume``).
    """

    granted: bool
    used: int
    total: int
    day: date
    replayed: bool = False
    # Limits v2: every slot's counter before the decision (empty on a replay), the index
    # of the first hard slot that refused (-1: none), and the store's clock (µs) for rates.
    before: tuple[int, ...] = ()
    refused: int = -1
    at_us: int = 0
    # Every slot's counter after the decision, where the store hands it back (else the
    # caller computes it: ``limits.advanced`` when granted, ``before`` when refused).
    after: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key, scoped to an account, and the fingerprint of its request."""

    key: str
    fingerprint: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A metering event already resolved to its account's local day."""

    id: str
    account_id: str
    service: str
    amount: int
    day: date
    total: int
    timestamp: datetime
    # Limits v2: the account's other window counters the event counts in, (name, period).
    windows: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EventsOutcome:
    """How many events of a batch were new and how many were seen before."""

    accepted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class GaugeChange:
    """A resource limit's usage after a change."""

    name: str
    usage: int
    limit: int


def day_total(limits: Limits) -> int | None:
    """The daily total an account shares among ``limits``, if any (the day row's total)."""
    for limit in limits:
        if limit.window is Window.DAY and limit.per is Per.ACCOUNT:
            return limit.total
    return None


def service_limits(plan: Plan, account: Account, service: str) -> Limits | None:
    """The limits of ``service`` for ``account`` (its plan's, with its overrides);
    ``None`` when neither its plan nor its overrides have any."""
    quota = plan.quotas.get(service)
    override = account.overrides.quotas.get(service)
    if quota is None and override is None:
        return None
    return merged(() if quota is None else quota.limits, override)


def effective_total(plan: Plan, account: Account, service: str) -> int | None:
    """The daily total of ``service`` for ``account``; ``None`` if it has no daily quota."""
    limits = service_limits(plan, account, service)
    return None if limits is None else day_total(limits)


def effective_limits(plan: Plan, account: Account) -> list[Limit]:
    """The plan's resource limits with the account's overrides applied."""
    return [
        Limit(item.name, item.description, account.overrides.limits.get(item.name, item.limit))
        for item in plan.limits
    ]


@dataclass(frozen=True, slots=True)
class TotalChange:
    """An account's daily total of a service, in force from ``effective_from`` on."""

    effective_from: datetime
    total: int


def effective_totals(plan: Plan, account: Account, also: Iterable[str] = ()) -> dict[str, int]:
    """Every window total of ``account`` by history name (``history_name``); a name in
    ``also`` without one now is 0. Rates are not noted: they have no history."""
    totals = dict.fromkeys(also, 0)
    for service in set(plan.quotas) | set(account.overrides.quotas):
        for limit in service_limits(plan, account, service) or ():
            if limit.window is not None:
                totals[history_name(service, limit)] = limit.total
    return dict(sorted(totals.items()))


def history_name(service: str, limit: LimitSpec) -> str:
    """The name a window limit's totals are noted under: version 1's daily total keeps the
    service's own name (so its history goes on), every other limit its name."""
    if limit.window is Window.DAY and limit.per is Per.ACCOUNT:
        return service
    return limit.name(service)
