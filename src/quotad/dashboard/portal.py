"""``/portal``: a customer's own usage (signed in with one of its API keys).

The session names the key and its account; every page checks again that the key still
works (not revoked, not expired, account active), so revoking a key also ends the
portal sessions opened with it. No route takes an account id: a customer can only
ever see the account its key belongs to.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import credit_pages, pages, sessions, web
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account, AccountStatus, ApiKey
from quotad.errors import AuthError, Forbidden
from quotad.service import auth
from quotad.service.context import Context

AREA: sessions.Area = "portal"


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


async def login_form(request: Request) -> Response:
    """The sign-in form (or the usage page, when already signed in)."""
    ctx = web.context(request)
    if await _customer(ctx, request) is not None:
        return web.redirect("/portal")
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return await web.login_page(ctx, request, AREA, notice=notice)


async def login(request: Request) -> Response:
    """Check the API key and start a session for its account."""
    ctx = web.context(request)
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


async def logout(request: Request) -> Response:
    """End the customer's session."""
    return await web.sign_out(web.context(request), request, AREA)


async def usage_page(request: Request) -> Response:
    """The signed-in customer's credits, charts and gauges, over a range (default: 30 days)."""
    ctx = web.context(request)
    start = web.query(request, "start", web.MAX_DATE) or None
    end = web.query(request, "end", web.MAX_DATE) or None
    found = await _customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, key, account = found
    view = await pages.usage_view(ctx, account, start, end)
    credits = await credit_pages.portal_credits(ctx, account)
    return web.render(
        AREA,
        "portal.html",
        session=session,
        view=view,
        key_hint=key.hint,
        credits=credits,
        amount_text=credit_pages.amount_text,
        when=credit_pages.when,
    )


ROUTES: list[BaseRoute] = [
    Route("/portal", usage_page, methods=["GET"]),
    Route("/portal/login", login_form, methods=["GET"]),
    Route("/portal/login", login, methods=["POST"]),
    Route("/portal/logout", logout, methods=["POST"]),
]
