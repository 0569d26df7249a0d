"""Reservations in process memory (SPEC 10)."""

from __future__ import annotations

import threading
from datetime import datetime

from quotad.domain.credits import Reservation


class MemoryReservations:
    """Reservations of the store (``CreditStore``)."""

    def __init__(self) -> None:
        self._reservations_lock = threading.Lock()
        # id -> (reservation, claim, claimed until)
        self._reservations: dict[str, tuple[Reservation, str | None, datetime | None]] = {}

    async def create_reservation(self, reservation: Reservation) -> None:
        """Store a pending reservation."""
        raise NotImplementedError  # the reservations helper writes this

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        """The reservation with this id."""
        raise NotImplementedError

    async def claim_reservation(
        self, reservation_id: str, claim: str, now: datetime, until: datetime
    ) -> Reservation | None:
        """Hold a pending reservation under ``claim``."""
        raise NotImplementedError

    async def due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        """Pending reservations past their deadline that nobody holds."""
        raise NotImplementedError

    async def settle_reservation(self, reservation: Reservation, claim: str) -> bool:
        """Store a settled reservation still held under ``claim``."""
        raise NotImplementedError
