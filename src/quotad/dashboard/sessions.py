"""Signed session cookies and CSRF tokens of the dashboard and the portal.

A session is a small signed value (itsdangerous) in a cookie that is ``HttpOnly``,
``SameSite=Strict`` and scoped by ``Path`` to its own area (``/dashboard`` or ``/portal``),
so neither area ever receives the other's cookie and the JSON API never receives either.
The cookie is signed, not encrypted: it holds only who signed in (the operator, with the
id of the named token it signed in with, or the id of the customer's key and account),
the session's CSRF token and, once signed in, the session's id. The store keeps the
SHA-256 of each live session id until the session expires; a signed-in cookie whose id is
not there any more (signed out, on any node, or past its 8 hours) opens nothing, so a copy
of a cookie dies with its session. A session of a named operator token lives only as long
as the token: its name and role are read from the token on every page, and once the token
is revoked the session opens nothing.

The signing secret is derived from a random value stored once in the store's settings
(so every node of a deployment agrees, and it survives restarts) and the digest of the
operator token: resetting the operator token signs everybody out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from quotad.domain import keys
from quotad.domain.operators import Role
from quotad.service.auth import ADMIN_TOKEN_SETTING
from quotad.service.context import Context
from quotad.service.tokens import BOOTSTRAP_NAME

SECRET_SETTING = "dashboard_session_secret"  # noqa: S105 - a setting name, not a secret
MAX_AGE_SECONDS = 8 * 3600
Area = Literal["dashboard", "portal"]
COOKIE_NAMES: dict[Area, str] = {"dashboard": "quotad_dashboard", "portal": "quotad_portal"}


@dataclass(frozen=True, slots=True)
class Session:
    """What a session cookie says: its CSRF token and who (if anyone) signed in."""

    csrf: str
    operator: bool = False
    account_id: str | None = None
    key_id: str | None = None
    sid: str | None = None  # the server-side id of a signed-in session
    # The operator's token: its name (the audit log's actor), role and id (None for the
    # bootstrap token).
    actor: str = BOOTSTRAP_NAME
    role: Role = Role.ADMIN
    token_id: str | None = None

    @property
    def may_change(self) -> bool:
        """Whether the operator may change anything (an admin), or only look."""
        return self.operator and self.role is Role.ADMIN

    @property
    def signed_in(self) -> bool:
        """Whether this session belongs to a signed-in operator or customer."""
        return self.operator or self.key_id is not None


def anonymous() -> Session:
    """A fresh session for a visitor who has not signed in yet."""
    return Session(csrf=secrets.token_urlsafe(24))


async def _random_secret(ctx: Context) -> str:
    stored = await ctx.records.get_setting(SECRET_SETTING)
    if stored is None:
        await ctx.records.put_setting(SECRET_SETTING, secrets.token_hex(32))
        # Read back rather than trust our own value: when two nodes race here, both end
        # up signing with whichever value the store kept.
        stored = await ctx.records.get_setting(SECRET_SETTING)
    if stored is None:  # pragma: no cover - a store that forgets what it was just told
        msg = "the store did not keep the dashboard's session secret"
        raise RuntimeError(msg)
    return stored


async def signing_secret(ctx: Context) -> bytes:
    """The key that signs session cookies (read on each use, so every node agrees)."""
    configured = ctx.settings.admin_token
    if configured is not None:
        operator_digest = keys.digest(configured.get_secret_value())
    else:
        operator_digest = await ctx.records.get_setting(ADMIN_TOKEN_SETTING) or ""
    random_part = await _random_secret(ctx)
    return hmac.new(
        random_part.encode(), f"quotad-session\n{operator_digest}".encode(), hashlib.sha256
    ).digest()


def _serializer(secret: bytes, area: Area) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=f"quotad.{area}")


async def load(ctx: Context, request: Request, area: Area) -> Session | None:
    """The session a request's cookie carries, or ``None`` if absent, forged or expired."""
    raw = request.cookies.get(COOKIE_NAMES[area])
    if not raw:
        return None
    try:
        data = _serializer(await signing_secret(ctx), area).loads(raw, max_age=MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    session = Session(
        csrf=data["csrf"],
        operator=bool(data.get("operator", False)) and area == "dashboard",
        account_id=_text_or_none(data.get("account_id")) if area == "portal" else None,
        key_id=_text_or_none(data.get("key_id")) if area == "portal" else None,
        sid=_text_or_none(data.get("sid")),
    )
    if session.signed_in and not await _live(ctx, session):
        return None
    if session.operator:
        return await _operator_of(ctx, session, _text_or_none(data.get("token_id")))
    return session


async def _operator_of(ctx: Context, session: Session, token_id: str | None) -> Session | None:
    """The session with its operator's name and role, or ``None`` once the token is revoked.

    Without a token id, the bootstrap token signed in (an admin, as before roles).
    """
    if token_id is None:
        return session
    token = await ctx.records.get_operator_token(token_id)
    if token is None or token.revoked(ctx.clock.now()):
        return None
    return replace(session, actor=token.name, role=token.role, token_id=token.id)


async def _live(ctx: Context, session: Session) -> bool:
    if session.sid is None:  # a cookie from before sessions were kept on the server
        return False
    return await ctx.records.session_live(keys.digest(session.sid), ctx.clock.now())


async def start(ctx: Context, session: Session) -> Session:
    """``session`` under a new id, recorded in the store for ``MAX_AGE_SECONDS``."""
    sid = secrets.token_urlsafe(32)
    now = ctx.clock.now()
    expires_at = now + timedelta(seconds=MAX_AGE_SECONDS)
    await ctx.records.create_session(keys.digest(sid), expires_at, now)
    return replace(session, sid=sid)


async def end(ctx: Context, session: Session) -> None:
    """End ``session`` on the server: its cookie, and every copy of it, stops working."""
    if session.sid is not None:
        await ctx.records.end_session(keys.digest(session.sid))


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def save(
    ctx: Context, request: Request, response: Response, area: Area, session: Session
) -> None:
    """Put ``session`` in ``response``'s cookie for ``area``."""
    data: dict[str, object] = {"csrf": session.csrf}
    if session.operator:
        data["operator"] = True
        if session.token_id is not None:
            data["token_id"] = session.token_id
    if session.key_id is not None:
        data["key_id"] = session.key_id
        data["account_id"] = session.account_id
    if session.sid is not None:
        data["sid"] = session.sid
    value = _serializer(await signing_secret(ctx), area).dumps(data)
    response.set_cookie(
        COOKIE_NAMES[area],
        value,
        max_age=MAX_AGE_SECONDS,
        path=f"/{area}",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear(request: Request, response: Response, area: Area) -> None:
    """Remove the area's session cookie from the browser."""
    response.delete_cookie(
        COOKIE_NAMES[area],
        path=f"/{area}",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def csrf_ok(session: Session | None, submitted: object) -> bool:
    """Whether a form's CSRF token is the session's (compared in constant time)."""
    if session is None or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())
