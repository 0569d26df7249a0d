"""Who is signed in to the portal: a customer's key, checked again on every page.

The session names the key and its account; the key must still work (not revoked, not
expired, account active), so revoking a key also ends the portal sessions opened with
it. What a customer changes is audited with that key as its actor.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from quotad.dashboard import sessions, web
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account, AccountStatus, ApiKey
from quotad.service import audit
from quotad.service.context import Context

AREA: sessions.Area = "portal"
MAX_ID = 200  # an id in a page's address (longer ones are refused, not looked up)
Customer = tuple[Session, ApiKey, Account]  # who signed in: the session, its key, its account


def actor_of(key: ApiKey) -> str:
    """The audit log's actor of what a customer changes: the key it signed in with."""
    return f"customer key {key.id} ({key.hint})"


async def customer(ctx: Context, request: Request) -> Customer | None:
    """The signed-in customer's session, key and account (the key now the audit's
    actor), or None when there is no session or its key no longer works."""
    session = await sessions.load(ctx, request, AREA)
    if session is None or session.key_id is None:
        return None
    key = await ctx.records.get_key(session.key_id)
    now = ctx.clock.now()
    if key is None or key.account_id != session.account_id or key.revoked(now) or key.expired(now):
        return None
    account = await ctx.records.get_account(key.account_id)
    if account is None or account.status is AccountStatus.SUSPENDED:
        return None
    audit.acting_as(actor_of(key))
    return session, key, account


async def customer_form(
    ctx: Context, request: Request
) -> tuple[Customer | None, dict[str, str], Response | None]:
    """The customer and form of a change, or the page refusing it (no session, bad CSRF)."""
    form = await web.read_form(request)
    found = await customer(ctx, request)
    if found is None:
        return None, form, web.to_login(AREA)
    if not sessions.csrf_ok(found[0], form.get("csrf")):
        return found, form, web.csrf_refused(AREA)
    return found, form, None
