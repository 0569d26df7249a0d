"""What a store keeps per Limits v2 call (``storage.slot_calls``): found again by the
call's ``extra`` tuple itself, never by another tuple, and bounded."""

from __future__ import annotations

from datetime import date

from quotad.domain.limits import HARD, Slot
from quotad.storage import slot_calls
from quotad.storage.slot_calls import SlotCalls

DAY = date(2024, 11, 7)


def month(total: int) -> tuple[Slot, ...]:
    """A call's other slots: one month window of ``total``."""
    return (Slot("insights.month", "2024-11", total, HARD, 1),)


def test_the_same_extra_is_derived_once_and_another_afresh() -> None:
    """A call with the same ``extra`` tuple reuses what was derived; another tuple, even one
    equal to it, or another day row, gets its own slots, derived from what it says."""
    derived: list[tuple[str, tuple[Slot, ...]]] = []

    def derive(account: str, slots: tuple[Slot, ...]) -> int:
        derived.append((account, slots))
        return len(derived)

    calls = SlotCalls(derive)
    extra = month(100)
    first = calls.slots_of("a", "insights", DAY, 10, HARD, 1, extra)
    assert calls.slots_of("a", "insights", DAY, 10, HARD, 1, extra) == first
    assert len(derived) == 1
    assert first[0][0] == Slot("insights", "2024-11-07", 10, HARD, 1)
    assert first[0][1:] == extra
    other = month(200)
    slots, number = calls.slots_of("a", "insights", DAY, 10, HARD, 1, other)
    assert (slots[1].total, number) == (200, 2)
    slots, number = calls.slots_of("a", "insights", DAY, 20, HARD, 1, extra)
    assert (slots[0].total, number) == (20, 3)
    slots, number = calls.slots_of("b", "insights", DAY, 10, HARD, 1, extra)
    assert (derived[-1][0], number) == ("b", 4)


def test_a_tuple_gone_is_never_mistaken_for_the_next_one() -> None:
    """Calls each with a new ``extra`` (the id of one freed may be the next one's) are each
    answered with their own slots: an entry keeps its tuple alive, so no id is reused."""
    calls = SlotCalls(lambda _account, slots: slots[1].total)
    for total in range(1, 200):
        slots, derived = calls.slots_of("a", "insights", DAY, 10, HARD, 1, month(total))
        assert (slots[1].total, derived) == (total, total)


def test_it_keeps_at_most_max_calls() -> None:
    """Past ``MAX_CALLS`` distinct calls it starts afresh instead of growing."""
    calls = SlotCalls(lambda _account, slots: slots)
    kept = [month(total) for total in range(slot_calls.MAX_CALLS + 5)]
    for extra in kept:
        calls.slots_of("a", "insights", DAY, 10, HARD, 1, extra)
    assert len(calls._kept) <= slot_calls.MAX_CALLS
