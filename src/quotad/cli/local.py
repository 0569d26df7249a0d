"""``Operator`` over a local store: the service layer, exactly as the ``/admin/v1`` routes.

Imported only by commands that open a store, so that the remote commands start
without SQLAlchemy, Alembic and the rest of the server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from quotad.cli.local_credits import LocalCredits
from quotad.cli.local_webhooks import LocalWebhooks
from quotad.cli.operator import AuditPage, Operator, PlanLimit, View, window
from quotad.domain.credits import Refill
from quotad.domain.limits import Limits
from quotad.domain.models import AccountStatus, Limit, Overrides, Quota
from quotad.domain.operators import Role
from quotad.http import credit_views, views
from quotad.service import admin, quotas, tokens, transfer, usage
from quotad.service.context import Context

if TYPE_CHECKING:
    from quotad.domain.models import Plan, Service

T = TypeVar("T")
PAGE_SIZE = 500


async def every(
    fetch: Callable[[str | None], Awaitable[list[T]]], ident: Callable[[T], str]
) -> list[T]:
    """Every item of a paged listing, fetched ``PAGE_SIZE`` at a time."""
    found: list[T] = []
    after: str | None = None
    while True:
        page = await fetch(after)
        found += page
        if len(page) < PAGE_SIZE:
            return found
        after = ident(page[-1])


def service_view(service: Service) -> View:
    """A service as the API answers it: with its credit price."""
    return {**views.service_view(service), **credit_views.service_credit_fields(service)}


def plan_view(plan: Plan) -> View:
    """A plan as the API answers it: with its refill."""
    return {**views.plan_view(plan), **credit_views.plan_credit_fields(plan)}


class LocalOperator(LocalWebhooks, LocalCredits):
    """The administrative operations over an opened store."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def list_services(self) -> list[View]:
        """Every service."""
        return [service_view(s) for s in await admin.list_services(self.ctx)]

    async def create_service(
        self, name: str, description: str, credit_price: int | None = None
    ) -> View:
        """Register a service."""
        service = await admin.create_service(self.ctx, name, description, credit_price)
        return service_view(service)

    async def update_service(
        self, name: str, description: str | None, credit_price: int | admin.Unchanged | None
    ) -> View:
        """Change a service's description or price."""
        return service_view(await admin.update_service(self.ctx, name, description, credit_price))

    async def list_plans(self) -> list[View]:
        """Every plan, by id."""
        plans = await every(
            lambda after: admin.list_plans(self.ctx, PAGE_SIZE, after), lambda p: p.id
        )
        return [plan_view(p) for p in plans]

    async def get_plan(self, plan_id: str) -> View:
        """One plan."""
        return plan_view(await admin.require_plan(self.ctx, plan_id))

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
        plan = await admin.create_plan(
            self.ctx,
            plan_id,
            {name: Quota(given) for name, given in quotas.items()},
            [Limit(x.name, x.description, x.limit) for x in limits],
            description,
            alert_thresholds,
            refill,
            low_credits,
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
        plan = await admin.replace_plan(
            self.ctx,
            plan_id,
            {name: Quota(given) for name, given in quotas.items()},
            [Limit(x.name, x.description, x.limit) for x in limits],
            description,
            alert_thresholds,
            refill,
            low_credits,
        )
        return plan_view(plan)

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan no account uses."""
        await admin.delete_plan(self.ctx, plan_id)

    async def list_accounts(self, search: str | None) -> list[View]:
        """Every account, by id."""
        accounts = await every(
            lambda after: admin.list_accounts(self.ctx, PAGE_SIZE, after, search), lambda a: a.id
        )
        return [views.account_view(a) for a in accounts]

    async def show_account(self, account_id: str) -> View:
        """An account with today's usage of each quota and resource limit."""
        account = await admin.require_account(self.ctx, account_id)
        lines = [dataclasses.asdict(x) for x in await usage.overview(self.ctx, account)]
        return {**views.account_view(account), "usage": lines}

    async def create_account(
        self,
        account_id: str | None,
        name: str,
        plan: str,
        timezone: str,
        billing_anchor: int | None,
    ) -> View:
        """Create an account."""
        account = await admin.create_account(
            self.ctx,
            account_id,
            name,
            plan,
            timezone,
            Overrides(),
            AccountStatus.ACTIVE,
            billing_anchor,
        )
        return views.account_view(account)

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
        changes = admin.AccountChanges(
            name=name,
            plan_id=plan,
            timezone=timezone,
            status=None if status is None else AccountStatus(status),
            billing_anchor=billing_anchor,
        )
        return views.account_view(await admin.update_account(self.ctx, account_id, changes))

    async def delete_account(self, account_id: str) -> None:
        """Delete an account with its keys, usage and gauges."""
        await admin.delete_account(self.ctx, account_id)

    async def list_keys(self, account_id: str) -> list[View]:
        """An account's keys."""
        keys = await admin.list_keys(self.ctx, account_id)
        now = self.ctx.clock.now()
        return [views.key_view(k, now) for k in keys]

    async def create_key(
        self,
        account_id: str,
        name: str,
        expires_at: datetime | None,
        scopes: list[str] | None,
        limits: dict[str, Limits] | None,
    ) -> View:
        """Issue a key."""
        issued = await admin.create_key(
            self.ctx,
            account_id,
            name,
            expires_at,
            None if scopes is None else tuple(scopes),
            limits,
        )
        return views.issued_key_view(issued, self.ctx.clock.now())

    async def revoke_key(self, key_id: str) -> View:
        """Revoke a key now."""
        return views.key_view(await admin.revoke_key(self.ctx, key_id), self.ctx.clock.now())

    async def rotate_key(self, key_id: str, grace_seconds: int) -> tuple[View, str | None]:
        """Issue a replacement key."""
        issued = await admin.rotate_key(self.ctx, key_id, grace_seconds)
        old = await admin.require_key(self.ctx, key_id)
        view = views.issued_key_view(issued, self.ctx.clock.now())
        return view, views.key_view(old, self.ctx.clock.now())["expires_at"]

    async def usage(
        self, account_id: str, service: str, start: str | None, end: str | None
    ) -> list[View]:
        """Day rows of an account's service."""
        account = await admin.require_account(self.ctx, account_id)
        first, last = window(start, end, usage.today(self.ctx, account))
        rows = await usage.history(self.ctx, account, service, first, last)
        return [views.usage_day_view(row) for row in rows]

    async def account_quotas(self, account_id: str) -> list[View]:
        """Where every limit the account's keys share stands now."""
        account = await admin.require_account(self.ctx, account_id)
        return [views.quota_state_view(x) for x in await quotas.of_account(self.ctx, account)]

    async def adjust(self, account_id: str, service: str, day: str, delta: int) -> View:
        """Correct or credit one day."""
        return views.usage_day_view(await usage.adjust(self.ctx, account_id, service, day, delta))

    def export_lines(self) -> AsyncIterator[bytes]:
        """Every usage day as a JSON line."""
        return transfer.export_lines(self.ctx)

    async def create_token(self, name: str, role: str) -> View:
        """Create a named operator token, shown this once."""
        issued = await tokens.create_token(self.ctx, name, Role(role))
        return {**views.token_view(issued.record, self.ctx.clock.now()), "token": issued.secret}

    async def list_tokens(self) -> list[View]:
        """Every named operator token."""
        now = self.ctx.clock.now()
        return [views.token_view(t, now) for t in await tokens.list_tokens(self.ctx)]

    async def revoke_token(self, token_id: str) -> View:
        """Revoke an operator token now."""
        revoked = await tokens.revoke_token(self.ctx, token_id)
        return views.token_view(revoked, self.ctx.clock.now())

    async def audit(self, query: AuditPage) -> View:
        """A page of the audit log, as ``GET /admin/v1/audit`` pages it."""
        return await views.audit_page(
            self.ctx, query.target, query.actor, query.since, query.limit, query.cursor
        )


if TYPE_CHECKING:  # mypy checks the class against the interface
    _LOCAL: type[Operator] = LocalOperator
