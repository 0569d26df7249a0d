"""Managing accounts on the operator dashboard: create, rename, suspend/resume, change
plan, set overrides (limits, alert thresholds, low-credits mark) and delete.

Every change goes through ``quotad.service.admin`` (the API's functions, so it is
audited with the session's token name as its actor). A read session sees the settings
without their forms, and a form it posts anyway is refused (403) before anything is
read; deleting asks for the account's id typed again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import account_pages, sessions, web
from quotad.dashboard.account_pages import SettingsForms
from quotad.dashboard.operator import (
    AREA,
    account_form,
    account_url,
    no_account,
    operator_session,
    read_only,
)
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account, AccountStatus, Overrides
from quotad.errors import QuotadError, ValidationFailed
from quotad.service import admin
from quotad.service.admin import AccountChanges
from quotad.service.context import Context

NOTICES = {
    "renamed": "The account was renamed.",
    "suspended": "The account is suspended: its keys are refused until it is resumed.",
    "resumed": "The account is active again.",
    "plan": "The account's plan was changed.",
    "overrides": "The account's overrides were saved.",
}


def settings_url(account_id: str) -> str:
    """The address of an account's settings page."""
    return f"{account_url(account_id)}/settings"


async def render_settings(
    ctx: Context,
    session: Session,
    account: Account,
    *,
    status: int = 200,
    forms: SettingsForms | None = None,
    notice: str | None = None,
    error: str | None = None,
    overrides_error: str | None = None,
) -> Response:
    """The settings page, its forms showing ``forms`` (what was entered) or the account."""
    return web.render(
        AREA,
        "account_settings.html",
        status,
        session=session,
        account=account,
        forms=forms or SettingsForms.of(account),
        plans=await account_pages.plan_ids(ctx),
        statuses=account_pages.STATUSES,
        notice=notice,
        error=error,
        overrides_error=overrides_error,
        nav="accounts",
    )


async def settings(request: Request) -> Response:
    """An account's settings: name, status, plan, overrides, and the way to delete it."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    notice = web.query(request, "notice", web.MAX_DATE)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    return await render_settings(ctx, session, account, notice=NOTICES.get(notice))


async def _change(
    ctx: Context,
    session: Session,
    account: Account,
    changes: AccountChanges,
    forms: SettingsForms,
    notice: str,
) -> Response:
    """Make ``changes`` (audited ``account.update``) and go back to the settings, or show
    the page again with what was entered and why it was refused."""
    try:
        await admin.update_account(ctx, account.id, changes)
    except QuotadError as exc:
        said = account_pages.problems_of(exc)
        return await render_settings(
            ctx,
            session,
            account,
            status=web.status_of(exc),
            forms=forms,
            error=None if changes.overrides is not None else said,
            overrides_error=said if changes.overrides is not None else None,
        )
    # Redirected, so that reloading the page does not post the form again.
    return web.redirect(f"{settings_url(account.id)}?notice={notice}")


async def rename(request: Request) -> Response:
    """Give the account a new name."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    entered = SettingsForms.of(account)
    entered.name = form.get("name", "")
    try:
        name = account_pages.parse_name(entered.name)
    except ValidationFailed as exc:
        return await render_settings(
            ctx, session, account, status=400, forms=entered, error=exc.note
        )
    return await _change(ctx, session, account, AccountChanges(name=name), entered, "renamed")


async def set_status(request: Request) -> Response:
    """Suspend the account (its keys are refused) or resume it."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    text = form.get("status", "")
    if text not in account_pages.STATUSES:
        return await render_settings(
            ctx, session, account, status=400, error="The status is active or suspended."
        )
    status = AccountStatus(text)
    notice = "resumed" if status is AccountStatus.ACTIVE else "suspended"
    return await _change(
        ctx, session, account, AccountChanges(status=status), SettingsForms.of(account), notice
    )


async def change_plan(request: Request) -> Response:
    """Move the account to another existing plan."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    entered = SettingsForms.of(account)
    entered.plan = form.get("plan", "").strip()
    if not entered.plan:
        return await render_settings(
            ctx, session, account, status=400, forms=entered, error="Choose a plan."
        )
    changes = AccountChanges(plan_id=entered.plan)
    return await _change(ctx, session, account, changes, entered, "plan")


async def set_overrides(request: Request) -> Response:
    """Replace the account's overrides whole, as the API's PATCH does."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    entered = SettingsForms.of(account)
    entered.overrides = {name: form.get(name, "") for name in entered.overrides}
    try:
        overrides: Overrides = account_pages.parse_overrides(form)
    except QuotadError as exc:
        return await render_settings(
            ctx,
            session,
            account,
            status=400,
            forms=entered,
            overrides_error=account_pages.problems_of(exc),
        )
    changes = AccountChanges(overrides=overrides)
    return await _change(ctx, session, account, changes, entered, "overrides")


def _confirm_page(
    session: Session, account: Account, status: int = 200, error: str | None = None
) -> Response:
    return web.render(
        AREA,
        "account_delete.html",
        status,
        session=session,
        account=account,
        error=error,
        nav="accounts",
    )


async def delete_form(request: Request) -> Response:
    """The confirmation step before deleting an account (admin sessions only)."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    if not session.may_change:
        return read_only(session)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    return _confirm_page(session, account)


async def delete(request: Request) -> Response:
    """Delete the account, its keys and its counters once its id is typed again."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    if form.get("confirm", "").strip() != account.id:
        return _confirm_page(
            session,
            account,
            400,
            f"Type the account's id, “{account.id}”, to delete it. Nothing was deleted.",
        )
    try:
        await admin.delete_account(ctx, account.id)
    except QuotadError as exc:
        return _confirm_page(session, account, web.status_of(exc), exc.note)
    return web.redirect("/dashboard/accounts?notice=deleted")


async def create(request: Request) -> Response:
    """Create an account (audited ``account.create``) and go to its page."""
    ctx = web.context(request)
    form = await web.read_form(request)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    if not session.may_change:
        return read_only(session)
    if not sessions.csrf_ok(session, form.get("csrf")):
        return web.csrf_refused(AREA)
    entered = {name: form.get(name, "") for name in account_pages.EMPTY_CREATE_FORM}
    try:
        account_id, name, plan, timezone, anchor = account_pages.parse_create(form)
        account = await admin.create_account(
            ctx, account_id, name, plan, timezone, Overrides(), billing_anchor=anchor
        )
    except QuotadError as exc:
        query = account_pages.ListQuery()
        listing = await account_pages.accounts_list(ctx, query)
        return web.render(
            AREA,
            "accounts.html",
            web.status_of(exc),
            session=session,
            listing=listing,
            entered=entered,
            create_error=account_pages.problems_of(exc),
            nav="accounts",
        )
    return web.redirect(f"{account_url(account.id)}?notice=created")


_ACCOUNT = "/dashboard/accounts/{account_id}"
ROUTES: list[BaseRoute] = [
    Route("/dashboard/accounts", create, methods=["POST"]),
    Route(f"{_ACCOUNT}/settings", settings, methods=["GET"]),
    Route(f"{_ACCOUNT}/name", rename, methods=["POST"]),
    Route(f"{_ACCOUNT}/status", set_status, methods=["POST"]),
    Route(f"{_ACCOUNT}/plan", change_plan, methods=["POST"]),
    Route(f"{_ACCOUNT}/overrides", set_overrides, methods=["POST"]),
    Route(f"{_ACCOUNT}/delete", delete_form, methods=["GET"]),
    Route(f"{_ACCOUNT}/delete", delete, methods=["POST"]),
]
