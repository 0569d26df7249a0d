"""Every endpoint of quotad, written once as a method that builds a ``Call``.

``Client`` and ``AsyncClient`` inherit these methods; the ``endpoint`` decorator makes
each one perform its call with the client's I/O (see ``quotad.sdk._core``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import quote

from quotad.sdk._core import Answer, Call, endpoint, json_with, jsonl_with, nothing
from quotad.sdk._reservations import ReservationScope
from quotad.sdk.models import (
    Account,
    AlertEventInfo,
    AuditEntry,
    CreatedWebhook,
    CreditGrant,
    Credits,
    Event,
    EventsResult,
    ExportRow,
    Gauge,
    IssuedKey,
    IssuedOperatorToken,
    Key,
    LedgerEntry,
    Limit,
    OperatorToken,
    Overrides,
    Page,
    Plan,
    Quota,
    QuotaLimit,
    QuotaState,
    Refill,
    Reservation,
    Service,
    UsageDay,
    UsageLine,
    Verdict,
    Webhook,
    WebhookDelivery,
    items_of,
    limits_json,
    list_of,
)

Status = Literal["active", "suspended"]
# Credits: a JSON number with at most 6 decimals (SPEC 10).
Amount = int | float


class _Unset:
    """The default of an optional field that ``None`` would clear."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()
# A service's quota: a daily total, a ``Quota``, or a list of limits (SPEC 9).
QuotaInput = int | Quota | Sequence[QuotaLimit]


def _gauge_move(
    move: str, account_id: str, name: str, amount: int, idempotency_key: str | None
) -> Call[Gauge]:
    """``POST …/limits/{name}/acquire`` or ``…/release``, under ``idempotency_key`` (else a
    fresh one), so that a retry moves the gauge once."""
    key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
    return Call(
        "POST",
        f"/admin/v1/accounts/{_seg(account_id)}/limits/{_seg(name)}/{move}",
        json_with(Gauge.from_json),
        body={"amount": amount},
        headers={"Idempotency-Key": key},
        idempotent=True,
    )


def _seg(value: str) -> str:
    """One path segment, percent-encoded."""
    return quote(value, safe="")


def _day(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def _params(**values: Any) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _quotas(quotas: Mapping[str, QuotaInput]) -> dict[str, Any]:
    return {name: limits_json(q) for name, q in quotas.items()}


def _key_limits(limits: Mapping[str, Sequence[QuotaLimit]]) -> dict[str, Any]:
    return {name: [limit.to_json() for limit in own] for name, own in limits.items()}


def _items(items: Iterable[tuple[str, int] | Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append({"service": item["service"], "cost": item.get("cost", 1)})
        else:
            service, cost = item
            out.append({"service": service, "cost": cost})
    return out


def _limits(limits: Iterable[Limit]) -> list[dict[str, Any]]:
    return [{"name": x.name, "description": x.description, "limit": x.limit} for x in limits]


def _verdict(answer: Answer) -> Verdict:
    return Verdict.from_json(answer.json(), answer.headers)


class Endpoints:
    """The operator API (``/admin/v1``, verify, events) and the customer API."""

    # Health -----------------------------------------------------------------------
    @endpoint
    def health(self) -> Call[bool]:
        """Whether quotad runs and its store answers (``GET /readyz``; a 503 raises)."""
        return Call("GET", "/readyz", lambda _answer: True, credential="none", idempotent=True)

    # Services ---------------------------------------------------------------------
    @endpoint
    def create_service(
        self, name: str, description: str = "", *, credit_price: Amount | None = None
    ) -> Call[Service]:
        """Register a service (``POST /admin/v1/services``); with ``credit_price`` each unit
        of its cost also debits that many credits."""
        body: dict[str, Any] = {"name": name, "description": description}
        if credit_price is not None:
            body["credit_price"] = credit_price
        return Call("POST", "/admin/v1/services", json_with(Service.from_json), body=body)

    @endpoint
    def update_service(
        self,
        name: str,
        *,
        credit_price: Amount | _Unset | None = UNSET,
        description: str | None = None,
    ) -> Call[Service]:
        """Change a service's ``credit_price`` (``None`` makes it unpriced) or description
        (``PATCH /admin/v1/services/{name}``)."""
        body: dict[str, Any] = _params(description=description)
        if not isinstance(credit_price, _Unset):
            body["credit_price"] = credit_price
        return Call(
            "PATCH",
            f"/admin/v1/services/{_seg(name)}",
            json_with(Service.from_json),
            body=body,
        )

    @endpoint
    def list_services(self) -> Call[list[Service]]:
        """Every service."""
        return Call(
            "GET", "/admin/v1/services", json_with(items_of(Service.from_json)), idempotent=True
        )

    # Plans ------------------------------------------------------------------------
    @endpoint
    def create_plan(
        self,
        plan_id: str,
        quotas: Mapping[str, QuotaInput],
        limits: Sequence[Limit] = (),
        description: str = "",
        *,
        alert_thresholds: Sequence[int] | None = None,
        refill: Refill | None = None,
        low_credits: float | None = None,
    ) -> Call[Plan]:
        """Create a plan: per service a daily total (``{"insights": 250}``) or its limits
        (``{"insights": [QuotaLimit(1000), QuotaLimit.rate(10, 20)]}``), and resource limits;
        ``alert_thresholds`` (percentages, default [80, 100]) send ``quota.threshold``;
        ``refill`` grants credits every window; below ``low_credits`` (credits) the
        balance sends ``credits.low``."""
        body: dict[str, Any] = {
            "id": plan_id,
            "description": description,
            "quotas": _quotas(quotas),
            "limits": _limits(limits),
        }
        if alert_thresholds is not None:
            body["alert_thresholds"] = list(alert_thresholds)
        if refill is not None:
            body["refill"] = refill.to_json()
        if low_credits is not None:
            body["low_credits"] = low_credits
        return Call("POST", "/admin/v1/plans", json_with(Plan.from_json), body=body)

    @endpoint
    def list_plans(self, limit: int = 50, cursor: str | None = None) -> Call[Page[Plan]]:
        """A page of plans, by id."""
        return Call(
            "GET",
            "/admin/v1/plans",
            json_with(Page.parser(Plan.from_json)),
            params=_params(limit=limit, cursor=cursor),
            idempotent=True,
        )

    @endpoint
    def get_plan(self, plan_id: str) -> Call[Plan]:
        """One plan."""
        return Call(
            "GET", f"/admin/v1/plans/{_seg(plan_id)}", json_with(Plan.from_json), idempotent=True
        )

    @endpoint
    def replace_plan(
        self,
        plan_id: str,
        quotas: Mapping[str, QuotaInput],
        limits: Sequence[Limit] = (),
        description: str = "",
        *,
        alert_thresholds: Sequence[int] | None = None,
        refill: Refill | None = None,
        low_credits: float | None = None,
    ) -> Call[Plan]:
        """Replace a plan's quotas, limits, description, alert thresholds (None: the
        defaults), refill (None: none) and low-credits mark (None: none)."""
        body: dict[str, Any] = {
            "description": description,
            "quotas": _quotas(quotas),
            "limits": _limits(limits),
        }
        if alert_thresholds is not None:
            body["alert_thresholds"] = list(alert_thresholds)
        if refill is not None:
            body["refill"] = refill.to_json()
        if low_credits is not None:
            body["low_credits"] = low_credits
        return Call(
            "PUT",
            f"/admin/v1/plans/{_seg(plan_id)}",
            json_with(Plan.from_json),
            body=body,
            idempotent=True,
        )

    @endpoint
    def delete_plan(self, plan_id: str) -> Call[None]:
        """Delete a plan no account uses (``ConflictError`` otherwise)."""
        return Call("DELETE", f"/admin/v1/plans/{_seg(plan_id)}", nothing, idempotent=True)

    # Accounts ---------------------------------------------------------------------
    @endpoint
    def create_account(
        self,
        name: str,
        plan: str,
        *,
        account_id: str | None = None,
        timezone: str = "UTC",
        status: Status = "active",
        overrides: Overrides | None = None,
        billing_anchor: int | None = None,
    ) -> Call[Account]:
        """Create an account (its id is generated unless given; its billing months start on
        ``billing_anchor``, 1-31, default the day it is created)."""
        body: dict[str, Any] = {"name": name, "plan": plan, "timezone": timezone, "status": status}
        if account_id is not None:
            body["id"] = account_id
        if billing_anchor is not None:
            body["billing_anchor"] = billing_anchor
        if overrides is not None:
            body["overrides"] = overrides.to_json()
        return Call("POST", "/admin/v1/accounts", json_with(Account.from_json), body=body)

    @endpoint
    def list_accounts(
        self, limit: int = 50, cursor: str | None = None, search: str | None = None
    ) -> Call[Page[Account]]:
        """A page of accounts, by id, optionally only those whose id or name matches."""
        return Call(
            "GET",
            "/admin/v1/accounts",
            json_with(Page.parser(Account.from_json)),
            params=_params(limit=limit, cursor=cursor, search=search),
            idempotent=True,
        )

    @endpoint
    def get_account(self, account_id: str) -> Call[Account]:
        """One account."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}",
            json_with(Account.from_json),
            idempotent=True,
        )

    @endpoint
    def update_account(
        self,
        account_id: str,
        *,
        name: str | None = None,
        plan: str | None = None,
        timezone: str | None = None,
        status: Status | None = None,
        overrides: Overrides | None = None,
        billing_anchor: int | None = None,
    ) -> Call[Account]:
        """Change the given fields of an account (``PATCH``)."""
        body: dict[str, Any] = _params(name=name, plan=plan, timezone=timezone, status=status)
        if billing_anchor is not None:
            body["billing_anchor"] = billing_anchor
        if overrides is not None:
            body["overrides"] = overrides.to_json()
        return Call(
            "PATCH",
            f"/admin/v1/accounts/{_seg(account_id)}",
            json_with(Account.from_json),
            body=body,
        )

    @endpoint
    def delete_account(self, account_id: str) -> Call[None]:
        """Delete an account with its keys, usage and gauges."""
        return Call("DELETE", f"/admin/v1/accounts/{_seg(account_id)}", nothing, idempotent=True)

    # Keys -------------------------------------------------------------------------
    @endpoint
    def create_key(
        self,
        account_id: str,
        name: str = "",
        *,
        expires_at: datetime | None = None,
        scopes: Sequence[str] | None = None,
        limits: Mapping[str, Sequence[QuotaLimit]] | None = None,
    ) -> Call[IssuedKey]:
        """Issue a key; ``IssuedKey.key`` is its secret, shown this once.

        ``limits`` are the key's own, by service: each counts per key and may only narrow
        the account's.
        """
        body: dict[str, Any] = {"name": name}
        if limits is not None:
            body["limits"] = _key_limits(limits)
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        if scopes is not None:
            body["scopes"] = list(scopes)
        return Call(
            "POST",
            f"/admin/v1/accounts/{_seg(account_id)}/keys",
            json_with(IssuedKey.from_json),
            body=body,
        )

    @endpoint
    def list_keys(self, account_id: str) -> Call[list[Key]]:
        """An account's keys, never their secrets."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/keys",
            json_with(items_of(Key.from_json)),
            idempotent=True,
        )

    @endpoint
    def update_key_limits(
        self, key_id: str, limits: Mapping[str, Sequence[QuotaLimit]]
    ) -> Call[Key]:
        """Replace a key's own limits (``PATCH /admin/v1/keys/{key_id}``; ``{}`` removes them)."""
        return Call(
            "PATCH",
            f"/admin/v1/keys/{_seg(key_id)}",
            json_with(Key.from_json),
            body={"limits": _key_limits(limits)},
        )

    @endpoint
    def key_quotas(self, key_id: str) -> Call[list[QuotaState]]:
        """Every limit one key is held to, with its use (``GET /admin/v1/keys/{id}/quotas``)."""
        return Call(
            "GET",
            f"/admin/v1/keys/{_seg(key_id)}/quotas",
            json_with(list_of(QuotaState.from_json)),
            idempotent=True,
        )

    @endpoint
    def revoke_key(self, key_id: str) -> Call[Key]:
        """Revoke a key now."""
        return Call(
            "DELETE", f"/admin/v1/keys/{_seg(key_id)}", json_with(Key.from_json), idempotent=True
        )

    @endpoint
    def rotate_key(self, key_id: str, grace_seconds: int = 3600) -> Call[IssuedKey]:
        """Issue a replacement key; the old one stays valid for ``grace_seconds``."""
        return Call(
            "POST",
            f"/admin/v1/keys/{_seg(key_id)}/rotate",
            json_with(IssuedKey.from_json),
            body={"grace_seconds": grace_seconds},
        )

    # Operator tokens and the audit log ---------------------------------------------
    @endpoint
    def create_token(
        self, name: str, role: Literal["admin", "read", "verify"]
    ) -> Call[IssuedOperatorToken]:
        """Create a named operator token; ``IssuedOperatorToken.token`` is shown this once."""
        return Call(
            "POST",
            "/admin/v1/tokens",
            json_with(IssuedOperatorToken.from_json),
            body={"name": name, "role": role},
        )

    @endpoint
    def list_tokens(self) -> Call[list[OperatorToken]]:
        """Every named operator token, revoked ones included; never a token."""
        return Call(
            "GET",
            "/admin/v1/tokens",
            json_with(items_of(OperatorToken.from_json)),
            idempotent=True,
        )

    @endpoint
    def revoke_token(self, token_id: str) -> Call[OperatorToken]:
        """Revoke an operator token now."""
        return Call(
            "DELETE",
            f"/admin/v1/tokens/{_seg(token_id)}",
            json_with(OperatorToken.from_json),
            idempotent=True,
        )

    @endpoint
    def audit(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Call[Page[AuditEntry]]:
        """A page of the audit log, newest first (``target`` is ``kind:id``)."""
        return Call(
            "GET",
            "/admin/v1/audit",
            json_with(Page.parser(AuditEntry.from_json)),
            params=_params(
                target=target,
                actor=actor,
                since=None if since is None else since.isoformat(),
                limit=limit,
                cursor=cursor,
            ),
            idempotent=True,
        )

    # Webhooks and alerts (SPEC 11) --------------------------------------------------
    @endpoint
    def create_webhook(
        self, url: str, events: Sequence[str], description: str | None = None
    ) -> Call[CreatedWebhook]:
        """Register a webhook endpoint; its ``secret`` (to verify deliveries with) is in
        this answer only."""
        body: dict[str, Any] = {"url": url, "events": list(events)}
        if description is not None:
            body["description"] = description
        return Call("POST", "/admin/v1/webhooks", json_with(CreatedWebhook.from_json), body=body)

    @endpoint
    def webhooks(self) -> Call[list[Webhook]]:
        """Every webhook endpoint, oldest first (never a secret)."""
        return Call(
            "GET", "/admin/v1/webhooks", json_with(items_of(Webhook.from_json)), idempotent=True
        )

    @endpoint
    def webhook(self, webhook_id: str) -> Call[Webhook]:
        """One webhook endpoint."""
        return Call(
            "GET",
            f"/admin/v1/webhooks/{_seg(webhook_id)}",
            json_with(Webhook.from_json),
            idempotent=True,
        )

    @endpoint
    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Call[Webhook]:
        """Change the given fields of an endpoint; ``enabled=True`` resumes a disabled one."""
        body: dict[str, Any] = _params(url=url, description=description)
        if events is not None:
            body["events"] = list(events)
        if enabled is not None:
            body["enabled"] = enabled
        return Call(
            "PATCH",
            f"/admin/v1/webhooks/{_seg(webhook_id)}",
            json_with(Webhook.from_json),
            body=body,
        )

    @endpoint
    def delete_webhook(self, webhook_id: str) -> Call[None]:
        """Delete an endpoint and its deliveries."""
        return Call("DELETE", f"/admin/v1/webhooks/{_seg(webhook_id)}", nothing, idempotent=True)

    @endpoint
    def rotate_webhook_secret(
        self, webhook_id: str, grace_seconds: int = 0
    ) -> Call[CreatedWebhook]:
        """A new secret signs every delivery from now (with ``grace_seconds``, the previous
        one too, that long); the new ``secret`` is in this answer only."""
        return Call(
            "POST",
            f"/admin/v1/webhooks/{_seg(webhook_id)}/rotate-secret",
            json_with(CreatedWebhook.from_json),
            body={"grace_seconds": grace_seconds},
        )

    @endpoint
    def webhook_deliveries(
        self, webhook_id: str, cursor: str | None = None, limit: int | None = None
    ) -> Call[Page[WebhookDelivery]]:
        """A page of an endpoint's deliveries with their attempts, newest first."""
        return Call(
            "GET",
            f"/admin/v1/webhooks/{_seg(webhook_id)}/deliveries",
            json_with(Page.parser(WebhookDelivery.from_json)),
            params=_params(cursor=cursor, limit=limit),
            idempotent=True,
        )

    @endpoint
    def resend_webhook_delivery(self, webhook_id: str, delivery_id: str) -> Call[WebhookDelivery]:
        """Send a delivery again (same ``webhook-id``) as soon as a node is free to."""
        return Call(
            "POST",
            f"/admin/v1/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}/resend",
            json_with(WebhookDelivery.from_json),
        )

    @endpoint
    def alerts(
        self, account_id: str | None = None, cursor: str | None = None
    ) -> Call[Page[AlertEventInfo]]:
        """A page of the alert events written, newest first, of one account or of all."""
        return Call(
            "GET",
            "/admin/v1/alerts",
            json_with(Page.parser(AlertEventInfo.from_json)),
            params=_params(account_id=account_id, cursor=cursor),
            idempotent=True,
        )

    # Credits (SPEC 10) ---------------------------------------------------------------
    @endpoint
    def grant_credits(
        self,
        account_id: str,
        amount: Amount,
        expires_at: datetime | None = None,
        priority: int | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[CreditGrant]:
        """Grant ``amount`` credits to an account, until ``expires_at`` (None: no expiry);
        a debit draws first from the grant expiring first, then the highest ``priority``.

        Sent with an Idempotency-Key (``idempotency_key``, else a fresh one), so a retry
        after a lost answer grants once; give your own (a payment's id, say) to make a
        repeat of the whole call safe as well.
        """
        key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
        body: dict[str, Any] = {"amount": amount}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        if priority is not None:
            body["priority"] = priority
        if note is not None:
            body["note"] = note
        return Call(
            "POST",
            f"/admin/v1/accounts/{_seg(account_id)}/grants",
            json_with(CreditGrant.from_json),
            body=body,
            headers={"Idempotency-Key": key},
            idempotent=True,
        )

    @endpoint
    def credits(self, account_id: str) -> Call[Credits]:
        """An account's balance and every grant, with what is left of each."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/credits",
            json_with(Credits.from_json),
            idempotent=True,
        )

    @endpoint
    def credit_ledger(
        self, account_id: str, cursor: str | None = None, limit: int | None = None
    ) -> Call[Page[LedgerEntry]]:
        """A page of an account's credit ledger, oldest first."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/credits/ledger",
            json_with(Page.parser(LedgerEntry.from_json)),
            params=_params(cursor=cursor, limit=limit),
            idempotent=True,
        )

    @endpoint
    def void_grant(self, account_id: str, grant_id: str) -> Call[CreditGrant]:
        """Void what is left of a grant (a ``void`` ledger entry); answers the voided grant."""
        return Call(
            "DELETE",
            f"/admin/v1/accounts/{_seg(account_id)}/grants/{_seg(grant_id)}",
            json_with(CreditGrant.from_json),
            idempotent=True,
        )

    # Reservations (SPEC 10) ----------------------------------------------------------
    @endpoint
    def commit_reservation(self, reservation_id: str, cost: int) -> Call[Reservation]:
        """Settle a reservation at the ``cost`` the work actually took: less gives the
        difference back, more consumes the extra (or records it as overage). Committing
        the same cost again answers the same; an expired one raises ``ConflictError``."""
        return Call(
            "POST",
            f"/v1/reservations/{_seg(reservation_id)}/commit",
            json_with(Reservation.from_json),
            body={"cost": cost},
            # The server settles a reservation once: a repeated commit answers the same.
            idempotent=True,
        )

    @endpoint
    def cancel_reservation(self, reservation_id: str) -> Call[Reservation]:
        """Give everything a reservation took back (``DELETE /v1/reservations/{id}``)."""
        return Call(
            "DELETE",
            f"/v1/reservations/{_seg(reservation_id)}",
            json_with(Reservation.from_json),
            idempotent=True,
        )

    def reservation(
        self, key: str, service: str, cost: int, ttl_seconds: int | None = None
    ) -> ReservationScope:
        """Reserve ``cost`` units of ``service`` for a block, commit what it took::

            with client.reservation(key, "llm", cost=4000) as r:   # async with, on AsyncClient
                r.cost = run_model()          # or r.commit(n); none: the reserved cost

        A refusal raises (``CreditsExhaustedError``, ``QuotaExceededError``, ...); a clean
        exit commits, an exception cancels the reservation (everything is given back).
        """
        return ReservationScope(self, key, service, cost, ttl_seconds)

    # Usage ------------------------------------------------------------------------
    @endpoint
    def account_usage(
        self,
        account_id: str,
        service: str,
        start_date: date | str | None = None,
        end_date: date | str | None = None,
    ) -> Call[list[UsageDay]]:
        """Any account's day rows, as ``GET /usage/{service}`` returns them to the customer."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/usage/{_seg(service)}",
            json_with(list_of(UsageDay.from_json)),
            params=_params(start_date=_day(start_date), end_date=_day(end_date)),
            idempotent=True,
        )

    @endpoint
    def account_usages(self, account_id: str) -> Call[list[UsageLine]]:
        """Any account's limits and daily quotas with today's use, as ``GET /v1/usages``."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/usages",
            json_with(list_of(UsageLine.from_json)),
            idempotent=True,
        )

    @endpoint
    def account_quotas(self, account_id: str) -> Call[list[QuotaState]]:
        """Every limit of an account with its use in the current window, as ``quotas``."""
        return Call(
            "GET",
            f"/admin/v1/accounts/{_seg(account_id)}/quotas",
            json_with(list_of(QuotaState.from_json)),
            idempotent=True,
        )

    @endpoint
    def adjust_usage(
        self,
        account_id: str,
        service: str,
        day: date | str,
        delta: int,
        idempotency_key: str | None = None,
    ) -> Call[UsageDay]:
        """Add ``delta`` (negative to credit back) to one day's use; never below zero.

        Sent with an Idempotency-Key (``idempotency_key``, else a fresh one), so a retry
        after a lost answer applies the adjustment once; give your own to make a repeat
        of the whole call (a re-run script, say) safe as well.
        """
        key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
        return Call(
            "POST",
            f"/admin/v1/accounts/{_seg(account_id)}/usage/{_seg(service)}/adjust",
            json_with(UsageDay.from_json),
            body={"date": _day(day), "delta": delta},
            headers={"Idempotency-Key": key},
            idempotent=True,
        )

    @endpoint
    def export(self) -> Call[list[ExportRow]]:
        """Every account's usage days (``GET /admin/v1/export?format=jsonl``)."""
        return Call(
            "GET",
            "/admin/v1/export",
            jsonl_with(ExportRow.from_json),
            params={"format": "jsonl"},
            headers={"Accept": "application/x-ndjson"},
            idempotent=True,
        )

    # Resource limits --------------------------------------------------------------
    @endpoint
    def set_limit(self, account_id: str, name: str, usage: int) -> Call[Gauge]:
        """Set a resource limit's usage."""
        return Call(
            "PUT",
            f"/admin/v1/accounts/{_seg(account_id)}/limits/{_seg(name)}",
            json_with(Gauge.from_json),
            body={"usage": usage},
            idempotent=True,
        )

    @endpoint
    def acquire(
        self, account_id: str, name: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Call[Gauge]:
        """Take ``amount`` units of a limit (``MaxResourcesReachedError`` past it).

        Sent with an Idempotency-Key (``idempotency_key``, else a fresh one): a retry after
        a lost answer moves the gauge once.
        """
        return _gauge_move("acquire", account_id, name, amount, idempotency_key)

    @endpoint
    def release(
        self, account_id: str, name: str, amount: int = 1, idempotency_key: str | None = None
    ) -> Call[Gauge]:
        """Give ``amount`` units of a limit back.

        Sent with an Idempotency-Key (``idempotency_key``, else a fresh one): a retry after
        a lost answer moves the gauge once.
        """
        return _gauge_move("release", account_id, name, amount, idempotency_key)

    # Metering ---------------------------------------------------------------------
    @endpoint
    def verify(
        self,
        key: str,
        service: str | None = None,
        cost: int = 1,
        *,
        items: Iterable[tuple[str, int] | Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
        reserve: bool = False,
        ttl_seconds: int | None = None,
    ) -> Call[Verdict]:
        """Authenticate a customer's key and consume ``cost`` units, all or nothing.

        ``items`` (``[("insights", 2), ("scoring", 1)]``, instead of ``service`` and
        ``cost``) consumes several services in one step: all of them pass or none does.
        A refusal is not an exception: ``Verdict.valid`` is false and ``Verdict.code``
        says why. With an ``idempotency_key`` a repeated call replays the first answer,
        which also makes the call safe to retry.

        With ``reserve=True`` a granted verdict also holds its cost as a reservation
        (``Verdict.reservation_id``, until ``Verdict.expires_at``, ``ttl_seconds`` from now,
        300 by default): settle it with ``commit_reservation`` or ``cancel_reservation``,
        or use ``reservation(...)``, which does both.

        Raises:
            ValueError: both ``service`` and ``items`` are given, or neither; or
                ``ttl_seconds`` without ``reserve``.
        """
        if ttl_seconds is not None and not reserve:
            msg = "ttl_seconds is for a reservation: pass reserve=True too"
            raise ValueError(msg)
        body: dict[str, Any] = {"key": key}
        if items is None:
            if service is None:
                msg = "verify needs a service (or items)"
                raise ValueError(msg)
            body |= {"service": service, "cost": cost}
        elif service is not None:
            msg = "verify takes a service and a cost, or items, not both"
            raise ValueError(msg)
        else:
            body["items"] = _items(items)
        if reserve:
            body["reserve"] = True
            if ttl_seconds is not None:
                body["ttl_seconds"] = ttl_seconds
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return Call(
            "POST",
            "/v1/verify",
            _verdict,
            body=body,
            headers=headers,
            idempotent=idempotency_key is not None,
        )

    @endpoint
    def record_events(self, events: Iterable[Event]) -> Call[EventsResult]:
        """Record usage that already happened (up to 1,000 events, de-duplicated by id)."""
        body = {"events": [event.to_json() for event in events]}
        return Call("POST", "/v1/events", json_with(EventsResult.from_json), body=body)

    # Customer API (the account's API key) -----------------------------------------
    @endpoint
    def usages(self, *, key: str | None = None) -> Call[list[UsageLine]]:
        """``GET /v1/usages``: every limit and daily quota of the key's account."""
        return Call(
            "GET",
            "/v1/usages",
            json_with(list_of(UsageLine.from_json)),
            credential="customer",
            key=key,
            idempotent=True,
        )

    @endpoint
    def quotas(self, *, key: str | None = None) -> Call[list[QuotaState]]:
        """``GET /v1/quotas``: every limit of the key, with its use and ``exhausted_at``."""
        return Call(
            "GET",
            "/v1/quotas",
            json_with(list_of(QuotaState.from_json)),
            credential="customer",
            key=key,
            idempotent=True,
        )

    @endpoint
    def usage(
        self,
        service: str,
        start_date: date | str | None = None,
        end_date: date | str | None = None,
        *,
        key: str | None = None,
        api_version: str | None = None,
    ) -> Call[list[UsageDay]]:
        """``GET /usage/{service}``: one row per day, or ``[]`` when nothing was used."""
        return Call(
            "GET",
            f"/usage/{_seg(service)}",
            json_with(list_of(UsageDay.from_json)),
            params=_params(start_date=_day(start_date), end_date=_day(end_date)),
            headers={} if api_version is None else {"api-version": api_version},
            credential="customer",
            key=key,
            idempotent=True,
        )
