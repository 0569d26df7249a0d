"""The webhook endpoint pages' handlers, shared by the operator's dashboard and the portal.

The two areas differ only in who is signed in and what they reach (``WebhookArea``): the
operator every endpoint, a customer only its account's own (``WebhookEndpoint.account_id``);
another account's endpoint, or the operator's, is not found (404) in the portal, whatever
its id. Every change goes through ``quotad.service.webhooks``, so it is audited with the
session's actor, and a form is refused (403) before the endpoint is read when the
session may not change anything or its CSRF token is wrong. A signing secret is shown
once, on the page answering its creation or rotation, never again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import sessions, web, webhook_pages
from quotad.dashboard.sessions import Session
from quotad.domain.models import Account
from quotad.domain.webhooks import WebhookEndpoint
from quotad.errors import NotFound, QuotadError
from quotad.service import webhooks
from quotad.service.context import Context

MAX_ID = 200  # an id in a page's address (longer ones are refused, not looked up)
MAX_DESCRIPTION = 500  # as the API's descriptions
EVENT_FIELD = "event:"  # one checkbox per event type: the form keeps one value per name


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who signed in to a webhook page, and the account whose endpoints it reaches."""

    session: Session
    account: Account | None = None  # None: the operator, who reaches every endpoint

    @property
    def owner(self) -> str | None:
        """The account id new endpoints belong to (None: the operator's own)."""
        return None if self.account is None else self.account.id


Form = tuple[Viewer | None, dict[str, str], Response | None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a list page shows besides the endpoints: the outcome of a form just posted, or
    a visit's notice and (on the operator's page) which page of alerts."""

    created: WebhookEndpoint | None = None  # its secret is shown this once
    entered: dict[str, Any] | None = None  # a refused form's values, offered again
    notice: str | None = None
    error: str | None = None
    alerts_before: str | None = None  # the alerts older than this event id


# An area's list of endpoints with its registration form, answering with a status.
ListPage = Callable[[Context, Viewer, int, Outcome], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class WebhookArea:
    """What sets the operator's webhook pages apart from a customer's."""

    area: sessions.Area
    base: str  # the list's address; an endpoint's page is below it
    event_types: tuple[str, ...]  # what the registration form offers
    notices: dict[str, str]  # the ``?notice=`` words the area's redirects use
    viewer: Callable[[Context, Request], Awaitable[Viewer | None]]
    # The viewer and form of a change, or the page refusing it (no session, a read
    # session, a wrong CSRF token).
    change_form: Callable[[Context, Request], Awaitable[Form]]
    list_page: ListPage
    list_template: str
    endpoint_template: str
    created: str  # the verb of the notice answering a registration
    disabled_by: str  # who a disabled endpoint's reason names
    resend: bool = False  # whether deliveries may be sent again from here
    alerts: bool = False  # whether the list page pages through every account's alerts

    def endpoint_url(self, endpoint_id: str) -> str:
        """The address of an endpoint's page."""
        return f"{self.base}/{quote(endpoint_id, safe='')}"


def shown_again(url: str) -> str:
    """A refused URL, offered again to be corrected, unless it may carry credentials."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return ""
    return "" if "@" in netloc else url


def render_list(
    spec: WebhookArea, viewer: Viewer, status: int, outcome: Outcome, **page: Any
) -> Response:
    """An area's list page: its own ``page`` values, with the registration form's."""
    events = list(spec.event_types)
    return web.render(
        spec.area,
        spec.list_template,
        status,
        session=viewer.session,
        created=outcome.created,
        entered=outcome.entered or {"url": "", "description": "", "events": events},
        event_types=spec.event_types,
        event_field=EVENT_FIELD,
        when=webhook_pages.when,
        notice=outcome.notice,
        error=outcome.error,
        nav="webhooks",
        **page,
    )


def _no_endpoint(spec: WebhookArea, viewer: Viewer, endpoint_id: str) -> Response:
    """The 404 page of an endpoint the viewer cannot reach (never saying whether it exists)."""
    whose = "There is no" if viewer.account is None else "Your account has no"
    return web.message(
        spec.area,
        404,
        "No such webhook endpoint",
        f"{whose} webhook endpoint “{endpoint_id}”.",
        session=viewer.session,
    )


async def _reachable(ctx: Context, viewer: Viewer, endpoint_id: str) -> WebhookEndpoint | None:
    """The endpoint, when the viewer may see it: any for the operator, else its account's."""
    if len(endpoint_id) > MAX_ID:
        return None
    try:
        if viewer.account is None:
            return await webhooks.get(ctx, endpoint_id)
        return await webhooks.get_own(ctx, viewer.account.id, endpoint_id)
    except NotFound:
        return None


async def _endpoint_page(
    spec: WebhookArea,
    ctx: Context,
    viewer: Viewer,
    endpoint: WebhookEndpoint,
    status: int = 200,
    *,
    before: str | None = None,
    new_secret: str | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    """An endpoint's page: its settings, the actions on it, its deliveries."""
    page = await webhook_pages.deliveries_page(ctx, endpoint.id, before)
    return web.render(
        spec.area,
        spec.endpoint_template,
        status,
        session=viewer.session,
        account=viewer.account,
        row=webhook_pages.EndpointRow(endpoint),
        page=page,
        new_secret=new_secret,
        when=webhook_pages.when,
        notice=notice,
        error=error,
        nav="webhooks",
    )


async def list_page(spec: WebhookArea, request: Request) -> Response:
    """The area's endpoints, the form registering one, and the notice the address names."""
    ctx = web.context(request)
    before = web.query(request, "before", MAX_ID) if spec.alerts else ""
    notice = web.query(request, "notice", MAX_ID)
    viewer = await spec.viewer(ctx, request)
    if viewer is None:
        return web.to_login(spec.area)
    outcome = Outcome(notice=spec.notices.get(notice), alerts_before=before or None)
    return await spec.list_page(ctx, viewer, 200, outcome)


async def endpoint_page(spec: WebhookArea, request: Request) -> Response:
    """One endpoint: its settings, the actions on it, its deliveries and their attempts."""
    ctx = web.context(request)
    endpoint_id: str = request.path_params["endpoint_id"]
    before = web.query(request, "before", MAX_ID)
    notice = web.query(request, "notice", MAX_ID)
    viewer = await spec.viewer(ctx, request)
    if viewer is None:
        return web.to_login(spec.area)
    endpoint = await _reachable(ctx, viewer, endpoint_id)
    if endpoint is None:
        return _no_endpoint(spec, viewer, endpoint_id)
    return await _endpoint_page(
        spec, ctx, viewer, endpoint, before=before or None, notice=spec.notices.get(notice)
    )


async def _endpoint_form(
    spec: WebhookArea, ctx: Context, request: Request
) -> tuple[Viewer | None, WebhookEndpoint | None, dict[str, str], Response | None]:
    """As the area's ``change_form``, with the endpoint the address names (else its 404)."""
    viewer, form, refusal = await spec.change_form(ctx, request)
    if refusal is not None or viewer is None:
        return viewer, None, form, refusal or web.to_login(spec.area)
    endpoint_id: str = request.path_params["endpoint_id"]
    endpoint = await _reachable(ctx, viewer, endpoint_id)
    if endpoint is None:
        return viewer, None, form, _no_endpoint(spec, viewer, endpoint_id)
    return viewer, endpoint, form, None


async def create(spec: WebhookArea, request: Request) -> Response:
    """Register an endpoint (a customer's belongs to its account) and show its secret once."""
    ctx = web.context(request)
    viewer, form, refusal = await spec.change_form(ctx, request)
    if refusal is not None or viewer is None:
        return refusal or web.to_login(spec.area)
    url = form.get("url", "").strip()
    description = form.get("description", "").strip()
    events = [name for name in spec.event_types if form.get(EVENT_FIELD + name)]
    entered = {"url": shown_again(url), "description": description, "events": events}
    if len(description) > MAX_DESCRIPTION:
        error = f"A description has at most {MAX_DESCRIPTION} characters."
        return await spec.list_page(ctx, viewer, 400, Outcome(entered=entered, error=error))
    if not events:
        error = "Choose at least one event to send to the endpoint."
        return await spec.list_page(ctx, viewer, 400, Outcome(entered=entered, error=error))
    try:
        created = await webhooks.create(ctx, url, events, description, account_id=viewer.owner)
    except QuotadError as exc:
        refused = Outcome(entered=entered, error=exc.note)
        return await spec.list_page(ctx, viewer, web.status_of(exc), refused)
    notice = f"Endpoint {created.id} {spec.created}."
    return await spec.list_page(ctx, viewer, 201, Outcome(created=created, notice=notice))


async def set_enabled(spec: WebhookArea, enabled: bool, request: Request) -> Response:
    """Enable an endpoint (its pending deliveries resumed) or disable it (nothing sent)."""
    ctx = web.context(request)
    viewer, endpoint, _form, refusal = await _endpoint_form(spec, ctx, request)
    if refusal is not None or viewer is None or endpoint is None:
        return refusal or web.to_login(spec.area)
    try:
        await webhooks.update(ctx, endpoint.id, enabled=enabled, disabled_by=spec.disabled_by)
    except QuotadError as exc:
        return await _endpoint_page(spec, ctx, viewer, endpoint, web.status_of(exc), error=exc.note)
    notice = "enabled" if enabled else "disabled"
    return web.redirect(f"{spec.endpoint_url(endpoint.id)}?notice={notice}")


async def rotate(spec: WebhookArea, request: Request) -> Response:
    """A new secret (shown once); the old one signs beside it for the chosen grace period."""
    ctx = web.context(request)
    viewer, endpoint, form, refusal = await _endpoint_form(spec, ctx, request)
    if refusal is not None or viewer is None or endpoint is None:
        return refusal or web.to_login(spec.area)
    text = form.get("grace_seconds", "0").strip()
    if not text.isdigit() or int(text) > webhooks.MAX_GRACE_SECONDS:
        error = f"The grace period is 0 to {webhooks.MAX_GRACE_SECONDS} seconds."
        return await _endpoint_page(spec, ctx, viewer, endpoint, 400, error=error)
    try:
        rotated = await webhooks.rotate_secret(ctx, endpoint.id, int(text))
    except QuotadError as exc:
        return await _endpoint_page(spec, ctx, viewer, endpoint, web.status_of(exc), error=exc.note)
    notice = f"Secret rotated; the old secret also signs for {text} s more."
    return await _endpoint_page(
        spec, ctx, viewer, rotated, 201, new_secret=rotated.secret, notice=notice
    )


async def delete(spec: WebhookArea, request: Request) -> Response:
    """Delete an endpoint and its deliveries."""
    ctx = web.context(request)
    viewer, endpoint, _form, refusal = await _endpoint_form(spec, ctx, request)
    if refusal is not None or viewer is None or endpoint is None:
        return refusal or web.to_login(spec.area)
    try:
        await webhooks.delete(ctx, endpoint.id)
    except NotFound:  # deleted meanwhile (by another session, or its account's deletion)
        return _no_endpoint(spec, viewer, endpoint.id)
    return web.redirect(f"{spec.base}?notice=deleted")


async def resend(spec: WebhookArea, request: Request) -> Response:
    """Make a delivery pending again (same ``webhook-id``), to be sent at once."""
    ctx = web.context(request)
    delivery_id: str = request.path_params["delivery_id"]
    viewer, endpoint, _form, refusal = await _endpoint_form(spec, ctx, request)
    if refusal is not None or viewer is None or endpoint is None:
        return refusal or web.to_login(spec.area)
    try:
        await webhooks.resend(ctx, endpoint.id, delivery_id)
    except QuotadError as exc:
        return await _endpoint_page(spec, ctx, viewer, endpoint, web.status_of(exc), error=exc.note)
    return web.redirect(f"{spec.endpoint_url(endpoint.id)}?notice=resent")


def routes(spec: WebhookArea) -> list[BaseRoute]:
    """The routes of an area's webhook pages and forms."""
    one = spec.base + "/{endpoint_id}"
    found: list[BaseRoute] = [
        Route(spec.base, partial(list_page, spec), methods=["GET"]),
        Route(spec.base, partial(create, spec), methods=["POST"]),
        Route(one, partial(endpoint_page, spec), methods=["GET"]),
        Route(f"{one}/enable", partial(set_enabled, spec, True), methods=["POST"]),
        Route(f"{one}/disable", partial(set_enabled, spec, False), methods=["POST"]),
        Route(f"{one}/rotate", partial(rotate, spec), methods=["POST"]),
        Route(f"{one}/delete", partial(delete, spec), methods=["POST"]),
    ]
    if spec.resend:
        found.append(
            Route(
                f"{one}/deliveries/{{delivery_id}}/resend", partial(resend, spec), methods=["POST"]
            )
        )
    return found
