"""Operator tokens and the audit log, under ``/admin/v1`` (SPEC 12)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from quotad.api.deps import Ctx, operator
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import CursorText, ErrorBody, Identifier, Page, Strict
from quotad.domain import days
from quotad.domain.operators import Role
from quotad.errors import ValidationFailed
from quotad.http import views
from quotad.http.views import token_view
from quotad.service import tokens

router = APIRouter(
    prefix="/admin/v1",
    tags=["operator"],
    dependencies=[Depends(operator)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 500, 503)},
)


class TokenIn(Strict):
    """A named operator token to create."""

    name: Identifier
    role: Literal["admin", "read", "verify"]


class TokenOut(BaseModel):
    """An operator token as listed: never the token."""

    id: str
    name: str
    role: str
    prefix: str
    hint: str
    status: str
    created_at: str
    revoked_at: str | None


class IssuedTokenOut(TokenOut):
    """A new operator token: ``token`` is shown this once."""

    token: str


class AuditEntryOut(BaseModel):
    """One change: who, what, on which record, before and after (never a secret)."""

    id: str
    at: str
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


@router.post("/tokens", status_code=201, response_model=IssuedTokenOut)
async def create_token(ctx: Ctx, body: TokenIn) -> Response:
    """Create a named operator token; ``token`` is in this answer only."""
    issued = await tokens.create_token(ctx, body.name, Role(body.role))
    view = {**token_view(issued.record, ctx.clock.now()), "token": issued.secret}
    return ORJSONResponse(view, status_code=201)


@router.get("/tokens", response_model=Page[TokenOut])
async def list_tokens(ctx: Ctx) -> Response:
    """Every named operator token, revoked ones included; never a token."""
    now = ctx.clock.now()
    items = [token_view(t, now) for t in await tokens.list_tokens(ctx)]
    return ORJSONResponse({"items": items, "next_cursor": None})


@router.delete("/tokens/{token_id}", response_model=TokenOut)
async def revoke_token(ctx: Ctx, token_id: str) -> Response:
    """Revoke an operator token now: it gets 401 from then on."""
    token = await tokens.revoke_token(ctx, token_id)
    return ORJSONResponse(token_view(token, ctx.clock.now()))


@router.get("/audit", response_model=Page[AuditEntryOut])
async def list_audit(
    ctx: Ctx,
    target: Annotated[
        str | None, Query(max_length=200, description="<kind>:<id>, e.g. account:acme")
    ] = None,
    actor: Annotated[str | None, Query(max_length=64, description="A token name, or cli")] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Entries at or after this instant (RFC 3339, with its offset)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page")] = 50,
    cursor: Annotated[CursorText | None, Query()] = None,
) -> Response:
    """The audit log, newest first, filtered by target, actor and time."""
    page = await views.audit_page(ctx, target, actor, _instant(since), limit, cursor)
    return ORJSONResponse(page)


__all__ = ["AuditEntryOut", "IssuedTokenOut", "TokenIn", "TokenOut", "router"]


def _instant(text: str | None) -> datetime | None:
    """``since`` as an instant: RFC 3339 with its offset, nothing looser (no bare numbers)."""
    if text is None:
        return None
    instant = days.parse_rfc3339(text)
    if instant is None:
        raise ValidationFailed.at(
            "/query/since",
            "since must be an RFC 3339 instant with its offset",
            "format",
            "e.g. 2026-12-01T00:00:00Z",
        )
    return instant
