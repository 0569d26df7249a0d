"""Webhook endpoints, their deliveries and the alert events, under ``/admin/v1`` (SPEC 11).

A secret is in two answers only: the endpoint's creation and its rotation.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import Response

from quotad.api.deps import Ctx, operator
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import (
    AlertEventOut,
    CreatedWebhookOut,
    CursorText,
    DeliveryOut,
    ErrorBody,
    Page,
    RotateSecretIn,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from quotad.http import views
from quotad.http.webhook_views import (
    alert_event_view,
    created_webhook_view,
    delivery_view,
    webhook_view,
)
from quotad.service import webhooks

router = APIRouter(
    prefix="/admin/v1",
    tags=["webhooks"],
    dependencies=[Depends(operator)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 500, 503)},
)

PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page")]
Cursor = Annotated[CursorText | None, Query()]


def _page(items: list[dict[str, Any]], limit: int) -> Response:
    """``limit + 1`` items were asked for: one more means there is a next page."""
    more = len(items) > limit
    page = items[:limit]
    next_cursor = views.encode_cursor(page[-1]["id"]) if more else None
    return ORJSONResponse({"items": page, "next_cursor": next_cursor})


# Endpoints ------------------------------------------------------------------
@router.post("/webhooks", status_code=201, response_model=CreatedWebhookOut)
async def create_webhook(ctx: Ctx, body: WebhookIn) -> Response:
    """Register a webhook endpoint; its ``secret`` is in this answer only."""
    endpoint = await webhooks.create(ctx, body.url, list(body.events), body.description)
    return ORJSONResponse(created_webhook_view(endpoint), status_code=201)


@router.get("/webhooks", response_model=Page[WebhookOut])
async def list_webhooks(ctx: Ctx) -> Response:
    """Every webhook endpoint, oldest first; never a secret."""
    found = await webhooks.list_all(ctx)
    return ORJSONResponse({"items": [webhook_view(e) for e in found], "next_cursor": None})


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut)
async def get_webhook(ctx: Ctx, webhook_id: str) -> Response:
    """One webhook endpoint."""
    return ORJSONResponse(webhook_view(await webhooks.get(ctx, webhook_id)))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut)
async def update_webhook(ctx: Ctx, webhook_id: str, body: WebhookPatch) -> Response:
    """Change an endpoint's URL, events or description, or disable or enable it
    (enabling resumes its pending deliveries)."""
    endpoint = await webhooks.update(
        ctx,
        webhook_id,
        url=body.url,
        events=None if body.events is None else list(body.events),
        description=body.description,
        enabled=body.enabled,
    )
    return ORJSONResponse(webhook_view(endpoint))


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(ctx: Ctx, webhook_id: str) -> Response:
    """Delete an endpoint and its deliveries."""
    await webhooks.delete(ctx, webhook_id)
    return Response(status_code=204)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=CreatedWebhookOut)
async def rotate_webhook_secret(
    ctx: Ctx, webhook_id: str, body: Annotated[RotateSecretIn | None, Body()] = None
) -> Response:
    """A new secret signs every delivery from now (with ``grace_seconds``, the previous
    one signs beside it that long); the new ``secret`` is in this answer only."""
    grace = (body or RotateSecretIn()).grace_seconds
    endpoint = await webhooks.rotate_secret(ctx, webhook_id, grace)
    return ORJSONResponse(created_webhook_view(endpoint))


@router.get("/webhooks/{webhook_id}/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    ctx: Ctx, webhook_id: str, limit: PageSize = 50, cursor: Cursor = None
) -> Response:
    """An endpoint's deliveries with their attempts, newest first."""
    found = await webhooks.deliveries(ctx, webhook_id, limit + 1, views.decode_cursor(cursor))
    return _page([delivery_view(d) for d in found], limit)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=DeliveryOut,
)
async def resend_delivery(ctx: Ctx, webhook_id: str, delivery_id: str) -> Response:
    """Send a delivery again, with the same ``webhook-id``, as soon as a node is free to."""
    delivery = await webhooks.resend(ctx, webhook_id, delivery_id)
    return ORJSONResponse(delivery_view(delivery), status_code=202)


# Alert events ---------------------------------------------------------------
@router.get("/alerts", response_model=Page[AlertEventOut])
async def list_alerts(
    ctx: Ctx,
    account_id: Annotated[
        str | None, Query(max_length=64, description="Of this account only")
    ] = None,
    limit: PageSize = 50,
    cursor: Cursor = None,
) -> Response:
    """The alert events written, newest first, of one account or of all."""
    found = await webhooks.alert_events(ctx, limit + 1, views.decode_cursor(cursor), account_id)
    return _page([alert_event_view(e) for e in found], limit)
