"""Metering events (SPEC 4.3), for the provider's backend.

Verify-and-consume (SPEC 4.2) is ``quotad.api.verify_endpoint``, a plain ASGI endpoint.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from quotad.api.deps import Ctx, meter
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import ErrorBody, EventsIn, EventsOut
from quotad.service import usage

router = APIRouter(
    tags=["metering"],
    dependencies=[Depends(meter)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 500, 503)},
)


@router.post("/v1/events", response_model=EventsOut)
async def record_events(ctx: Ctx, body: EventsIn) -> Response:
    """Record usage that already happened; duplicates by id are counted, not added."""
    batch = [
        usage.EventInput(e.id, e.account_id, e.service, e.amount, e.timestamp) for e in body.events
    ]
    outcome = await usage.record_events(ctx, batch)
    return ORJSONResponse({"accepted": outcome.accepted, "duplicates": outcome.duplicates})
