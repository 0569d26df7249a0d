"""Typed results (and a few inputs) of the SDK: plain frozen dataclasses.

Each result has a ``from_json`` that checks the shape it reads; a body of another shape
raises ``UnexpectedResponseError`` rather than a ``KeyError`` deep in user code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from quotad.sdk.errors import UnexpectedResponseError

T = TypeVar("T")

__all__ = [
    "Account",
    "AlertEventInfo",
    "AuditEntry",
    "CreatedWebhook",
    "CreditGrant",
    "Credits",
    "Event",
    "EventsResult",
    "ExportRow",
    "Gauge",
    "IssuedKey",
    "IssuedOperatorToken",
    "Key",
    "LedgerEntry",
    "Limit",
    "LimitState",
    "OperatorToken",
    "Overrides",
    "Page",
    "Plan",
    "Quota",
    "QuotaLimit",
    "QuotaState",
    "Refill",
    "Reservation",
    "Service",
    "UsageDay",
    "UsageLine",
    "Verdict",
    "VerdictCredits",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]


# Field readers: each names the field it failed on ------------------------------------
def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedResponseError(f"expected a JSON object for {what}, got {value!r:.200}")
    return value


def _get(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UnexpectedResponseError(f"field {name!r} is missing or of the wrong type")
    return value


def _str(body: Mapping[str, Any], name: str) -> str:
    value: str = _get(body, name, str)
    return value


def _int(body: Mapping[str, Any], name: str) -> int:
    value: int = _get(body, name, int)
    return value


def _opt_int(body: Mapping[str, Any], name: str) -> int | None:
    return None if body.get(name) is None else _int(body, name)


def _opt_str(body: Mapping[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else _str(body, name)


def _time(body: Mapping[str, Any], name: str) -> datetime:
    try:
        return datetime.fromisoformat(_str(body, name))
    except ValueError as exc:
        raise UnexpectedResponseError(f"field {name!r} is not an RFC 3339 time") from exc


def _opt_time(body: Mapping[str, Any], name: str) -> datetime | None:
    return None if body.get(name) is None else _time(body, name)


def _opt_ints(body: Mapping[str, Any], name: str) -> tuple[int, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    ):
        raise UnexpectedResponseError(f"field {name!r} is not a list of integers")
    return tuple(value)


def _strs(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise UnexpectedResponseError(f"field {name!r} is not a list of strings")
    return tuple(value)


def _date(body: Mapping[str, Any], name: str) -> date:
    try:
        return date.fromisoformat(_str(body, name))
    except ValueError as exc:
        raise UnexpectedResponseError(f"field {name!r} is not a YYYY-MM-DD date") from exc


def list_of(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    """A parser of a JSON array whose items ``parse`` reads."""

    def parse_list(value: Any) -> list[T]:
        if not isinstance(value, list):
            raise UnexpectedResponseError(f"expected a JSON array, got {value!r:.200}")
        return [parse(item) for item in value]

    return parse_list


def items_of(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    """A parser of an unpaged ``{"items": [...]}`` list."""
    read = list_of(parse)
    return lambda value: read(_obj(value, "a list")["items"])


# Results -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Service:
    """A metered product line."""

    name: str
    description: str
    created_at: datetime
    # Credits per unit of cost (SPEC 10); None: the service is not priced.
    credit_price: float | None = field(default=None, kw_only=True)

    @classmethod
    def from_json(cls, value: Any) -> Service:
        """Read a service body."""
        body = _obj(value, "a service")
        return cls(
            _str(body, "name"),
            _str(body, "description"),
            _time(body, "created_at"),
            credit_price=_opt_number(body, "credit_price"),
        )


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """One limit of a service (SPEC 9): a window quota or a rate.

    A window quota counts ``total`` units per calendar ``window`` (``minute`` to
    ``year``; a ``month`` may be anchored on the account's billing day with
    ``anchor="billing"``). A rate (``window`` None) lets ``per_second`` tokens a second
    through, ``total`` being its burst. ``mode`` is ``hard`` (refuse), ``soft`` (let
    through, report the overage) or ``shadow`` (let through, report it would have
    refused); ``per`` is ``account`` (the keys share it) or ``key``.
    """

    total: int
    window: str | None = "day"
    per_second: float | None = None
    anchor: str | None = None
    mode: str = "hard"
    per: str = "account"

    @classmethod
    def rate(
        cls, per_second: float, burst: int, *, mode: str = "hard", per: str = "account"
    ) -> QuotaLimit:
        """A rate: ``per_second`` tokens a second, at most ``burst`` at once."""
        return cls(burst, None, per_second, None, mode, per)

    @property
    def is_rate(self) -> bool:
        """Whether this is a rate rather than a window quota."""
        return self.window is None

    def name(self, service: str) -> str:
        """``<service>.<window>`` or ``<service>.rate``, with ``.key`` when per key."""
        base = f"{service}.{self.window or 'rate'}"
        return f"{base}.key" if self.per == "key" else base

    def to_json(self) -> dict[str, Any]:
        """The request body form (SPEC 9's shape)."""
        body: dict[str, Any]
        if self.window is None:
            body = {"rate": {"per_second": self.per_second, "burst": self.total}}
        else:
            body = {"window": self.window, "total": self.total}
            if self.anchor is not None:
                body["anchor"] = self.anchor
        if self.mode != "hard":
            body["mode"] = self.mode
        if self.per != "account":
            body["per"] = self.per
        return body

    @classmethod
    def from_json(cls, value: Any) -> QuotaLimit:
        """Read one limit of a list."""
        body = _obj(value, "a limit")
        mode = _opt_str(body, "mode") or "hard"
        per = _opt_str(body, "per") or "account"
        if body.get("rate") is not None:
            rate = _obj(body["rate"], "a rate")
            return cls.rate(_number(rate, "per_second"), _int(rate, "burst"), mode=mode, per=per)
        anchor = _opt_str(body, "anchor")
        return cls(
            _int(body, "total"),
            _str(body, "window"),
            None,
            None if anchor == "calendar" else anchor,
            mode,
            per,
        )


def _number(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnexpectedResponseError(f"field {name!r} is missing or not a number")
    return value


def _opt_number(body: Mapping[str, Any], name: str) -> float | None:
    return None if body.get(name) is None else _number(body, name)


@dataclass(frozen=True, slots=True)
class Refill:
    """A plan's credit refill (SPEC 10): ``amount`` credits every ``window``.

    ``mode`` ``reset`` sets the refill grant to ``amount`` each window (what was left of
    the last one expires); ``top_up`` adds what is needed to bring it back to ``amount``.
    ``anchor`` ``"billing"`` starts a month on the account's billing day.
    """

    amount: float
    window: str = "month"
    mode: str = "reset"
    anchor: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body form."""
        body: dict[str, Any] = {"amount": self.amount, "window": self.window, "mode": self.mode}
        if self.anchor is not None:
            body["anchor"] = self.anchor
        return body

    @classmethod
    def from_json(cls, value: Any) -> Refill:
        """Read a plan's refill."""
        body = _obj(value, "a refill")
        anchor = _opt_str(body, "anchor")
        return cls(
            _number(body, "amount"),
            _str(body, "window"),
            _opt_str(body, "mode") or "reset",
            None if anchor == "calendar" else anchor,
        )


@dataclass(frozen=True, slots=True)
class CreditGrant:
    """A grant of credits to an account, with what is left of it (SPEC 10).

    ``kind`` is ``grant`` for an operator's grant and ``refill`` for a plan's; a voided
    grant has ``voided_at`` and nothing left.
    """

    id: str
    amount: float
    remaining: float
    expires_at: datetime | None
    priority: int
    note: str
    created_at: datetime
    kind: str = "grant"
    voided_at: datetime | None = None

    @classmethod
    def from_json(cls, value: Any) -> CreditGrant:
        """Read a grant."""
        body = _obj(value, "a grant")
        return cls(
            id=_str(body, "id"),
            amount=_number(body, "amount"),
            remaining=_number(body, "remaining"),
            expires_at=_opt_time(body, "expires_at"),
            priority=_opt_int(body, "priority") or 0,
            note=_opt_str(body, "note") or "",
            created_at=_time(body, "created_at"),
            kind=_opt_str(body, "kind") or "grant",
            voided_at=_opt_time(body, "voided_at"),
        )


@dataclass(frozen=True, slots=True)
class Credits:
    """An account's balance and every grant it is made of."""

    balance: float
    grants: tuple[CreditGrant, ...]

    @classmethod
    def from_json(cls, value: Any) -> Credits:
        """Read ``GET /admin/v1/accounts/{id}/credits``."""
        body = _obj(value, "a credits answer")
        grants = list_of(CreditGrant.from_json)(body.get("grants"))
        return cls(_number(body, "balance"), tuple(grants))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of an account's credit ledger: ``grant``, ``refill``, ``expiry``, ``debit``,
    ``void`` or ``adjustment``, with the balance after it."""

    id: str
    at: datetime
    kind: str
    grant_id: str | None
    amount: float
    balance_after: float

    @classmethod
    def from_json(cls, value: Any) -> LedgerEntry:
        """Read a ledger entry."""
        body = _obj(value, "a ledger entry")
        return cls(
            _str(body, "id"),
            _time(body, "at"),
            _str(body, "kind"),
            _opt_str(body, "grant_id"),
            _number(body, "amount"),
            _number(body, "balance_after"),
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation after a commit or a cancel: ``committed``, ``cancelled`` or ``expired``.

    ``reserved`` is the cost the verify took, ``committed`` the settled one (0 when given
    back), ``overage`` the units past a hard limit a larger commit recorded anyway.
    """

    id: str
    status: str
    reserved: int
    committed: int | None
    overage: int
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, value: Any) -> Reservation:
        """Read a reservation answer."""
        body = _obj(value, "a reservation")
        return cls(
            _str(body, "id"),
            _str(body, "status"),
            _int(body, "reserved"),
            _opt_int(body, "committed"),
            _opt_int(body, "overage") or 0,
            _opt_time(body, "expires_at"),
        )


@dataclass(frozen=True, slots=True)
class VerdictCredits:
    """What a priced verify debited and the balance it left (credits)."""

    debited: float
    remaining: float

    @classmethod
    def from_json(cls, value: Any) -> VerdictCredits:
        """Read a verdict's ``credits``."""
        body = _obj(value, "a verdict's credits")
        return cls(_number(body, "debited"), _number(body, "remaining"))


def read_limits(value: Any, what: str) -> tuple[QuotaLimit, ...]:
    """A service's limits: version 1's ``{"total": N}`` (a hard daily total) or the list."""
    if isinstance(value, list):
        return tuple(QuotaLimit.from_json(item) for item in value)
    return (QuotaLimit(_int(_obj(value, what), "total")),)


def limits_json(limits: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """A service's limits as a request body: a total (``int``) or a ``Quota`` in version 1's
    form when that is all they are, else the list."""
    if isinstance(limits, int) and not isinstance(limits, bool):
        return {"total": limits, "period": "day"}
    if isinstance(limits, Quota):
        if not limits.limits and limits.total is not None:
            return {"total": limits.total, "period": limits.period}
        limits = limits.limits
    return [limit.to_json() for limit in limits]


@dataclass(frozen=True, slots=True)
class Quota:
    """A service's quota in a plan.

    Version 1's form is ``total`` units per ``period`` (a day), ``limits`` empty. A list
    of limits (SPEC 9) is in ``limits``; ``total`` is then its hard daily total the
    account shares, if it has one.
    """

    total: int | None
    period: str = "day"
    limits: tuple[QuotaLimit, ...] = ()

    @classmethod
    def of(cls, *limits: QuotaLimit) -> Quota:
        """A quota made of ``limits``."""
        return cls(_daily_total(limits), "day", tuple(limits))

    @classmethod
    def from_json(cls, value: Any, what: str = "a quota") -> Quota:
        """Read a plan's quota of one service, in either form."""
        if isinstance(value, list):
            return cls.of(*read_limits(value, what))
        body = _obj(value, what)
        return cls(_int(body, "total"), _opt_str(body, "period") or "day")

    def every_limit(self) -> tuple[QuotaLimit, ...]:
        """Its limits, version 1's form read as one hard daily total."""
        if self.limits or self.total is None:
            return self.limits
        return (QuotaLimit(self.total),)


def _daily_total(limits: tuple[QuotaLimit, ...]) -> int | None:
    for limit in limits:
        if (limit.window, limit.mode, limit.per, limit.anchor) == ("day", "hard", "account", None):
            return limit.total
    return None


@dataclass(frozen=True, slots=True)
class Limit:
    """A resource limit of a plan."""

    name: str
    limit: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """A bundle of quotas (by service) and resource limits."""

    id: str
    description: str
    quotas: dict[str, Quota]
    limits: tuple[Limit, ...]
    created_at: datetime
    # Percentages of a window quota that send quota.threshold; None: the default [80, 100].
    alert_thresholds: tuple[int, ...] | None = field(default=None, kw_only=True)
    # Credits granted every window (SPEC 10); None: no refill.
    refill: Refill | None = field(default=None, kw_only=True)
    # The balance (credits) below which credits.low is sent; None: never.
    low_credits: float | None = field(default=None, kw_only=True)

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """Read a plan body."""
        body = _obj(value, "a plan")
        quotas = {
            name: Quota.from_json(q, name) for name, q in _obj(body.get("quotas"), "quotas").items()
        }
        limits = tuple(
            Limit(_str(item, "name"), _int(item, "limit"), _str(item, "description"))
            for item in (_obj(x, "a limit") for x in _get(body, "limits", list))
        )
        return cls(
            _str(body, "id"),
            _str(body, "description"),
            quotas,
            limits,
            _time(body, "created_at"),
            alert_thresholds=_opt_ints(body, "alert_thresholds"),
            refill=None if body.get("refill") is None else Refill.from_json(body["refill"]),
            low_credits=_opt_number(body, "low_credits"),
        )


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-account replacements of plan quotas (by service) and resource limits (by name).

    A service's override is a daily total (``int``, version 1) or a ``Quota`` of limits,
    each replacing the plan's limit of the same window or rate and ``per``, or added.
    """

    quotas: dict[str, int | Quota] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    # The account's own alert thresholds; None: its plan's.
    alert_thresholds: tuple[int, ...] | None = None
    # The account's own low-credits mark (credits); None: its plan's.
    low_credits: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body form."""
        quotas: dict[str, Any] = {}
        for name, value in self.quotas.items():
            quotas[name] = {"total": value} if isinstance(value, int) else limits_json(value)
        body: dict[str, Any] = {"quotas": quotas, "limits": dict(self.limits)}
        if self.alert_thresholds is not None:
            body["alert_thresholds"] = list(self.alert_thresholds)
        if self.low_credits is not None:
            body["low_credits"] = self.low_credits
        return body

    @classmethod
    def from_json(cls, value: Any) -> Overrides:
        """Read an account's overrides: a daily total as an ``int``, a list as a ``Quota``."""
        raw = _obj(value, "overrides")
        quotas: dict[str, int | Quota] = {}
        for name, item in _obj(raw.get("quotas"), "quotas").items():
            quotas[name] = (
                Quota.of(*read_limits(item, name))
                if isinstance(item, list)
                else _int(_obj(item, name), "total")
            )
        return cls(
            quotas,
            dict(_obj(raw.get("limits"), "limits")),
            _opt_ints(raw, "alert_thresholds"),
            _opt_number(raw, "low_credits"),
        )


@dataclass(frozen=True, slots=True)
class Account:
    """A customer."""

    id: str
    name: str
    plan: str
    timezone: str
    status: str
    overrides: Overrides
    created_at: datetime
    # The day (1-31) its billing months start on; None from a server before SPEC 9.
    billing_anchor: int | None = field(default=None, kw_only=True)

    @classmethod
    def from_json(cls, value: Any) -> Account:
        """Read an account body."""
        body = _obj(value, "an account")
        return cls(
            _str(body, "id"),
            _str(body, "name"),
            _str(body, "plan"),
            _str(body, "timezone"),
            _str(body, "status"),
            Overrides.from_json(body.get("overrides")),
            _time(body, "created_at"),
            billing_anchor=_opt_int(body, "billing_anchor"),
        )


@dataclass(frozen=True, slots=True)
class Key:
    """An API key as listed: never its secret."""

    id: str
    account_id: str
    name: str
    prefix: str
    hint: str
    scopes: tuple[str, ...] | None
    status: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None
    # Its own limits by service (each per key; they only narrow the account's).
    limits: dict[str, tuple[QuotaLimit, ...]] = field(default_factory=dict, kw_only=True)

    @classmethod
    def fields_from_json(cls, value: Any) -> dict[str, Any]:
        """The constructor arguments a key body holds."""
        body = _obj(value, "a key")
        scopes = body.get("scopes")
        own = body.get("limits")
        return {
            "id": _str(body, "id"),
            "account_id": _str(body, "account_id"),
            "name": _str(body, "name"),
            "prefix": _str(body, "prefix"),
            "hint": _str(body, "hint"),
            "scopes": None if scopes is None else tuple(_get(body, "scopes", list)),
            "status": _str(body, "status"),
            "created_at": _time(body, "created_at"),
            "expires_at": _opt_time(body, "expires_at"),
            "revoked_at": _opt_time(body, "revoked_at"),
            "replaced_by": _opt_str(body, "replaced_by"),
            "limits": {}
            if own is None
            else {name: read_limits(item, name) for name, item in _obj(own, "limits").items()},
        }

    @classmethod
    def from_json(cls, value: Any) -> Key:
        """Read a key body."""
        return cls(**cls.fields_from_json(value))


@dataclass(frozen=True, slots=True)
class IssuedKey(Key):
    """A new key with its secret ``key``, which quotad shows this once."""

    key: str = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> IssuedKey:
        """Read a created or rotated key body."""
        return cls(**cls.fields_from_json(value), key=_str(_obj(value, "a key"), "key"))


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """A named operator token as listed: never the token."""

    id: str
    name: str
    role: str
    prefix: str
    hint: str
    status: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def fields_from_json(cls, value: Any) -> dict[str, Any]:
        """The constructor arguments a token body holds."""
        body = _obj(value, "an operator token")
        return {
            "id": _str(body, "id"),
            "name": _str(body, "name"),
            "role": _str(body, "role"),
            "prefix": _str(body, "prefix"),
            "hint": _str(body, "hint"),
            "status": _str(body, "status"),
            "created_at": _time(body, "created_at"),
            "revoked_at": _opt_time(body, "revoked_at"),
        }

    @classmethod
    def from_json(cls, value: Any) -> OperatorToken:
        """Read a token body."""
        return cls(**cls.fields_from_json(value))


@dataclass(frozen=True, slots=True)
class IssuedOperatorToken(OperatorToken):
    """A new operator token with the token itself, which quotad shows this once."""

    token: str = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> IssuedOperatorToken:
        """Read a created token body."""
        body = _obj(value, "an operator token")
        return cls(**cls.fields_from_json(body), token=_str(body, "token"))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of the audit log: who, what, on which record, before and after."""

    id: str
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None

    @classmethod
    def from_json(cls, value: Any) -> AuditEntry:
        """Read an audit entry."""
        body = _obj(value, "an audit entry")
        before, after = body.get("before"), body.get("after")
        return cls(
            id=_str(body, "id"),
            at=_time(body, "at"),
            actor=_str(body, "actor"),
            action=_str(body, "action"),
            target=_str(body, "target"),
            before=None if before is None else dict(_get(body, "before", dict)),
            after=None if after is None else dict(_get(body, "after", dict)),
            request_id=_opt_str(body, "request_id"),
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of a list; pass ``next_cursor`` back to get the next one (``None``: last)."""

    items: list[T]
    next_cursor: str | None

    @classmethod
    def parser(cls, parse: Callable[[Any], T]) -> Callable[[Any], Page[T]]:
        """A parser of ``{"items": [...], "next_cursor": ...}`` whose items ``parse`` reads."""
        read = list_of(parse)

        def parse_page(value: Any) -> Page[T]:
            body = _obj(value, "a page")
            return cls(read(body.get("items")), _opt_str(body, "next_cursor"))

        return parse_page


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook endpoint as listed: a hint of its secret, never the secret."""

    id: str
    url: str
    description: str
    events: tuple[str, ...]
    secret_hint: str
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    # A customer's own endpoint (its account's events only); None: the operator's. Absent
    # from an older server's answer.
    account_id: str | None = field(default=None, kw_only=True)

    @classmethod
    def fields_from_json(cls, value: Any) -> dict[str, Any]:
        """The constructor arguments an endpoint body holds."""
        body = _obj(value, "a webhook endpoint")
        return {
            "id": _str(body, "id"),
            "url": _str(body, "url"),
            "description": _str(body, "description"),
            "events": _strs(body, "events"),
            "secret_hint": _str(body, "secret_hint"),
            "enabled": _get(body, "enabled", bool),
            "disabled_at": _opt_time(body, "disabled_at"),
            "disabled_reason": _opt_str(body, "disabled_reason"),
            "failing_since": _opt_time(body, "failing_since"),
            "created_at": _time(body, "created_at"),
            "updated_at": _time(body, "updated_at"),
            "account_id": _opt_str(body, "account_id"),
        }

    @classmethod
    def from_json(cls, value: Any) -> Webhook:
        """Read an endpoint body."""
        return cls(**cls.fields_from_json(value))


@dataclass(frozen=True, slots=True)
class CreatedWebhook(Webhook):
    """A new or rotated endpoint with its signing ``secret``, which quotad shows this once."""

    secret: str = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> CreatedWebhook:
        """Read the body of a created endpoint or of a rotated secret."""
        body = _obj(value, "a webhook endpoint")
        return cls(**cls.fields_from_json(body), secret=_str(body, "secret"))


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One try at a delivery and what the receiver answered (``status_code`` None: none)."""

    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response: str

    @classmethod
    def from_json(cls, value: Any) -> WebhookAttempt:
        """Read an attempt."""
        body = _obj(value, "an attempt")
        return cls(
            at=_time(body, "at"),
            status_code=_opt_int(body, "status_code"),
            latency_ms=_int(body, "latency_ms"),
            error=_opt_str(body, "error"),
            response=_str(body, "response"),
        )


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint: ``pending``, ``delivered`` or ``failed``, with its attempts."""

    id: str
    event_id: str
    type: str
    status: str
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: tuple[WebhookAttempt, ...]

    @classmethod
    def from_json(cls, value: Any) -> WebhookDelivery:
        """Read a delivery."""
        body = _obj(value, "a delivery")
        return cls(
            id=_str(body, "id"),
            event_id=_str(body, "event_id"),
            type=_str(body, "type"),
            status=_str(body, "status"),
            created_at=_time(body, "created_at"),
            next_attempt_at=_opt_time(body, "next_attempt_at"),
            attempts=tuple(list_of(WebhookAttempt.from_json)(body.get("attempts"))),
        )


@dataclass(frozen=True, slots=True)
class AlertEventInfo:
    """An alert event quotad wrote (and delivered to the endpoints subscribed to its type)."""

    id: str
    type: str
    timestamp: datetime
    account_id: str | None
    data: dict[str, Any]

    @classmethod
    def from_json(cls, value: Any) -> AlertEventInfo:
        """Read an alert event."""
        body = _obj(value, "an alert event")
        return cls(
            id=_str(body, "id"),
            type=_str(body, "type"),
            timestamp=_time(body, "timestamp"),
            account_id=_opt_str(body, "account_id"),
            data=dict(_get(body, "data", dict)),
        )


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One day of a service's quota (``GET /usage/{service}``)."""

    date: date
    used: int
    remaining: int
    total: int

    @classmethod
    def from_json(cls, value: Any) -> UsageDay:
        """Read a usage day."""
        body = _obj(value, "a usage day")
        return cls(
            _date(body, "date"), _int(body, "used"), _int(body, "remaining"), _int(body, "total")
        )


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One resource limit or daily quota of ``GET /v1/usages``."""

    name: str
    description: str
    limit: int
    usage: int

    @classmethod
    def from_json(cls, value: Any) -> UsageLine:
        """Read a usage line."""
        body = _obj(value, "a usage line")
        return cls(
            _str(body, "name"), _str(body, "description"), _int(body, "limit"), _int(body, "usage")
        )


@dataclass(frozen=True, slots=True)
class Gauge:
    """A resource limit's usage after a change."""

    name: str
    usage: int
    limit: int

    @classmethod
    def from_json(cls, value: Any) -> Gauge:
        """Read a gauge body."""
        body = _obj(value, "a gauge")
        return cls(_str(body, "name"), _int(body, "usage"), _int(body, "limit"))


def _rate_of(body: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """``(per_second, None)`` of a rate's entry, ``(None, window)`` of a window's."""
    if body.get("rate") is not None:
        return _number(_obj(body["rate"], "a rate"), "per_second"), None
    return None, _str(body, "window")


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one limit stands after a verify (an entry of ``Verdict.limits``).

    ``window`` names a window quota's window; a rate has ``per_second`` instead, its
    ``total`` the burst and ``used`` the tokens taken. ``overage`` is what a soft limit
    went past its total.
    """

    name: str
    window: str | None
    per_second: float | None
    per: str
    mode: str
    used: int
    remaining: int
    total: int
    reset: datetime | None
    overage: int = 0

    @classmethod
    def from_json(cls, value: Any) -> LimitState:
        """Read a verdict's limit entry."""
        body = _obj(value, "a verdict's limit")
        return cls(_str(body, "name"), *_standing(body), _opt_int(body, "overage") or 0)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One limit with its current use (``GET /v1/quotas`` and the operator's views).

    As ``LimitState``, with the ``service`` and ``exhausted_at``: when the current window
    runs out at its pace so far (None when it will not).
    """

    service: str
    name: str
    window: str | None
    per_second: float | None
    per: str
    mode: str
    used: int
    remaining: int
    total: int
    reset: datetime | None
    exhausted_at: datetime | None

    @classmethod
    def from_json(cls, value: Any) -> QuotaState:
        """Read one limit of a quotas list."""
        body = _obj(value, "a quota")
        return cls(
            _str(body, "service"),
            _str(body, "name"),
            *_standing(body),
            _opt_time(body, "exhausted_at"),
        )


_Standing = tuple[str | None, float | None, str, str, int, int, int, datetime | None]


def _standing(body: Mapping[str, Any]) -> _Standing:
    """Where a limit stands, as both a verdict's entry and a quotas item say it: window,
    per_second, per, mode, used, remaining, total, reset."""
    per_second, window = _rate_of(body)
    return (
        window,
        per_second,
        _opt_str(body, "per") or "account",
        _opt_str(body, "mode") or "hard",
        _int(body, "used"),
        _int(body, "remaining"),
        _int(body, "total"),
        _opt_time(body, "reset"),
    )


def _names(value: Any) -> tuple[str, ...]:
    # SPEC 9 names each shadow limit that would have refused; an entry may be its name or
    # its limit object.
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UnexpectedResponseError("field 'would_refuse' is not a list")
    return tuple(
        item if isinstance(item, str) else _str(_obj(item, "would_refuse"), "name")
        for item in value
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of ``POST /v1/verify``: whether the call may go through, and the quota.

    ``headers`` are the quota headers to pass on to the customer (``RateLimit-Policy``,
    ``RateLimit``, ``X-RateLimit-*``, and ``Retry-After`` when refused). The version-1
    fields describe the limit with the least room; ``limits`` has every limit checked,
    ``refused_by`` names the one that refused, ``overage`` sums what soft limits went
    past their totals and ``would_refuse`` names the shadow limits that would have
    refused (all empty from a server before SPEC 9).
    """

    valid: bool
    code: str
    service: str
    account_id: str | None
    used: int | None
    remaining: int | None
    total: int | None
    reset: datetime | None
    note: str | None = None
    retry_after: int | None = None
    window_seconds: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    limits: tuple[LimitState, ...] = ()
    overage: int = 0
    would_refuse: tuple[str, ...] = ()
    refused_by: str | None = None
    # A priced verify's debit and the balance left (SPEC 10); None for an unpriced one.
    credits: VerdictCredits | None = None
    # A verify with reserve=True: the reservation to commit or cancel, and its deadline.
    reservation_id: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, value: Any, headers: Mapping[str, str] | None = None) -> Verdict:
        """Read a verdict body and the quota headers that came with it."""
        body = _obj(value, "a verdict")
        valid = body.get("valid")
        if not isinstance(valid, bool):
            raise UnexpectedResponseError("field 'valid' is missing or not a boolean")
        quota_headers = {
            name: value for name, value in (headers or {}).items() if _is_quota_header(name)
        }
        return cls(
            valid=valid,
            code=_str(body, "code"),
            # A verify of several items may name no one service.
            service=_opt_str(body, "service") or "",
            account_id=_opt_str(body, "account_id"),
            used=_opt_int(body, "used"),
            remaining=_opt_int(body, "remaining"),
            total=_opt_int(body, "total"),
            reset=_opt_time(body, "reset"),
            note=_opt_str(body, "note"),
            retry_after=_header_int(headers, "retry-after"),
            window_seconds=_policy_window(headers),
            headers=quota_headers,
            limits=tuple(list_of(LimitState.from_json)(body.get("limits") or [])),
            overage=_opt_int(body, "overage") or 0,
            would_refuse=_names(body.get("would_refuse")),
            refused_by=_opt_str(body, "refused_by"),
            credits=None
            if body.get("credits") is None
            else VerdictCredits.from_json(body["credits"]),
            reservation_id=_opt_str(body, "reservation_id"),
            expires_at=_opt_time(body, "expires_at"),
        )


def _is_quota_header(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(("ratelimit", "x-ratelimit-")) or lowered == "retry-after"


def _header_int(headers: Mapping[str, str] | None, name: str) -> int | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _policy_window(headers: Mapping[str, str] | None) -> int | None:
    """``w`` of ``RateLimit-Policy: "insights";q=250;w=86400``."""
    for key, value in (headers or {}).items():
        if key.lower() == "ratelimit-policy":
            for part in value.split(";"):
                name, _, number = part.strip().partition("=")
                if name == "w" and number.isdigit():
                    return int(number)
    return None


@dataclass(frozen=True, slots=True)
class Event:
    """A usage that already happened, to record with ``record_events``."""

    id: str
    account_id: str
    service: str
    amount: int
    timestamp: datetime

    def to_json(self) -> dict[str, Any]:
        """The request body form."""
        if self.timestamp.tzinfo is None:
            msg = "Event.timestamp must be timezone-aware"
            raise ValueError(msg)
        return {
            "id": self.id,
            "account_id": self.account_id,
            "service": self.service,
            "amount": self.amount,
            "timestamp": self.timestamp.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class EventsResult:
    """How many events of a batch were new and how many were already recorded."""

    accepted: int
    duplicates: int

    @classmethod
    def from_json(cls, value: Any) -> EventsResult:
        """Read an events answer."""
        body = _obj(value, "an events answer")
        return cls(_int(body, "accepted"), _int(body, "duplicates"))


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One usage day of the export."""

    account_id: str
    service: str
    date: date
    used: int
    total: int
    rejected: int

    @classmethod
    def from_json(cls, value: Any) -> ExportRow:
        """Read one line of the export."""
        body = _obj(value, "an export line")
        return cls(
            _str(body, "account_id"),
            _str(body, "service"),
            _date(body, "date"),
            _int(body, "used"),
            _int(body, "total"),
            _int(body, "rejected"),
        )
