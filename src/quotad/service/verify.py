"""Verify-and-consume, the hot path: authenticate a key and consume quota in one answer.

The decision is the store's single atomic ``consume``; this module only resolves the
key, the account's day and total, and the idempotency claim around it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import structlog

from quotad import metrics
from quotad.domain import days
from quotad.domain.models import IdempotencyClaim
from quotad.errors import AuthError, Forbidden, StorageError
from quotad.service import admin, auth
from quotad.service.context import Context
from quotad.service.usage import current_total


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to ``POST /v1/verify``."""

    valid: bool
    code: str
    service: str
    account_id: str | None = None
    used: int | None = None
    total: int | None = None
    reset: datetime | None = None
    window_seconds: int | None = None
    note: str | None = None

    @property
    def remaining(self) -> int | None:
        """Units left today, when known."""
        if self.used is None or self.total is None:
            return None
        return max(self.total - self.used, 0)


def fingerprint(key_digest: str, service: str, cost: int) -> str:
    """What an Idempotency-Key binds to: the same key, service and cost."""
    return hashlib.sha256(f"{key_digest}\n{service}\n{cost}".encode()).hexdigest()


log = structlog.get_logger("quotad.verify")


async def verify(
    ctx: Context, raw_key: str, service: str, cost: int, idempotency_key: str | None = None
) -> Verdict:
    """Authenticate ``raw_key`` and consume ``cost`` units of ``service`` for its account.

    A store that fails (or, when ``store_timeout_ms`` is set, does not answer in time) is
    answered by the ``on_store_error`` policy: 503 (fail-closed) or an uncounted allow
    (fail-open).
    """
    started = time.perf_counter()
    limit = ctx.settings.store_timeout_ms / 1000 or None
    try:
        if limit is None:  # asyncio.timeout(None) would cost a context manager per call
            verdict = await _verify(ctx, raw_key, service, cost, idempotency_key)
        else:
            async with asyncio.timeout(limit):
                verdict = await _verify(ctx, raw_key, service, cost, idempotency_key)
    except (StorageError, TimeoutError) as exc:
        metrics.STORE_ERRORS.labels("verify").inc()
        if ctx.settings.on_store_error != "fail-open":
            if isinstance(exc, StorageError):
                raise
            raise StorageError("the store did not answer in time") from exc
        metrics.FAIL_OPEN.labels(service).inc()
        log.warning("store unreachable: allowing the call uncounted (fail-open)", service=service)
        verdict = Verdict(
            True,
            "VALID",
            service,
            note="the store is unreachable; allowed uncounted by the fail-open policy",
        )
    metrics.count_consume(service, verdict.code)
    metrics.CONSUME_SECONDS.observe(time.perf_counter() - started)
    return verdict


@lru_cache(maxsize=4096)
def _day_window(day: date, timezone: str) -> tuple[datetime, int]:
    """When ``day`` resets in ``timezone``, and its length in seconds (DST: not always 24 h).

    Pure, and the same for every call of a day: worth two zone conversions per verify.
    """
    start, reset = days.day_start(day, timezone), days.next_reset(day, timezone)
    return reset, int((reset - start).total_seconds())


async def _verify(
    ctx: Context, raw_key: str, service: str, cost: int, idempotency_key: str | None
) -> Verdict:
    await admin.require_service(ctx, service)
    now = ctx.clock.now()  # one instant for the key's validity and the day consumed
    try:
        caller = await auth.authenticate(ctx, raw_key, now)
        auth.require_scope(caller, f"consume:{service}")
    except (AuthError, Forbidden) as exc:
        return Verdict(False, exc.code.value, service, note=exc.note)
    account = caller.account
    total = await current_total(ctx, account, service)
    if total is None:
        return Verdict(
            False,
            "FORBIDDEN",
            service,
            account.id,
            note=f"the plan of account {account.id!r} has no quota for {service!r}",
        )
    day = days.local_day(now, account.timezone)
    claim = None
    if idempotency_key is not None:
        claim = IdempotencyClaim(
            idempotency_key,
            fingerprint(caller.key.digest, service, cost),
            now + timedelta(seconds=ctx.settings.idempotency_ttl_seconds),
        )
    outcome = await ctx.store.consume(account.id, service, day, cost, total, claim, now)
    reset, window_seconds = _day_window(outcome.day, account.timezone)
    return Verdict(
        valid=outcome.granted,
        code="VALID" if outcome.granted else "QUOTA_EXCEEDED",
        service=service,
        account_id=account.id,
        used=outcome.used,
        total=outcome.total,
        reset=reset,
        window_seconds=window_seconds,
    )
