"""``/dashboard/webhooks``: the operator's webhook endpoints, their deliveries, the alerts.

The handlers are ``webhook_handlers``' (shared with the portal); what is the operator's
own is here: it reaches every endpoint, a read session sees the pages without their forms
(a form it posts anyway is refused, 403, before anything is read from the store), and
the list page also shows every account's recent alerts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from quotad.dashboard import webhook_handlers, webhook_pages
from quotad.dashboard.operator import AREA, admin_form, operator_session
from quotad.dashboard.webhook_handlers import Outcome, Viewer, WebhookArea, render_list
from quotad.domain.webhooks import EVENT_TYPES
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
    outcome: Outcome = Outcome(),  # noqa: B008 - frozen: one shared empty outcome is safe
) -> Response:
    """Every endpoint, the form registering one, and a page of every account's alerts."""
    endpoints = [webhook_pages.EndpointRow(e) for e in await webhooks.list_all(ctx)]
    alerts = await webhook_pages.alerts_page(ctx, None, outcome.alerts_before)
    return render_list(OPERATOR, viewer, status, outcome, endpoints=endpoints, alerts=alerts)


OPERATOR = WebhookArea(
    area=AREA,
    base="/dashboard/webhooks",
    event_types=EVENT_TYPES,
    notices=NOTICES,
    viewer=_viewer,
    change_form=_change_form,
    list_page=_list_page,
    list_template="webhooks.html",
    endpoint_template="webhook.html",
    created="created",
    disabled_by="an operator",
    resend=True,
    alerts=True,
)
ROUTES: list[BaseRoute] = webhook_handlers.routes(OPERATOR)
