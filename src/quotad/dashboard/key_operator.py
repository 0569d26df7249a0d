"""The operator's key forms on an account's page: create a key with scopes, an expiry and
its own limits; replace a key's limits; download the keys table.

Every change goes through ``quotad.service.admin`` as the admin API's do (the limits read
by the API's own parser, checked against the account's), so it is audited with the
session's token name as its actor. A read session sees no form, and one it posts anyway
is refused (403) before anything is read. A new key's secret is shown once, on the page
answering its creation.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import key_pages, pages, web
from quotad.dashboard.key_pages import KeyForm, Wrong
from quotad.dashboard.operator import (
    AREA,
    account_form,
    account_url,
    no_account,
    operator_session,
    render_account,
)
from quotad.dashboard.sessions import Session
from quotad.dashboard.table_export import FORMATS, MAX_FORMAT, download, kind_of
from quotad.domain import days
from quotad.domain.models import Account, ApiKey
from quotad.errors import QuotadError, ValidationFailed
from quotad.service import admin
from quotad.service.context import Context

MAX_ID = 200  # a key id in a page's address (longer ones are refused, not looked up)

KEY_FIELDS = (
    "id",
    "name",
    "hint",
    "status",
    "scopes",
    "created_at",
    "expires_at",
    "revoked_at",
    "replaced_by",
    "limits",
)


async def create(request: Request) -> Response:
    """Issue a key with the scopes, expiry and limits entered, and show it this once."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    chosen = key_pages.chosen_scopes(form)
    entered = KeyForm(
        await key_pages.scope_choices(ctx),
        name=form.get("name", "").strip(),
        expires_on=form.get("expires_on", "").strip(),
        scopes=chosen,
        limits=form.get("limits", "").strip(),
    )
    try:
        name = key_pages.parse_name(entered.name)
        scopes = key_pages.parse_scopes(chosen)
        expires_at = key_pages.parse_expiry(entered.expires_on, ctx.clock.now())
        own = key_pages.parse_limits(entered.limits)
        issued = await admin.create_key(ctx, account.id, name, expires_at, scopes, own)
    except Wrong as exc:
        return await render_account(
            ctx, session, account, status=400, error=exc.note, key_form=entered
        )
    except ValidationFailed as exc:
        error = key_pages.problems(exc)
        return await render_account(
            ctx, session, account, status=400, error=error, key_form=entered
        )
    notice = f"Key {issued.record.id} created."
    return await render_account(ctx, session, account, status=201, new_key=issued, notice=notice)


def limits_url(account_id: str, key_id: str) -> str:
    """The address of a key's limits page."""
    return f"{account_url(account_id)}/keys/{quote(key_id, safe='')}/limits"


async def _limits_page(
    ctx: Context,
    session: Session,
    account: Account,
    key: ApiKey,
    status: int = 200,
    *,
    entered: str | None = None,
    error: str | None = None,
) -> Response:
    return web.render(
        AREA,
        "key_limits.html",
        status,
        session=session,
        account=account,
        key=key,
        key_status=admin.key_status(key, ctx.clock.now()),
        entered=key_pages.limits_json(key, 2) if entered is None else entered,
        current=key_pages.limits_json(key),
        action=limits_url(account.id, key.id),
        error=error,
        nav="accounts",
    )


def _no_key(session: Session, account: Account, key_id: str) -> Response:
    return web.message(
        AREA,
        404,
        "No such key",
        f"Account “{account.id}” has no key “{key_id}”.",
        session=session,
    )


async def _key_of(ctx: Context, account: Account, key_id: str) -> ApiKey | None:
    key = await ctx.records.get_key(key_id) if len(key_id) <= MAX_ID else None
    return key if key is not None and key.account_id == account.id else None


async def limits_page(request: Request) -> Response:
    """One key's own limits, and (for an admin session) the form replacing them."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    key_id: str = request.path_params["key_id"]
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    key = await _key_of(ctx, account, key_id)
    if key is None:
        return _no_key(session, account, key_id)
    return await _limits_page(ctx, session, account, key)


async def set_limits(request: Request) -> Response:
    """Replace one of the account's keys' own limits (blank: none)."""
    ctx = web.context(request)
    key_id: str = request.path_params["key_id"]
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    key = await _key_of(ctx, account, key_id)
    if key is None:
        return _no_key(session, account, key_id)
    text = form.get("limits", "").strip()
    try:
        await admin.set_key_limits(ctx, key.id, key_pages.parse_limits(text))
    except Wrong as exc:
        return await _limits_page(ctx, session, account, key, 400, entered=text, error=exc.note)
    except QuotadError as exc:
        error = key_pages.problems(exc)
        return await _limits_page(
            ctx, session, account, key, web.status_of(exc), entered=text, error=error
        )
    return web.redirect(f"{account_url(account.id)}?notice=limits")


def _key_row(key: ApiKey, status: str) -> dict[str, Any]:
    """A key as the downloads write it: the admin API's fields, never its secret."""
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "status": status,
        "scopes": None if key.scopes is None else list(key.scopes),
        "created_at": days.rfc3339(key.created_at),
        "expires_at": pages.rfc3339(key.expires_at) or None,
        "revoked_at": pages.rfc3339(key.revoked_at) or None,
        "replaced_by": key.replaced_by,
        "limits": {k: [x.to_json() for x in v] for k, v in sorted(key.limits.items())},
    }


async def keys_download(request: Request) -> Response:
    """The account's keys table as ``?format=csv`` or ``?format=json``."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    kind = kind_of(request.url.path, web.query(request, "format", MAX_FORMAT))
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    if kind not in FORMATS:
        return web.message(
            AREA,
            400,
            "Unknown format",
            "Download the keys as CSV or JSON: keys.csv or keys.json (or ?format=csv|json).",
            session=session,
        )
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    rows = [_key_row(row.key, row.status) for row in await pages.key_rows(ctx, account)]
    return download(rows, KEY_FIELDS, kind, f"keys-{account.id}")


_ACCOUNT = "/dashboard/accounts/{account_id}"
ROUTES: list[BaseRoute] = [
    Route(f"{_ACCOUNT}/keys", create, methods=["POST"]),
    Route(f"{_ACCOUNT}/keys", keys_download, methods=["GET"]),
    # Also by suffix (what the page links to): see ``audit_operator.ROUTES``.
    *(Route(f"{_ACCOUNT}/keys.{kind}", keys_download, methods=["GET"]) for kind in FORMATS),
    Route(f"{_ACCOUNT}/keys/{{key_id}}/limits", limits_page, methods=["GET"]),
    Route(f"{_ACCOUNT}/keys/{{key_id}}/limits", set_limits, methods=["POST"]),
]
