"""What the dashboard's and the portal's routes share: templates, headers, forms, sign-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from quotad import __version__
from quotad.dashboard import sessions
from quotad.dashboard.sessions import Area, Session
from quotad.errors import NotFound, QuotadError, RateLimited, ValidationFailed
from quotad.http.types import Message, Receive
from quotad.service.context import Context
from quotad.service.throttle import Realm

FORM_TYPE = "application/x-www-form-urlencoded"
# The pages' forms hold a CSRF token, a secret or a name, a number: far less than this.
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 256  # a key form has a scope checkbox per service; the bytes stay bounded
MAX_DATE = 32  # a date in a page's address (longer ones are refused, not parsed)
PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# Pages are same-origin only: no inline script, no framing, no third-party anything.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_DEFAULTS: dict[str, Any] = {"session": None, "notice": None, "error": None, "nav": None}


def render(area: Area, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page of ``area`` rendered from ``template``."""
    values = {**_DEFAULTS, **context, "area": area, "version": __version__}
    html = ENV.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def message(area: Area, status: int, heading: str, text: str, **context: Any) -> HTMLResponse:
    """A page that only says something (not found, refused, …)."""
    return render(area, "message.html", status, heading=heading, message=text, **context)


def redirect(url: str) -> RedirectResponse:
    """A 303 to ``url`` (after a POST, the browser follows with a GET)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def to_login(area: Area) -> RedirectResponse:
    """Send a visitor without a valid session to the area's sign-in page."""
    return redirect(f"/{area}/login")


def context(request: Request) -> Context:
    """The service context of the app serving ``request`` (``create_app`` put it there)."""
    ctx: Context = request.app.state.ctx
    return ctx


def query(request: Request, name: str, max_length: int) -> str:
    """A query parameter (``""`` when absent); refused with a 400 page when too long."""
    value = request.query_params.get(name, "")
    if len(value) > max_length:
        raise HTTPException(400, f"“{name}” in the address is longer than {max_length} characters.")
    return value


async def read_form(request: Request) -> dict[str, str]:
    """A posted form's fields, the last of a repeated name winning; ``{}`` for any other body.

    Only url-encoded bodies are read (the pages' forms send nothing else), and at most
    ``MAX_FORM_BYTES`` of them: a larger one raises the 413 that the app's error page
    answers, before a byte of it is read when its length is declared.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        return {}
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413)
    bounded = Request(request.scope, _bounded(request.receive, MAX_FORM_BYTES))
    form = await bounded.form(max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_BYTES)
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive``, raising a 413 once the body it has passed on grows past ``limit`` bytes."""
    total = 0

    async def bounded() -> Message:
        nonlocal total
        message = await receive()
        total += len(message.get("body", b""))
        if total > limit:
            raise HTTPException(413)
        return message

    return bounded


def client_of(request: Request) -> str:
    """The address failed sign-ins are counted against."""
    return request.client.host if request.client else "unknown"


def csrf_refused(area: Area) -> HTMLResponse:
    """The answer to a form whose CSRF token is missing or wrong."""
    return message(
        area,
        403,
        "Form refused",
        "This form has expired or did not come from this site. Reload the page and try again.",
    )


async def login_page(
    ctx: Context,
    request: Request,
    area: Area,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    """The sign-in form, with a pre-session cookie carrying its CSRF token."""
    session = await sessions.load(ctx, request, area)
    if session is None or session.signed_in:
        session = sessions.anonymous()
    response = render(area, "login.html", status, session=session, error=error, notice=notice)
    await sessions.save(ctx, request, response, area, session)
    return response


async def check_sign_in(ctx: Context, request: Request, area: Area) -> tuple[str, Response | None]:
    """The submitted secret of a sign-in form, or the page refusing it (bad CSRF)."""
    form = await read_form(request)
    session = await sessions.load(ctx, request, area)
    if not sessions.csrf_ok(session, form.get("csrf")):
        return "", await login_page(
            ctx, request, area, 403, "The sign-in form expired. Please try again."
        )
    return form.get("secret", "").strip(), None


async def sign_in_failed(
    ctx: Context, request: Request, area: Area, realm: Realm, why: str
) -> Response:
    """The page refusing a wrong secret: 401, or 429 once the address's budget is spent.

    The failure counts against the same budget as the API's ``realm`` (customer keys for
    the portal, the operator token for the dashboard); a right secret is never refused.
    """
    try:
        ctx.failures.record_failure(realm, client_of(request))
    except RateLimited as exc:
        return await login_page(
            ctx,
            request,
            area,
            429,
            f"Too many failed sign-ins from your address; wait {exc.retry_after} s and retry.",
        )
    return await login_page(ctx, request, area, 401, why)


async def signed_in(
    ctx: Context, request: Request, area: Area, session: Session, target: str
) -> Response:
    """Start ``session`` (a new CSRF token, so a pre-login one cannot be reused; a new
    server-side id, so signing out can end it) and go on."""
    response = redirect(target)
    await sessions.save(ctx, request, response, area, await sessions.start(ctx, session))
    return response


async def sign_out(ctx: Context, request: Request, area: Area) -> Response:
    """End the area's session on the server and in the browser (the form's CSRF token
    must match) and go to sign-in."""
    form = await read_form(request)
    session = await sessions.load(ctx, request, area)
    if session is not None and session.signed_in:
        if not sessions.csrf_ok(session, form.get("csrf")):
            return csrf_refused(area)
        await sessions.end(ctx, session)
    response = redirect(f"/{area}/login?signed_out=1")
    sessions.clear(request, response, area)
    return response


def status_of(exc: QuotadError) -> int:
    """The status of a page answering a refused change: 400 bad input, 404 not found,
    409 otherwise (a conflict with what is stored)."""
    if isinstance(exc, ValidationFailed):
        return 400
    return 404 if isinstance(exc, NotFound) else 409
