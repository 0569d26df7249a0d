"""Reservations (SPEC 10): ``POST /v1/reservations/{id}/commit`` and ``DELETE
/v1/reservations/{id}``, operator routes the ``verify`` role may call."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.responses import Response

from quotad.api.deps import Ctx, meter
from quotad.api.responses import ORJSONResponse
from quotad.api.schemas import ErrorBody, Strict, VerifyCost
from quotad.http.reservation_views import reservation_view
from quotad.service import reservations

router = APIRouter(
    tags=["metering"],
    dependencies=[Depends(meter)],
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 500, 503)},
)


class CommitIn(Strict):
    """The cost the work actually took."""

    cost: VerifyCost


class ReservationOut(BaseModel):
    """A reservation as it stands."""

    id: str
    status: Literal["pending", "committed", "cancelled", "expired"]
    reserved: int
    committed: int
    overage: int
    expires_at: str


@router.post("/v1/reservations/{reservation_id}/commit", response_model=ReservationOut)
async def commit_reservation(ctx: Ctx, reservation_id: str, body: CommitIn) -> Response:
    """Settle a reservation at its actual cost: less gives the difference back, more
    consumes the extra (overage where a hard limit has no room). Idempotent."""
    settled = await reservations.commit(ctx, reservation_id, body.cost)
    return ORJSONResponse(reservation_view(settled))


@router.delete("/v1/reservations/{reservation_id}", response_model=ReservationOut)
async def cancel_reservation(ctx: Ctx, reservation_id: str) -> Response:
    """Give back everything a reservation holds. Idempotent."""
    settled = await reservations.cancel(ctx, reservation_id)
    return ORJSONResponse(reservation_view(settled))
