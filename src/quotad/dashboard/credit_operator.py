"""An account's credits on the operator dashboard (SPEC 10): grant, void, the whole ledger
and its CSV.

Every change goes through ``quotad.service.credits`` (the API's functions, so it is
audited with the session's token name as its actor); a read session sees the balance,
the grants and the ledger without their forms, and a form it posts anyway is refused
(403) before anything is read from the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import credit_pages, web
from quotad.dashboard.operator import (
    AREA,
    account_form,
    account_url,
    no_account,
    operator_session,
    render_account,
)
from quotad.domain.credits import to_micros
from quotad.errors import QuotadError
from quotad.service import credits

MAX_PRIORITY = credits.MAX_PRIORITY  # the service's bounds, checked here to keep the form
MAX_NOTE = credits.MAX_NOTE
MAX_CURSOR = 200  # a cursor in a page's address (longer ones are refused, not looked up)
# A file name from an account id: only what every browser and shell takes as it is.
UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


class FormError(ValueError):
    """A grant form the dashboard refuses before calling the service (why, in words)."""


def parse_grant(form: dict[str, str]) -> tuple[int, datetime | None, int, str]:
    """The amount (micro-credits), expiry, priority and note of the grant form.

    The expiry is a date and time in UTC (what ``<input type="datetime-local">`` sends),
    or with an explicit offset. Raises ``FormError``.
    """
    try:
        amount = to_micros(form.get("amount", "").strip())
    except ValueError as exc:
        raise FormError(f"The amount {exc} (credits, at most 6 decimal places).") from None
    expires_at = None
    text = form.get("expires_at", "").strip()
    if text:
        try:
            expires_at = datetime.fromisoformat(text)
        except ValueError:
            raise FormError(
                "The expiry is a date and time in UTC, e.g. 2025-01-31T00:00."
            ) from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
    priority_text = form.get("priority", "").strip() or "0"
    try:
        priority = int(priority_text)
    except ValueError:
        priority = MAX_PRIORITY + 1
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise FormError(f"The priority is a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}.")
    note = form.get("note", "").strip()
    if len(note) > MAX_NOTE:
        raise FormError(f"A note has at most {MAX_NOTE} characters.")
    return amount, expires_at, priority, note


def _said(exc: QuotadError) -> str:
    """What a refusal says: its fields' problems (the service's words), else its note."""
    problems = "; ".join(item.message for item in exc.validation_errors)
    return problems or exc.note


async def grant(request: Request) -> Response:
    """Grant credits to the account (audited ``credits.grant``)."""
    ctx = web.context(request)
    session, account, form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    entered = {name: form.get(name, "") for name in credit_pages.EMPTY_GRANT_FORM}
    # The form's own Idempotency-Key (kept when the form comes back with a refusal): a
    # double click, or a resend after an answer that never came, grants once.
    once = form.get("once", "")[: credit_pages.MAX_ONCE] or None
    entered["once"] = once or credit_pages.fresh_once()
    try:
        amount, expires_at, priority, note = parse_grant(form)
        await credits.grant(ctx, account.id, amount, expires_at, priority, note, once)
    except (FormError, QuotadError) as exc:
        # Said beside the form (far below the page's top on a long account page).
        why, status = (
            (_said(exc), web.status_of(exc)) if isinstance(exc, QuotadError) else (str(exc), 400)
        )
        return await render_account(
            ctx, session, account, status=status, entered_grant=entered, grant_error=why
        )
    # Redirected, so that reloading the page cannot grant the credits twice.
    return web.redirect(f"{account_url(account.id)}?notice=granted#credits-h")


async def void(request: Request) -> Response:
    """Void what is left of a grant (audited ``credits.void``)."""
    ctx = web.context(request)
    grant_id: str = request.path_params["grant_id"]
    session, account, _form, refusal = await account_form(ctx, request)
    if refusal is not None or session is None or account is None:
        return refusal or web.to_login(AREA)
    try:
        await credits.void(ctx, account.id, grant_id)
    except QuotadError as exc:
        return await render_account(
            ctx, session, account, status=web.status_of(exc), error=exc.note
        )
    return web.redirect(f"{account_url(account.id)}?notice=voided#credits-h")


async def ledger(request: Request) -> Response:
    """The whole ledger, oldest first, a page at a time."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    cursor = web.query(request, "cursor", MAX_CURSOR)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    # A cursor naming no entry of this ledger reads past its end (an empty page).
    page = await credit_pages.ledger_page(ctx, account.id, cursor or None)
    return web.render(
        AREA,
        "ledger.html",
        session=session,
        account=account,
        page=page,
        amount_text=credit_pages.amount_text,
        when=credit_pages.when,
        nav="accounts",
    )


async def ledger_csv(request: Request) -> Response:
    """The whole ledger as a CSV download (the API's fields and values)."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    body = await credit_pages.ledger_csv(ctx, account.id)
    name = UNSAFE_IN_NAME.sub("_", account.id)
    headers = {
        **web.HEADERS,
        "Content-Disposition": f'attachment; filename="ledger-{name}.csv"',
    }
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)


_ACCOUNT = "/dashboard/accounts/{account_id}"
ROUTES: list[BaseRoute] = [
    Route(f"{_ACCOUNT}/grants", grant, methods=["POST"]),
    Route(f"{_ACCOUNT}/grants/{{grant_id}}/void", void, methods=["POST"]),
    Route(f"{_ACCOUNT}/credits/ledger", ledger, methods=["GET"]),
    Route(f"{_ACCOUNT}/credits/ledger.csv", ledger_csv, methods=["GET"]),
]
