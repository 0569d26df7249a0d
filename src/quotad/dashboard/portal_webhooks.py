"""``/portal/webhooks``: a customer's own webhook endpoints, which receive its account's
alert events, signed as every delivery is (SPEC 11).

The handlers are ``webhook_handlers``' (shared with the operator's dashboard); what is
the customer's own is here: it reaches only its account's endpoints (another account's,
or the operator's, is not found, whatever its id), registers at most
``MAX_ACCOUNT_ENDPOINTS`` of them, and its changes are audited with the key it signed in
with as their actor.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from quotad.dashboard import webhook_handlers, webhook_pages
from quotad.dashboard.portal_session import AREA, customer, customer_form
from quotad.dashboard.webhook_handlers import Outcome, Viewer, WebhookArea, render_list
from quotad.domain.webhooks import ACCOUNT_EVENT_TYPES, MAX_ACCOUNT_ENDPOINTS
from quotad.service import webhooks
from quotad.service.context import Context

NOTICES = {
    "deleted": "The endpoint was deleted, with its deliveries.",
    "enabled": "The endpoint is enabled: its pending deliveries are sent again.",
    "disabled": "The endpoint is disabled: nothing is sent to it until it is enabled.",
}


async def _viewer(ctx: Context, request: Request) -> Viewer | None:
    """The signed-in customer, who reaches only its account's endpoints."""
    found = await customer(ctx, request)
    return None if found is None else Viewer(found[0], found[2])


async def _change_form(ctx: Context, request: Request) -> webhook_handlers.Form:
    """As ``portal_session.customer_form``, for the shared handlers."""
    found, form, refusal = await customer_form(ctx, request)
    return (None if found is None else Viewer(found[0], found[2])), form, refusal


async def _list_page(
    ctx: Context,
    viewer: Viewer,
    status: int = 200,
    outcome: Outcome = Outcome(),  # noqa: B008 - frozen: one shared empty outcome is safe
) -> Response:
    """The account's endpoints and the form registering one (none once it has the most)."""
    account = viewer.account
    assert account is not None  # noqa: S101 - a customer's viewer always has its account
    rows = [webhook_pages.EndpointRow(e) for e in await webhooks.list_own(ctx, account.id)]
    full = len(rows) >= MAX_ACCOUNT_ENDPOINTS
    return render_list(
        CUSTOMER,
        viewer,
        status,
        outcome,
        account=account,
        endpoints=rows,
        full=full,
        most=MAX_ACCOUNT_ENDPOINTS,
    )


CUSTOMER = WebhookArea(
    area=AREA,
    base="/portal/webhooks",
    event_types=ACCOUNT_EVENT_TYPES,
    notices=NOTICES,
    viewer=_viewer,
    change_form=_change_form,
    list_page=_list_page,
    list_template="portal_webhooks.html",
    endpoint_template="portal_webhook.html",
    created="registered",
    disabled_by="its account",
)
ROUTES: list[BaseRoute] = webhook_handlers.routes(CUSTOMER)
