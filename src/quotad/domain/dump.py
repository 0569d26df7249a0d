"""The records of a dump (``quotad dump`` / ``quotad restore``) that have no value of their own.

A dump is every record of a deployment, each as a plain value: the records quotad already
has values for (``Service``, ``Plan``, ``Account``, ``ApiKey``, ``OperatorToken``,
``AuditEntry``, the alerts' ``WebhookEndpoint``, ``AlertEvent`` and ``Delivery``, and the
credits' ``Grant`` and ``Reservation``) and
the ones below, which a store otherwise keeps only as rows or counters. ``DUMP_ORDER`` is
the order a dump lists them in: each kind comes after the kinds it refers to, so a store
can restore a dump as it reads it.

A dump holds secrets: each webhook endpoint's signing secrets (a restored deployment must
go on signing with them, and its receivers verify with them), unlike API keys and operator
tokens, of which it holds only digests. Keep a dump as safe as the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from quotad.domain.credits import Grant, Reservation
from quotad.domain.models import Account, ApiKey, Plan, Service, TotalChange, UsageDay
from quotad.domain.operators import AuditEntry, OperatorToken
from quotad.domain.webhooks import AlertEvent, Delivery, WebhookEndpoint


@dataclass(frozen=True, slots=True)
class Setting:
    """A stored deployment setting (the operator token's digest, the dashboard's secret)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class AccountTotal:
    """One noted change of an account's daily total of a service (its total history)."""

    account_id: str
    service: str
    change: TotalChange


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """One account's usage day of one service."""

    account_id: str
    service: str
    day: UsageDay


@dataclass(frozen=True, slots=True)
class WindowCounter:
    """One counter of a limit other than an account's day row (SPEC 9): a window's units
    used, or a rate's bucket (its theoretical arrival time, µs since the epoch)."""

    account_id: str
    name: str  # the limit's name, with ":<key id>" when per key
    period: str  # the window's id; "rate" for a rate
    value: int
    total: int


@dataclass(frozen=True, slots=True)
class Gauge:
    """The current usage of one account's resource limit."""

    account_id: str
    name: str
    usage: int


@dataclass(frozen=True, slots=True)
class IdempotencyAnswer:
    """An Idempotency-Key's first answer, replayed to a repeat until ``expires_at``."""

    account_id: str
    key: str
    fingerprint: str
    expires_at: datetime
    granted: bool
    used: int
    total: int
    day: date


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """A metering event id already counted, so a resent event is not counted twice."""

    account_id: str
    id: str
    recorded_at: datetime


DumpItem = (
    Setting
    | Service
    | Plan
    | Account
    | ApiKey
    | AccountTotal
    | AccountUsage
    | WindowCounter
    | Gauge
    | IdempotencyAnswer
    | SeenEvent
    | OperatorToken
    | AuditEntry
    | WebhookEndpoint
    | AlertEvent
    | Delivery
    | Grant
    | Reservation
)

# Each kind after the kinds it refers to (a key after its account, an account after its
# plan). A kind added later takes its place here, in each store's ``dump`` and
# ``restore``, and in ``quotad.service.dump``.
DUMP_ORDER: tuple[type[DumpItem], ...] = (
    Setting,
    Service,
    Plan,
    Account,
    ApiKey,
    AccountTotal,
    AccountUsage,
    WindowCounter,
    Gauge,
    IdempotencyAnswer,
    SeenEvent,
    OperatorToken,
    AuditEntry,
    WebhookEndpoint,
    AlertEvent,  # with its dedupe key: an event restored is never written (nor sent) again
    Delivery,  # after its endpoint and its event; claims are left out (a new node claims)
    Grant,  # credits (SPEC 10): what is left of each is its counters' (WindowCounter)
    Reservation,  # with what it moved; a node's claim is left out (the next one settles)
)
