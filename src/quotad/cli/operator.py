"""What the administrative commands ask of a deployment, written once for both targets.

``Operator`` is the interface: every method answers with the views the API returns
(the JSON bodies of ``/admin/v1``), so a command prints the same thing whether it
ran against a local store (``quotad.cli.local``: the service layer over the opened
store) or a running server (``quotad.cli.remote``: the SDK over the operator API).
Inputs reach it already checked by the API's request schemas.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from quotad.cli.credit_operator import CreditOperator
from quotad.cli.webhook_operator import WebhookOperator
from quotad.errors import ValidationFailed

if TYPE_CHECKING:
    from quotad.domain.credits import Refill
    from quotad.domain.limits import Limits
    from quotad.service.admin import Unchanged

View = dict[str, Any]
DEFAULT_WINDOW_DAYS = 30  # what `quotad usage show` shows without --from
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class PlanLimit:
    """A resource limit of a plan to create."""

    name: str
    limit: int
    description: str


class Operator(WebhookOperator, CreditOperator, Protocol):
    """The administrative operations of a deployment, as views."""

    async def list_services(self) -> list[View]:
        """Every service."""
        ...

    async def create_service(
        self, name: str, description: str, credit_price: int | None = None
    ) -> View:
        """Register a service (``credit_price`` in micro-credits a unit; None: unpriced)."""
        ...

    async def update_service(
        self, name: str, description: str | None, credit_price: int | Unchanged | None
    ) -> View:
        """Change a service's description or price (None: unpriced)."""
        ...

    async def list_plans(self) -> list[View]:
        """Every plan, by id."""
        ...

    async def get_plan(self, plan_id: str) -> View:
        """One plan."""
        ...

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
        """Create a plan: the limits of each service, resource limits, alert thresholds,
        the credits it refills."""
        ...

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
        """Replace a plan's limits, resource limits, alert thresholds, description and
        refill."""
        ...

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan no account uses."""
        ...

    async def list_accounts(self, search: str | None) -> list[View]:
        """Every account (whose id or name contains ``search``), by id."""
        ...

    async def show_account(self, account_id: str) -> View:
        """An account with ``usage``: its limits and quotas with today's use."""
        ...

    async def create_account(
        self,
        account_id: str | None,
        name: str,
        plan: str,
        timezone: str,
        billing_anchor: int | None,
    ) -> View:
        """Create an account (its id generated unless given, its billing day unless given the
        day it is created)."""
        ...

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
        ...

    async def delete_account(self, account_id: str) -> None:
        """Delete an account with its keys, usage and gauges."""
        ...

    async def list_keys(self, account_id: str) -> list[View]:
        """An account's keys, never their secrets."""
        ...

    async def create_key(
        self,
        account_id: str,
        name: str,
        expires_at: datetime | None,
        scopes: list[str] | None,
        limits: dict[str, Limits] | None,
    ) -> View:
        """Issue a key (with its own ``limits`` by service); the view carries its secret as
        ``key``."""
        ...

    async def revoke_key(self, key_id: str) -> View:
        """Revoke a key now."""
        ...

    async def rotate_key(self, key_id: str, grace_seconds: int) -> tuple[View, str | None]:
        """Issue a replacement key; with the old key's new expiry (RFC 3339)."""
        ...

    async def usage(
        self, account_id: str, service: str, start: str | None, end: str | None
    ) -> list[View]:
        """Day rows of an account's service; ``start`` defaults as ``window`` says."""
        ...

    async def account_quotas(self, account_id: str) -> list[View]:
        """Where every limit the account's keys share stands now, as
        ``GET /admin/v1/accounts/{id}/quotas`` answers."""
        ...

    async def adjust(self, account_id: str, service: str, day: str, delta: int) -> View:
        """Add ``delta`` to one day's use (never below zero)."""
        ...

    def export_lines(self) -> AsyncIterator[bytes]:
        """Every usage day as a JSON line (with its newline), as ``GET /admin/v1/export``."""
        ...

    async def create_token(self, name: str, role: str) -> View:
        """Create a named operator token; the view carries it as ``token``, this once."""
        ...

    async def list_tokens(self) -> list[View]:
        """Every named operator token (never a token), revoked ones included."""
        ...

    async def revoke_token(self, token_id: str) -> View:
        """Revoke an operator token now."""
        ...

    async def audit(self, query: AuditPage) -> View:
        """A page of the audit log, newest first: ``items`` and ``next_cursor``."""
        ...


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Which audit entries to list (``cursor`` is a page's ``next_cursor``)."""

    target: str | None
    actor: str | None
    since: datetime | None
    limit: int
    cursor: str | None


def window(start: str | None, end: str | None, today: date) -> tuple[str, str | None]:
    """The ``--from`` and ``--to`` of ``usage show``: without ``--from``, the 30 days up to
    ``--to`` (default: the account's today)."""
    if start is not None:
        return start, end
    if end is None:
        return (today - timedelta(days=DEFAULT_WINDOW_DAYS - 1)).isoformat(), None
    try:
        last = date.fromisoformat(end) if _DATE.match(end) else None
    except ValueError:
        last = None
    if last is None:
        raise ValidationFailed.at(
            "/query/end_date",
            f"{end!r} is not a real date in the form YYYY-MM-DD",
            "format",
            "e.g. 2024-11-01",
        )
    return (last - timedelta(days=DEFAULT_WINDOW_DAYS - 1)).isoformat(), end
