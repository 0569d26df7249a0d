"""``/portal``: a customer's own usage (signed in with one of its API keys).

The session names the key and its account; every page checks again that the key still
works (not revoked, not expired, account active), so revoking a key also ends the
portal sessions opened with it. No route takes an account id: a customer can only
ever see the account its key belongs to.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from quotad.api.deps import Ctx
from quotad.dashboard import pages, sessions, web
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account, AccountStatus, ApiKey
from quotad.errors import AuthError, Forbidden
from quotad.service import auth
from quotad.service.context import Context

router = APIRouter(include_in_schema=False)
AREA: sessions.Area = "portal"
DateParam = Annotated[str | None, Query(max_length=32)]


async def _customer(ctx: Context, request: Request) -> tuple[Session, ApiKey, Account] | None:
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
    return session, key, account


@router.get("/portal/login")
async def login_form(request: Request, ctx: Ctx, signed_out: str | None = None) -> Response:
    """The sign-in form (or the usage page, when already signed in)."""
    if await _customer(ctx, request) is not None:
        return web.redirect("/portal")
    notice = "You are signed out." if signed_out else None
    return await web.login_page(ctx, request, AREA, notice=notice)


@router.post("/portal/login")
async def login(request: Request, ctx: Ctx) -> Response:
    """Check the API key and start a session for its account."""
    secret, refusal = await web.check_sign_in(ctx, request, AREA)
    if refusal is not None:
        return refusal
    try:
        caller = await auth.authenticate(ctx, secret)
        auth.require_scope(caller, "usage:read")
    except AuthError as exc:
        return await web.sign_in_failed(ctx, request, AREA, "customer", _why(exc))
    except Forbidden as exc:
        note = exc.note[:1].upper() + exc.note[1:]
        return await web.login_page(ctx, request, AREA, 403, f"{note}.")
    fresh = Session(
        csrf=sessions.anonymous().csrf, account_id=caller.account.id, key_id=caller.key.id
    )
    return await web.signed_in(ctx, request, AREA, fresh, "/portal")


def _why(exc: AuthError) -> str:
    return {
        "MALFORMED_API_KEY": "That is not an API key: check that it was copied whole.",
        "EXPIRED_API_KEY": "That API key has expired.",
    }.get(exc.code.value, "That API key is not valid.")


@router.post("/portal/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    """End the customer's session."""
    return await web.sign_out(ctx, request, AREA)


@router.get("/portal")
async def usage_page(
    request: Request, ctx: Ctx, start: DateParam = None, end: DateParam = None
) -> Response:
    """The signed-in customer's charts and gauges, over a range (default: 30 days)."""
    found = await _customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, key, account = found
    view = await pages.usage_view(ctx, account, start, end)
    return web.render(AREA, "portal.html", session=session, view=view, key_hint=key.hint)
