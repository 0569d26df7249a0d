"""``/dashboard/webhooks``: the operator's webhook endpoints, their deliveries, the alerts.

The handlers are ``webhook_handlers``' (shared with the portal); what is the operator's
own is here: it reaches every endpoint, a read session sees the pages without their forms
(a form it posts anyway is refused, 403, before anything is read from the store), and
the list page also shows every account's recent alerts.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import web, webhook_handlers, webhook_pages
from quotad.dashboard.operator import AREA, admin_form, operator_session
from quotad.dashboard.webhook_handlers import EVENT_FIELD, MAX_ID, Viewer, WebhookArea
from quotad.domain.webhooks import EVENT_TYPES, WebhookEndpoint
from quotad.service import webhooks
from quotad.service.context import Context

NOTICES = {
    "deleted": "The endpoint was deleted, with its deliveries.",
    "enabled": "The endpoint is enabled: its pending deliveries are sent again.",
    "disabled": "The endpoint is disabled: nothing is sent to it until it is enabled.",
    "resent": "The delivery is pending again; it is sent as soon as a node is free.",
}


async def _viewer(ctx: Context, request: Request) -> Viewer | None:
    """The signed-in operator, who reaches every endpoint."""
    session = await operator_session(ctx, request)
    return None if session is None else Viewer(session)


async def _change_form(ctx: Context, request: Request) -> webhook_handlers.Form:
    """As ``operator.admin_form`` (a read session is refused), for the shared handlers."""
    session, form, refusal = await admin_form(ctx, request)
    return (None if session is None else Viewer(session)), form, refusal


async def _list_page(
    ctx: Context,
    viewer: Viewer,
    status: int = 200,
    *,
    before: str | None = None,
    created: WebhookEndpoint | None = None,
    entered: dict[str, Any] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    """Every endpoint, the form registering one, and a page of every account's alerts."""
    endpoints = [webhook_pages.EndpointRow(e) for e in await webhooks.list_all(ctx)]
    alerts = await webhook_pages.alerts_page(ctx, None, before)
    return web.render(
        AREA,
        "webhooks.html",
        status,
        session=viewer.session,
        endpoints=endpoints,
        alerts=alerts,
        created=created,
        entered=entered or {"url": "", "description": "", "events": list(EVENT_TYPES)},
        event_types=EVENT_TYPES,
        event_field=EVENT_FIELD,
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
    viewer = await _viewer(ctx, request)
    if viewer is None:
        return web.to_login(AREA)
    return await _list_page(ctx, viewer, before=before or None, notice=NOTICES.get(notice))


OPERATOR = WebhookArea(
    area=AREA,
    base="/dashboard/webhooks",
    event_types=EVENT_TYPES,
    notices=NOTICES,
    viewer=_viewer,
    change_form=_change_form,
    list_page=_list_page,
    endpoint_template="webhook.html",
    created="created",
    disabled_by="an operator",
    resend=True,
)
ROUTES: list[BaseRoute] = [
    Route(OPERATOR.base, webhooks_page, methods=["GET"]),
    *webhook_handlers.routes(OPERATOR),
]
