"""``/dashboard``: the operator's pages (signed in with an admin or read operator token).

A read session sees every page without the buttons that change anything, and a form it
posts anyway is refused (403). Changes made here are logged with the session's token name
as their actor.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import (
    account_pages,
    credit_pages,
    key_pages,
    pages,
    sessions,
    web,
    webhook_pages,
)
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account
from quotad.domain.operators import Access
from quotad.errors import AuthError, NotFound, QuotadError
from quotad.service import admin, audit, auth
from quotad.service.admin import IssuedKey
from quotad.service.context import Context

AREA: sessions.Area = "dashboard"
MAX_GRACE_SECONDS = 30 * 86_400
NOTICES = {
    "revoked": "The key was revoked; it no longer works.",
    "limits": "The key's own limits were replaced.",
    "granted": "The credits were granted.",
    "voided": "The grant was voided: what was left of it is gone from the balance.",
    "created": "The account was created.",
}
MAX_SEARCH = 200


async def operator_session(ctx: Context, request: Request) -> Session | None:
    """The signed-in operator's session (its token name now the audit's actor), or None."""
    session = await sessions.load(ctx, request, AREA)
    if session is None or not session.operator:
        return None
    audit.acting_as(session.actor)
    return session


def account_url(account_id: str) -> str:
    """The address of an account's page."""
    return f"/dashboard/accounts/{quote(account_id, safe='')}"


async def login_form(request: Request) -> Response:
    """The sign-in form (or the overview, when already signed in)."""
    ctx = web.context(request)
    if await operator_session(ctx, request) is not None:
        return web.redirect("/dashboard")
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return await web.login_page(ctx, request, AREA, notice=notice)


async def login(request: Request) -> Response:
    """Check the operator token and start a session."""
    ctx = web.context(request)
    secret, refusal = await web.check_sign_in(ctx, request, AREA)
    if refusal is not None:
        return refusal
    try:
        signed = await auth.authenticate_operator(ctx, f"Bearer {secret}")
    except AuthError:
        return await web.sign_in_failed(
            ctx, request, AREA, "operator", "That operator token is not valid."
        )
    if not signed.may(Access.READ):  # a verify token meters; it has nothing to see here
        return await web.login_page(
            ctx, request, AREA, 403, "A verify token cannot sign in: use an admin or read token."
        )
    fresh = Session(
        csrf=sessions.anonymous().csrf,
        operator=True,
        actor=signed.name,
        role=signed.role,
        token_id=signed.token_id,
    )
    return await web.signed_in(ctx, request, AREA, fresh, "/dashboard")


async def logout(request: Request) -> Response:
    """End the operator's session."""
    return await web.sign_out(web.context(request), request, AREA)


async def overview(request: Request) -> Response:
    """Today: use per service, accounts near a quota, the busiest accounts."""
    ctx = web.context(request)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    data = await pages.overview(ctx)
    return web.render(AREA, "overview.html", session=session, data=data, nav="overview")


async def accounts(request: Request) -> Response:
    """The accounts with their use, searchable by id or name, filtered by plan and
    status, sorted by id, name, plan or status; admin sessions get the create form."""
    ctx = web.context(request)
    query = account_pages.ListQuery.of(
        *(web.query(request, name, MAX_SEARCH) for name in ("q", "plan", "status", "sort", "page"))
    )
    deleted = web.query(request, "notice", MAX_SEARCH) == "deleted"
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    return web.render(
        AREA,
        "accounts.html",
        session=session,
        listing=await account_pages.accounts_list(ctx, query),
        entered=account_pages.EMPTY_CREATE_FORM,
        create_error=None,
        notice="The account was deleted." if deleted else None,
        nav="accounts",
    )


async def render_account(
    ctx: Context,
    session: Session,
    account: Account,
    start: str | None = None,
    end: str | None = None,
    *,
    status: int = 200,
    new_key: IssuedKey | None = None,
    notice: str | None = None,
    error: str | None = None,
    entered_grant: dict[str, str] | None = None,
    grant_error: str | None = None,
    key_form: key_pages.KeyForm | None = None,
) -> Response:
    """The account page, answering with ``status`` (a form's outcome or refusal)."""
    view = await pages.usage_view(ctx, account, start, end)
    credits = await credit_pages.credits_view(ctx, account)
    keys = await pages.key_rows(ctx, account)
    changes = await pages.audit_rows(ctx, account, [row.key.id for row in keys])
    alerts = await webhook_pages.alerts_page(ctx, account.id)
    return web.render(
        AREA,
        "account.html",
        status,
        session=session,
        view=view,
        keys=keys,
        changes=changes,
        alerts=alerts,
        credits=credits,
        entered_grant=entered_grant
        or {**credit_pages.EMPTY_GRANT_FORM, "once": credit_pages.fresh_once()},
        grant_error=grant_error,
        amount_text=credit_pages.amount_text,
        when=credit_pages.when,
        new_key=new_key,
        key_form=key_form or await key_pages.empty_form(ctx),
        limits_json=key_pages.limits_json,
        notice=notice,
        error=error,
        nav="accounts",
    )


def read_only(session: Session) -> Response:
    """The 403 page refusing a change to a read session (whatever the form it posted)."""
    return web.message(
        AREA,
        403,
        "Read-only session",
        f"You signed in with “{session.actor}”, a read token: it can look, not change.",
        session=session,
    )


def no_account(session: Session, account_id: str) -> Response:
    """The 404 page of an account that does not exist."""
    return web.message(
        AREA, 404, "No such account", f"There is no account “{account_id}”.", session=session
    )


async def account_page(request: Request) -> Response:
    """One account: charts over a range, gauges, keys, changes, recent alerts."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    start = web.query(request, "start", web.MAX_DATE) or None
    end = web.query(request, "end", web.MAX_DATE) or None
    notice = web.query(request, "notice", web.MAX_DATE)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    return await render_account(ctx, session, account, start, end, notice=NOTICES.get(notice))


async def account_form(
    ctx: Context, request: Request
) -> tuple[Session | None, Account | None, dict[str, str], Response | None]:
    """The session, account and form of an action on an account (its keys, its credits),
    or the answer refusing it: no session, a read session, a wrong CSRF token (before
    the account is read), no such account."""
    account_id: str = request.path_params["account_id"]
    form = await web.read_form(request)
    session = await operator_session(ctx, request)
    if session is None:
        return None, None, form, web.to_login(AREA)
    if not session.may_change:
        return session, None, form, read_only(session)
    if not sessions.csrf_ok(session, form.get("csrf")):
        return session, None, form, web.csrf_refused(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return session, None, form, no_account(session, account_id)
    return session, account, form, None


async def _owned_key(ctx: Context, account: Account, key_id: str) -> None:
    key = await ctx.records.get_key(key_id)
    if key is None or key.account_id != account.id:
        raise NotFound(f"account {account.id!r} has no key {key_id!r}")


async def revoke_key(request: Request) -> Response:
    """Revoke a key now."""
    ctx = web.context(request)
    key_id: str = request.path_params["key_id"]
    session, account, _form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    try:
        await _owned_key(ctx, account, key_id)
        await admin.revoke_key(ctx, key_id)
    except QuotadError as exc:
        return await render_account(
            ctx, session, account, status=web.status_of(exc), error=exc.note
        )
    return web.redirect(f"{account_url(account.id)}?notice=revoked")


async def rotate_key(request: Request) -> Response:
    """Issue a replacement key (shown once); the old one works for the chosen grace period."""
    ctx = web.context(request)
    key_id: str = request.path_params["key_id"]
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    text = form.get("grace_seconds", "3600").strip()
    if not text.isdigit() or int(text) > MAX_GRACE_SECONDS:
        return await render_account(
            ctx,
            session,
            account,
            status=400,
            error=f"The grace period is 0 to {MAX_GRACE_SECONDS} seconds.",
        )
    try:
        await _owned_key(ctx, account, key_id)
        issued = await admin.rotate_key(ctx, key_id, int(text))
    except QuotadError as exc:
        return await render_account(
            ctx, session, account, status=web.status_of(exc), error=exc.note
        )
    notice = f"Key {key_id} rotated to {issued.record.id}; the old key works for {text} s more."
    return await render_account(ctx, session, account, status=201, new_key=issued, notice=notice)


async def admin_form(
    ctx: Context, request: Request
) -> tuple[Session | None, dict[str, str], Response | None]:
    """The session and form of a change, or the answer refusing it (no session, a read
    session, a wrong CSRF token)."""
    form = await web.read_form(request)
    session = await operator_session(ctx, request)
    if session is None:
        return None, form, web.to_login(AREA)
    if not session.may_change:
        return session, form, read_only(session)
    if not sessions.csrf_ok(session, form.get("csrf")):
        return session, form, web.csrf_refused(AREA)
    return session, form, None


ROUTES: list[BaseRoute] = [
    Route("/dashboard", overview, methods=["GET"]),
    Route("/dashboard/login", login_form, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/accounts", accounts, methods=["GET"]),
    Route("/dashboard/accounts/{account_id}", account_page, methods=["GET"]),
    Route("/dashboard/accounts/{account_id}/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/dashboard/accounts/{account_id}/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
]
