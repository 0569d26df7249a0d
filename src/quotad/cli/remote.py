"""``Operator`` over a running quotad: the SDK's ``AsyncClient`` on the operator API.

The SDK's typed results are turned back into the API's views (the same functions of
``quotad.http.views`` would render them from the records), so a command prints the same
with ``--url`` as on the local store. The SDK's errors become the contract's
``QuotadError``, reported like local ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import orjson

from quotad.cli.operator import AuditPage, Operator, PlanLimit, View, window
from quotad.cli.remote_credits import RemoteCredits, credits_number
from quotad.cli.remote_webhooks import RemoteWebhooks
from quotad.domain import days
from quotad.domain.credits import Refill, from_micros
from quotad.domain.limits import Limits
from quotad.errors import ErrorCode, FieldError, QuotadError
from quotad.sdk import (
    Account,
    AsyncClient,
    AuditEntry,
    IssuedKey,
    Key,
    Limit,
    OperatorToken,
    Overrides,
    Plan,
    Quota,
    QuotadAPIError,
    QuotaLimit,
    QuotaState,
    Service,
    UsageDay,
    UsageLine,
)
from quotad.sdk import (
    Refill as SdkRefill,
)

if TYPE_CHECKING:
    from quotad.service.admin import Unchanged

T = TypeVar("T")
PAGE_SIZE = 500  # the largest page the API serves


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def service_view(service: Service) -> View:
    """A service, as ``quotad.http.views.service_view``."""
    return {
        "name": service.name,
        "description": service.description,
        "created_at": days.rfc3339(service.created_at),
        "credit_price": service.credit_price,
    }


def _render(limits: tuple[QuotaLimit, ...], v1: dict[str, Any]) -> Any:
    # As quotad.domain.limits.render: version 1's form (``v1``) when a single hard daily
    # total the account shares is all there is, else the list.
    if len(limits) == 1 and limits[0] == QuotaLimit(limits[0].total):
        return v1
    return [limit.to_json() for limit in limits]


def quota_view(quota: Quota) -> Any:
    """A plan's quota of one service, as ``quotad.domain.limits.render``."""
    every = quota.every_limit()
    return _render(every, {"total": every[0].total, "period": "day"} if every else {})


def override_view(limits: tuple[QuotaLimit, ...]) -> Any:
    """An account's override of a service, as ``quotad.domain.limits.render_override``."""
    return _render(limits, {"total": limits[0].total} if limits else {})


def sdk_limits(limits: Limits) -> tuple[QuotaLimit, ...]:
    """The domain's limits as the SDK's (the same JSON both ways)."""
    return tuple(QuotaLimit.from_json(limit.to_json()) for limit in limits)


def sdk_quota(limits: Limits) -> int | tuple[QuotaLimit, ...]:
    """A service's limits to send: version 1's daily total when that is all they are, so
    a server before SPEC 9 takes it too."""
    if len(limits) == 1 and limits[0].is_v1:
        return limits[0].total
    return sdk_limits(limits)


def plan_view(plan: Plan) -> View:
    """A plan, as ``quotad.http.views.plan_view``."""
    return {
        "id": plan.id,
        "description": plan.description,
        "quotas": {k: quota_view(q) for k, q in sorted(plan.quotas.items())},
        "limits": [
            {"name": x.name, "description": x.description, "limit": x.limit} for x in plan.limits
        ],
        "created_at": days.rfc3339(plan.created_at),
        "alert_thresholds": None if plan.alert_thresholds is None else list(plan.alert_thresholds),
        "refill": None if plan.refill is None else plan.refill.to_json(),
        "low_credits": plan.low_credits,
    }


def overrides_view(overrides: Overrides) -> View:
    """An account's overrides, as ``quotad.http.views.overrides_view``: ``alert_thresholds``
    only when set."""
    view: View = {
        "quotas": {
            k: {"total": v} if isinstance(v, int) else override_view(v.every_limit())
            for k, v in sorted(overrides.quotas.items())
        },
        "limits": dict(sorted(overrides.limits.items())),
    }
    if overrides.alert_thresholds is not None:
        view["alert_thresholds"] = list(overrides.alert_thresholds)
    if overrides.low_credits is not None:
        view["low_credits"] = overrides.low_credits
    return view


def account_view(account: Account) -> View:
    """An account, as ``quotad.http.views.account_view``."""
    return {
        "id": account.id,
        "name": account.name,
        "plan": account.plan,
        "timezone": account.timezone,
        "status": account.status,
        "overrides": overrides_view(account.overrides),
        "billing_anchor": account.billing_anchor,
        "created_at": days.rfc3339(account.created_at),
    }


def key_view(key: Key) -> View:
    """A key, never its secret, as ``quotad.http.views.key_view``."""
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "hint": key.hint,
        "scopes": None if key.scopes is None else list(key.scopes),
        "status": key.status,
        "created_at": days.rfc3339(key.created_at),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "replaced_by": key.replaced_by,
        "limits": {k: [x.to_json() for x in v] for k, v in sorted(key.limits.items())},
    }


def issued_key_view(issued: IssuedKey) -> View:
    """A new key with its secret."""
    return {**key_view(issued), "key": issued.key}


def usage_day_view(row: UsageDay) -> View:
    """A usage day."""
    return {
        "used": row.used,
        "remaining": row.remaining,
        "total": row.total,
        "date": row.date.isoformat(),
    }


def quota_state_view(state: QuotaState) -> View:
    """One limit where it stands, as ``quotad.http.views.quota_state_view``."""
    body: View = {"service": state.service, "name": state.name}
    if state.window is None:
        rate = QuotaLimit.rate(state.per_second or 0.0, state.total).to_json()
        body["rate"] = rate["rate"]
    else:
        body["window"] = state.window
    body.update(
        per=state.per,
        mode=state.mode,
        used=state.used,
        remaining=state.remaining,
        total=state.total,
        reset=_time(state.reset),
        exhausted_at=_time(state.exhausted_at),
    )
    return body


def usage_line_view(line: UsageLine) -> View:
    """A line of the usage overview."""
    return {
        "description": line.description,
        "limit": line.limit,
        "name": line.name,
        "usage": line.usage,
    }


def as_quotad_error(exc: QuotadAPIError, hint: str | None = None) -> QuotadError:
    """The server's error answer as the contract's error, to report like a local one
    (with ``hint`` after its note)."""
    try:
        code = ErrorCode(exc.error)
    except ValueError:
        code = ErrorCode.INTERNAL_SERVER_ERROR
    problems = [
        FieldError(item.path, item.message, item.error_type, item.suggestion)
        for item in exc.validation_errors
    ]
    note = exc.note if hint is None else f"{exc.note} ({hint})"
    return QuotadError(note, code, problems)


class RemoteOperator(RemoteWebhooks, RemoteCredits):
    """The administrative operations through the operator API."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def _every(
        self, fetch: Callable[[str | None], Awaitable[Any]], convert: Callable[[Any], View]
    ) -> list[View]:
        found: list[View] = []
        cursor: str | None = None
        while True:
            page = await fetch(cursor)
            found += [convert(item) for item in page.items]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    async def list_services(self) -> list[View]:
        """Every service."""
        return [service_view(s) for s in await self.client.list_services()]

    async def create_service(
        self, name: str, description: str, credit_price: int | None = None
    ) -> View:
        """Register a service."""
        price = None if credit_price is None else credits_number(credit_price)
        return service_view(await self.client.create_service(name, description, credit_price=price))

    async def update_service(
        self, name: str, description: str | None, credit_price: int | Unchanged | None
    ) -> View:
        """Change a service's description or price (``PATCH``)."""
        if credit_price is None or isinstance(credit_price, int):
            price = None if credit_price is None else credits_number(credit_price)
            service = await self.client.update_service(
                name, credit_price=price, description=description
            )
        else:  # unchanged: the field is left out
            service = await self.client.update_service(name, description=description)
        return service_view(service)

    async def list_plans(self) -> list[View]:
        """Every plan, by id."""
        return await self._every(
            lambda cursor: self.client.list_plans(PAGE_SIZE, cursor), plan_view
        )

    async def get_plan(self, plan_id: str) -> View:
        """One plan."""
        return plan_view(await self.client.get_plan(plan_id))

    async def create_plan(
        self,
        plan_id: str,
        quotas: dict[str, Limits],
        limits: list[PlanLimit],
        description: str,
        alert_thresholds: list[int] | None = None,
        refill: Refill | None = None,
        low_credits: int | None = None,
    ) -> View:
        """Create a plan."""
        plan = await self.client.create_plan(
            plan_id,
            {name: sdk_quota(given) for name, given in quotas.items()},
            [Limit(x.name, x.limit, x.description) for x in limits],
            description,
            alert_thresholds=alert_thresholds,
            refill=None if refill is None else SdkRefill.from_json(refill.to_json()),
            low_credits=None if low_credits is None else from_micros(low_credits),
        )
        return plan_view(plan)

    async def replace_plan(
        self,
        plan_id: str,
        quotas: dict[str, Limits],
        limits: list[PlanLimit],
        description: str,
        alert_thresholds: list[int] | None = None,
        refill: Refill | None = None,
        low_credits: int | None = None,
    ) -> View:
        """Replace a plan's content."""
        plan = await self.client.replace_plan(
            plan_id,
            {name: sdk_quota(given) for name, given in quotas.items()},
            [Limit(x.name, x.limit, x.description) for x in limits],
            description,
            alert_thresholds=alert_thresholds,
            refill=None if refill is None else SdkRefill.from_json(refill.to_json()),
            low_credits=None if low_credits is None else from_micros(low_credits),
        )
        return plan_view(plan)

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan no account uses."""
        await self.client.delete_plan(plan_id)

    async def list_accounts(self, search: str | None) -> list[View]:
        """Every account, by id."""
        return await self._every(
            lambda cursor: self.client.list_accounts(PAGE_SIZE, cursor, search), account_view
        )

    async def show_account(self, account_id: str) -> View:
        """An account with today's usage of each quota and resource limit."""
        account = await self.client.get_account(account_id)
        lines = await self.client.account_usages(account_id)
        return {**account_view(account), "usage": [usage_line_view(x) for x in lines]}

    async def create_account(
        self,
        account_id: str | None,
        name: str,
        plan: str,
        timezone: str,
        billing_anchor: int | None,
    ) -> View:
        """Create an account."""
        account = await self.client.create_account(
            name, plan, account_id=account_id, timezone=timezone, billing_anchor=billing_anchor
        )
        return account_view(account)

    async def update_account(
        self,
        account_id: str,
        name: str | None,
        plan: str | None,
        timezone: str | None,
        status: str | None,
        billing_anchor: int | None,
    ) -> View:
        """Change the given fields of an account."""
        account = await self.client.update_account(
            account_id,
            name=name,
            plan=plan,
            timezone=timezone,
            status=cast(Literal["active", "suspended"] | None, status),
            billing_anchor=billing_anchor,
        )
        return account_view(account)

    async def delete_account(self, account_id: str) -> None:
        """Delete an account with its keys, usage and gauges."""
        await self.client.delete_account(account_id)

    async def list_keys(self, account_id: str) -> list[View]:
        """An account's keys."""
        return [key_view(k) for k in await self.client.list_keys(account_id)]

    async def create_key(
        self,
        account_id: str,
        name: str,
        expires_at: datetime | None,
        scopes: list[str] | None,
        limits: dict[str, Limits] | None,
    ) -> View:
        """Issue a key."""
        issued = await self.client.create_key(
            account_id,
            name,
            expires_at=expires_at,
            scopes=scopes,
            limits=None if limits is None else {k: sdk_limits(v) for k, v in limits.items()},
        )
        return issued_key_view(issued)

    async def revoke_key(self, key_id: str) -> View:
        """Revoke a key now."""
        return key_view(await self.client.revoke_key(key_id))

    async def rotate_key(self, key_id: str, grace_seconds: int) -> tuple[View, str | None]:
        """Issue a replacement key."""
        issued = await self.client.rotate_key(key_id, grace_seconds)
        keys = await self.client.list_keys(issued.account_id)
        old = next((k for k in keys if k.id == key_id), None)
        return issued_key_view(issued), None if old is None else _time(old.expires_at)

    async def usage(
        self, account_id: str, service: str, start: str | None, end: str | None
    ) -> list[View]:
        """Day rows of an account's service."""
        account = await self.client.get_account(account_id)
        today = days.local_day(datetime.now(UTC), account.timezone)
        first, last = window(start, end, today)
        rows = await self.client.account_usage(account_id, service, first, last)
        return [usage_day_view(row) for row in rows]

    async def account_quotas(self, account_id: str) -> list[View]:
        """Where every limit the account's keys share stands now."""
        return [quota_state_view(x) for x in await self.client.account_quotas(account_id)]

    async def adjust(self, account_id: str, service: str, day: str, delta: int) -> View:
        """Correct or credit one day."""
        return usage_day_view(await self.client.adjust_usage(account_id, service, day, delta))

    async def export_lines(self) -> AsyncIterator[bytes]:
        """Every usage day as a JSON line, as the server wrote it."""
        for row in await self.client.export():
            line = {
                "account_id": row.account_id,
                "service": row.service,
                "date": row.date.isoformat(),
                "used": row.used,
                "total": row.total,
                "rejected": row.rejected,
            }
            yield orjson.dumps(line) + b"\n"

    async def create_token(self, name: str, role: str) -> View:
        """Create a named operator token, shown this once."""
        issued = await self.client.create_token(name, cast(Any, role))
        return {**token_view(issued), "token": issued.token}

    async def list_tokens(self) -> list[View]:
        """Every named operator token."""
        return [token_view(t) for t in await self.client.list_tokens()]

    async def revoke_token(self, token_id: str) -> View:
        """Revoke an operator token now."""
        return token_view(await self.client.revoke_token(token_id))

    async def audit(self, query: AuditPage) -> View:
        """A page of the audit log."""
        page = await self.client.audit(
            target=query.target,
            actor=query.actor,
            since=query.since,
            limit=query.limit,
            cursor=query.cursor,
        )
        return {"items": [audit_view(e) for e in page.items], "next_cursor": page.next_cursor}


def token_view(token: OperatorToken) -> View:
    """An operator token, as ``quotad.http.views.token_view``."""
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "prefix": token.prefix,
        "hint": token.hint,
        "status": token.status,
        "created_at": days.rfc3339(token.created_at),
        "revoked_at": _time(token.revoked_at),
    }


def audit_view(entry: AuditEntry) -> View:
    """An audit entry, as ``quotad.http.views.audit_view``."""
    return {
        "id": entry.id,
        "at": days.rfc3339(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
    }


if TYPE_CHECKING:  # mypy checks the class against the interface
    _REMOTE: type[Operator] = RemoteOperator
