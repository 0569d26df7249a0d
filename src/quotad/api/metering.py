"""Verify-and-consume and metering events (SPEC 4.2, 4.3), for the provider's backend."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from starlette.responses import Response

from quotad.api.deps import Ctx, operator
from quotad.api.responses import ORJSONResponse, verdict_body, verdict_headers
from quotad.api.schemas import ErrorBody, EventsIn, EventsOut, VerifyIn, VerifyOut
from quotad.errors import ValidationFailed
from quotad.service import usage, verify

router = APIRouter(
    tags=["metering"],
    dependencies=[Depends(operator)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 500, 503)},
)
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@router.post("/v1/verify", response_model=VerifyOut)
async def verify_key(
    ctx: Ctx,
    body: VerifyIn,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Replays the first answer for 24 h"),
    ] = None,
) -> Response:
    """Authenticate a customer's key and consume ``cost`` units of a service, all or nothing."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed.at(
            "/header/Idempotency-Key", "must be 1 to 255 visible ASCII characters", "pattern"
        )
    verdict = await verify.verify(ctx, body.key, body.service, body.cost, idempotency_key)
    return ORJSONResponse(
        verdict_body(verdict), headers=verdict_headers(verdict, ctx.clock.now().timestamp())
    )


@router.post("/v1/events", response_model=EventsOut)
async def record_events(ctx: Ctx, body: EventsIn) -> Response:
    """Record usage that already happened; duplicates by id are counted, not added."""
    batch = [
        usage.EventInput(e.id, e.account_id, e.service, e.amount, e.timestamp) for e in body.events
    ]
    outcome = await usage.record_events(ctx, batch)
    return ORJSONResponse({"accepted": outcome.accepted, "duplicates": outcome.duplicates})
