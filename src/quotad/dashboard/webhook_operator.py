"""``/dashboard/webhooks``: the operator's webhook endpoints, their deliveries, the alerts.

Every change goes through ``quotad.service.webhooks`` (so it is audited with the session's
token name as its actor); a read session sees the pages without their forms, and a form
it posts anyway is refused (403) before anything is read from the store. An endpoint's
secret is shown once, on the page answering its creation or rotation, never again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import web, webhook_pages
from quotad.dashboard.operator import AREA, admin_form, operator_session
from quotad.dashboard.sessions import Session
from quotad.domain.webhooks import EVENT_TYPES, WebhookEndpoint
from quotad.errors import QuotadError
from quotad.service import webhooks
from quotad.service.context import Context

MAX_ID = 200  # an id in a page's address (longer ones are refused, not looked up)
MAX_DESCRIPTION = 500  # as the API's descriptions
EVENT_FIELD = "event:"  # one checkbox per event type: the form keeps one value per name
NOTICES = {
    "deleted": "The endpoint was deleted, with its deliveries.",
    "enabled": "The endpoint is enabled: its pending deliveries are sent again.",
    "disabled": "The endpoint is disabled: nothing is sent to it until it is enabled.",
    "resent": "The delivery is pending again; it is sent as soon as a node is free.",
}


def endpoint_url(endpoint_id: str) -> str:
    """The address of an endpoint's page."""
    return f"/dashboard/webhooks/{quote(endpoint_id, safe='')}"


def _shown_again(url: str) -> str:
    """A refused URL, offered again to be corrected, unless it may carry credentials."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return "" if "@" in netloc else url


def _no_endpoint(session: Session, endpoint_id: str) -> Response:
    return web.message(
        AREA,
        404,
        "No such webhook endpoint",
        f"There is no webhook endpoint “{endpoint_id}”.",
        session=session,
    )


async def _list_page(
    ctx: Context,
    session: Session,
    status: int = 200,
    *,
    before: str | None = None,
    created: WebhookEndpoint | None = None,
    entered: dict[str, Any] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    endpoints = [webhook_pages.EndpointRow(e) for e in await webhooks.list_all(ctx)]
    alerts = await webhook_pages.alerts_page(ctx, None, before)
    return web.render(
        AREA,
        "webhooks.html",
        status,
        session=session,
        endpoints=endpoints,
        alerts=alerts,
        created=created,
        entered=entered or {"url": "", "description": "", "events": list(EVENT_TYPES)},
        event_types=EVENT_TYPES,
        event_field=EVENT_FIELD,
        notice=notice,
        error=error,
        nav="webhooks",
    )


async def _endpoint_page(
    ctx: Context,
    session: Session,
    endpoint: WebhookEndpoint,
    status: int = 200,
    *,
    before: str | None = None,
    new_secret: str | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    page = await webhook_pages.deliveries_page(ctx, endpoint.id, before)
    return web.render(
        AREA,
        "webhook.html",
        status,
        session=session,
        row=webhook_pages.EndpointRow(endpoint),
        page=page,
        new_secret=new_secret,
        when=webhook_pages.when,
        notice=notice,
        error=error,
        nav="webhooks",
    )


async def webhooks_page(request: Request) -> Response:
    """The endpoints, the form registering one, and every account's recent alerts."""
    ctx = web.context(request)
    before = web.query(request, "before", MAX_ID)
    notice = web.query(request, "notice", MAX_ID)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    return await _list_page(ctx, session, before=before or None, notice=NOTICES.get(notice))


async def endpoint_page(request: Request) -> Response:
    """One endpoint: its settings, the actions on it, its deliveries and their attempts."""
    ctx = web.context(request)
    endpoint_id: str = request.path_params["endpoint_id"]
    before = web.query(request, "before", MAX_ID)
    notice = web.query(request, "notice", MAX_ID)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    endpoint = await ctx.stores.alerts.get_webhook(endpoint_id)
    if endpoint is None:
        return _no_endpoint(session, endpoint_id)
    return await _endpoint_page(
        ctx, session, endpoint, before=before or None, notice=NOTICES.get(notice)
    )


async def _endpoint_form(
    ctx: Context, request: Request
) -> tuple[Session | None, WebhookEndpoint | None, dict[str, str], Response | None]:
    """As ``operator.admin_form``, with the endpoint the address names (or its 404 page)."""
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return session, None, form, refusal or web.to_login(AREA)
    endpoint_id: str = request.path_params["endpoint_id"]
    endpoint = await ctx.stores.alerts.get_webhook(endpoint_id)
    if endpoint is None:
        return session, None, form, _no_endpoint(session, endpoint_id)
    return session, endpoint, form, None


async def create(request: Request) -> Response:
    """Register an endpoint and show its secret this once."""
    ctx = web.context(request)
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return refusal or web.to_login(AREA)
    url = form.get("url", "").strip()
    description = form.get("description", "").strip()
    events = [name for name in EVENT_TYPES if form.get(EVENT_FIELD + name)]
    entered = {"url": _shown_again(url), "description": description, "events": events}
    if len(description) > MAX_DESCRIPTION:
        error = f"A description has at most {MAX_DESCRIPTION} characters."
        return await _list_page(ctx, session, 400, entered=entered, error=error)
    if not events:
        error = "Choose at least one event to send to the endpoint."
        return await _list_page(ctx, session, 400, entered=entered, error=error)
    try:
        created = await webhooks.create(ctx, url, events, description)
    except QuotadError as exc:
        return await _list_page(ctx, session, web.status_of(exc), entered=entered, error=exc.note)
    notice = f"Endpoint {created.id} created."
    return await _list_page(ctx, session, 201, created=created, notice=notice)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    ctx = web.context(request)
    session, endpoint, _form, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or session is None or endpoint is None:
        return refusal or web.to_login(AREA)
    try:
        await webhooks.update(ctx, endpoint.id, enabled=enabled)
    except QuotadError as exc:
        return await _endpoint_page(ctx, session, endpoint, web.status_of(exc), error=exc.note)
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
    session, endpoint, form, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or session is None or endpoint is None:
        return refusal or web.to_login(AREA)
    text = form.get("grace_seconds", "0").strip()
    if not text.isdigit() or int(text) > webhooks.MAX_GRACE_SECONDS:
        error = f"The grace period is 0 to {webhooks.MAX_GRACE_SECONDS} seconds."
        return await _endpoint_page(ctx, session, endpoint, 400, error=error)
    try:
        rotated = await webhooks.rotate_secret(ctx, endpoint.id, int(text))
    except QuotadError as exc:
        return await _endpoint_page(ctx, session, endpoint, web.status_of(exc), error=exc.note)
    notice = f"Secret rotated; the old secret also signs for {text} s more."
    return await _endpoint_page(
        ctx, session, rotated, 201, new_secret=rotated.secret, notice=notice
    )


async def delete(request: Request) -> Response:
    """Delete an endpoint and its deliveries."""
    ctx = web.context(request)
    session, endpoint, _form, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or session is None or endpoint is None:
        return refusal or web.to_login(AREA)
    try:
        await webhooks.delete(ctx, endpoint.id)
    except QuotadError as exc:
        return await _endpoint_page(ctx, session, endpoint, web.status_of(exc), error=exc.note)
    return web.redirect("/dashboard/webhooks?notice=deleted")


async def resend(request: Request) -> Response:
    """Make a delivery pending again (same ``webhook-id``), to be sent at once."""
    ctx = web.context(request)
    delivery_id: str = request.path_params["delivery_id"]
    session, endpoint, _form, refusal = await _endpoint_form(ctx, request)
    if refusal is not None or session is None or endpoint is None:
        return refusal or web.to_login(AREA)
    try:
        await webhooks.resend(ctx, endpoint.id, delivery_id)
    except QuotadError as exc:
        return await _endpoint_page(ctx, session, endpoint, web.status_of(exc), error=exc.note)
    return web.redirect(f"{endpoint_url(endpoint.id)}?notice=resent")


_ENDPOINT = "/dashboard/webhooks/{endpoint_id}"
ROUTES: list[BaseRoute] = [
    Route("/dashboard/webhooks", webhooks_page, methods=["GET"]),
    Route("/dashboard/webhooks", create, methods=["POST"]),
    Route(_ENDPOINT, endpoint_page, methods=["GET"]),
    Route(f"{_ENDPOINT}/enable", enable, methods=["POST"]),
    Route(f"{_ENDPOINT}/disable", disable, methods=["POST"]),
    Route(f"{_ENDPOINT}/rotate", rotate, methods=["POST"]),
    Route(f"{_ENDPOINT}/delete", delete, methods=["POST"]),
    Route(f"{_ENDPOINT}/deliveries/{{delivery_id}}/resend", resend, methods=["POST"]),
]
