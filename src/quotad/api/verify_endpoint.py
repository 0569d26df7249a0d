"""``POST /v1/verify``: the one answer, as a plain ASGI endpoint inside the app's middleware.

Verify is the hot path, so it is not a FastAPI route: dependency injection and pydantic
validation would cost several times the verify itself. Nor is it one of the router's
routes: Starlette's router and the exception layer around it (a ``Request`` and two
closures made for every request) cost a seventh of an HTTP verify, for exception
handlers verify never needs, as it answers its own errors. ``VerifyFirst``, the app's
innermost middleware, hands ``/v1/verify`` to the endpoint and everything else to the
router; every other middleware of the app (request id, access log, the JSON body guard,
tracing, CORS a deployment adds) sees it like any other request. The endpoint answers
everything itself, refusals included, from the same pieces the rest of the app uses
(``quotad.http``); the order of its checks is the API's everywhere:

1. the app's middleware: ``api-version``, then the body's type and size;
2. the body read as JSON (400 ``BAD_REQUEST`` when it is not);
3. the operator token (401, counted against the client's failure budget; 429 past it),
   and its role (403 unless admin or verify);
4. the body's fields (400 ``VALIDATION_FAILED`` with a pointer to each problem);
5. ``Idempotency-Key`` (400 when it is not 1 to 255 visible ASCII characters);
6. the verify itself, whose refusals are verdicts (200), and errors the contract's.

FastAPI documents the route in OpenAPI from ``documentation_route``, which is never
called.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import Header
from fastapi.routing import APIRoute

from quotad.api import metering
from quotad.api.responses import reset_text, verdict_body
from quotad.api.schemas import VerifyIn, VerifyItemsIn, VerifyOut
from quotad.domain import days
from quotad.domain.credits import from_micros
from quotad.domain.limits import LimitSpec, LimitState
from quotad.domain.operators import Access
from quotad.errors import ErrorCode, QuotadError, ValidationFailed
from quotad.http.errors import JSON_TYPE, ErrorAnswer, error_answer, quotad_error_answer
from quotad.http.headers import client_host, too_large
from quotad.http.quota import verdict_headers
from quotad.http.types import ASGIApp, Receive, Scope, Send
from quotad.http.verify_body import VerifyArgs, VerifyItems, verify_request
from quotad.service import auth, reservations, verify
from quotad.service.context import Context

PATH = "/v1/verify"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_BAD_IDEMPOTENCY_KEY = ("/header/Idempotency-Key", "must be 1 to 255 visible ASCII characters")


class VerifyEndpoint:
    """The ASGI endpoint of ``POST /v1/verify`` over one service context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.max_body_bytes = ctx.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request to ``/v1/verify``, whatever its method."""
        if scope["method"] != "POST":
            await _method_not_allowed()(scope, receive, send)
            return
        authorization = idempotency_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"idempotency-key" and idempotency_key is None:
                idempotency_key = value
        body = await self._body(receive)
        if body is None:  # the client left before its body was whole: nothing to answer
            return
        if len(body) > self.max_body_bytes:
            await too_large(self.max_body_bytes)(scope, receive, send)
            return
        ctx = self.ctx
        try:
            parsed = verify_request(body)
            # The header as FastAPI's APIKeyHeader reads it: an empty one is no token.
            token = bytes(authorization).decode("latin-1") if authorization else None
            known = None if token is None else auth.operator_accepted(ctx, token)
            if known is None:  # else admitted before: only its role is checked again
                await auth.admit_operator(ctx, token, client_host(scope), Access.METER)
            else:
                auth.require_access(known, Access.METER)
            if isinstance(parsed, ValidationFailed):
                raise parsed
            args, ttl = parsed
            key = None if idempotency_key is None else _idempotency_key(idempotency_key)
            verdict, answer = await _answered(ctx, args, ttl, key)
        except QuotadError as exc:
            await quotad_error_answer(exc)(scope, receive, send)
            return
        content = orjson.dumps(answer)
        headers = verdict_headers(verdict, ctx.clock.now().timestamp())
        headers.append((b"content-length", b"%d" % len(content)))
        headers.append(JSON_TYPE)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole body (read past the limit only by one message), or None on a disconnect."""
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body  # the usual case: the whole body in one message
        chunks = bytearray(body)
        while len(chunks) <= self.max_body_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks += message.get("body", b"")
            if not message.get("more_body", False):
                break
        return bytes(chunks)


async def _answered(
    ctx: Context, args: VerifyArgs | VerifyItems, ttl: int | None, idempotency_key: str | None
) -> tuple[verify.Verdict, dict[str, Any]]:
    """The verdict of a body and its answer (with its reservation when ``ttl`` is set)."""
    if ttl is not None:
        return await _reserved(ctx, args, ttl, idempotency_key)
    verdict = await _verified(ctx, args, idempotency_key)
    return verdict, answer_body(verdict)


async def _verified(
    ctx: Context, args: VerifyArgs | VerifyItems, idempotency_key: str | None
) -> verify.Verdict:
    """The verify of a body's ``(key, service, cost)``, or of its ``(key, items)``."""
    if len(args) == 3:
        return await verify.verify(ctx, *args, idempotency_key)
    raw_key, items = args
    service, cost = items[0]
    return await verify.verify(ctx, raw_key, service, cost, idempotency_key, items)


async def _reserved(
    ctx: Context, args: VerifyArgs | VerifyItems, ttl: int, idempotency_key: str | None
) -> tuple[verify.Verdict, dict[str, Any]]:
    """The verify of a body with ``"reserve": true`` and its answer, naming the
    reservation that holds what it granted (SPEC 10); a refusal reserves nothing."""
    items = ((args[1], args[2]),) if len(args) == 3 else args[1]
    verdict, reservation = await reservations.verify_and_reserve(
        ctx, args[0], items, ttl, idempotency_key
    )
    answer = answer_body(verdict)
    if reservation is not None:
        answer["reservation_id"] = reservation.id
        answer["expires_at"] = days.rfc3339(reservation.expires_at)
    return verdict, answer


def answer_body(verdict: verify.Verdict) -> dict[str, Any]:
    """The verify answer: version 1's fields, and SPEC 9's ``limits``, ``overage``,
    ``would_refuse`` and ``refused_by``. A version-1 verdict lists its one daily limit."""
    body = verdict_body(verdict)
    if verdict.limits:
        entries = [_limit_entry(state) for state in verdict.limits]
    elif verdict.total is not None and verdict.used is not None and verdict.reset is not None:
        entries = [
            {
                "name": f"{verdict.service}.day",
                "window": "day",
                "per": "account",
                "mode": "hard",
                "used": verdict.used,
                "remaining": verdict.remaining,
                "total": verdict.total,
                "reset": reset_text(verdict.reset),
            }
        ]
    else:
        entries = []
    refused_by = verdict.refused_by
    if refused_by is None and verdict.code == "QUOTA_EXCEEDED" and not verdict.limits:
        refused_by = f"{verdict.service}.day"  # version 1's one limit
    body["limits"] = entries
    body["overage"] = verdict.overage
    body["would_refuse"] = list(verdict.would_refuse)
    body["refused_by"] = refused_by
    if verdict.credits is not None:  # a priced call (SPEC 10): credits, as numbers
        debited, left = verdict.credits
        body["credits"] = {"debited": from_micros(debited), "remaining": from_micros(left)}
    return body


def _limit_entry(state: LimitState) -> dict[str, Any]:
    entry = _entry_head(state.name, state.limit).copy()
    entry["used"] = state.used
    entry["remaining"] = state.remaining
    entry["total"] = state.total
    # The body's own reset is formatted first, in the same cache: a rate's reset, new at
    # every verify, is formatted once when the verdict shows the rate.
    entry["reset"] = reset_text(state.reset)
    if state.overage:
        entry["overage"] = state.overage
    return entry


@lru_cache(maxsize=4096)
def _entry_head(name: str, limit: LimitSpec) -> dict[str, Any]:
    """What a limit's entry always says (copied, never changed): built once per limit."""
    head: dict[str, Any] = {"name": name}
    if limit.window is None:
        head["rate"] = limit.to_json()["rate"]
    else:
        head["window"] = limit.window.value
    head["per"] = limit.per.value
    head["mode"] = limit.mode.value
    return head


def _idempotency_key(raw: bytes) -> str:
    """The ``Idempotency-Key`` header's value, once it is 1 to 255 visible ASCII characters."""
    key = bytes(raw).decode("latin-1")
    if not IDEMPOTENCY_KEY.match(key):
        raise ValidationFailed.at(*_BAD_IDEMPOTENCY_KEY, "pattern")
    return key


def _method_not_allowed() -> ErrorAnswer:
    """405, with a fresh error id each time, as for any other path."""
    return error_answer(
        ErrorCode.BAD_REQUEST,
        "method not allowed on this path",
        status=405,
        headers=((b"allow", b"POST"),),
    )


def _route_path(scope: Scope) -> str:
    """The path below the app's root path, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class VerifyFirst:
    """Middleware answering ``/v1/verify`` (every method, so that its 405 is the
    endpoint's own) with ``VerifyEndpoint``, and passing every other request on.

    The app's innermost middleware: whatever wraps the app wraps verify too.
    """

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.endpoint = VerifyEndpoint(ctx)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "http" and _route_path(scope) == PATH:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def documentation_route(
    body: VerifyIn | VerifyItemsIn,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Replays the first answer for 24 h",
            pattern=IDEMPOTENCY_KEY.pattern,
        ),
    ] = None,
) -> VerifyOut:
    """Authenticate a customer's key and consume ``cost`` units of a service (or each of
    ``items``), every limit that applies checked and moved together, all or nothing."""
    raise AssertionError("documentation only: VerifyEndpoint answers POST /v1/verify")


def openapi_route() -> APIRoute:
    """How OpenAPI describes the endpoint: a route of the metering router, never routed."""
    return APIRoute(
        PATH,
        documentation_route,
        methods=["POST"],
        response_model=VerifyOut,
        name="verify_key",
        tags=metering.router.tags,
        dependencies=metering.router.dependencies,
        responses=metering.router.responses,
    )
