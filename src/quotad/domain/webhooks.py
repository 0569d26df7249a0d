"""Alerts and webhooks (SPEC 11): endpoints, the events they receive, and deliveries.

An **alert event** is written once per ``dedupe`` key (for a quota threshold: the account,
the limit, its window and the threshold), however many nodes see the crossing; each
endpoint subscribed to its type then has one **delivery** of it, tried until a 2xx answer
or until the retry schedule gives up. Endpoints keep their signing secrets (Standard
Webhooks' ``whsec_`` form): unlike API keys, a secret must be kept to sign with it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

QUOTA_THRESHOLD = "quota.threshold"
QUOTA_EXCEEDED = "quota.exceeded"
CREDITS_LOW = "credits.low"
CREDITS_EXHAUSTED = "credits.exhausted"
KEY_EXPIRING = "key.expiring"
WEBHOOK_DISABLED = "webhook.disabled"
EVENT_TYPES = (
    QUOTA_THRESHOLD,
    QUOTA_EXCEEDED,
    CREDITS_LOW,
    CREDITS_EXHAUSTED,
    KEY_EXPIRING,
    WEBHOOK_DISABLED,
)
# What a customer's own endpoint may subscribe to: the events about an account (an
# endpoint's being disabled is the operator's business, and names no account).
ACCOUNT_EVENT_TYPES = tuple(e for e in EVENT_TYPES if e != WEBHOOK_DISABLED)
MAX_ACCOUNT_ENDPOINTS = 5  # a customer's own endpoints, per account

DEFAULT_THRESHOLDS = (80, 100)
MAX_THRESHOLDS = 10

# After the n-th failed attempt, the next one comes RETRY_DELAYS[n-1] later, then every
# RETRY_EVERY, until GIVE_UP_AFTER has passed since the first attempt (SPEC 11).
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=1),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
)
RETRY_EVERY = timedelta(hours=12)
GIVE_UP_AFTER = timedelta(days=3)
# An endpoint whose deliveries have failed this long, without a success, is disabled.
DISABLE_AFTER = timedelta(days=3)
RESPONSE_KEPT = 256  # characters of an answer kept with its attempt


class DeliveryStatus(enum.StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A receiver the operator (or, with ``account_id``, a customer) registered, with the
    event types it is sent."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str  # whsec_…: signs every delivery
    created_at: datetime
    updated_at: datetime
    description: str = ""
    previous_secret: str | None = None  # still signs, besides ``secret``, until ...
    previous_until: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    failing_since: datetime | None = None  # the first failed attempt since the last success
    account_id: str | None = None  # a customer's own endpoint; None: the operator's (every account)

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets a delivery sent at ``now`` is signed with (two during a rotation's grace)."""
        if self.previous_secret and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def receives(self, event_type: str, account_id: str | None) -> bool:
        """Whether an event of this type about ``account_id`` is delivered here: a disabled
        endpoint gets none, a customer's only its own account's (never one about no account)."""
        if self.disabled_at is not None or event_type not in self.events:
            return False
        return self.account_id is None or (account_id is not None and account_id == self.account_id)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something an operator is told about, written once per ``dedupe`` key."""

    id: str  # evt_…: the deliveries' ``webhook-id``
    type: str
    at: datetime
    dedupe: str
    data: dict[str, Any]
    account_id: str | None = None

    def payload(self, timestamp: str) -> dict[str, Any]:
        """The delivered body (SPEC 11): type, id, timestamp and data."""
        return {"type": self.type, "id": self.id, "timestamp": timestamp, "data": self.data}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery, and what the receiver answered."""

    at: datetime
    status_code: int | None  # None: no HTTP answer (refused, timed out, closed)
    latency_ms: int
    error: str | None = None
    response: str = ""  # the first RESPONSE_KEPT characters of the answer

    @property
    def delivered(self) -> bool:
        """A 2xx answer (within the timeout) counts as delivered."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks never to be sent anything again."""
        return self.status_code == 410


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint, with every attempt made."""

    id: str
    endpoint_id: str
    event_id: str
    type: str
    status: DeliveryStatus
    created_at: datetime
    next_at: datetime | None  # when it is next due (pending only)
    attempts: tuple[Attempt, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Claimed:
    """A due delivery one node has claimed: nobody else sends it until ``until``."""

    delivery: Delivery
    event: AlertEvent
    endpoint: WebhookEndpoint
    claim: str
    until: datetime


def settled(delivered: bool, next_at: datetime | None) -> tuple[DeliveryStatus, datetime | None]:
    """A delivery's status after an attempt, and when it is next due (pending only)."""
    if delivered:
        return DeliveryStatus.DELIVERED, None
    if next_at is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.PENDING, next_at


def delivery_id(event_id: str, endpoint_id: str) -> str:
    """A delivery's id: its event's and its endpoint's, so that it is made only once."""
    return f"dlv_{event_id.removeprefix('evt_')}_{endpoint_id.removeprefix('wh_')}"


def next_attempt(attempts: tuple[Attempt, ...]) -> datetime | None:
    """When to try again after failed ``attempts`` (oldest first); None: give up."""
    if not attempts:
        raise ValueError("no attempt was made")
    last = attempts[-1].at
    made = len(attempts)
    delay = RETRY_DELAYS[made - 1] if made <= len(RETRY_DELAYS) else RETRY_EVERY
    due = last + delay
    if due - attempts[0].at > GIVE_UP_AFTER:
        return None
    return due


def threshold_marks(thresholds: tuple[int, ...], total: int) -> tuple[int, ...]:
    """The use at which each threshold (a percentage) of ``total`` is reached."""
    return tuple(math.ceil(total * threshold / 100) for threshold in thresholds)


def crossed(thresholds: tuple[int, ...], total: int, before: int, after: int) -> list[int]:
    """The thresholds that a move of a counter of ``total`` from ``before`` to ``after``
    reaches: each is crossed by exactly one move while the counter only grows."""
    if total <= 0 or after <= before or after * 100 < thresholds[0] * total:
        return []  # the common case, decided without a division
    return [
        threshold
        for threshold, mark in zip(thresholds, threshold_marks(thresholds, total), strict=True)
        if before < mark <= after
    ]


def parse_thresholds(value: object) -> tuple[int, ...]:
    """Validate ``alert_thresholds``: 1 to 10 distinct whole percentages in 1..1000.

    Raises:
        ValueError: with a note saying what is wrong.
    """
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("alert_thresholds must be a non-empty list of percentages")
    if len(value) > MAX_THRESHOLDS:
        raise ValueError(f"alert_thresholds takes at most {MAX_THRESHOLDS} percentages")
    found: list[int] = []
    for raw in value:
        # JSON Schema's integers include 80.0: a whole number however it is written.
        item = int(raw) if isinstance(raw, float) and raw.is_integer() else raw
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1000:
            raise ValueError("each alert threshold is a whole percentage from 1 to 1000")
        if item in found:
            raise ValueError(f"alert threshold {item} is given twice")
        found.append(item)
    return tuple(sorted(found))
