"""``ShouldRateLimit`` of Envoy's rate limit service, answered by quotad's verify.

How a ``RateLimitRequest`` is read (SPEC 12):

- ``domain`` is the service, as ``service`` is in ``POST /v1/verify``.
- Each descriptor that has an ``api_key`` entry is one ``verify`` of that key; one that
  has an ``account_id`` entry (and no ``api_key``) is one ``verify_account`` of that
  account, for gateways that authenticate the caller themselves. A descriptor naming
  neither is not quotad's to limit: its status is OK without a limit, as
  envoyproxy/ratelimit answers a descriptor its configuration does not know.
- The cost of a descriptor is its own ``hits_addend`` when set, else the request's;
  0 or unset means 1 (Envoy's convention). A cost or a key past the bounds of verify's
  body is refused with ``VALIDATION_FAILED``.
- The descriptors are decided in order, one verify each, and ``statuses`` follows their
  order. ``overall_code`` is OVER_LIMIT when any is; then what the others were granted
  is given back (``verify.refund``), so a refused request is charged nothing.
- Limits v2 (SPEC 9): each verify checks every limit of its service (an account's
  verify: every limit but the per-key ones); any refusal is OVER_LIMIT, and a
  descriptor's status describes the limit its verdict's fields come from.
- A refusal is a verdict, never a gRPC error: an unknown, malformed, expired or revoked
  key, an unknown account, a suspended one or an unknown domain is OVER_LIMIT, with an
  ``x-quotad-error`` header naming the contract's code (``QUOTA_EXCEEDED`` included).
  Only a store that cannot answer under the fail-closed policy is a gRPC error
  (UNAVAILABLE), so that Envoy's ``failure_mode_deny`` decides, as a 503 lets an HTTP
  gateway decide.

The answer's ``response_headers_to_add`` are the quota headers of SPEC 5.2, built by
``quotad.http.quota`` as for every HTTP answer, for the descriptor closest to its limit
(a refused one first), as envoyproxy/ratelimit picks the descriptor of its headers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from quotad.domain.limits import Window
from quotad.errors import ErrorCode, QuotadError, StorageError
from quotad.http.quota import shown_limit, verdict_headers
from quotad.http.verify_body import COST_MAX, KEY_MAX_LENGTH
from quotad.service import verify
from quotad.service.context import Context
from quotad.service.verify import Verdict

log = structlog.get_logger("quotad.envoy")

KEY_ENTRY = "api_key"
ACCOUNT_ENTRY = "account_id"
ERROR_HEADER = "x-quotad-error"
UINT32_MAX = 2**32 - 1

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
_RateLimit = rls_pb2.RateLimitResponse.RateLimit
DAY = _RateLimit.DAY
# A limit's unit in a descriptor status; a rate's is the second (its refill pace).
UNITS = {
    None: _RateLimit.SECOND,
    Window.MINUTE: _RateLimit.MINUTE,
    Window.HOUR: _RateLimit.HOUR,
    Window.DAY: DAY,
    Window.WEEK: _RateLimit.WEEK,
    Window.MONTH: _RateLimit.MONTH,
    Window.YEAR: _RateLimit.YEAR,
}


class Ask(NamedTuple):
    """What one descriptor asks of quotad: a key's or an account's verify, and its cost."""

    key: str | None
    account_id: str | None
    cost: int


def ask(descriptor: Any, request_cost: int) -> Ask | None:
    """What ``descriptor`` asks, or None when it names neither a key nor an account."""
    key = account_id = None
    for entry in descriptor.entries:
        if entry.key == KEY_ENTRY and key is None:
            key = entry.value
        elif entry.key == ACCOUNT_ENTRY and account_id is None:
            account_id = entry.value
    if key is None and account_id is None:
        return None
    cost = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else request_cost
    return Ask(key, None if key is not None else account_id, cost or 1)


async def decide(ctx: Context, service: str, asked: Ask) -> Verdict:
    """The verdict on one descriptor; a refusal the service raises becomes a verdict.

    Raises:
        StorageError: the store cannot answer and the policy is fail-closed.
    """
    # The bounds of verify's body, so that no entry point asks the store more.
    if asked.cost > COST_MAX:
        return _invalid(service, f"hits_addend must be at most {COST_MAX}")
    if asked.key is not None and len(asked.key) > KEY_MAX_LENGTH:
        return _invalid(service, f"api_key must be at most {KEY_MAX_LENGTH} characters")
    try:
        if asked.key is not None:
            return await verify.verify(ctx, asked.key, service, asked.cost)
        assert asked.account_id is not None  # noqa: S101 - ask() names one or the other
        return await verify.verify_account(ctx, asked.account_id, service, asked.cost)
    except StorageError:
        raise
    except QuotadError as exc:  # the unknown service (domain) is the one the service raises
        return Verdict(False, exc.code.value, service, note=exc.note)


def _invalid(service: str, note: str) -> Verdict:
    return Verdict(False, ErrorCode.VALIDATION_FAILED.value, service, note=note)


def descriptor_status(verdict: Verdict | None, now: datetime) -> Any:
    """The ``DescriptorStatus`` of a verdict (None: a descriptor quotad does not limit)."""
    if verdict is None:
        return rls_pb2.RateLimitResponse.DescriptorStatus(code=OK)
    status = rls_pb2.RateLimitResponse.DescriptorStatus(code=OK if verdict.valid else OVER_LIMIT)
    total, remaining, reset = verdict.total, verdict.remaining, verdict.reset
    if total is not None and remaining is not None and reset is not None:
        # A v2 verdict's fields are its refusing limit's, else the one with the least room.
        shown = shown_limit(verdict)
        name, unit = f"{verdict.service}.daily_queries", DAY
        if shown is not None:
            name, unit = shown.name, UNITS[shown.limit.window]
        status.current_limit.CopyFrom(
            rls_pb2.RateLimitResponse.RateLimit(
                name=name, requests_per_unit=min(total, UINT32_MAX), unit=unit
            )
        )
        status.limit_remaining = min(remaining, UINT32_MAX)
        # Whole seconds as the headers count them (quotad.http.quota), so the two agree.
        until = max(int(reset.timestamp()) - int(now.timestamp()), 0)
        status.duration_until_reset.CopyFrom(duration_pb2.Duration(seconds=until))
    return status


def answer(verdicts: Sequence[Verdict | None], now: datetime) -> Any:
    """The ``RateLimitResponse`` for the verdicts on a request's descriptors, in order."""
    refused = [verdict for verdict in verdicts if verdict is not None and not verdict.valid]
    response = rls_pb2.RateLimitResponse(
        overall_code=OVER_LIMIT if refused else OK,
        statuses=[descriptor_status(verdict, now) for verdict in verdicts],
    )
    headers = [
        (name.decode(), value.decode("latin-1")) for name, value in _quota_headers(verdicts, now)
    ]
    if refused:
        headers.append((ERROR_HEADER, refused[0].code))
    response.response_headers_to_add.extend(
        base_pb2.HeaderValue(key=name, value=value) for name, value in headers
    )
    return response


def _quota_headers(verdicts: Sequence[Verdict | None], now: datetime) -> list[tuple[bytes, bytes]]:
    """The quota headers of the descriptor closest to its limit: a refused one first."""
    with_quota = [v for v in verdicts if v is not None and v.remaining is not None]
    if not with_quota:
        return []
    closest = min(with_quota, key=lambda v: (v.valid, v.remaining))
    return verdict_headers(closest, now.timestamp())


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """``envoy.service.ratelimit.v3.RateLimitService`` over one service context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:  # gRPC names it
        """Decide every descriptor of ``request`` (see the module's docstring)."""
        ctx = self.ctx
        started = time.perf_counter()
        if not request.descriptors:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED: no descriptor to decide"
            )
        service = request.domain
        granted: list[tuple[Verdict, int]] = []  # what to give back if the request is refused
        verdicts: list[Verdict | None] = []
        try:
            for descriptor in request.descriptors:
                asked = ask(descriptor, request.hits_addend)
                verdict = None if asked is None else await decide(ctx, service, asked)
                if verdict is not None and asked is not None and verdict.valid:
                    granted.append((verdict, asked.cost))
                verdicts.append(verdict)
        except StorageError as exc:
            await _give_back(ctx, granted)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"SERVICE_UNAVAILABLE: {exc.note}")
        refused = next((v.code for v in verdicts if v is not None and not v.valid), None)
        if refused is not None:
            await _give_back(ctx, granted)
        # The access line of a call, as the HTTP server writes one per request (no key).
        log.info(
            "ShouldRateLimit",
            domain=service,
            descriptors=len(verdicts),
            code="OVER_LIMIT" if refused is not None else "OK",
            error=refused,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return answer(verdicts, ctx.clock.now())


async def _give_back(ctx: Context, granted: Sequence[tuple[Verdict, int]]) -> None:
    """Refund what the granted descriptors of a refused request consumed."""
    for verdict, cost in granted:
        try:
            await verify.refund(ctx, verdict, cost)
        except StorageError:
            log.warning(
                "a refused request's grant could not be given back",
                service=verdict.service,
                account_id=verdict.account_id,
                cost=cost,
            )
