"""A Limits v2 call's slots, and what a store derives from them, kept from call to call.

``consume`` describes a call's day row by its values and hands the call's other slots
as ``extra``. A verify passes the same ``extra`` tuple (its prepared call's) on every
call until one of its windows ends, so a store finds what it built for the call (its
slots, day row first, and its rows, keys or script line) by one lookup of a few small
values and that tuple's identity, instead of building the day row's slot and hashing
every field of every slot on each consume. An entry holds its ``extra``, so that the
``id`` is no other tuple's while the entry lasts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Generic, TypeVar

from quotad.domain.limits import Slot, with_day_row

T = TypeVar("T")
MAX_CALLS = 4096  # calls kept, then started afresh

CallKey = tuple[str, str, date, int, int, int, int]


class SlotCalls(Generic[T]):
    """The calls a store has seen: each one's slots and ``derive(account_id, slots)``.

    Not locked: a store that derives from state under its own lock calls ``slots_of``
    under that lock.
    """

    def __init__(self, derive: Callable[[str, tuple[Slot, ...]], T]) -> None:
        self._derive = derive
        self._kept: dict[CallKey, tuple[tuple[Slot, ...], tuple[Slot, ...], T]] = {}

    def slots_of(
        self,
        account_id: str,
        service: str,
        day: date,
        total: int,
        day_mode: int,
        cost: int,
        extra: tuple[Slot, ...],
    ) -> tuple[tuple[Slot, ...], T]:
        """A consume's slots (its day row's, then ``extra``) and what is derived from them."""
        key = (account_id, service, day, total, day_mode, cost, id(extra))
        found = self._kept.get(key)
        if found is None or found[0] is not extra:
            slots = with_day_row(service, day, total, day_mode, cost, extra)
            if len(self._kept) >= MAX_CALLS:
                self._kept.clear()
            found = self._kept[key] = (extra, slots, self._derive(account_id, slots))
        return found[1], found[2]

    def clear(self) -> None:
        """Forget every call (what was derived no longer holds)."""
        self._kept.clear()
