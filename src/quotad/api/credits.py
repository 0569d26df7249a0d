"""Credits under ``/admin/v1/accounts/{id}`` (SPEC 10): grants, the balance, the ledger.

Reads need the ``read`` role, writes ``admin`` (the ``operator`` dependency decides by
method). Amounts are credits as JSON numbers; the service keeps micro-credits.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import Response

from quotad.api.deps import Ctx, operator
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import (
    BalanceOut,
    CursorText,
    ErrorBody,
    GrantIn,
    GrantOut,
    LedgerEntryOut,
    Page,
)
from quotad.api.verify_endpoint import IDEMPOTENCY_KEY
from quotad.domain.models import Account
from quotad.http import views
from quotad.http.credit_views import (
    credits_at,
    credits_quota_view,
    credits_view,
    grant_view,
    ledger_entry_view,
)
from quotad.service import credits, quotas
from quotad.service.context import Context

router = APIRouter(
    prefix="/admin/v1",
    tags=["credits"],
    dependencies=[Depends(operator)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 500, 503)},
)


async def credits_items(ctx: Context, account: Account) -> list[dict[str, Any]]:
    """The credits item of a quotas answer (SPEC 10), for an account with credits."""
    state = await quotas.credits_of(ctx, account)
    return [] if state is None else [credits_quota_view(state)]


PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page")]
Cursor = Annotated[CursorText | None, Query()]


@router.post(
    "/accounts/{account_id}/grants",
    status_code=201,
    response_model=GrantOut,
    responses={409: {"model": ErrorBody}},  # the Idempotency-Key of another grant
)
async def create_grant(
    ctx: Ctx,
    account_id: str,
    body: GrantIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description=(
                "Grants once: a repeat with the same body answers the grant the first call"
                " made; with another body, 409"
            ),
            pattern=IDEMPOTENCY_KEY.pattern,
        ),
    ] = None,
) -> Response:
    """Give credits to an account, drawn from before later-expiring grants."""
    amount = credits_at(body.amount, "/body/amount")
    made = await credits.grant(
        ctx, account_id, amount, body.expires_at, body.priority, body.note, idempotency_key
    )
    return ORJSONResponse(grant_view(made, made.amount), status_code=201)


@router.delete("/accounts/{account_id}/grants/{grant_id}", response_model=GrantOut)
async def void_grant(ctx: Ctx, account_id: str, grant_id: str) -> Response:
    """Void what is left of a grant (a ``void`` ledger entry)."""
    voided = await credits.void(ctx, account_id, grant_id)
    return ORJSONResponse(grant_view(voided, 0))


@router.get("/accounts/{account_id}/credits", response_model=BalanceOut)
async def get_credits(ctx: Ctx, account_id: str) -> Response:
    """The account's balance and every grant, each with what is left of it."""
    return ORJSONResponse(credits_view(await credits.balance(ctx, account_id)))


@router.get("/accounts/{account_id}/credits/ledger", response_model=Page[LedgerEntryOut])
async def get_ledger(
    ctx: Ctx, account_id: str, limit: PageSize = 50, cursor: Cursor = None
) -> Response:
    """The account's ledger, oldest first: grants, refills, expiries, voids, debits summed
    per grant and day, and give-backs (adjustments)."""
    entries, after = await credits.ledger_page(ctx, account_id, limit, views.decode_cursor(cursor))
    return ORJSONResponse(
        {
            "items": [ledger_entry_view(entry) for entry in entries],
            "next_cursor": None if after is None else views.encode_cursor(after),
        }
    )
