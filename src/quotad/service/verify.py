"""Verify-and-consume, the hot path: authenticate a key and consume quota in one answer.

The decision is the store's single atomic ``consume``; this module only resolves the
key, the account's day and total, and the idempotency claim around it.

What a valid key resolves to for a service (its account, timezone and total) is an
``Admission``. With the record cache on, admissions are derived in it (see
``quotad.storage.cache``) from records read afresh, keyed by the key's digest: one is
never older than ``record_cache_seconds``, it clears with any record write through this
node, and it is only used before the key's own expiry or revocation instant. So a verify
whose key is in use costs one digest and one dictionary lookup before its consume; a
refused key is resolved afresh every time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

import structlog

from quotad import metrics
from quotad.domain import days, keys
from quotad.domain.models import AccountStatus, IdempotencyClaim, effective_total
from quotad.errors import AuthError, Forbidden, StorageError
from quotad.service import admin, auth
from quotad.service.context import Context
from quotad.service.deadline import Deadline
from quotad.storage.base import CALL_DEADLINE
from quotad.storage.cache import RecordCache


class Verdict(NamedTuple):
    """The answer to ``POST /v1/verify``.

    A named tuple rather than a dataclass: one is built per verify, and a frozen
    dataclass costs four times as much to build.
    """

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


class Admission(NamedTuple):
    """What a valid key may consume of one service, resolved from its records."""

    account_id: str
    key_digest: str
    timezone: str
    total: int
    until: datetime | None  # the key's expiry or revocation, whichever comes first


def fingerprint(key_digest: str, service: str, cost: int) -> str:
    """What an Idempotency-Key binds to: the same key, service and cost."""
    return hashlib.sha256(f"{key_digest}\n{service}\n{cost}".encode()).hexdigest()


log = structlog.get_logger("quotad.verify")


async def verify(
    ctx: Context, raw_key: str, service: str, cost: int, idempotency_key: str | None = None
) -> Verdict:
    """Authenticate ``raw_key`` and consume ``cost`` units of ``service`` for its account.

    A store that fails or does not answer within ``store_timeout_ms`` (800 ms by default) is
    answered by the ``on_store_error`` policy: 503 (fail-closed) or an uncounted allow
    (fail-open); either way the call is never charged later.
    """
    return await _decided(ctx, service, _verify(ctx, raw_key, service, cost, idempotency_key))


async def verify_account(ctx: Context, account_id: str, service: str, cost: int) -> Verdict:
    """Consume ``cost`` units of ``service`` for an account its caller already authenticated.

    For a gateway that identifies the account itself (Envoy's ``account_id`` descriptor
    entry, ``quotad.envoy``): no key is checked, the account must exist (else NOT_FOUND)
    and be active (else FORBIDDEN); the consume, the store's timeout and ``on_store_error``
    are those of ``verify``.
    """
    return await _decided(ctx, service, _verify_account(ctx, account_id, service, cost))


async def _decided(ctx: Context, service: str, decision: Awaitable[Verdict]) -> Verdict:
    """Await ``decision`` (not started yet) within the store's timeout, under its policy."""
    started = time.perf_counter()
    limit = ctx.settings.store_timeout_ms / 1000 or None
    try:
        if limit is None:
            verdict = await decision
        else:
            # The store hears when we stop waiting: work it sent that runs later is void,
            # and a grant answered after it is given back (never charged unanswered).
            deadline = CALL_DEADLINE.set(time.time() + limit)
            try:
                with _deadline(limit).watch():
                    verdict = await decision
            finally:
                CALL_DEADLINE.reset(deadline)
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


@lru_cache(maxsize=8)
def _deadline(seconds: float) -> Deadline:
    """The shared deadline of every verify given ``seconds`` (one per setting)."""
    return Deadline(seconds)


@lru_cache(maxsize=4096)
def _day_window(day: date, timezone: str) -> tuple[datetime, int]:
    """When ``day`` resets in ``timezone``, and its length in seconds (DST: not always 24 h).

    Pure, and the same for every call of a day: worth two zone conversions per verify.
    """
    start, reset = days.day_start(day, timezone), days.next_reset(day, timezone)
    return reset, int((reset - start).total_seconds())


async def _admit(ctx: Context, raw_key: str, service: str, now: datetime) -> Admission | Verdict:
    """Resolve a key for a service from the records: an admission, or the refusal.

    The key, its account and their plan are read in one step, so they are as of one
    moment. The service is the record cache's (services are never removed).
    """
    await admin.require_service(ctx, service)
    try:
        key_digest = auth.well_formed_digest(raw_key)
        found = await ctx.records.find_key_records(key_digest)  # passed through: afresh
        if found is None:
            raise auth.unknown_key()
        key, account, plan = found
        caller = auth.Caller(auth.check_key(key, key_digest, now), auth.check_account(account))
        auth.require_scope(caller, f"consume:{service}")
    except (AuthError, Forbidden) as exc:
        return Verdict(False, exc.code.value, service, note=exc.note)
    total = effective_total(plan, account, service)
    if total is None:
        return Verdict(
            False,
            "FORBIDDEN",
            service,
            account.id,
            note=f"the plan of account {account.id!r} has no quota for {service!r}",
        )
    key = caller.key
    ends = [moment for moment in (key.expires_at, key.revoked_at) if moment is not None]
    return Admission(account.id, key.digest, account.timezone, total, min(ends, default=None))


_Key = tuple[type[Admission], str, str]  # an admission's key in the record cache


def _is_admission(resolved: Admission | Verdict) -> bool:
    return isinstance(resolved, Admission)


def _recall(
    ctx: Context, cache: RecordCache, key: _Key, raw_key: str, now: datetime
) -> Admission | None:
    """The admission the record cache holds under ``key``, if usable now."""
    admission: Admission | None = cache.recall(
        key, lambda: _admit(ctx, raw_key, key[2], ctx.clock.now()), _is_admission
    )
    if admission is not None and admission.until is not None and now >= admission.until:
        return None  # expired or revoked since: the records say how
    return admission


async def _resolve(
    ctx: Context, cache: RecordCache, key: _Key, raw_key: str, now: datetime
) -> Admission | Verdict:
    """The admission under ``key``, or the refusal, when the cache had none usable."""
    service = key[2]
    if cache.recall(key) is not None:  # held, but past the key's end: ask the records
        return await _admit(ctx, raw_key, service, now)

    def load() -> Awaitable[Admission | Verdict]:
        return _admit(ctx, raw_key, service, ctx.clock.now())

    resolved: Admission | Verdict = await cache.derive(key, load, _is_admission)
    return resolved


async def _verify(
    ctx: Context, raw_key: str, service: str, cost: int, idempotency_key: str | None
) -> Verdict:
    now = ctx.clock.now()  # one instant for the key's validity and the day consumed
    cache = ctx.cache
    if cache is None:
        admission = await _admit(ctx, raw_key, service, now)
    else:
        key = (Admission, keys.digest(raw_key), service)
        admission = _recall(ctx, cache, key, raw_key, now) or await _resolve(
            ctx, cache, key, raw_key, now
        )
    if isinstance(admission, Verdict):
        return admission
    claim = None
    if idempotency_key is not None:
        claim = IdempotencyClaim(
            idempotency_key,
            fingerprint(admission.key_digest, service, cost),
            now + timedelta(seconds=ctx.settings.idempotency_ttl_seconds),
        )
    return await _consume(
        ctx, admission.account_id, admission.timezone, service, cost, admission.total, claim, now
    )


async def _verify_account(ctx: Context, account_id: str, service: str, cost: int) -> Verdict:
    now = ctx.clock.now()
    await admin.require_service(ctx, service)
    account = await ctx.records.get_account(account_id)  # the record cache's, as the plan
    if account is None:
        return Verdict(False, "NOT_FOUND", service, note=f"account {account_id!r} does not exist")
    if account.status is AccountStatus.SUSPENDED:
        return Verdict(False, "FORBIDDEN", service, account.id, note="the account is suspended")
    plan = await ctx.records.get_plan(account.plan_id)
    total = None if plan is None else effective_total(plan, account, service)
    if total is None:
        return Verdict(
            False,
            "FORBIDDEN",
            service,
            account.id,
            note=f"the plan of account {account.id!r} has no quota for {service!r}",
        )
    return await _consume(ctx, account.id, account.timezone, service, cost, total, None, now)


async def _consume(
    ctx: Context,
    account_id: str,
    timezone: str,
    service: str,
    cost: int,
    total: int,
    claim: IdempotencyClaim | None,
    now: datetime,
) -> Verdict:
    """The store's one atomic consume of ``cost`` on the account's day of ``now``."""
    day = days.local_day(now, timezone)
    outcome = await ctx.counters.consume(account_id, service, day, cost, total, claim, now)
    reset, window_seconds = _day_window(outcome.day, timezone)
    return Verdict(
        outcome.granted,
        "VALID" if outcome.granted else "QUOTA_EXCEEDED",
        service,
        account_id,
        outcome.used,
        outcome.total,
        reset,
        window_seconds,
    )


def consumed_day(verdict: Verdict, timezone: str) -> date:
    """The account's local day a granted verdict consumed from: the day its reset ends.

    Taken from the verdict rather than from the clock, so a refund just after midnight
    still credits the day that was charged.
    """
    if verdict.reset is None:
        msg = "the verdict has no reset time"
        raise ValueError(msg)
    return days.local_day(verdict.reset - timedelta(seconds=1), timezone)


async def refund(ctx: Context, verdict: Verdict, cost: int) -> None:
    """Give ``cost`` back to the day a granted verdict consumed from (the work it paid for
    failed); nothing for a verdict that consumed nothing or an account deleted since."""
    if verdict.account_id is None or verdict.total is None or verdict.reset is None:
        return
    account = await ctx.records.get_account(verdict.account_id)
    if account is None:
        return
    day = consumed_day(verdict, account.timezone)
    await ctx.counters.adjust(account.id, verdict.service, day, -cost, verdict.total)
