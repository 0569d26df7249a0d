"""The customer endpoints of the two seed documents (SPEC 3.1 and 3.2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import Response

from quotad.api.credits import credits_items
from quotad.api.deps import Ctx, Customer, key_problems_are_403
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import (
    DATE_FORMAT,
    END_DATE,
    START_DATE,
    CreditsQuotaOut,
    ErrorBody,
    QuotaStateOut,
    UsageDayOut,
    UsageLineOut,
)
from quotad.http.views import quota_state_view, usage_day_view
from quotad.service import quotas, usage

router = APIRouter(tags=["customer"])

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 429, 500, 503)
}
# Seed 003's clients expect 403 for every key problem: that route answers no 401.
_SEED_003_ERRORS = {code: answer for code, answer in _ERRORS.items() if code != 401}


@router.get(
    "/v1/usages",
    response_model=list[UsageLineOut],
    responses=_ERRORS,
    summary="Usage stats of the caller's account",
)
async def get_usages(ctx: Ctx, caller: Customer) -> Response:
    """Every resource limit and window quota of the caller's account, with the current
    window's usage (rates are not listed: see ``/v1/quotas``)."""
    lines = await usage.overview(ctx, caller.account)
    return ORJSONResponse(
        [
            {"description": x.description, "limit": x.limit, "name": x.name, "usage": x.usage}
            for x in lines
        ]
    )


@router.get(
    "/usage/{service}",
    response_model=list[UsageDayOut],
    responses=_SEED_003_ERRORS,
    dependencies=[Depends(key_problems_are_403)],
    summary="Daily quota usage of one service, today or over up to 90 days",
)
async def get_usage(
    ctx: Ctx,
    caller: Customer,
    service: str,
    start_date: Annotated[
        str | None, Query(description=START_DATE, json_schema_extra=DATE_FORMAT)
    ] = None,
    end_date: Annotated[
        str | None, Query(description=END_DATE, json_schema_extra=DATE_FORMAT)
    ] = None,
    api_version: Annotated[
        str | None, Header(alias="api-version", description="v1 (default: latest)")
    ] = None,
) -> Response:
    """One object per day of the range, or ``[]`` when nothing was used in it."""
    del api_version  # checked and echoed by quotad.http.middleware.RequestContext
    rows = await usage.history(ctx, caller.account, service, start_date, end_date)
    return ORJSONResponse([usage_day_view(row) for row in rows])


@router.get(
    "/v1/quotas",
    response_model=list[QuotaStateOut | CreditsQuotaOut],
    responses=_ERRORS,
    summary="Every limit of the caller's key, where it stands now",
)
async def get_quotas(ctx: Ctx, caller: Customer) -> Response:
    """Each window quota and rate that applies to the caller's key (SPEC 9): used,
    remaining, total, reset, and when the window runs out at its current pace."""
    found = await quotas.of_key(ctx, caller.key, caller.account)
    balance = await credits_items(ctx, caller.account)  # SPEC 10: the account's credits
    return ORJSONResponse([quota_state_view(x) for x in found] + balance)
