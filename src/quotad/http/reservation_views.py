"""Reservations as the API answers them (SPEC 10)."""

from __future__ import annotations

from typing import Any

from quotad.domain import days
from quotad.domain.credits import Reservation


def reservation_view(reservation: Reservation) -> dict[str, Any]:
    """``{"id", "status", "reserved", "committed", "overage", "expires_at"}``."""
    return {
        "id": reservation.id,
        "status": reservation.status.value,
        "reserved": reservation.reserved,
        "committed": reservation.committed,
        "overage": reservation.overage,
        "expires_at": days.rfc3339(reservation.expires_at),
    }
