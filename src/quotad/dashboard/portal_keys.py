"""``/portal/keys``: a customer's own API keys, which it creates, rotates and revokes.

Every change goes through ``quotad.service.admin`` as the admin API's do, so it is audited,
with the key the customer signed in with as its actor. A key never gives more than it
has: the scopes of a key created here are within the signed-in key's (a key without
scopes may give any), and a key the signed-in one could not have created (a wider one)
(more scopes, or a later expiry) is listed without controls, its forms refused (403) if
posted anyway. A key of another
account is not found (404), whatever its id. A new secret is shown once, on the page
answering its creation or rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import pages, portal_pages, web
from quotad.dashboard.portal_session import AREA, MAX_ID, Customer, customer, customer_form
from quotad.dashboard.sessions import Session
from quotad.domain.limits import Per
from quotad.domain.models import Account, ApiKey
from quotad.errors import NotFound, QuotadError, ValidationFailed
from quotad.service import admin, quotas
from quotad.service.admin import IssuedKey
from quotad.service.context import Context

MAX_KEY_NAME = 128  # as the dashboard's key form
MAX_GRACE_SECONDS = 30 * 86_400  # as the admin API's rotation
SCOPE_FIELD = "scope:"  # one checkbox per scope: the form keeps one value per name
ALL_SCOPES = "all"  # the "every scope" choice, offered only to a key without scopes
NOTICES = {"revoked": "The key was revoked; it no longer works."}


class Refused(Exception):
    """A form the signed-in key may not post: a 403 page with ``note``."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


class Wrong(Exception):
    """A form with a mistake the customer can correct: the page again, 400, with ``note``."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the portal lists it, and whether the signed-in key may change it."""

    row: pages.KeyRow
    manageable: bool  # no wider than the signed-in key
    # Where each limit kept per key stands for this key (none: the plan has none).
    usage: tuple[quotas.QuotaState, ...] = ()

    @property
    def key(self) -> ApiKey:
        """The key's record (never its secret: only its digest is kept)."""
        return self.row.key

    @property
    def status(self) -> str:
        """``active``, ``revoked`` or ``expired``."""
        return self.row.status

    @property
    def changeable(self) -> bool:
        """Whether the signed-in key may revoke it (and rotate it, unless rotated)."""
        return self.manageable and self.row.active

    @property
    def scopes_text(self) -> str:
        """Its scopes, or that it has every scope."""
        scopes = self.key.scopes
        return "every scope" if scopes is None else ", ".join(scopes) or "none"


async def _rows(ctx: Context, own: ApiKey, account: Account) -> list[KeyRow]:
    plan = await admin.require_plan(ctx, account.plan_id)
    found = []
    for row in await pages.key_rows(ctx, account):
        per_key = [
            (service, limit)
            for service, limit in quotas.key_limits(account, plan, row.key)
            if limit.per is Per.KEY
        ]
        usage = await quotas.states(ctx, account, per_key, row.key.id) if per_key else []
        found.append(KeyRow(row, portal_pages.no_wider(own, row.key), tuple(usage)))
    return found


async def _page(
    ctx: Context,
    session: Session,
    own: ApiKey,
    account: Account,
    status: int = 200,
    *,
    new_key: IssuedKey | None = None,
    entered: dict[str, Any] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    choices = portal_pages.scope_choices(own.scopes, await portal_pages.service_names(ctx))
    rows = await _rows(ctx, own, account)
    return web.render(
        AREA,
        "portal_keys.html",
        status,
        session=session,
        account=account,
        own=own,
        keys=rows,
        per_key=any(row.usage for row in rows),
        choices=choices,
        may_give_all=own.scopes is None,
        scope_field=SCOPE_FIELD,
        all_scopes=ALL_SCOPES,
        entered=entered or {"name": "", "expires_on": "", "scopes": ["usage:read"]},
        new_key=new_key,
        when=pages.rfc3339,
        notice=notice,
        error=error,
        nav="keys",
    )


async def keys_page(request: Request) -> Response:
    """The account's keys and the form creating one."""
    ctx = web.context(request)
    notice = web.query(request, "notice", MAX_ID)
    found = await customer(ctx, request)
    if found is None:
        return web.to_login(AREA)
    session, own, account = found
    return await _page(ctx, session, own, account, notice=NOTICES.get(notice))


def _refused(session: Session, note: str) -> Response:
    return web.message(AREA, 403, "Not allowed", note, session=session)


def _no_key(session: Session, key_id: str) -> Response:
    return web.message(
        AREA, 404, "No such key", f"Your account has no key “{key_id}”.", session=session
    )


def _expiry(own: ApiKey, text: str, now: datetime) -> datetime | None:
    """The new key's expiry: 00:00 UTC of the date entered (none when blank).

    A key that expires cannot create one that outlives it: it would extend its own access.
    """
    if not text:
        if own.expires_at is not None:
            raise Wrong(
                f"Your key expires at {pages.rfc3339(own.expires_at)}: choose an expiry "
                "date for the new key no later than that."
            )
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Wrong(f"“{text}” is not a date: write it as YYYY-MM-DD.") from None
    expires_at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if expires_at <= now:
        raise Wrong("The expiry date must be in the future.")
    if own.expires_at is not None and expires_at > own.expires_at:
        raise Refused(
            f"Your key expires at {pages.rfc3339(own.expires_at)}: it cannot create a key "
            "that outlives it."
        )
    return expires_at


def _check_name(name: str) -> None:
    if len(name) > MAX_KEY_NAME:
        raise Wrong(f"A key name has at most {MAX_KEY_NAME} characters.")


def _scopes(own: ApiKey, form: dict[str, str]) -> tuple[str, ...] | None:
    """The scopes chosen, never wider than the signed-in key's."""
    if form.get(SCOPE_FIELD + ALL_SCOPES):
        if own.scopes is not None:
            raise Refused("Your key has limited scopes: it cannot create a key with every scope.")
        return None
    chosen = tuple(
        sorted(
            name[len(SCOPE_FIELD) :]
            for name, value in form.items()
            if name.startswith(SCOPE_FIELD) and value
        )
    )
    if not chosen:
        raise Wrong("Choose at least one scope for the new key.")
    unknown = [scope for scope in chosen if not portal_pages.SCOPE.match(scope)]
    if unknown:
        raise Wrong(f"Unknown scope: {', '.join(unknown)}.")
    wider = [scope for scope in chosen if not portal_pages.allows(own.scopes, scope)]
    if wider:
        raise Refused(f"Your key cannot give scopes it does not have: {', '.join(wider)}.")
    return chosen


async def create(request: Request) -> Response:
    """Create a key of the account (its scopes within the signed-in key's), shown once."""
    ctx = web.context(request)
    found, form, refusal = await customer_form(ctx, request)
    if refusal is not None or found is None:
        return refusal or web.to_login(AREA)
    session, own, account = found
    name = form.get("name", "").strip()
    expires_on = form.get("expires_on", "").strip()
    chosen = [n[len(SCOPE_FIELD) :] for n, v in form.items() if n.startswith(SCOPE_FIELD) and v]
    entered = {"name": name, "expires_on": expires_on, "scopes": chosen}
    try:
        _check_name(name)
        scopes = _scopes(own, form)
        expires_at = _expiry(own, expires_on, ctx.clock.now())
        issued = await admin.create_key(ctx, account.id, name, expires_at, scopes)
    except Refused as exc:
        return _refused(session, exc.note)
    except (Wrong, ValidationFailed) as exc:
        return await _page(ctx, session, own, account, 400, entered=entered, error=exc.note)
    notice = f"Key {issued.record.id} created."
    return await _page(ctx, session, own, account, 201, new_key=issued, notice=notice)


async def _target(
    ctx: Context, request: Request
) -> tuple[Customer | None, ApiKey | None, dict[str, str], Response | None]:
    """As ``customer_form``, with the key the address names: one of the account's (else
    404) that the signed-in key may change (else 403)."""
    found, form, refusal = await customer_form(ctx, request)
    if refusal is not None or found is None:
        return found, None, form, refusal or web.to_login(AREA)
    session, own, account = found
    key_id: str = request.path_params["key_id"]
    key = await ctx.records.get_key(key_id) if len(key_id) <= MAX_ID else None
    if key is None or key.account_id != account.id:
        return found, None, form, _no_key(session, key_id)
    if not portal_pages.no_wider(own, key):
        note = (
            "That key is wider than yours (scopes yours lacks, or a later expiry): only a "
            "key at least as wide may change it."
        )
        return found, None, form, _refused(session, note)
    return found, key, form, None


async def revoke(request: Request) -> Response:
    """Revoke one of the account's keys now."""
    ctx = web.context(request)
    found, key, _form_fields, refusal = await _target(ctx, request)
    if refusal is not None or found is None or key is None:
        return refusal or web.to_login(AREA)
    session, own, _account = found
    try:
        await admin.revoke_key(ctx, key.id)
    except NotFound:
        return _no_key(session, key.id)
    if key.id == own.id:
        # The session was opened with this key, and it just stopped working.
        return web.to_login(AREA)
    return web.redirect("/portal/keys?notice=revoked")


async def rotate(request: Request) -> Response:
    """A replacement key (shown once); the old one works for the chosen grace period."""
    ctx = web.context(request)
    found, key, form, refusal = await _target(ctx, request)
    if refusal is not None or found is None or key is None:
        return refusal or web.to_login(AREA)
    session, own, account = found
    text = form.get("grace_seconds", "0").strip()
    if not text.isdigit() or int(text) > MAX_GRACE_SECONDS:
        error = f"The grace period is 0 to {MAX_GRACE_SECONDS} seconds."
        return await _page(ctx, session, own, account, 400, error=error)
    try:
        issued = await admin.rotate_key(ctx, key.id, int(text))
    except QuotadError as exc:
        return await _page(ctx, session, own, account, 409, error=exc.note)
    notice = f"Key {key.id} rotated to {issued.record.id}; the old key works for {text} s more."
    return await _page(ctx, session, own, account, 201, new_key=issued, notice=notice)


_KEY = "/portal/keys/{key_id}"
ROUTES: list[BaseRoute] = [
    Route("/portal/keys", keys_page, methods=["GET"]),
    Route("/portal/keys", create, methods=["POST"]),
    Route(f"{_KEY}/revoke", revoke, methods=["POST"]),
    Route(f"{_KEY}/rotate", rotate, methods=["POST"]),
]
