"""A whole deployment as JSON Lines: ``quotad dump`` writes it, ``quotad restore`` reads it.

One JSON object per line, each with a ``kind``. The first line is the header
(``{"kind": "header", "format": "quotad-dump", "version": 2, "quotad": …, "created_at": …,
"store": …}``), the last the end (``{"kind": "end", "counts": {kind: lines}}``, so a dump
cut short is refused rather than half restored). Between them, every record in
``DUMP_ORDER``: ``setting``, ``service``, ``plan`` (with its ``alert_thresholds``),
``account`` (its overrides' too), ``key`` (its SHA-256 digest, never a secret: quotad never
had it), ``total`` (the total history), ``usage``, ``counter``, ``gauge``, ``idempotency``
(Idempotency-Key answers, so a retry across the move is still answered once), ``event``
(metering event ids, so a resent event is still counted once), ``token``, ``audit``, then
the alerts (SPEC 11): ``webhook`` (an endpoint, **with its signing secrets**), ``alert`` (an
alert event with its dedupe key, so an event written before the move is never written, nor
sent, again) and ``delivery`` (with its attempts; a node's claim on it is left out, so a
delivery in flight when the dump was taken is sent again: delivery is at-least-once), then
the credits (SPEC 10): ``grant`` (what is left of it is its ``counter`` lines') and
``reservation`` (with what it moved, so a pending one is settled after the move as before).
Amounts are micro-credits, as the stores keep them.
Dashboard sessions are left out: operators sign in again.

A dump holds secrets: the webhook endpoints' signing secrets, which a restored deployment
signs with (its receivers keep verifying). Keep a dump as safe as the database itself.

Version 2 added the alerts and the thresholds; a version 1 dump (without them) restores
unchanged: the thresholds read as unset (the defaults apply). Version 3 added the credits
(grants, reservations, services' prices, plans' refills); an older dump has none.

Each kind is one pydantic model below: ``of`` writes a record as its line, ``record``
reads it back, and the model checks the line. A kind added later is one more model in
``_LINES`` (and in each store's ``dump`` and ``restore``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
import pydantic
from pydantic import AwareDatetime, Field

from quotad import __version__
from quotad.domain import credits, days, limits
from quotad.domain.credits import Grant, GrantKind, Refill, Reservation, ReservationStatus
from quotad.domain.dump import (
    DUMP_ORDER,
    AccountTotal,
    AccountUsage,
    DumpItem,
    Gauge,
    IdempotencyAnswer,
    SeenEvent,
    Setting,
    WindowCounter,
)
from quotad.domain.limits import Limits, Slot
from quotad.domain.models import (
    Account,
    AccountStatus,
    ApiKey,
    Limit,
    Overrides,
    Plan,
    Quota,
    Service,
    TotalChange,
    UsageDay,
)
from quotad.domain.operators import AuditEntry, OperatorToken, Role
from quotad.domain.webhooks import (
    EVENT_TYPES,
    AlertEvent,
    Attempt,
    Delivery,
    DeliveryStatus,
    WebhookEndpoint,
    parse_thresholds,
)
from quotad.errors import FieldError, StorageError, ValidationFailed
from quotad.service.context import Context

FORMAT = "quotad-dump"
VERSION = 3  # 2: webhooks, alert events, deliveries, alert thresholds; 3: credits

Id = Annotated[str, Field(min_length=1, max_length=64)]
Count = Annotated[int, Field(ge=0)]


def _utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


def _opt_utc(instant: datetime | None) -> datetime | None:
    return None if instant is None else _utc(instant)


class _Line(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class HeaderLine(_Line):
    """The first line: what wrote the dump, and when."""

    kind: Literal["header"]
    format: Literal["quotad-dump"]
    version: Annotated[int, Field(ge=1)]
    quotad: str
    created_at: AwareDatetime
    store: str


class EndLine(_Line):
    """The last line: how many lines of each kind came before it."""

    kind: Literal["end"]
    counts: dict[str, Count]


class SettingLine(_Line):
    """A ``setting`` line."""

    KIND: ClassVar[str] = "setting"
    kind: Literal["setting"]
    name: Id
    value: str

    @classmethod
    def of(cls, item: Setting) -> dict[str, Any]:
        """The line of a record."""
        return {"kind": cls.KIND, "name": item.name, "value": item.value}

    def record(self) -> Setting:
        """The record of a line."""
        return Setting(self.name, self.value)


class ServiceLine(_Line):
    """A ``service`` line."""

    KIND: ClassVar[str] = "service"
    kind: Literal["service"]
    name: Id
    description: str
    created_at: AwareDatetime
    credit_price_micros: Annotated[int, Field(ge=1, le=MAX_MICROS)] | None = None

    @classmethod
    def of(cls, item: Service) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "name": item.name,
            "description": item.description,
            "created_at": _utc(item.created_at),
            "credit_price_micros": item.credit_price,
        }

    def record(self) -> Service:
        """The record of a line."""
        return Service(self.name, self.description, _utc(self.created_at), self.credit_price_micros)


def _listed(thresholds: tuple[int, ...] | None) -> list[int] | None:
    return None if thresholds is None else list(thresholds)


def _limits(value: object) -> Limits:
    """A service's limits as a dump line holds them (``limits.decode``)."""
    try:
        return limits.decode(value)
    except limits.LimitError as exc:
        raise ValueError(str(exc)) from exc


StoredLimits = Annotated[Limits, pydantic.BeforeValidator(_limits)]


def _thresholds(value: object) -> tuple[int, ...]:
    """Alert thresholds as a dump line holds them (``parse_thresholds``)."""
    return parse_thresholds(value)


# None (or absent, as in a version 1 dump): unset, the defaults (or the plan's) apply.
Thresholds = Annotated[tuple[int, ...], pydantic.BeforeValidator(_thresholds)]


def _refill(value: object) -> Refill | None:
    """A plan's refill as a dump line holds it (``Refill.to_json``'s form)."""
    try:
        return credits.parse_refill(value)
    except credits.CreditError as exc:
        raise ValueError(str(exc)) from exc


StoredRefill = Annotated[Refill, pydantic.BeforeValidator(_refill)]
MAX_MICROS = credits.MAX_CREDITS * credits.MICROS
LowMicros = Annotated[int, Field(ge=1, le=MAX_MICROS)]  # a low_credits mark, micro-credits


class LimitIn(_Line):
    """A plan's resource limit."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str
    limit: Count


class PlanLine(_Line):
    """A ``plan`` line."""

    KIND: ClassVar[str] = "plan"
    kind: Literal["plan"]
    id: Id
    description: str
    quotas: dict[str, StoredLimits]
    limits: list[LimitIn]
    created_at: AwareDatetime
    alert_thresholds: Thresholds | None = None
    refill: StoredRefill | None = None
    low_credits_micros: LowMicros | None = None

    @classmethod
    def of(cls, item: Plan) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "description": item.description,
            "quotas": limits.encode_all({n: q.limits for n, q in item.quotas.items()}),
            "limits": [
                {"name": lim.name, "description": lim.description, "limit": lim.limit}
                for lim in item.limits
            ],
            "created_at": _utc(item.created_at),
            "alert_thresholds": _listed(item.alert_thresholds),
            "refill": None if item.refill is None else item.refill.to_json(),
            "low_credits_micros": item.low_credits,
        }

    def record(self) -> Plan:
        """The record of a line."""
        return Plan(
            self.id,
            {name: Quota(q) for name, q in self.quotas.items()},
            tuple(Limit(lim.name, lim.description, lim.limit) for lim in self.limits),
            _utc(self.created_at),
            self.description,
            self.alert_thresholds,
            self.refill,
            self.low_credits_micros,
        )


class OverridesIn(_Line):
    """An account's overrides of its plan's totals and limits."""

    quotas: dict[str, StoredLimits]
    limits: dict[str, Count]
    alert_thresholds: Thresholds | None = None
    low_credits_micros: LowMicros | None = None


class AccountLine(_Line):
    """An ``account`` line."""

    KIND: ClassVar[str] = "account"
    kind: Literal["account"]
    id: Id
    name: str
    plan: Id
    timezone: str
    status: Literal["active", "suspended"]
    overrides: OverridesIn
    billing_anchor: Annotated[int, Field(ge=1, le=31)] | None = None
    created_at: AwareDatetime

    @pydantic.field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not days.is_timezone(value):
            msg = f"unknown timezone {value!r}"
            raise ValueError(msg)
        return value

    @classmethod
    def of(cls, item: Account) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "name": item.name,
            "plan": item.plan_id,
            "timezone": item.timezone,
            "status": item.status.value,
            "overrides": {
                "quotas": limits.encode_all(item.overrides.quotas),
                "limits": item.overrides.limits,
                "alert_thresholds": _listed(item.overrides.alert_thresholds),
                "low_credits_micros": item.overrides.low_credits,
            },
            "billing_anchor": item.billing_anchor,
            "created_at": _utc(item.created_at),
        }

    def record(self) -> Account:
        """The record of a line."""
        return Account(
            self.id,
            self.name,
            self.plan,
            self.timezone,
            AccountStatus(self.status),
            Overrides(
                dict(self.overrides.quotas),
                dict(self.overrides.limits),
                self.overrides.alert_thresholds,
                self.overrides.low_credits_micros,
            ),
            _utc(self.created_at),
            self.billing_anchor,
        )


class KeyLine(_Line):
    """A ``key`` line: the key's SHA-256 digest and display hint, never the key."""

    KIND: ClassVar[str] = "key"
    kind: Literal["key"]
    id: Id
    account_id: Id
    name: str
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    prefix: Annotated[str, Field(min_length=1, max_length=16)]
    last4: Annotated[str, Field(min_length=4, max_length=4)]
    scopes: list[str] | None
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None
    replaced_by: Id | None
    limits: dict[str, StoredLimits] = Field(default_factory=dict)

    @classmethod
    def of(cls, item: ApiKey) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "account_id": item.account_id,
            "name": item.name,
            "digest": item.digest,
            "prefix": item.prefix,
            "last4": item.last4,
            "scopes": None if item.scopes is None else list(item.scopes),
            "limits": limits.encode_all(item.limits),
            "created_at": _utc(item.created_at),
            "expires_at": _opt_utc(item.expires_at),
            "revoked_at": _opt_utc(item.revoked_at),
            "replaced_by": item.replaced_by,
        }

    def record(self) -> ApiKey:
        """The record of a line."""
        return ApiKey(
            self.id,
            self.account_id,
            self.name,
            self.digest,
            self.prefix,
            self.last4,
            None if self.scopes is None else tuple(self.scopes),
            _utc(self.created_at),
            _opt_utc(self.expires_at),
            _opt_utc(self.revoked_at),
            self.replaced_by,
            dict(self.limits),
        )


class TotalLine(_Line):
    """A ``total`` line: an account's daily total of a service from an instant on."""

    KIND: ClassVar[str] = "total"
    kind: Literal["total"]
    account_id: Id
    service: Id
    effective_from: AwareDatetime
    total: Count

    @classmethod
    def of(cls, item: AccountTotal) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "service": item.service,
            "effective_from": _utc(item.change.effective_from),
            "total": item.change.total,
        }

    def record(self) -> AccountTotal:
        """The record of a line."""
        change = TotalChange(_utc(self.effective_from), self.total)
        return AccountTotal(self.account_id, self.service, change)


class UsageLine(_Line):
    """A ``usage`` line: one account's day of one service."""

    KIND: ClassVar[str] = "usage"
    kind: Literal["usage"]
    account_id: Id
    service: Id
    date: date
    used: Count
    total: Count
    rejected: Count

    @classmethod
    def of(cls, item: AccountUsage) -> dict[str, Any]:
        """The line of a record."""
        row = item.day
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "service": item.service,
            "date": row.day.isoformat(),
            "used": row.used,
            "total": row.total,
            "rejected": row.rejected,
        }

    def record(self) -> AccountUsage:
        """The record of a line."""
        day = UsageDay(self.date, self.used, self.total, self.rejected)
        return AccountUsage(self.account_id, self.service, day)


class CounterLine(_Line):
    """A ``counter`` line: one counter of a limit other than a day row (Limits v2)."""

    KIND: ClassVar[str] = "counter"
    kind: Literal["counter"]
    account_id: Id
    name: Annotated[str, Field(min_length=3, max_length=200, pattern=r"\.")]
    period: Annotated[str, Field(min_length=1, max_length=32)]
    value: Count
    total: Count

    @classmethod
    def of(cls, item: WindowCounter) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "name": item.name,
            "period": item.period,
            "value": item.value,
            "total": item.total,
        }

    def record(self) -> WindowCounter:
        """The record of a line."""
        return WindowCounter(self.account_id, self.name, self.period, self.value, self.total)


class GaugeLine(_Line):
    """A ``gauge`` line: the usage of an account's resource limit."""

    KIND: ClassVar[str] = "gauge"
    kind: Literal["gauge"]
    account_id: Id
    name: Annotated[str, Field(min_length=1, max_length=128)]
    usage: Count

    @classmethod
    def of(cls, item: Gauge) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "name": item.name,
            "usage": item.usage,
        }

    def record(self) -> Gauge:
        """The record of a line."""
        return Gauge(self.account_id, self.name, self.usage)


class IdempotencyLine(_Line):
    """An ``idempotency`` line: an Idempotency-Key's first answer, until it expires."""

    KIND: ClassVar[str] = "idempotency"
    kind: Literal["idempotency"]
    account_id: Id
    key: Annotated[str, Field(min_length=1, max_length=255)]
    fingerprint: Annotated[str, Field(min_length=1, max_length=64)]
    expires_at: AwareDatetime
    granted: bool
    used: Count
    total: Count
    date: date

    @classmethod
    def of(cls, item: IdempotencyAnswer) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "key": item.key,
            "fingerprint": item.fingerprint,
            "expires_at": _utc(item.expires_at),
            "granted": item.granted,
            "used": item.used,
            "total": item.total,
            "date": item.day.isoformat(),
        }

    def record(self) -> IdempotencyAnswer:
        """The record of a line."""
        return IdempotencyAnswer(
            self.account_id,
            self.key,
            self.fingerprint,
            _utc(self.expires_at),
            self.granted,
            self.used,
            self.total,
            self.date,
        )


class EventLine(_Line):
    """An ``event`` line: a metering event id already counted."""

    KIND: ClassVar[str] = "event"
    kind: Literal["event"]
    account_id: Id
    id: Annotated[str, Field(min_length=1, max_length=128)]
    recorded_at: AwareDatetime

    @classmethod
    def of(cls, item: SeenEvent) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "account_id": item.account_id,
            "id": item.id,
            "recorded_at": _utc(item.recorded_at),
        }

    def record(self) -> SeenEvent:
        """The record of a line."""
        return SeenEvent(self.account_id, self.id, _utc(self.recorded_at))


class TokenLine(_Line):
    """A ``token`` line: a named operator token's digest and hint, never the token."""

    KIND: ClassVar[str] = "token"
    kind: Literal["token"]
    id: Id
    name: Id
    role: Role
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    prefix: Annotated[str, Field(min_length=1, max_length=16)]
    last4: Annotated[str, Field(min_length=4, max_length=4)]
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None

    @classmethod
    def of(cls, item: OperatorToken) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "name": item.name,
            "role": item.role.value,
            "digest": item.digest,
            "prefix": item.prefix,
            "last4": item.last4,
            "created_at": _utc(item.created_at),
            "revoked_at": _opt_utc(item.revoked_at),
        }

    def record(self) -> OperatorToken:
        """The record of a line."""
        return OperatorToken(
            self.id,
            self.name,
            self.role,
            self.digest,
            self.prefix,
            self.last4,
            _utc(self.created_at),
            _opt_utc(self.revoked_at),
        )


class AuditLine(_Line):
    """An ``audit`` line: one entry of the audit log, as it was written."""

    KIND: ClassVar[str] = "audit"
    kind: Literal["audit"]
    id: Id
    at: AwareDatetime
    actor: Id
    action: Id
    target: Annotated[str, Field(min_length=1, max_length=200)]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: Id | None

    @classmethod
    def of(cls, item: AuditEntry) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "at": _utc(item.at),
            "actor": item.actor,
            "action": item.action,
            "target": item.target,
            "before": item.before,
            "after": item.after,
            "request_id": item.request_id,
        }

    def record(self) -> AuditEntry:
        """The record of a line."""
        return AuditEntry(
            self.id,
            _utc(self.at),
            self.actor,
            self.action,
            self.target,
            self.before,
            self.after,
            self.request_id,
        )


def _event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        msg = f"unknown event type {value!r}"
        raise ValueError(msg)
    return value


EventType = Annotated[str, pydantic.AfterValidator(_event_type)]
Secret = Annotated[str, Field(min_length=1, max_length=128)]


class WebhookLine(_Line):
    """A ``webhook`` line: an endpoint, with its signing secrets (a dump holds them)."""

    KIND: ClassVar[str] = "webhook"
    kind: Literal["webhook"]
    id: Id
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    description: str
    events: list[EventType]
    secret: Secret
    previous_secret: Secret | None
    previous_until: AwareDatetime | None
    disabled_at: AwareDatetime | None
    disabled_reason: str | None
    failing_since: AwareDatetime | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    # Absent from a dump older than customers' own endpoints: the operator's endpoint.
    account_id: Id | None = None

    @classmethod
    def of(cls, item: WebhookEndpoint) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "url": item.url,
            "description": item.description,
            "events": list(item.events),
            "secret": item.secret,
            "previous_secret": item.previous_secret,
            "previous_until": _opt_utc(item.previous_until),
            "disabled_at": _opt_utc(item.disabled_at),
            "disabled_reason": item.disabled_reason,
            "failing_since": _opt_utc(item.failing_since),
            "created_at": _utc(item.created_at),
            "updated_at": _utc(item.updated_at),
            "account_id": item.account_id,
        }

    def record(self) -> WebhookEndpoint:
        """The record of a line."""
        return WebhookEndpoint(
            id=self.id,
            url=self.url,
            events=tuple(self.events),
            secret=self.secret,
            created_at=_utc(self.created_at),
            updated_at=_utc(self.updated_at),
            description=self.description,
            previous_secret=self.previous_secret,
            previous_until=_opt_utc(self.previous_until),
            disabled_at=_opt_utc(self.disabled_at),
            disabled_reason=self.disabled_reason,
            failing_since=_opt_utc(self.failing_since),
            account_id=self.account_id,
        )


class AlertLine(_Line):
    """An ``alert`` line: an alert event, with the dedupe key that keeps it written once."""

    KIND: ClassVar[str] = "alert"
    kind: Literal["alert"]
    id: Id
    type: EventType
    at: AwareDatetime
    dedupe: Annotated[str, Field(min_length=1, max_length=512)]
    account_id: Id | None  # an event outlives its account (and webhook.disabled has none)
    data: dict[str, Any]

    @classmethod
    def of(cls, item: AlertEvent) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "type": item.type,
            "at": _utc(item.at),
            "dedupe": item.dedupe,
            "account_id": item.account_id,
            "data": item.data,
        }

    def record(self) -> AlertEvent:
        """The record of a line."""
        return AlertEvent(
            self.id, self.type, _utc(self.at), self.dedupe, self.data, self.account_id
        )


class AttemptIn(_Line):
    """One attempt at a delivery, and what the receiver answered."""

    at: AwareDatetime
    status_code: Annotated[int, Field(ge=100, le=599)] | None
    latency_ms: Count
    error: str | None
    response: str


class DeliveryLine(_Line):
    """A ``delivery`` line: one event for one endpoint, its status and every attempt
    (without a node's claim on it: a delivery in flight is sent again after a restore)."""

    KIND: ClassVar[str] = "delivery"
    kind: Literal["delivery"]
    id: Id
    endpoint_id: Id
    event_id: Id
    type: EventType
    status: Literal["pending", "delivered", "failed"]
    created_at: AwareDatetime
    next_at: AwareDatetime | None
    attempts: list[AttemptIn]

    @pydantic.model_validator(mode="after")
    def _due_when_pending(self) -> DeliveryLine:
        if (self.status == "pending") != (self.next_at is not None):
            msg = "a pending delivery has a next_at, a settled one none"
            raise ValueError(msg)
        return self

    @classmethod
    def of(cls, item: Delivery) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "endpoint_id": item.endpoint_id,
            "event_id": item.event_id,
            "type": item.type,
            "status": item.status.value,
            "created_at": _utc(item.created_at),
            "next_at": _opt_utc(item.next_at),
            "attempts": [
                {
                    "at": _utc(a.at),
                    "status_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "error": a.error,
                    "response": a.response,
                }
                for a in item.attempts
            ],
        }

    def record(self) -> Delivery:
        """The record of a line."""
        return Delivery(
            self.id,
            self.endpoint_id,
            self.event_id,
            self.type,
            DeliveryStatus(self.status),
            _utc(self.created_at),
            _opt_utc(self.next_at),
            tuple(
                Attempt(_utc(a.at), a.status_code, a.latency_ms, a.error, a.response)
                for a in self.attempts
            ),
        )


class GrantLine(_Line):
    """A ``grant`` line: credits given to an account (micro-credits)."""

    KIND: ClassVar[str] = "grant"
    kind: Literal["grant"]
    id: Annotated[str, Field(min_length=1, max_length=128)]
    account_id: Id
    kind_of_grant: Literal["grant", "refill"]
    amount_micros: Annotated[int, Field(ge=0, le=MAX_MICROS)]
    priority: int
    note: str
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    voided_at: AwareDatetime | None

    @classmethod
    def of(cls, item: Grant) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "account_id": item.account_id,
            "kind_of_grant": item.kind.value,
            "amount_micros": item.amount,
            "priority": item.priority,
            "note": item.note,
            "created_at": _utc(item.created_at),
            "expires_at": _opt_utc(item.expires_at),
            "voided_at": _opt_utc(item.voided_at),
        }

    def record(self) -> Grant:
        """The record of a line."""
        return Grant(
            self.id,
            self.account_id,
            self.amount_micros,
            _utc(self.created_at),
            _opt_utc(self.expires_at),
            self.priority,
            self.note,
            GrantKind(self.kind_of_grant),
            _opt_utc(self.voided_at),
        )


class MovedIn(_Line):
    """A counter a reservation moved: its slot as decided, ``cost`` what it moved."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    period: Annotated[str, Field(min_length=1, max_length=64)]
    total: Count
    mode: Annotated[int, Field(ge=0, le=6)]
    cost: int


class ReservationLine(_Line):
    """A ``reservation`` line, with what it moved (a node's claim on it is left out)."""

    KIND: ClassVar[str] = "reservation"
    kind: Literal["reservation"]
    id: Id
    account_id: Id
    key_id: Id | None
    items: list[tuple[Id, Count]]
    day: date
    moved: list[MovedIn]
    given: dict[str, Annotated[int, Field(ge=0)]]
    price_micros: Annotated[int, Field(ge=0, le=MAX_MICROS)]
    created_at: AwareDatetime
    expires_at: AwareDatetime
    status: Literal["pending", "committed", "cancelled", "expired"]
    committed: Count
    overage: Count
    settled_at: AwareDatetime | None

    @classmethod
    def of(cls, item: Reservation) -> dict[str, Any]:
        """The line of a record."""
        return {
            "kind": cls.KIND,
            "id": item.id,
            "account_id": item.account_id,
            "key_id": item.key_id,
            "items": [list(pair) for pair in item.items],
            "day": item.day.isoformat(),
            "moved": [
                {
                    "name": slot.name,
                    "period": slot.period,
                    "total": slot.total,
                    "mode": slot.mode,
                    "cost": slot.cost,
                }
                for slot in item.moved
            ],
            "given": dict(item.given),
            "price_micros": item.price,
            "created_at": _utc(item.created_at),
            "expires_at": _utc(item.expires_at),
            "status": item.status.value,
            "committed": item.committed,
            "overage": item.overage,
            "settled_at": _opt_utc(item.settled_at),
        }

    def record(self) -> Reservation:
        """The record of a line."""
        return Reservation(
            self.id,
            self.account_id,
            self.key_id,
            tuple((service, cost) for service, cost in self.items),
            self.day,
            tuple(Slot(m.name, m.period, m.total, m.mode, m.cost) for m in self.moved),
            dict(self.given),
            self.price_micros,
            _utc(self.created_at),
            _utc(self.expires_at),
            ReservationStatus(self.status),
            self.committed,
            self.overage,
            _opt_utc(self.settled_at),
        )


_RecordLine = (
    SettingLine
    | ServiceLine
    | PlanLine
    | AccountLine
    | KeyLine
    | TotalLine
    | UsageLine
    | CounterLine
    | GaugeLine
    | IdempotencyLine
    | EventLine
    | TokenLine
    | AuditLine
    | WebhookLine
    | AlertLine
    | DeliveryLine
    | GrantLine
    | ReservationLine
)
# Each record type's line, in DUMP_ORDER.
_LINES: dict[type[Any], Any] = dict(
    zip(
        DUMP_ORDER,
        (
            SettingLine,
            ServiceLine,
            PlanLine,
            AccountLine,
            KeyLine,
            TotalLine,
            UsageLine,
            CounterLine,
            GaugeLine,
            IdempotencyLine,
            EventLine,
            TokenLine,
            AuditLine,
            WebhookLine,
            AlertLine,
            DeliveryLine,
            GrantLine,
            ReservationLine,
        ),
        strict=True,
    )
)
KINDS: tuple[str, ...] = tuple(line.KIND for line in _LINES.values())
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
_ANY_LINE: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Annotated[HeaderLine | EndLine | _RecordLine, Field(discriminator="kind")]
)


# Dump -------------------------------------------------------------------------
def _json(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


def header(ctx: Context) -> dict[str, Any]:
    """The first line of a dump of ``ctx``'s deployment (never its store's URL)."""
    return {
        "kind": "header",
        "format": FORMAT,
        "version": VERSION,
        "quotad": __version__,
        "created_at": _utc(ctx.clock.now()),
        "store": urlsplit(ctx.stores.url).scheme,
    }


async def dump_lines(ctx: Context) -> AsyncIterator[tuple[str, bytes]]:
    """The whole deployment as JSON Lines: each line's kind, and the line with its newline.

    The header first, then every record in ``DUMP_ORDER``, then the end line.
    """
    yield "header", _json(header(ctx))
    counts: Counter[str] = Counter()
    async for item in ctx.counters.dump():
        line = _LINES[type(item)]
        counts[line.KIND] += 1
        yield line.KIND, _json(line.of(item))
    yield "end", _json({"kind": "end", "counts": {kind: counts[kind] for kind in KINDS}})


# Restore ----------------------------------------------------------------------
def _problem(number: int, where: str, message: str, kind: str, hint: str | None = None) -> Any:
    return ValidationFailed(
        f"line {number} of the dump is not valid; nothing was restored",
        validation_errors=[FieldError(f"/line/{number}{where}", message, kind, hint)],
    )


class DumpReader:
    """Checks a dump line by line, and turns each record line into its record.

    Besides each line's own shape, it checks what a store would refuse later, with the
    line's number: the header first, kinds in ``DUMP_ORDER``, each record named once, what
    a record names (a plan, an account, a service) earlier in the dump, and the end.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._header: HeaderLine | None = None
        self._ended = False
        self._rank = 0
        self._services: set[str] = set()
        self._plans: set[str] = set()
        self._accounts: set[str] = set()
        self._keys: set[str] = set()
        self._digests: set[str] = set()
        self._tokens: set[str] = set()
        self._token_names: set[str] = set()
        self._token_digests: set[str] = set()
        self._audit: set[str] = set()
        self._webhooks: set[str] = set()
        self._alerts: set[str] = set()
        self._dedupes: set[str] = set()
        self._deliveries: set[str] = set()
        self._grants: set[tuple[str, str]] = set()
        self._reservations: set[str] = set()
        self.lines = 0

    def read(self, number: int, raw: bytes) -> DumpItem | None:
        """The record of line ``number`` (``None`` for the header, the end, a blank line).

        Raises:
            ValidationFailed: the line is not valid where it stands.
        """
        self.lines = number
        if not raw.strip():
            return None
        if self._ended:
            raise _problem(number, "", "a line after the end line", "order")
        try:
            line = _ANY_LINE.validate_json(raw)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"/{part}" for part in first["loc"][1:])
            raise _problem(number, where, first["msg"], first["type"]) from exc
        if self._header is None:
            self._first(number, line)
            return None
        if isinstance(line, HeaderLine):
            raise _problem(number, "/kind", "a second header", "order")
        if isinstance(line, EndLine):
            self._end(number, line)
            return None
        return self._record(number, line)

    def _first(self, number: int, line: Any) -> None:
        if not isinstance(line, HeaderLine):
            msg = "a dump starts with its header line (is this a `quotad dump` file?)"
            raise _problem(number, "/kind", msg, "order")
        if line.version > VERSION:
            msg = f"dump format version {line.version} is newer than this quotad reads"
            raise _problem(number, "/version", msg, "version", "restore with a newer quotad")
        self._header = line

    def _end(self, number: int, line: EndLine) -> None:
        said = {kind: count for kind, count in line.counts.items() if count}
        if said != {kind: count for kind, count in self.counts.items() if count}:
            msg = f"the end line counts {dict(line.counts)}, the dump has {dict(self.counts)}"
            raise _problem(number, "/counts", msg, "count")
        self._ended = True

    def _record(self, number: int, line: Any) -> DumpItem:
        rank = _RANK[line.kind]
        if rank < self._rank:
            msg = f"a {line.kind} line after a {KINDS[self._rank]} line"
            raise _problem(number, "/kind", msg, "order", "kinds come in the order dump writes")
        self._rank = rank
        self._check(number, line)
        self.counts[line.kind] += 1
        record: DumpItem = line.record()
        return record

    def _check(self, number: int, line: Any) -> None:  # noqa: PLR0912 (a branch per kind)
        def once(seen: set[str], value: str, what: str) -> None:
            if value in seen:
                raise _problem(number, "", f"{what} {value!r} appears twice", "duplicate")
            seen.add(value)

        def known(seen: set[str], value: str, field: str, what: str) -> None:
            if value not in seen:
                msg = f"{what} {value!r} is not in the dump before this line"
                raise _problem(number, f"/{field}", msg, "unknown")

        if isinstance(line, ServiceLine):
            once(self._services, line.name, "service")
        elif isinstance(line, PlanLine):
            once(self._plans, line.id, "plan")
            for service in line.quotas:
                known(self._services, service, "quotas", "service")
        elif isinstance(line, AccountLine):
            once(self._accounts, line.id, "account")
            known(self._plans, line.plan, "plan", "plan")
        elif isinstance(line, KeyLine):
            once(self._keys, line.id, "key")
            once(self._digests, line.digest, "key digest")
            known(self._accounts, line.account_id, "account_id", "account")
        elif isinstance(line, TotalLine | UsageLine):
            known(self._accounts, line.account_id, "account_id", "account")
            # A window's total history is noted under its limit's name, <service>.<window>.
            known(self._services, line.service.split(".", 1)[0], "service", "service")
        elif isinstance(line, GaugeLine | IdempotencyLine | EventLine):
            known(self._accounts, line.account_id, "account_id", "account")
        elif isinstance(line, TokenLine):
            once(self._tokens, line.id, "operator token")
            once(self._token_names, line.name, "operator token name")
            once(self._token_digests, line.digest, "operator token digest")
        elif isinstance(line, AuditLine):
            once(self._audit, line.id, "audit entry")
        elif isinstance(line, WebhookLine):
            once(self._webhooks, line.id, "webhook endpoint")
        elif isinstance(line, AlertLine):
            once(self._alerts, line.id, "alert event")
            once(self._dedupes, line.dedupe, "alert dedupe key")
        elif isinstance(line, DeliveryLine):
            once(self._deliveries, line.id, "delivery")
            known(self._webhooks, line.endpoint_id, "endpoint_id", "webhook endpoint")
            known(self._alerts, line.event_id, "event_id", "alert event")
        elif isinstance(line, GrantLine):
            known(self._accounts, line.account_id, "account_id", "account")
            if (line.account_id, line.id) in self._grants:
                raise _problem(number, "", f"grant {line.id!r} appears twice", "duplicate")
            self._grants.add((line.account_id, line.id))
        elif isinstance(line, ReservationLine):
            once(self._reservations, line.id, "reservation")
            known(self._accounts, line.account_id, "account_id", "account")

    def finish(self) -> None:
        """Refuse a dump without its header or its end line (cut short)."""
        if self._header is None:
            raise ValidationFailed.at("/line/1", "the dump is empty", "required")
        if not self._ended:
            raise _problem(
                self.lines + 1,
                "",
                "the dump has no end line: it was cut short",
                "required",
                "dump the deployment again",
            )


async def restore_lines(
    ctx: Context, lines: Iterable[bytes], advance: Callable[[int], None] = lambda _n: None
) -> Counter[str]:
    """Restore a dump (JSON Lines) into ``ctx``'s empty store, all or nothing.

    Lines are checked as they are read; on SQL everything is written in one
    transaction, rolled back at the first bad line or failure.

    Args:
        ctx: the context whose (empty) store receives the dump.
        lines: the dump's lines.
        advance: called with each line's length in bytes, for a progress bar.

    Returns:
        How many records of each kind were restored.

    Raises:
        ValidationFailed: a line is not valid (nothing was restored).
        Conflict: the store is not empty, or the dump holds a row twice (nothing was
            restored).
        StorageError: the store failed on the way (nothing was restored).
    """
    reader = DumpReader()

    async def records() -> AsyncIterator[DumpItem]:
        for number, raw in enumerate(lines, start=1):
            advance(len(raw))
            item = reader.read(number, raw)
            if item is not None:
                yield item
        reader.finish()

    try:
        await ctx.counters.restore(records())
    except StorageError as exc:
        msg = f"{exc.note}; nothing was restored (a restore is one transaction)"
        raise StorageError(msg) from exc
    if ctx.cache is not None:
        ctx.cache.clear()
    return reader.counts
