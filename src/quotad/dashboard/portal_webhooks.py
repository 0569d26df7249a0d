"""``/portal/webhooks``: a customer's own webhook endpoints, which receive its account's
alert events, signed as every delivery is (SPEC 11).

Every change goes through ``quotad.service.webhooks`` as the admin API's do, so it is
audited with the key the customer signed in with as its actor. An endpoint of another
account, or the operator's, is not found (404), whatever its id: a customer never sees
one. A signing secret is shown once, on the page answering its creation or rotation.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import sessions, web, webhook_pages
from quotad.dashboard.portal_session import AREA, MAX_ID, customer
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account, ApiKey
from quotad.domain.webhooks import ACCOUNT_EVENT_TYPES, MAX_ACCOUNT_ENDPOINTS, WebhookEndpoint
from quotad.errors import NotFound, QuotadError
from quotad.service import webhooks
from quotad.service.context import Context

MAX_DESCRIPTION = 500  # as the API's descriptions
EVENT_FIELD = "event:"  # one checkbox per event type: the form keeps one value per name
NOTICES = {
    "deleted": "The endpoint was deleted, with its deliveries.",
    "enabled": "The endpoint is enabled: its pending deliveries are sent again.",
    "disabled": "The endpoint is disabled: nothing is sent to it until it is enabled.",
}
Customer = tuple[Session, ApiKey, Account]


def endpoint_url(endpoint_id: str) -> str:
    """The address of one of the customer's endpoints."""
    return f"/portal/webhooks/{quote(endpoint_id, safe='')}"


def _no_endpoint(session: Session, endpoint_id: str) -> Response:
    return web.message(
        AREA,
        404,
        "No such webhook endpoint",
        f"Your account has no webhook endpoint “{endpoint_id}”.",
        session=session,
    )


async def _list_page(
    ctx: Context,
    found: Customer,
    status: int = 200,
    *,
    created: WebhookEndpoint | None = None,
    entered: dict[str, Any] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    session, _own, account = found
    rows = [webhook_pages.EndpointRow(e) for e in await webhooks.list_own(ctx, account.id)]
    return web.render(
        AREA,
        "portal_webhooks.html",
        status,
        session=session,
        account=account,
        endpoints=rows,
        full=len(rows) >= MAX_ACCOUNT_ENDPOINTS,
        most=MAX_ACCOUNT_ENDPOINTS,
        created=created,
        entered=entered or {"url": "", "description": "", "events": list(ACCOUNT_EVENT_TYPES)},
        event_types=ACCOUNT_EVENT_TYPES,
        event_field=EVENT_FIELD,
        when=webhook_pages.when,
        notice=notice,
        error=error,
        nav="webhooks",
    )


async def _endpoint_page(
    ctx: Context,
    found: Customer,
    endpoint: WebhookEndpoint,
    status: int = 200,
    *,
    before: str | None = None,
    new_secret: str | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    session, _own, account = found
    page = await webhook_pages.deliveries_page(ctx, endpoint.id, before)
    return web.render(
        AREA,
        "portal_webhook.html",
        status,
        session=session,
        account=account,
        row=webhook_pages.EndpointRow(endpoint),
        page=page,
        new_secret=new_secret,
        when=webhook_pages.when,
        notice=notice,
        error=error,
        nav="webhooks",
    )


async def webhooks_page(request: Request) -> Response:
    """The account's endpoints and the form registering one."""
    ctx = web.context(request)
    notice = web.query(request, "notice", MAX_ID)
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    return await _list_page(ctx, found, notice=NOTICES.get(notice))


async def _own_endpoint(ctx: Context, found: Customer, endpoint_id: str) -> WebhookEndpoint | None:
    if len(endpoint_id) > MAX_ID:
        return None
    try:
        return await webhooks.get_own(ctx, found[2].id, endpoint_id)
    except NotFound:
        return None


async def endpoint_page(request: Request) -> Response:
    """One of the account's endpoints: its settings, actions and deliveries (read-only)."""
    ctx = web.context(request)
    endpoint_id: str = request.path_params["endpoint_id"]
    before = web.query(request, "before", MAX_ID)
    notice = web.query(request, "notice", MAX_ID)
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    endpoint = await _own_endpoint(ctx, found, endpoint_id)
    if endpoint is None:
        return _no_endpoint(found[0], endpoint_id)
    return await _endpoint_page(
        ctx, found, endpoint, before=before or None, notice=NOTICES.get(notice)
    )


async def _form(
    ctx: Context, request: Request
) -> tuple[Customer | None, dict[str, str], Response | None]:
    """The customer and form of a change, or the answer refusing it (no session, a wrong
    CSRF token)."""
    form = await web.read_form(request)
    found = await customer(ctx, request)
    if found is None:
        return None, form, web.to_login(AREA)
    if not sessions.csrf_ok(found[0], form.get("csrf")):
        return found, form, web.csrf_refused(AREA)
    return found, form, None


async def _endpoint_form(
    ctx: Context, request: Request
) -> tuple[Customer | None, WebhookEndpoint | None, dict[str, str], Response | None]:
    """As ``_form``, with the account's endpoint the address names (else its 404 page)."""
    found, form, refusal = await _form(ctx, request)
    if refusal is not None or found is None:
        return found, None, form, refusal or web.to_login(AREA)
    endpoint_id: str = request.path_params["endpoint_id"]
    endpoint = await _own_endpoint(ctx, found, endpoint_id)
    if endpoint is None:
        return found, None, form, _no_endpoint(found[0], endpoint_id)
    return found, endpoint, form, None


async def create(request: Request) -> Response:
    """Register an endpoint of the account and show its secret this once."""
    ctx = web.context(request)
    found, form, refusal = await _form(ctx, request)
    if refusal is not None or found is None:
        return refusal or web.to_login(AREA)
    url = form.get("url", "").strip()
    description = form.get("description", "").strip()
    events = [name for name in ACCOUNT_EVENT_TYPES if form.get(EVENT_FIELD + name)]
    entered = {"url": "" if "@" in url else url, "description": description, "events": events}
    if len(description) > MAX_DESCRIPTION:
        error = f"A description has at most {MAX_DESCRIPTION} characters."
        return await _list_page(ctx, found, 400, entered=entered, error=error)
    if not events:
        error = "Choose at least one event to send to the endpoint."
        return await _list_page(ctx, found, 400, entered=entered, error=error)
    try:
        created = await webhooks.create(ctx, url, events, description, account_id=found[2].id)
    except QuotadError as exc:
        return await _list_page(ctx, found, web.status_of(exc), entered=entered, error=exc.note)
    notice = f"Endpoint {created.id} registered."
    return await _list_page(ctx, found, 201, created=created, notice=notice)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    ctx = web.context(request)
    found, endpoint, _fields, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or found is None or endpoint is None:
        return refusal or web.to_login(AREA)
    try:
        await webhooks.update(ctx, endpoint.id, enabled=enabled, disabled_by="its account")
    except QuotadError as exc:
        return await _endpoint_page(ctx, found, endpoint, web.status_of(exc), error=exc.note)
    notice = "enabled" if enabled else "disabled"
    return web.redirect(f"{endpoint_url(endpoint.id)}?notice={notice}")


async def enable(request: Request) -> Response:
    """Enable an endpoint again (its failures forgotten, its pending deliveries resumed)."""
    return await _set_enabled(request, enabled=True)


async def disable(request: Request) -> Response:
    """Disable an endpoint: nothing is sent to it until it is enabled."""
    return await _set_enabled(request, enabled=False)


async def rotate(request: Request) -> Response:
    """A new secret (shown once); the old one signs beside it for the chosen grace period."""
    ctx = web.context(request)
    found, endpoint, form, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or found is None or endpoint is None:
        return refusal or web.to_login(AREA)
    text = form.get("grace_seconds", "0").strip()
    if not text.isdigit() or int(text) > webhooks.MAX_GRACE_SECONDS:
        error = f"The grace period is 0 to {webhooks.MAX_GRACE_SECONDS} seconds."
        return await _endpoint_page(ctx, found, endpoint, 400, error=error)
    try:
        rotated = await webhooks.rotate_secret(ctx, endpoint.id, int(text))
    except QuotadError as exc:
        return await _endpoint_page(ctx, found, endpoint, web.status_of(exc), error=exc.note)
    notice = f"Secret rotated; the old secret also signs for {text} s more."
    return await _endpoint_page(ctx, found, rotated, 201, new_secret=rotated.secret, notice=notice)


async def delete(request: Request) -> Response:
    """Delete an endpoint of the account and its deliveries."""
    ctx = web.context(request)
    found, endpoint, _fields, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or found is None or endpoint is None:
        return refusal or web.to_login(AREA)
    try:
        await webhooks.delete(ctx, endpoint.id)
    except NotFound:
        return _no_endpoint(found[0], endpoint.id)
    return web.redirect("/portal/webhooks?notice=deleted")


_ENDPOINT = "/portal/webhooks/{endpoint_id}"
ROUTES: list[BaseRoute] = [
    Route("/portal/webhooks", webhooks_page, methods=["GET"]),
    Route("/portal/webhooks", create, methods=["POST"]),
    Route(_ENDPOINT, endpoint_page, methods=["GET"]),
    Route(f"{_ENDPOINT}/enable", enable, methods=["POST"]),
    Route(f"{_ENDPOINT}/disable", disable, methods=["POST"]),
    Route(f"{_ENDPOINT}/rotate", rotate, methods=["POST"]),
    Route(f"{_ENDPOINT}/delete", delete, methods=["POST"]),
]
