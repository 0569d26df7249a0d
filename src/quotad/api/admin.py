"""The operator API under ``/admin/v1`` (SPEC 4.1)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Query
from pydantic import JsonValue
from starlette.responses import Response, StreamingResponse

from quotad.api.credits import credits_items
from quotad.api.deps import Ctx, operator
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import (
    DATE_FORMAT,
    END_DATE,
    START_DATE,
    AccountIn,
    AccountOut,
    AccountPatch,
    AdjustIn,
    CreditsQuotaOut,
    CursorText,
    ErrorBody,
    GaugeAmountIn,
    GaugeOut,
    GaugeSetIn,
    IssuedKeyOut,
    KeyIn,
    KeyOut,
    KeyPatch,
    LimitIn,
    OverridesIn,
    Page,
    PlanIn,
    PlanOut,
    PlanReplaceIn,
    QuotaStateOut,
    RotateIn,
    ServiceIn,
    ServiceOut,
    ServicePatch,
    UsageDayOut,
    UsageLineOut,
)
from quotad.api.verify_endpoint import IDEMPOTENCY_KEY
from quotad.domain.models import AccountStatus, Limit, Overrides, Plan, Quota, Service
from quotad.http import views
from quotad.http.credit_views import (
    low_credits_at,
    plan_credit_fields,
    price_at,
    refill_at,
    service_credit_fields,
)
from quotad.service import admin, quotas, transfer, usage

router = APIRouter(
    prefix="/admin/v1",
    tags=["operator"],
    dependencies=[Depends(operator)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 500, 503)},
)

PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page")]
Cursor = Annotated[CursorText | None, Query()]


def _quotas(raw: dict[str, JsonValue]) -> dict[str, Quota]:
    parsed = admin.parse_quotas(raw, "/body/quotas")
    return {name: Quota(limits) for name, limits in parsed.items()}


def _limits(limits: list[LimitIn]) -> list[Limit]:
    return [Limit(x.name, x.description, x.limit) for x in limits]


def _overrides(body: OverridesIn, where: str = "/body/overrides") -> Overrides:
    return Overrides(
        admin.parse_quotas(body.quotas, f"{where}/quotas"),
        dict(body.limits),
        admin.parse_alert_thresholds(body.alert_thresholds, f"{where}/alert_thresholds"),
        low_credits_at(body.low_credits, f"{where}/low_credits"),
    )


def _thresholds(raw: object) -> tuple[int, ...] | None:
    return admin.parse_alert_thresholds(raw, "/body/alert_thresholds")


def _service_view(service: Service) -> dict[str, object]:
    return {**views.service_view(service), **service_credit_fields(service)}


def _plan_view(plan: Plan) -> dict[str, object]:
    return {**views.plan_view(plan), **plan_credit_fields(plan)}


def _page(items: list[dict[str, object]], ids: list[str], limit: int) -> Response:
    more = len(items) > limit
    next_cursor = views.encode_cursor(ids[limit - 1]) if more else None
    return ORJSONResponse({"items": items[:limit], "next_cursor": next_cursor})


# Services -------------------------------------------------------------------
@router.post("/services", status_code=201, response_model=ServiceOut)
async def create_service(ctx: Ctx, body: ServiceIn) -> Response:
    """Register a service."""
    price = price_at(body.credit_price)
    service = await admin.create_service(ctx, body.name, body.description, price)
    return ORJSONResponse(_service_view(service), status_code=201)


@router.patch("/services/{service}", response_model=ServiceOut)
async def update_service(ctx: Ctx, service: str, body: ServicePatch) -> Response:
    """Change a service's description or credit price (null: unpriced)."""
    price = (
        price_at(body.credit_price) if "credit_price" in body.model_fields_set else admin.UNCHANGED
    )
    changed = await admin.update_service(ctx, service, body.description, price)
    return ORJSONResponse(_service_view(changed))


@router.get("/services", response_model=Page[ServiceOut])
async def list_services(ctx: Ctx) -> Response:
    """Every service."""
    services = await admin.list_services(ctx)
    return ORJSONResponse({"items": [_service_view(s) for s in services], "next_cursor": None})


# Plans ----------------------------------------------------------------------
@router.post("/plans", status_code=201, response_model=PlanOut)
async def create_plan(ctx: Ctx, body: PlanIn) -> Response:
    """Create a plan."""
    plan = await admin.create_plan(
        ctx,
        body.id,
        _quotas(body.quotas),
        _limits(body.limits),
        body.description,
        _thresholds(body.alert_thresholds),
        refill_at(body.refill),
        low_credits_at(body.low_credits),
    )
    return ORJSONResponse(_plan_view(plan), status_code=201)


@router.get("/plans", response_model=Page[PlanOut])
async def list_plans(ctx: Ctx, limit: PageSize = 50, cursor: Cursor = None) -> Response:
    """A page of plans."""
    plans = await admin.list_plans(ctx, limit + 1, views.decode_cursor(cursor))
    return _page([_plan_view(p) for p in plans], [p.id for p in plans], limit)


@router.get("/plans/{plan_id}", response_model=PlanOut)
async def get_plan(ctx: Ctx, plan_id: str) -> Response:
    """One plan."""
    return ORJSONResponse(_plan_view(await admin.require_plan(ctx, plan_id)))


@router.put("/plans/{plan_id}", response_model=PlanOut)
async def replace_plan(ctx: Ctx, plan_id: str, body: PlanReplaceIn) -> Response:
    """Replace a plan's quotas and limits."""
    plan = await admin.replace_plan(
        ctx,
        plan_id,
        _quotas(body.quotas),
        _limits(body.limits),
        body.description,
        _thresholds(body.alert_thresholds),
        refill_at(body.refill),
        low_credits_at(body.low_credits),
    )
    return ORJSONResponse(_plan_view(plan))


@router.delete("/plans/{plan_id}", status_code=204)
async def delete_plan(ctx: Ctx, plan_id: str) -> Response:
    """Delete a plan no account uses."""
    await admin.delete_plan(ctx, plan_id)
    return Response(status_code=204)


# Accounts -------------------------------------------------------------------
@router.post("/accounts", status_code=201, response_model=AccountOut)
async def create_account(ctx: Ctx, body: AccountIn) -> Response:
    """Create an account."""
    account = await admin.create_account(
        ctx,
        body.id,
        body.name,
        body.plan,
        body.timezone,
        _overrides(body.overrides),
        AccountStatus(body.status),
        body.billing_anchor,
    )
    return ORJSONResponse(views.account_view(account), status_code=201)


@router.get("/accounts", response_model=Page[AccountOut])
async def list_accounts(
    ctx: Ctx,
    limit: PageSize = 50,
    cursor: Cursor = None,
    search: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """A page of accounts, optionally filtered by id or name."""
    accounts = await admin.list_accounts(ctx, limit + 1, views.decode_cursor(cursor), search)
    return _page([views.account_view(a) for a in accounts], [a.id for a in accounts], limit)


@router.get("/accounts/{account_id}", response_model=AccountOut)
async def get_account(ctx: Ctx, account_id: str) -> Response:
    """One account."""
    return ORJSONResponse(views.account_view(await admin.require_account(ctx, account_id)))


@router.patch("/accounts/{account_id}", response_model=AccountOut)
async def update_account(ctx: Ctx, account_id: str, body: AccountPatch) -> Response:
    """Change an account's plan, overrides, timezone, name or status."""
    changes = admin.AccountChanges(
        name=body.name,
        plan_id=body.plan,
        timezone=body.timezone,
        status=None if body.status is None else AccountStatus(body.status),
        overrides=None if body.overrides is None else _overrides(body.overrides),
        billing_anchor=body.billing_anchor,
    )
    account = await admin.update_account(ctx, account_id, changes)
    return ORJSONResponse(views.account_view(account))


@router.get("/accounts/{account_id}/quotas", response_model=list[QuotaStateOut | CreditsQuotaOut])
async def account_quotas(ctx: Ctx, account_id: str) -> Response:
    """Where every limit the account's keys share stands now (per-key limits: see a key's),
    and its credits when it has any."""
    account = await admin.require_account(ctx, account_id)
    found = await quotas.of_account(ctx, account)
    return ORJSONResponse(
        [views.quota_state_view(x) for x in found] + await credits_items(ctx, account)
    )


@router.delete("/accounts/{account_id}", status_code=204)
async def delete_account(ctx: Ctx, account_id: str) -> Response:
    """Delete an account with its keys, usage and gauges."""
    await admin.delete_account(ctx, account_id)
    return Response(status_code=204)


# Keys -----------------------------------------------------------------------
@router.post("/accounts/{account_id}/keys", status_code=201, response_model=IssuedKeyOut)
async def create_key(ctx: Ctx, account_id: str, body: KeyIn) -> Response:
    """Issue a key; its secret is in this answer only."""
    scopes = None if body.scopes is None else tuple(body.scopes)
    own = admin.parse_quotas(body.limits, "/body/limits")
    issued = await admin.create_key(ctx, account_id, body.name, body.expires_at, scopes, own)
    return ORJSONResponse(views.issued_key_view(issued, ctx.clock.now()), status_code=201)


@router.get("/accounts/{account_id}/keys", response_model=Page[KeyOut])
async def list_keys(ctx: Ctx, account_id: str) -> Response:
    """An account's keys, without secrets."""
    keys = await admin.list_keys(ctx, account_id)
    now = ctx.clock.now()
    return ORJSONResponse({"items": [views.key_view(k, now) for k in keys], "next_cursor": None})


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(ctx: Ctx, key_id: str) -> Response:
    """Revoke a key now."""
    key = await admin.revoke_key(ctx, key_id)
    return ORJSONResponse(views.key_view(key, ctx.clock.now()))


@router.patch("/keys/{key_id}", response_model=KeyOut)
async def update_key(ctx: Ctx, key_id: str, body: KeyPatch) -> Response:
    """Replace a key's own limits (SPEC 9): they may only narrow its account's."""
    own = admin.parse_quotas(body.limits, "/body/limits")
    key = await admin.set_key_limits(ctx, key_id, own)
    return ORJSONResponse(views.key_view(key, ctx.clock.now()))


@router.get("/keys/{key_id}/quotas", response_model=list[QuotaStateOut | CreditsQuotaOut])
async def key_quotas(ctx: Ctx, key_id: str) -> Response:
    """Where every limit that applies to one key stands now, and its account's credits."""
    key = await admin.require_key(ctx, key_id)
    account = await admin.require_account(ctx, key.account_id)
    found = await quotas.of_key(ctx, key, account)
    return ORJSONResponse(
        [views.quota_state_view(x) for x in found] + await credits_items(ctx, account)
    )


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=IssuedKeyOut)
async def rotate_key(
    ctx: Ctx, key_id: str, body: Annotated[RotateIn | None, Body()] = None
) -> Response:
    """Issue a replacement; the old key stays valid for ``grace_seconds``."""
    grace = (body or RotateIn()).grace_seconds
    issued = await admin.rotate_key(ctx, key_id, grace)
    return ORJSONResponse(views.issued_key_view(issued, ctx.clock.now()), status_code=201)


# Usage ----------------------------------------------------------------------
@router.get("/accounts/{account_id}/usage/{service}", response_model=list[UsageDayOut])
async def account_usage(
    ctx: Ctx,
    account_id: str,
    service: str,
    start_date: Annotated[
        str | None, Query(description=START_DATE, json_schema_extra=DATE_FORMAT)
    ] = None,
    end_date: Annotated[
        str | None, Query(description=END_DATE, json_schema_extra=DATE_FORMAT)
    ] = None,
) -> Response:
    """The rows of ``GET /usage/{service}`` for any account."""
    account = await admin.require_account(ctx, account_id)
    rows = await usage.history(ctx, account, service, start_date, end_date)
    return ORJSONResponse([views.usage_day_view(row) for row in rows])


@router.get("/accounts/{account_id}/usages", response_model=list[UsageLineOut])
async def account_usages(ctx: Ctx, account_id: str) -> Response:
    """The lines of ``GET /v1/usages`` for any account: limits and quotas, today's use."""
    account = await admin.require_account(ctx, account_id)
    lines = await usage.overview(ctx, account)
    return ORJSONResponse([views.usage_line_view(x) for x in lines])


@router.post("/accounts/{account_id}/usage/{service}/adjust", response_model=UsageDayOut)
async def adjust_usage(
    ctx: Ctx,
    account_id: str,
    service: str,
    body: AdjustIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description=(
                "Applies the adjustment once: a repeat with the same body within 24 h moves"
                " nothing and answers the day as it stands; with another body, 409"
            ),
            pattern=IDEMPOTENCY_KEY.pattern,
        ),
    ] = None,
) -> Response:
    """Correct or credit a day (use never goes below zero)."""
    row = await usage.adjust(ctx, account_id, service, body.date, body.delta, idempotency_key)
    return ORJSONResponse(views.usage_day_view(row))


# Resource limits ------------------------------------------------------------
@router.put(
    "/accounts/{account_id}/limits/{name}",
    response_model=GaugeOut,
    tags=["resource limits"],
    summary="Set a resource limit gauge's usage",
)
async def set_limit_usage(ctx: Ctx, account_id: str, name: str, body: GaugeSetIn) -> Response:
    """Set how many units of the account's resource limit ``name`` are in use (its gauge),
    e.g. ``{"usage": 3}`` after a resync; the limit itself comes from the plan and the
    account's overrides. May be set past the limit (acquire is what refuses)."""
    return ORJSONResponse(
        views.gauge_view(await admin.set_gauge(ctx, account_id, name, body.usage))
    )


GaugeKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "Moves the gauge once: a repeat with the same body within 24 h moves nothing and"
            " answers the usage as it stands; with another body, 409"
        ),
        pattern=IDEMPOTENCY_KEY.pattern,
    ),
]


@router.post(
    "/accounts/{account_id}/limits/{name}/acquire",
    response_model=GaugeOut,
    tags=["resource limits"],
    summary="Acquire units of a resource limit gauge",
)
async def acquire(
    ctx: Ctx,
    account_id: str,
    name: str,
    body: Annotated[GaugeAmountIn | None, Body()] = None,
    idempotency_key: GaugeKey = None,
) -> Response:
    """Take units of a limit; 403 MAX_RESOURCES_REACHED past it, nothing changed."""
    amount = (body or GaugeAmountIn()).amount
    moved = await admin.acquire(ctx, account_id, name, amount, idempotency_key)
    return ORJSONResponse(views.gauge_view(moved))


@router.post(
    "/accounts/{account_id}/limits/{name}/release",
    response_model=GaugeOut,
    tags=["resource limits"],
    summary="Release units of a resource limit gauge",
)
async def release(
    ctx: Ctx,
    account_id: str,
    name: str,
    body: Annotated[GaugeAmountIn | None, Body()] = None,
    idempotency_key: GaugeKey = None,
) -> Response:
    """Give units of a limit back; 409 if more than is in use."""
    amount = (body or GaugeAmountIn()).amount
    moved = await admin.release(ctx, account_id, name, amount, idempotency_key)
    return ORJSONResponse(views.gauge_view(moved))


# Export ---------------------------------------------------------------------
@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(ctx: Ctx, format: Literal["jsonl"] = "jsonl") -> Response:
    """Every account's usage days, one JSON object per line."""
    del format
    return StreamingResponse(transfer.export_lines(ctx), media_type="application/x-ndjson")
