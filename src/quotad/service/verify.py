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
import math
import time
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

import structlog

from quotad import metrics
from quotad.domain import credits, days, keys, limits
from quotad.domain.credits import Grant, Hold
from quotad.domain.limits import (
    CREDIT,
    RATE_PERIOD,
    TALLY,
    Limits,
    LimitSpec,
    LimitState,
    Mode,
    Per,
    Slot,
    Span,
    Window,
)
from quotad.domain.models import (
    Account,
    AccountStatus,
    ConsumeOutcome,
    IdempotencyClaim,
    Plan,
    day_total,
    service_limits,
)
from quotad.domain.webhooks import DEFAULT_THRESHOLDS, threshold_marks
from quotad.errors import AuthError, Forbidden, StorageError
from quotad.service import admin, alerts, auth
from quotad.service import credits as credit_service
from quotad.service.context import Context
from quotad.service.deadline import Deadline
from quotad.storage.base import CALL_DEADLINE
from quotad.storage.cache import RecordCache


class Charge(NamedTuple):
    """What a granted single-service v2 verify moved: its day row and its window slots."""

    day: date
    day_total: int
    windows: tuple[Slot, ...]


class Decided(NamedTuple):
    """A v2 consume's slots, and each counter's value before and after it."""

    slots: tuple[Slot, ...]
    before: Sequence[int]
    after: Sequence[int]


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
    # Limits v2 (SPEC 9); a version-1 verdict leaves them at their defaults.
    limits: tuple[LimitState, ...] = ()  # every limit checked, in the call's order
    refused_by: str | None = None  # the name of the first limit that refused
    overage: int = 0  # what soft limits went past their totals, summed
    would_refuse: tuple[str, ...] = ()  # the shadow limits that would have refused
    retry_after: int | None = None  # a rate's refusal: seconds until its tokens are there
    charged: Charge | None = None  # what refund() gives back of a granted v2 verdict
    # A v2 consume's slots with every counter before and after it (for a reservation to
    # know what it moved); None for version 1's and for refusals before any consume.
    decided: Decided | None = None
    # A priced call (SPEC 10): micro-credits debited, and the balance of live grants after.
    credits: tuple[int, int] | None = None
    # The entry of ``limits`` the verdict's own fields come from (the refusing limit, else
    # the one with the least room); None for version 1's.
    shown: LimitState | None = None

    @property
    def remaining(self) -> int | None:
        """Units left of the verdict's limit (today's, for version 1), when known."""
        if self.used is None or self.total is None:
            return None
        return max(self.total - self.used, 0)


class Admission(NamedTuple):
    """What a valid key may consume of one service, resolved from its records."""

    account_id: str
    key_digest: str
    timezone: str
    total: int  # the daily total the account shares (0: none)
    until: datetime | None  # the key's expiry or revocation, whichever comes first
    limits: Limits = ()  # every limit of the service for this key (plan, overrides, key's)
    key_id: str | None = None
    anchor_day: int = 1  # the account's billing anchor
    # Its calls' slots by cost, kept while their windows last (``_prepared``).
    prepared: dict[int, _Prepared] | None = None  # None: prepared afresh every call
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # its alerts' (SPEC 11)
    marks: tuple[int, ...] = ()  # the daily use at which each is reached (version 1)
    # Credits (SPEC 10): the service's price a unit (0: unpriced, the account's grants
    # never read), the grants as of admission, and when their live set next changes by
    # itself (an expiry, a void, the next refill): the admission is resolved afresh then.
    price: int = 0
    grants: tuple[Grant, ...] = ()
    credits_until: datetime | None = None
    low_credits: int = 0  # micro-credits: credits.low below it (SPEC 11); 0: none


Items = Sequence[tuple[str, int]]


def fingerprint(key_digest: str, service: str, cost: int) -> str:
    """What an Idempotency-Key binds to: the same key, service and cost."""
    return hashlib.sha256(f"{key_digest}\n{service}\n{cost}".encode()).hexdigest()


def items_fingerprint(key_digest: str, items: Items) -> str:
    """``fingerprint`` over every item, in order (one item: exactly ``fingerprint``'s)."""
    parts = "".join(f"\n{service}\n{cost}" for service, cost in items)
    return hashlib.sha256(f"{key_digest}{parts}".encode()).hexdigest()


# The claims quotad makes itself share the account's Idempotency-Keys: a reservation's
# settlement ("reservation:<id>", "reservation:<id>:over") and a SQL give-back's mark
# ("quotad-give-back:<uuid>"). (An adjustment's, "adjust <digest>", holds a space, which
# a caller's key never does.)
OWN_CLAIMS = ("reservation:", "quotad-")


def claim_key(idempotency_key: str) -> str:
    """The name a caller's Idempotency-Key is kept under: itself, unless it reads as one of
    quotad's own claims (``OWN_CLAIMS``), which a call could then block or replay (a
    commit answered 409 for good, say); such a key is kept under a name of its own."""
    if idempotency_key.startswith(OWN_CLAIMS):
        return "customer " + hashlib.sha256(idempotency_key.encode()).hexdigest()
    return idempotency_key


# Builds a named tuple without its Python-level ``__new__`` (see ``_verdict``).
_new = tuple.__new__

log = structlog.get_logger("quotad.verify")


async def verify(
    ctx: Context,
    raw_key: str,
    service: str,
    cost: int,
    idempotency_key: str | None = None,
    items: Items | None = None,
    hold: Hold | None = None,
) -> Verdict:
    """Authenticate ``raw_key`` and consume ``cost`` units of ``service`` for its account.

    With ``items`` (``(service, cost)`` pairs, each service once), every item's limits
    are checked and moved in one consume: all pass or none does; ``service`` and
    ``cost`` are then the first item's. With a ``hold`` (a reserve's), a store that keeps
    reservations with its counters makes the reservation in that same consume.

    A store that fails or does not answer within ``store_timeout_ms`` (800 ms by default) is
    answered by the ``on_store_error`` policy: 503 (fail-closed) or an uncounted allow
    (fail-open); either way the call is never charged later.
    """
    asked = ((service, cost),) if items is None else tuple(items)
    return await _decided(ctx, service, _verify(ctx, raw_key, asked, idempotency_key, hold))


async def verify_account(ctx: Context, account_id: str, service: str, cost: int) -> Verdict:
    """Consume ``cost`` units of ``service`` for an account its caller already authenticated.

    For a gateway that identifies the account itself (Envoy's ``account_id`` descriptor
    entry, ``quotad.envoy``): no key is checked, the account must exist (else NOT_FOUND)
    and be active (else FORBIDDEN); the consume, the store's timeout and ``on_store_error``
    are those of ``verify``. Without a key, per-key limits do not apply.
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
        verdict = store_failed(ctx, "verify", service, exc)
    metrics.count_consume(service, verdict.code)
    metrics.CONSUME_SECONDS.observe(time.perf_counter() - started)
    return verdict


def store_failed(ctx: Context, step: str, service: str, exc: Exception) -> Verdict:
    """A store that failed or timed out during ``step`` of a call, answered by the
    ``on_store_error`` policy: ``StorageError`` (503), or an uncounted allow (fail-open)."""
    metrics.STORE_ERRORS.labels(step).inc()
    if ctx.settings.on_store_error != "fail-open":
        if isinstance(exc, StorageError):
            raise exc
        raise StorageError("the store did not answer in time") from exc
    metrics.FAIL_OPEN.labels(service).inc()
    log.warning("store unreachable: allowing the call uncounted (fail-open)", service=service)
    return Verdict(
        True,
        "VALID",
        service,
        note="the store is unreachable; allowed uncounted by the fail-open policy",
    )


def store_deadline(ctx: Context) -> AbstractContextManager[object]:
    """Verify's deadline (``store_timeout_ms``) over a block that follows it, as a
    reservation's write: ``with store_deadline(ctx): …`` raises ``TimeoutError`` once it
    passes. (The ``Watch`` itself, not a generator around it: one is made per reserve.)"""
    limit = ctx.settings.store_timeout_ms / 1000 or None
    return _NO_DEADLINE if limit is None else _deadline(limit).watch()


_NO_DEADLINE = nullcontext()


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
    priced = (await admin.require_service(ctx, service)).credit_price or 0
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
    applicable = service_limits(plan, account, service)
    if applicable is not None:
        applicable = limits.narrowed(applicable, caller.key.limits.get(service))
    if not applicable:
        return _no_quota(account.id, service)
    key = caller.key
    ends = [moment for moment in (key.expires_at, key.revoked_at) if moment is not None]
    total = day_total(applicable) or 0
    thresholds = alerts.thresholds_of(plan.alert_thresholds, account.overrides.alert_thresholds)
    grants: tuple[Grant, ...] = ()
    grants_until = None
    if priced:
        grants, grants_until = await _grants(ctx, account, plan, now)
    return Admission(
        account.id,
        key.digest,
        account.timezone,
        total,
        min(ends, default=None),
        applicable,
        key.id,
        account.anchor_day,
        {},
        thresholds,
        threshold_marks(thresholds, total),
        priced,
        grants,
        grants_until,
        alerts.low_credits_of(plan.low_credits, account.overrides.low_credits),
    )


async def _grants(
    ctx: Context, account: Account, plan: Plan, now: datetime
) -> tuple[tuple[Grant, ...], datetime | None]:
    """The account's grants (the current refill made when its plan has one), and when
    their live set next changes by itself."""
    found = await ctx.stores.credits.list_grants(account.id)
    found = await credit_service.ensure_refill(ctx, account, plan, found, now)
    until = credits.credits_until(found, now)
    if plan.refill is not None:
        refill_end = credits.refill_window_end(
            plan.refill, account.timezone, account.anchor_day, now
        )
        until = refill_end if until is None else min(until, refill_end)
    return tuple(found), until


def _no_quota(account_id: str, service: str) -> Verdict:
    return Verdict(
        False,
        "FORBIDDEN",
        service,
        account_id,
        note=f"the plan of account {account_id!r} has no quota for {service!r}",
    )


def _is_v1(admission: Admission) -> bool:
    """Whether the admission's only limit is version 1's daily total (the fast path)."""
    found = admission.limits
    return len(found) == 1 and found[0].is_v1


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
    if (
        admission is not None
        and admission.credits_until is not None
        and now >= admission.credits_until
    ):
        return None  # a grant expired or a refill is due: resolved afresh
    return admission


async def _resolve(
    ctx: Context, cache: RecordCache, key: _Key, raw_key: str, now: datetime
) -> Admission | Verdict:
    """The admission under ``key``, or the refusal, when the cache had none usable."""
    service = key[2]
    held: Admission | None = cache.recall(key)
    if held is not None:
        if held.until is not None and now >= held.until:  # past the key's end
            return await _admit(ctx, raw_key, service, now)
        # Past its grants' next change: resolved afresh, and kept in its place.
        generation = cache.generation
        fresh = await _admit(ctx, raw_key, service, now)
        if isinstance(fresh, Admission):
            cache.remember(key, fresh, generation)
        return fresh

    def load() -> Awaitable[Admission | Verdict]:
        return _admit(ctx, raw_key, service, ctx.clock.now())

    resolved: Admission | Verdict = await cache.derive(key, load, _is_admission)
    return resolved


async def _verify(
    ctx: Context,
    raw_key: str,
    items: tuple[tuple[str, int], ...],
    idempotency_key: str | None,
    hold: Hold | None = None,
) -> Verdict:
    now = ctx.clock.now()  # one instant for the key's validity and the day consumed
    cache = ctx.cache
    admissions: list[Admission] = []
    for service, _ in items:
        if cache is None:
            admission = await _admit(ctx, raw_key, service, now)
        else:
            key = (Admission, keys.digest(raw_key), service)
            admission = _recall(ctx, cache, key, raw_key, now) or await _resolve(
                ctx, cache, key, raw_key, now
            )
        if isinstance(admission, Verdict):
            return admission
        admissions.append(admission)
    first = admissions[0]
    service, cost = items[0]
    if hold is not None:
        hold.price = first.price  # a larger commit's extra is at the first item's price
    claim = None
    if idempotency_key is not None:
        claim = IdempotencyClaim(
            claim_key(idempotency_key),
            items_fingerprint(first.key_digest, items),
            now + timedelta(seconds=ctx.settings.idempotency_ttl_seconds),
        )
    if len(items) == 1 and _is_v1(first) and not first.price:  # version 1: its consume only
        verdict = await _consume(
            ctx, first.account_id, first.timezone, service, cost, first.total, claim, now, hold
        )
        return _noticed(ctx, verdict, cost, first.thresholds, first.marks, first.limits[0], now)
    if len(items) == 1:
        prepared = _prepared(first, service, cost, now)
    else:
        priced = [a for a in admissions if a.price]
        credit = None
        if priced:
            debit = sum(
                credits.debit_of(c, a.price) for (_, c), a in zip(items, admissions, strict=True)
            )
            credit = _Credit(priced[0].grants, debit, priced[0].credits_until)
        prepared = _prepare(
            first.account_id,
            first.key_id,
            first.timezone,
            first.anchor_day,
            [(s, c, a.limits) for (s, c), a in zip(items, admissions, strict=True)],
            now,
            credit,
            thresholds=first.thresholds,
        )
    verdict = await _consume_limits(
        ctx, first.account_id, prepared, len(items) == 1, claim, now, hold
    )
    if _alarmed(prepared, verdict):
        _notice_limits(ctx, first.thresholds, first.key_id, verdict, items, now)
    if verdict.credits is not None:
        _notice_credits(ctx, verdict, first.low_credits, now)
    return verdict


def _noticed(
    ctx: Context,
    verdict: Verdict,
    cost: int,
    thresholds: tuple[int, ...],
    marks: tuple[int, ...],
    limit: LimitSpec,
    now: datetime,
) -> Verdict:
    """A version-1 verdict, after noticing what its day crossed (``marks``) or refused."""
    used = verdict.used
    if used is not None and (not verdict.valid or _reaches(marks, used - cost, used)):
        _notice_day(ctx, thresholds, limit.name(verdict.service), verdict, cost, now)
    return verdict


def _reaches(marks: tuple[int, ...], before: int, after: int) -> bool:
    """Whether a day's use moving from ``before`` to ``after`` reaches an alert mark (the
    marks ascend: most calls are decided by the first comparison)."""
    if not marks or after < marks[0] or before >= marks[-1]:
        return False
    return any(before < mark <= after for mark in marks)


def _notice_day(
    ctx: Context, thresholds: tuple[int, ...], name: str, verdict: Verdict, cost: int, now: datetime
) -> None:
    """Notice what a version-1 verdict's day crossed, or its refusal."""
    used, total, reset = verdict.used, verdict.total, verdict.reset
    if verdict.account_id is None or used is None or total is None or reset is None:
        return
    start = reset - timedelta(seconds=verdict.window_seconds or 86_400)
    refused = not verdict.valid
    before = used if refused else used - cost
    alerts.notice_window(
        ctx.noticer,
        thresholds,
        verdict.account_id,
        None,
        name,
        start,
        reset,
        before,
        used,
        total,
        refused,
        now,
    )


def _notice_credits(ctx: Context, verdict: Verdict, low: int, now: datetime) -> None:
    """Notice a priced call that took the balance below the account's ``low`` mark (0:
    none), found the credits exhausted, or used up the last of them."""
    spent, decided = verdict.credits, verdict.decided
    if spent is None or decided is None or verdict.account_id is None:
        return
    debited, balance = spent
    # A granted call crossed the mark when the balance was at or above it before the debit.
    fell = low and verdict.valid and balance < low <= balance + debited
    out = verdict.code == "CREDITS_EXHAUSTED" or (balance <= 0 and verdict.valid)
    if not (fell or out):
        return
    grant_ids = []
    used = total = 0
    for slot, value in zip(decided.slots, decided.after, strict=True):
        if slot.mode == CREDIT and slot.name != credits.NO_GRANT:
            grant_ids.append(slot.name)
            used += value
            total += slot.total
    if fell:
        alerts.notice_credits_low(
            ctx.noticer,
            verdict.account_id,
            grant_ids,
            credits.from_micros(used),
            credits.from_micros(balance),
            credits.from_micros(low),
            now,
        )
    if not out:
        return
    alerts.notice_credits_exhausted(
        ctx.noticer,
        verdict.account_id,
        grant_ids,
        credits.from_micros(used),
        credits.from_micros(total),
        now,
    )


def _notice_limits(
    ctx: Context,
    thresholds: tuple[int, ...],
    key_id: str | None,
    verdict: Verdict,
    items: Items,
    now: datetime,
) -> None:
    """Notice what a version-2 verdict's window quotas crossed, or its quota refusal."""
    if verdict.account_id is None or not verdict.limits:
        return
    if not verdict.valid and verdict.code != "QUOTA_EXCEEDED":
        return
    alerts.notice_limits(
        ctx.noticer,
        thresholds,
        verdict.account_id,
        key_id,
        verdict.limits,
        dict(items),
        verdict.valid,
        verdict.refused_by,
        now,
    )


async def _verify_account(ctx: Context, account_id: str, service: str, cost: int) -> Verdict:
    now = ctx.clock.now()
    price = (await admin.require_service(ctx, service)).credit_price or 0
    account = await ctx.records.get_account(account_id)  # the record cache's, as the plan
    if account is None:
        return Verdict(False, "NOT_FOUND", service, note=f"account {account_id!r} does not exist")
    if account.status is AccountStatus.SUSPENDED:
        return Verdict(False, "FORBIDDEN", service, account.id, note="the account is suspended")
    plan = await ctx.records.get_plan(account.plan_id)
    applicable = None if plan is None else service_limits(plan, account, service)
    if plan is None or not applicable:
        return _no_quota(account.id, service)
    thresholds = alerts.thresholds_of(plan.alert_thresholds, account.overrides.alert_thresholds)
    credit = None
    if price:
        grants, grants_until = await _grants(ctx, account, plan, now)
        credit = _Credit(grants, credits.debit_of(cost, price), grants_until)
    elif len(applicable) == 1 and applicable[0].is_v1:
        total = applicable[0].total
        verdict = await _consume(ctx, account.id, account.timezone, service, cost, total, None, now)
        marks = threshold_marks(thresholds, total)
        return _noticed(ctx, verdict, cost, thresholds, marks, applicable[0], now)
    prepared = _prepare(
        account.id,
        None,
        account.timezone,
        account.anchor_day,
        [(service, cost, applicable)],
        now,
        credit,
        thresholds=thresholds,
    )
    verdict = await _consume_limits(ctx, account.id, prepared, True, None, now)
    if _alarmed(prepared, verdict):
        _notice_limits(ctx, thresholds, None, verdict, ((service, cost),), now)
    if verdict.credits is not None:
        low = alerts.low_credits_of(plan.low_credits, account.overrides.low_credits)
        _notice_credits(ctx, verdict, low, now)
    return verdict


async def _consume(
    ctx: Context,
    account_id: str,
    timezone: str,
    service: str,
    cost: int,
    total: int,
    claim: IdempotencyClaim | None,
    now: datetime,
    hold: Hold | None = None,
) -> Verdict:
    """The store's one atomic consume of ``cost`` on the account's day of ``now``."""
    day = days.local_day(now, timezone)
    if hold is None:
        outcome = await ctx.counters.consume(account_id, service, day, cost, total, claim, now)
    else:
        outcome = await ctx.counters.consume(
            account_id, service, day, cost, total, claim, now, hold=hold
        )
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


# Limits v2 ----------------------------------------------------------------------------
# The current window of each (window, zone, anchor): span() converts zones, so each is
# computed once and kept until it ends.
_SPANS: dict[tuple[Window, str, int | None], Span] = {}
_MAX_SPANS = 4096


def _span(window: Window, now: datetime, timezone: str, anchor: int | None) -> Span:
    """``limits.span`` of ``now``, from the cache while the window it holds lasts."""
    key = (window, timezone, anchor)
    found = _SPANS.get(key)
    if found is None or not found.start <= now < found.end:
        if len(_SPANS) >= _MAX_SPANS:
            _SPANS.clear()
        found = _SPANS[key] = limits.span(window, now, timezone, anchor)
    return found


class _Owner(NamedTuple):
    """The limit a slot decides, under its name, with its window (none for a rate)."""

    service: str
    limit: LimitSpec
    name: str
    span: Span | None


class _Shown(NamedTuple):
    """What a verdict reads of one limit's slot, looked up once per prepared call: the
    slot's index (``at``), the slot, the limit's shown name and service, the limit, whether
    it is hard (no overage, never a shadow refusal), its window's end and start (None for
    a rate), and its ``window_seconds``."""

    at: int
    slot: Slot
    name: str
    service: str
    limit: LimitSpec
    hard: bool
    end: datetime | None
    start: datetime | None
    seconds: int


class _Prepared(NamedTuple):
    """A call's slots and the limit each decides, good from ``since`` until ``until`` (the
    first of its windows to end): built once per admission and cost, not per verify."""

    day: date
    since: datetime
    until: datetime
    slots: tuple[Slot, ...]
    owners: tuple[_Owner | None, ...]  # None: a day row that only counts
    order: tuple[int, ...]  # the slots with a limit, in the order the call named them
    windows: tuple[Slot, ...]  # what a refund gives back besides the day row
    never: Verdict | None  # a cost above a hard rate's burst: refused before any consume
    charge: Charge  # what a refund of a granted single-service call gives back
    credit_from: int = -1  # the index of the first credit slot (-1: an unpriced call)
    # Each window quota that alerts: its slot's index and the lowest and highest use at
    # which a threshold is reached. A granted call that moves none across that range
    # has nothing to notice (most calls), and is decided without building a notice.
    alarms: tuple[tuple[int, int, int], ...] = ()
    shown: tuple[_Shown, ...] = ()  # the slots of ``order``, as ``_verdict`` reads them
    # ``slots[1:]``, the consume's ``extra``: one tuple for every call of this prepared call
    # (a store may recognise it: the memory store finds its slots' rows by its identity).
    rest: tuple[Slot, ...] = ()


class _Credit(NamedTuple):
    """A priced call's credits: the account's grants, the debit (micro-credits) and when
    the live grants next change by themselves."""

    grants: Sequence[Grant]
    debit: int
    until: datetime | None


_MAX_PREPARED = 64  # per admission: one per distinct cost


def _day_limit(found: Limits) -> LimitSpec | None:
    for limit in found:
        if limit.window is Window.DAY and limit.per is Per.ACCOUNT:
            return limit
    return None


def _prepare(
    account_id: str,
    key_id: str | None,
    timezone: str,
    anchor_day: int,
    items: Sequence[tuple[str, int, Limits]],
    now: datetime,
    credit: _Credit | None = None,
    *,
    thresholds: tuple[int, ...],
) -> _Prepared:
    """The slots of a call (SPEC 9's verify): each item's day row (the first item's is the
    consume's own), held to the daily total the account shares or only counting when there
    is none, and one slot for every other limit that applies; then, for a priced call,
    the credit slots of its debit (SPEC 10), after every limit's."""
    day_span = _span(Window.DAY, now, timezone, None)
    day = days.local_day(now, timezone)
    iso = day.isoformat()
    slots: list[Slot] = []
    owners: list[_Owner | None] = []
    ranks: list[tuple[int, int]] = []
    since, until = day_span.start, day_span.end
    never = None
    for item, (service, cost, found) in enumerate(items):
        daily = _day_limit(found)
        if daily is None:
            slots.append(Slot(service, iso, 0, TALLY, cost))
            owners.append(None)
            ranks.append((item, -1))
        else:
            slots.append(Slot(service, iso, daily.total, limits.MODES[daily.mode], cost))
            owners.append(_Owner(service, daily, daily.name(service), day_span))
            ranks.append((item, found.index(daily)))
        for position, limit in enumerate(found):
            if limit is daily or (limit.per is Per.KEY and key_id is None):
                continue
            shown = limit.name(service)
            name = shown if limit.per is Per.ACCOUNT else f"{shown}:{key_id}"
            mode = limits.MODES[limit.mode]
            window = None
            if limit.window is None:
                if limit.mode is Mode.HARD and cost > limit.total and never is None:
                    never = _never_fits(account_id, items[0][0], shown, limit, cost)
                interval = limits.interval_us(limit.per_second)
                slots.append(Slot(name, RATE_PERIOD, limit.total, mode, cost, interval))
            else:
                anchor = anchor_day if limit.billing else None
                window = _span(limit.window, now, timezone, anchor)
                since, until = max(since, window.start), min(until, window.end)
                slots.append(Slot(name, window.period, limit.total, mode, cost))
            owners.append(_Owner(service, limit, shown, window))
            ranks.append((item, position))
    order = sorted(
        (index for index, owner in enumerate(owners) if owner is not None),
        key=lambda index: ranks[index],
    )
    windows = tuple(slot for slot in slots[1:] if not slot.interval)
    credit_from = -1
    if credit is not None:
        credit_from = len(slots)
        taken = credits.credit_slots(credit.grants, credit.debit, day, now)
        slots.extend(taken)
        owners.extend([None] * len(taken))
        if credit.until is not None:
            until = min(until, credit.until)
    charge = Charge(day, slots[0].total, windows)
    alarms = tuple(
        (index, *_alarm_range(thresholds, slots[index].total))
        for index, owner in enumerate(owners)
        if owner is not None and owner.span is not None and owner.limit.mode is not Mode.SHADOW
    )
    return _Prepared(
        day,
        since,
        until,
        tuple(slots),
        tuple(owners),
        tuple(order),
        windows,
        never,
        charge,
        credit_from,
        alarms,
        tuple(_shown(index, slots[index], owners[index]) for index in order),
        tuple(slots[1:]),
    )


def _shown(index: int, slot: Slot, owner: _Owner | None) -> _Shown:
    """The ``_Shown`` of the limit that ``owner`` decides with slot ``index``."""
    assert owner is not None  # noqa: S101 - ``order`` holds the slots with a limit
    limit, span = owner.limit, owner.span
    hard = limit.mode is Mode.HARD
    if span is None:  # a rate: the time it takes to refill its whole burst
        seconds = rate_seconds(limit)
        return _Shown(index, slot, owner.name, owner.service, limit, hard, None, None, seconds)
    seconds = span_seconds(span.start, span.end)
    return _Shown(
        index, slot, owner.name, owner.service, limit, hard, span.end, span.start, seconds
    )


def _alarm_range(thresholds: tuple[int, ...], total: int) -> tuple[int, int]:
    """The lowest and highest use of ``total`` at which one of ``thresholds`` is reached."""
    marks = threshold_marks(thresholds, total) or (1, 0)  # none: a range nothing is in
    return min(marks), max(marks)


def _alarmed(prepared: _Prepared, verdict: Verdict) -> bool:
    """Whether a verdict may have crossed an alert threshold or refused on a quota: only
    then is it worth building what ``alerts.notice_limits`` reads."""
    decided = verdict.decided
    if not verdict.valid or decided is None:
        return True
    before, after = decided.before, decided.after
    for index, lowest, highest in prepared.alarms:
        if after[index] >= lowest and before[index] < highest:
            return True
    return False


def _prepared(admission: Admission, service: str, cost: int, now: datetime) -> _Prepared:
    """The admission's prepared call of ``cost``, while its windows last (else afresh)."""
    kept = admission.prepared
    found = None if kept is None else kept.get(cost)
    if found is None or not found.since <= now < found.until:
        credit = None
        if admission.price:
            debit = credits.debit_of(cost, admission.price)
            credit = _Credit(admission.grants, debit, admission.credits_until)
        found = _prepare(
            admission.account_id,
            admission.key_id,
            admission.timezone,
            admission.anchor_day,
            [(service, cost, admission.limits)],
            now,
            credit,
            thresholds=admission.thresholds,
        )
        if kept is not None:
            if len(kept) >= _MAX_PREPARED:
                kept.clear()
            kept[cost] = found
    return found


async def _consume_limits(
    ctx: Context,
    account_id: str,
    prepared: _Prepared,
    single: bool,
    claim: IdempotencyClaim | None,
    now: datetime,
    hold: Hold | None = None,
) -> Verdict:
    """Every slot of a prepared call decided in the store's one consume."""
    if prepared.never is not None:
        return prepared.never
    slots = prepared.slots
    first = slots[0]
    # Positional: a coroutine's keyword arguments cost more to bind, once per verify.
    outcome = await ctx.counters.consume(
        account_id,
        first.name,
        prepared.day,
        first.cost,
        first.total,
        claim,
        now,
        prepared.rest,
        first.mode,
        hold,
    )
    now_us = outcome.at_us or int(now.timestamp() * 1_000_000)
    before: Sequence[int] = outcome.before
    after: Sequence[int]
    if outcome.replayed or len(before) != len(slots):
        # A replay's counters are not the first answer's: say where they stand now.
        keys = [(slot.name, slot.period) for slot in slots]
        before = after = await ctx.counters.read_counters(account_id, keys)
    elif outcome.after:
        after = outcome.after
    elif outcome.granted:
        after = limits.advanced(before, slots, now_us)
    else:
        after = before
    return _verdict(account_id, prepared, single, outcome, before, after, now_us)


def _never_fits(
    account_id: str, first_service: str, name: str, limit: LimitSpec, cost: int
) -> Verdict:
    """A hard rate whose burst is below the cost: no wait would let it pass."""
    return Verdict(
        False,
        "RATE_LIMITED",
        first_service,
        account_id,
        refused_by=name,
        note=f"a cost of {cost} can never pass {name}: its burst is {limit.total}",
    )


def _verdict(
    account_id: str,
    prepared: _Prepared,
    single: bool,
    outcome: ConsumeOutcome,
    before: Sequence[int],
    after: Sequence[int],
    now_us: int,
) -> Verdict:
    """The verdict of a v2 consume, from every slot's value before and after it."""
    granted = outcome.granted
    refused = -1 if granted else outcome.refused
    slots = prepared.slots
    states, refusing, least, shown_seconds, overage, would_refuse = _limit_states(
        prepared.shown, before, after, now_us, refused, granted, outcome.replayed
    )
    service = slots[0].name
    spent = None
    note = refused_by = None
    if prepared.credit_from >= 0:
        spent = _spent(slots, before, after, prepared.credit_from)
        if refused == prepared.credit_from:
            refused_by, note = "credits", _exhausted(slots[refused].cost, spent[1])
    if least is None:  # only per-key limits, and no key: nothing applied but the count
        return Verdict(
            granted,
            "VALID" if refused_by is None else "CREDITS_EXHAUSTED",
            service,
            account_id,
            after[0],
            note=note,
            refused_by=refused_by,
            decided=Decided(slots, before, after),
            credits=spent,
        )
    shown = refusing or least
    code = "VALID"
    if refusing is not None:
        code = "RATE_LIMITED" if refusing.limit.window is None else "QUOTA_EXCEEDED"
        refused_by = refusing.name
    elif refused_by is not None:
        code = "CREDITS_EXHAUSTED"
    charged = None
    if granted and single:
        charged = prepared.charge
        if charged.day != outcome.day:  # a replay of another day's answer
            charged = Charge(outcome.day, slots[0].total, prepared.windows)
    # Every field, in order, without the named tuple's keyword __new__: one per verify.
    fields = (
        granted,
        code,
        service,
        account_id,
        shown.used,
        shown.total,
        shown.reset,
        shown_seconds,
        note,
        tuple(states),
        refused_by,
        overage,
        tuple(would_refuse),
        None if refusing is None else refusing.retry_after,
        charged,
        _new(Decided, (slots, before, after)),
        spent,
        shown,
    )
    return _new(Verdict, fields)


def _limit_states(
    shown: tuple[_Shown, ...],
    before: Sequence[int],
    after: Sequence[int],
    now_us: int,
    refused: int,
    granted: bool,
    replayed: bool,
) -> tuple[list[LimitState], LimitState | None, LimitState | None, int, int, list[str]]:
    """Every limit's state after a consume; the refusing one, the one with least room, the
    window seconds of the one the verdict shows (the refusing one, else the least), the
    soft limits' overage, and the shadow limits that would have refused."""
    states: list[LimitState] = []
    refusing = least = None
    least_room = shown_seconds = overage = 0
    would_refuse: list[str] = []
    for index, slot, name, service, limit, hard, end, start, seconds in shown:
        value = after[index]
        if not hard:
            state = _state(
                slot, limit, name, service, end, start, before[index], value, now_us, granted
            )
            if state[7]:  # would_refuse
                would_refuse.append(name)
                if not replayed:  # counted once, not per replay
                    metrics.count_shadow_refusal(service, name)
            overage += state[6]
        elif end is not None:  # a hard window: its counter is its use
            state = _new(
                LimitState, (name, service, limit, value, slot[2], end, 0, False, None, start)
            )
        else:  # a hard rate
            used, reset = limits.rate_state(value, slot, now_us)
            state = _new(
                LimitState, (name, service, limit, used, slot[2], reset, 0, False, None, None)
            )
        if index == refused:
            retry_after = limits.rate_wait(before[index], slot, now_us) if slot.interval else None
            refusing = state = state._replace(retry_after=retry_after)
            shown_seconds = seconds
        room = state[4] - state[3]  # total - used
        if least is None or room < least_room:
            least, least_room = state, room
            if refusing is None:
                shown_seconds = seconds
        states.append(state)
    return states, refusing, least, shown_seconds, overage, would_refuse


def _spent(
    slots: Sequence[Slot], before: Sequence[int], after: Sequence[int], start: int
) -> tuple[int, int]:
    """What a call's credit slots (from ``start``) debited, and the balance they leave."""
    debited = left = 0
    for index in range(start, len(slots)):
        slot = slots[index]
        if slot.mode == CREDIT:
            debited += after[index] - before[index]
            left += max(slot.total - after[index], 0)
    return debited, left


def _exhausted(debit: int, balance: int) -> str:
    """The note of a call the account's credits cannot pay for."""
    return (
        f"the call costs {credits.from_micros(debit)} credits; "
        f"the balance is {credits.from_micros(balance)}"
    )


def _state(
    slot: Slot,
    limit: LimitSpec,
    name: str,
    service: str,
    end: datetime | None,
    start: datetime | None,
    before: int,
    after: int,
    now_us: int,
    granted: bool,
) -> LimitState:
    """Where a soft or shadow limit stands after the consume, its counter ``before`` and
    ``after`` it (a hard one's state is built in ``_limit_states``)."""
    mode = limit.mode
    excess = 0
    if end is None:  # a rate
        fits = limits.fits(slot, before, now_us)
        used, reset = limits.rate_state(after, slot, now_us)
        if mode is Mode.SOFT and granted and not fits:
            excess = slot.cost  # let through without its tokens
    else:
        fits = before + slot.cost <= slot.total
        used, reset = after, end
        if mode is Mode.SOFT and used > slot.total:
            excess = used - slot.total
    shadowed = mode is Mode.SHADOW and not fits
    return _new(
        LimitState, (name, service, limit, used, slot.total, reset, excess, shadowed, None, start)
    )


def window_seconds(state: LimitState) -> int:
    """A limit's window in seconds: a calendar window's length, or the time a rate takes
    to refill its whole burst (rounded up)."""
    limit = state.limit
    if limit.window is None:
        return rate_seconds(limit)
    return span_seconds(state.window_start, state.reset)


def rate_seconds(limit: LimitSpec) -> int:
    """The time a rate takes to refill its whole burst, in seconds (rounded up)."""
    return math.ceil(limit.total / limit.per_second)


def span_seconds(start: datetime | None, end: datetime) -> int:
    """A calendar window's length in seconds (a day's when its start is not known)."""
    if start is None:
        return int(timedelta(days=1).total_seconds())
    return int((end - start).total_seconds())


def consumed_day(verdict: Verdict, timezone: str) -> date:
    """The account's local day a granted verdict consumed from: the day its reset ends.

    Taken from the verdict rather than from the clock, so a refund just after midnight
    still credits the day that was charged.
    """
    if verdict.reset is None:
        msg = "the verdict has no reset time"
        raise ValueError(msg)
    return _day_ending(verdict.reset, timezone)


@lru_cache(maxsize=4096)
def _day_ending(reset: datetime, timezone: str) -> date:
    """The local day that ends at ``reset``: the same for every call of a day, and worth
    two zone conversions per reserve or refund."""
    return days.local_day(reset - timedelta(seconds=1), timezone)


async def refund(ctx: Context, verdict: Verdict, cost: int) -> None:
    """Give ``cost`` back to the day a granted verdict consumed from (the work it paid for
    failed), and to every window a v2 verdict moved; nothing for a verdict that consumed
    nothing, one of several items, or an account deleted since."""
    if verdict.account_id is None or verdict.total is None or verdict.reset is None:
        return
    if verdict.limits and verdict.charged is None:
        return  # refused, or several services': no one adjust gives them back
    account = await ctx.records.get_account(verdict.account_id)
    if account is None:
        return
    if verdict.charged is not None:
        day, total, windows = verdict.charged
        await ctx.counters.adjust(account.id, verdict.service, day, -cost, total, windows)
        await _give_credits_back(ctx, account.id, verdict, day, total)
        return
    day = consumed_day(verdict, account.timezone)
    await ctx.counters.adjust(account.id, verdict.service, day, -cost, verdict.total)


async def _give_credits_back(
    ctx: Context, account_id: str, verdict: Verdict, day: date, total: int
) -> None:
    """Give back what each grant gave a refunded call: its debit down, and the day's
    give-back (the ledger's adjustment) up, in one consume that only counts."""
    decided = verdict.decided
    if verdict.credits is None or decided is None:
        return
    given = credits.takes(decided.slots, decided.before, decided.after)
    back = credits.give_back_slots(given, day)
    if back:
        await ctx.counters.consume(
            account_id, verdict.service, day, 0, total, extra=back, day_mode=TALLY
        )
