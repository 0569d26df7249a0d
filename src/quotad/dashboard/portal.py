"""``/portal``: a customer's own usage, limits, alerts and keys (signed in with one of its
API keys).

Every page checks again that the key still works (``portal_session.customer``). No route
takes an account id: a customer can only ever see the account its key belongs to.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import credit_pages, pages, portal_keys, portal_pages, web
from quotad.dashboard.portal_session import AREA, MAX_ID, customer
from quotad.dashboard.sessions import Session, anonymous
from quotad.errors import AuthError, Forbidden
from quotad.service import admin, auth


async def login_form(request: Request) -> Response:
    """The sign-in form (or the usage page, when already signed in)."""
    ctx = web.context(request)
    if await customer(ctx, request) is not None:
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
    fresh = Session(csrf=anonymous().csrf, account_id=caller.account.id, key_id=caller.key.id)
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
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, key, account = found
    view = await pages.usage_view(ctx, account, start, end)
    plan = await admin.require_plan(ctx, account.plan_id)
    return web.render(
        AREA,
        "portal.html",
        session=session,
        view=view,
        plan=plan,
        key_hint=key.hint,
        limits=await portal_pages.limit_rows(ctx, key, account),
        refused=await portal_pages.refused_days(ctx, view),
        credits=await credit_pages.portal_credits(ctx, account),
        amount_text=credit_pages.amount_text,
        when=credit_pages.when,
        nav="usage",
    )


async def usage_csv(request: Request) -> Response:
    """The usage table of a range (default: 30 days) as CSV, one line per service and day."""
    ctx = web.context(request)
    start = web.query(request, "start", web.MAX_DATE) or None
    end = web.query(request, "end", web.MAX_DATE) or None
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, _key, account = found
    view = await pages.usage_view(ctx, account, start, end)
    if view.range_error is not None:
        return web.message(AREA, 400, "Wrong range", view.range_error, session=session)
    body = await portal_pages.usage_csv(ctx, view)
    name = f"usage-{view.start.isoformat()}-{view.end.isoformat()}.csv"
    headers = {**web.HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


async def alerts_page(request: Request) -> Response:
    """The alert events sent about the customer's account, newest first."""
    ctx = web.context(request)
    before = web.query(request, "before", MAX_ID)
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, _key, account = found
    alerts = await portal_pages.alerts_page(ctx, account.id, before or None)
    return web.render(
        AREA, "portal_alerts.html", session=session, account=account, alerts=alerts, nav="alerts"
    )


ROUTES: list[BaseRoute] = [
    Route("/portal", usage_page, methods=["GET"]),
    Route("/portal/usage.csv", usage_csv, methods=["GET"]),
    Route("/portal/alerts", alerts_page, methods=["GET"]),
    Route("/portal/login", login_form, methods=["GET"]),
    Route("/portal/login", login, methods=["POST"]),
    Route("/portal/logout", logout, methods=["POST"]),
    *portal_keys.ROUTES,
]
