"""``client.reservation(...)``: reserve a cost, do the work, commit what it took.

One object serves both shells: ``with`` on a ``Client`` and ``async with`` on an
``AsyncClient``. Entering reserves (``verify`` with ``reserve=True``) and raises the
refusal as the SDK's error; the body reports the actual cost (``r.cost = n`` or
``r.commit(n)``); a clean exit commits it (the reserved cost when none was reported)
and an exception cancels the reservation, then propagates.
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any

from quotad.sdk.errors import STATUS_BY_CODE, QuotadAPIError, QuotadSDKError, error_class
from quotad.sdk.models import Reservation, Verdict


def refusal_error(verdict: Verdict) -> QuotadAPIError:
    """The exception a refused verdict stands for (``CreditsExhaustedError`` for
    ``CREDITS_EXHAUSTED``, ``QuotaExceededError`` for ``QUOTA_EXCEEDED``, ...)."""
    status = STATUS_BY_CODE.get(verdict.code, 403)
    cls = error_class(status, verdict.code)
    note = verdict.note or f"the call was refused ({verdict.code})"
    return cls(status, verdict.code, "", note, (), verdict.retry_after, verdict.headers)


class ReservationScope:
    """A reservation held for the duration of a ``with`` (or ``async with``) block.

    Attributes:
        verdict: the granted verdict of the reserving verify (after entering).
        cost: the cost to commit on a clean exit (None: the reserved one).
        result: the settled reservation (after leaving).
    """

    def __init__(
        self, client: Any, key: str, service: str, cost: int, ttl_seconds: int | None
    ) -> None:
        self._client = client
        self._key = key
        self._service = service
        self.reserved = cost
        self._ttl = ttl_seconds
        self.cost: int | None = None
        self.verdict: Verdict | None = None
        self.result: Reservation | None = None

    @property
    def id(self) -> str:
        """The reservation's id (once entered)."""
        if self.verdict is None or self.verdict.reservation_id is None:
            msg = "the reservation is made when the block is entered"
            raise QuotadSDKError(msg)
        return self.verdict.reservation_id

    def commit(self, cost: int) -> None:
        """Report the actual cost: the block's clean exit commits it."""
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            msg = f"a reservation's cost is an integer >= 0, not {cost!r}"
            raise ValueError(msg)
        self.cost = cost

    def _arguments(self) -> dict[str, Any]:
        # A fresh Idempotency-Key lets the SDK retry the reserving verify without
        # reserving twice.
        return {
            "reserve": True,
            "ttl_seconds": self._ttl,
            "idempotency_key": uuid.uuid4().hex,
        }

    def _granted(self, verdict: Verdict) -> None:
        if not verdict.valid:
            raise refusal_error(verdict)
        if verdict.reservation_id is None:
            msg = "quotad granted the call but answered no reservation_id"
            raise QuotadSDKError(msg)
        self.verdict = verdict

    def _settlement(self) -> int:
        if self.cost is not None:
            self.commit(self.cost)  # checks a cost set by assignment too
            return self.cost
        return self.reserved

    # Blocking --------------------------------------------------------------------------
    def __enter__(self) -> ReservationScope:
        if self._client.is_async:
            msg = "an AsyncClient's reservation is entered with `async with`"
            raise TypeError(msg)
        verdict = self._client.verify(self._key, self._service, self.reserved, **self._arguments())
        self._granted(verdict)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.result = self._client.commit_reservation(self.id, self._settlement())
        else:
            self.result = self._client.cancel_reservation(self.id)

    # asyncio ---------------------------------------------------------------------------
    async def __aenter__(self) -> ReservationScope:
        if not self._client.is_async:
            msg = "a Client's reservation is entered with `with`"
            raise TypeError(msg)
        verdict = await self._client.verify(
            self._key, self._service, self.reserved, **self._arguments()
        )
        self._granted(verdict)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.result = await self._client.commit_reservation(self.id, self._settlement())
        else:
            self.result = await self._client.cancel_reservation(self.id)
