"""The records quotad keeps, as plain immutable values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import NamedTuple


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


@dataclass(frozen=True, slots=True)
class Limit:
    """A resource limit of a plan, such as ``cohort.max_count`` = 10."""

    name: str
    description: str
    limit: int


@dataclass(frozen=True, slots=True)
class Quota:
    """The quota of one service in a plan: ``total`` units per period."""

    total: int
    period: str = "day"


@dataclass(frozen=True, slots=True)
class Plan:
    """A named bundle of quotas (by service) and resource limits."""

    id: str
    quotas: dict[str, Quota]
    limits: tuple[Limit, ...]
    created_at: datetime
    description: str = ""


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-account replacements for plan totals (by service) and limits (by name)."""

    quotas: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)


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


def effective_total(plan: Plan, account: Account, service: str) -> int | None:
    """The daily total of ``service`` for ``account``; ``None`` if its plan has no quota for it."""
    if service in account.overrides.quotas:
        return account.overrides.quotas[service]
    quota = plan.quotas.get(service)
    return None if quota is None else quota.total


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
    """Every daily total of ``account``, by service; a service in ``also`` without one is 0."""
    names = set(plan.quotas) | set(account.overrides.quotas) | set(also)
    return {name: effective_total(plan, account, name) or 0 for name in sorted(names)}
