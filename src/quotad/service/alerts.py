"""Noticing alerts on the hot path (SPEC 11): a quota threshold crossed, a first refusal,
credits running low or out.

Verify's consume is atomic and says where each counter stood before and after it, so
exactly one call sees a counter pass a threshold (counters only grow within a window;
a refund that takes one back under is not noticed twice: the event's ``dedupe`` key is
``(account, key, limit, window, threshold)`` and the store writes each key once).

Noticing costs verify a few comparisons; writing the event is a task of its own, so a
verify never waits on it. The write is retried while the records store is unreachable;
an event noticed by a process that dies before writing it is lost (the one gap: the
README says so). Delivery is ``quotad.service.deliveries``'s.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import Any

from quotad.domain import days, ids
from quotad.domain.limits import LimitState, Mode
from quotad.domain.webhooks import (
    CREDITS_EXHAUSTED,
    CREDITS_LOW,
    DEFAULT_THRESHOLDS,
    KEY_EXPIRING,
    QUOTA_EXCEEDED,
    QUOTA_THRESHOLD,
    AlertEvent,
    crossed,
)
from quotad.lazy_logger import LazyLogger
from quotad.storage import AlertStore

log = LazyLogger("quotad.alerts")  # structlog only when something goes wrong

_WRITE_TRIES = 6  # about 30 s of retries (1, 2, 4, 8, 16 s) before an event is given up
_MAX_SEEN = 65_536
DRAIN_SECONDS = 10.0  # how long closing waits for the events noticed to be written


def low_credits_of(plan_mark: int | None, own: int | None) -> int:
    """An account's low-credits mark in micro-credits: its own, else its plan's (0: none,
    so the hot path's test of it is one comparison)."""
    if own is not None:
        return own
    return plan_mark or 0


def thresholds_of(
    plan_thresholds: tuple[int, ...] | None, own: tuple[int, ...] | None
) -> tuple[int, ...]:
    """An account's alert thresholds: its own, else its plan's, else the defaults."""
    if own is not None:
        return own
    return DEFAULT_THRESHOLDS if plan_thresholds is None else plan_thresholds


class Noticer:
    """Writes the alert events one node notices, each at most once per node."""

    def __init__(self, alerts: AlertStore) -> None:
        self._alerts = alerts
        self._tasks: set[asyncio.Task[None]] = set()
        # What this node has written (or seen written), by a cheap key of the crossing:
        # every refused call of a window would otherwise cost a write (and the building of
        # its event) each.
        self._seen: dict[Hashable, None] = {}

    def told(self, crossing: Hashable) -> bool:
        """Whether this node has already noticed ``crossing`` (then nothing need be built)."""
        return crossing in self._seen

    def notice(
        self,
        event_type: str,
        dedupe: str,
        at: datetime,
        account_id: str | None,
        data: dict[str, Any],
        crossing: Hashable | None = None,
    ) -> None:
        """Write an event in the background unless this node already noticed its
        ``crossing`` (by default, its dedupe key)."""
        seen = dedupe if crossing is None else crossing
        if seen in self._seen:
            return
        if len(self._seen) >= _MAX_SEEN:
            self._seen.clear()
        self._seen[seen] = None
        event = AlertEvent(ids.sortable_id("evt", at), event_type, at, dedupe, data, account_id)
        task = asyncio.get_running_loop().create_task(self._write(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, event: AlertEvent) -> None:
        delay = 1.0
        for attempt in range(_WRITE_TRIES):
            try:
                endpoints = await self._alerts.list_webhooks()
                receivers = [e.id for e in endpoints if e.receives(event.type, event.account_id)]
                await self._alerts.record_alert(event, receivers)
            except Exception as exc:  # the store is down: try again, then give up loudly
                if attempt == _WRITE_TRIES - 1:
                    log.error(  # noqa: TRY400 - the store's traceback adds nothing here
                        "alert event lost", type=event.type, dedupe=event.dedupe, error=str(exc)
                    )
                    return
                log.warning("alert event not written yet; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay *= 2
            else:
                return

    async def drain(self, within: float = DRAIN_SECONDS) -> None:
        """Wait until every event noticed so far is written, or ``timeout`` has passed
        (the store is down): those not written by then are given up, and logged."""
        deadline = asyncio.get_running_loop().time() + within
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                for task in list(self._tasks):
                    task.cancel()
                log.error("alert events lost: not written before the store closed",
                          count=len(self._tasks))  # fmt: skip
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
                return
            await asyncio.wait(list(self._tasks), timeout=left)


def _dedupe(*parts: object) -> str:
    return "|".join("" if part is None else str(part) for part in parts)


def _data(
    account_id: str,
    key_id: str | None,
    limit: str,
    window_start: datetime,
    reset: datetime,
    used: int,
    total: int,
    threshold: int | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"account_id": account_id}
    if key_id is not None:
        data["key_id"] = key_id
    data |= {
        "limit": limit,
        "window_start": days.rfc3339(window_start),
        "reset": days.rfc3339(reset),
    }
    if threshold is not None:
        data["threshold"] = threshold
    data |= {"used": used, "total": total}
    return data


def notice_window(
    noticer: Noticer,
    thresholds: tuple[int, ...],
    account_id: str,
    key_id: str | None,
    limit: str,
    window_start: datetime,
    reset: datetime,
    before: int,
    after: int,
    total: int,
    refused: bool,
    at: datetime,
) -> None:
    """Notice what one window quota's move (or refusal) crossed."""
    if refused:
        crossing = (QUOTA_EXCEEDED, account_id, key_id, limit, window_start)
        if noticer.told(crossing):  # every later refusal of the window: nothing to build
            return
        noticer.notice(
            QUOTA_EXCEEDED,
            _dedupe(QUOTA_EXCEEDED, account_id, key_id, limit, days.rfc3339(window_start)),
            at,
            account_id,
            _data(account_id, key_id, limit, window_start, reset, after, total, None),
            crossing,
        )
        return
    for threshold in crossed(thresholds, total, before, after):
        window = days.rfc3339(window_start)
        noticer.notice(
            QUOTA_THRESHOLD,
            _dedupe(QUOTA_THRESHOLD, account_id, key_id, limit, window, threshold),
            at,
            account_id,
            _data(account_id, key_id, limit, window_start, reset, after, total, threshold),
            (QUOTA_THRESHOLD, account_id, key_id, limit, window_start, threshold),
        )


def notice_limits(
    noticer: Noticer,
    thresholds: tuple[int, ...],
    account_id: str,
    key_id: str | None,
    states: Sequence[LimitState],
    costs: dict[str, int],
    granted: bool,
    refused_by: str | None,
    at: datetime,
) -> None:
    """Notice what a version-2 verify's window quotas crossed (rates and shadow limits are
    not quotas to be told about)."""
    for state in states:
        limit = state.limit
        if limit.window is None or limit.mode is Mode.SHADOW or state.window_start is None:
            continue
        owner = key_id if limit.per.value == "key" else None
        refused = not granted and state.name == refused_by
        if granted:
            before = state.used - costs.get(state.service, 0)
        elif refused:
            before = state.used
        else:
            continue
        notice_window(
            noticer,
            thresholds,
            account_id,
            owner,
            state.name,
            state.window_start,
            state.reset,
            before,
            state.used,
            state.total,
            refused,
            at,
        )


def notice_key_expiring(
    noticer: Noticer, account_id: str, key_id: str, expires_at: datetime, at: datetime
) -> None:
    """Notice a key that expires soon (once per key and expiry)."""
    expiry = days.rfc3339(expires_at)
    noticer.notice(
        KEY_EXPIRING,
        _dedupe(KEY_EXPIRING, account_id, key_id, expiry),
        at,
        account_id,
        {"account_id": account_id, "key_id": key_id, "expires_at": expiry},
    )


def notice_credits_exhausted(
    noticer: Noticer,
    account_id: str,
    grant_ids: Sequence[str],
    used: int | float,
    total: int | float,
    at: datetime,
) -> None:
    """Notice an account's credits running out (SPEC 11's ``credits.exhausted``): once
    per set of live grants, so a new grant (or refill) that runs out is told again."""
    episode = ",".join(sorted(grant_ids))
    crossing = (CREDITS_EXHAUSTED, account_id, episode)
    if noticer.told(crossing):
        return
    noticer.notice(
        CREDITS_EXHAUSTED,
        _dedupe(CREDITS_EXHAUSTED, account_id, hashlib.sha256(episode.encode()).hexdigest()),
        at,
        account_id,
        {"account_id": account_id, "limit": "credits", "used": used, "total": total},
        crossing,
    )


def notice_credits_low(
    noticer: Noticer,
    account_id: str,
    grant_ids: Sequence[str],
    used: int | float,
    balance: int | float,
    low_credits: int | float,
    at: datetime,
) -> None:
    """Notice an account's balance falling below its ``low_credits`` mark (SPEC 11's
    ``credits.low``): once per set of live grants, as ``credits.exhausted``, so only a new
    grant (or refill) that lifts the balance back makes a later fall a new event."""
    episode = ",".join(sorted(grant_ids))
    crossing = (CREDITS_LOW, account_id, episode)
    if noticer.told(crossing):
        return
    noticer.notice(
        CREDITS_LOW,
        _dedupe(CREDITS_LOW, account_id, hashlib.sha256(episode.encode()).hexdigest()),
        at,
        account_id,
        {
            "account_id": account_id,
            "limit": "credits",
            "used": used,
            "total": None,
            "balance": balance,
            "low_credits": low_credits,
        },
        crossing,
    )
