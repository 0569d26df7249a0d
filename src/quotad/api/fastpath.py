"""``POST /v1/verify`` answered ahead of FastAPI's middleware, routing and validation.

Verify is the hot path, and FastAPI's machinery (seven middleware layers, dependency
injection, pydantic validation) costs several times what the verify itself does.
``VerifyRoute`` answers the common case on its own: the operator token, a JSON body that
``VerifyIn`` accepts as it is, headers that need no correction. It calls the same service
function and answers with the same body, headers, access log line and metrics as the
route in ``quotad.api.metering``.

Every other request goes to that route, its body replayed: a body or header that fails
validation, a missing or wrong token (its failure counted there). Those answers are the
route's own, with the exact pointers and codes pydantic gives; the fast path never
phrases a refusal the route would, and it has no side effect before it hands over.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

import annotated_types
import orjson
import structlog
from fastapi import FastAPI
from pydantic.types import Strict

from quotad.api.errors import quotad_error_response, unexpected_error
from quotad.api.metering import IDEMPOTENCY_KEY
from quotad.api.middleware import (
    API_VERSIONS,
    access_logged,
    echoed_headers,
    log_request,
    new_request_id,
)
from quotad.api.responses import verdict_body, verdict_raw_headers
from quotad.api.schemas import VerifyIn
from quotad.errors import QuotadError
from quotad.http.types import ASGIApp, Message, Receive, Scope, Send
from quotad.service import auth, verify
from quotad.service.context import Context

# The headers the fast path reads; as everywhere in the app, the first of each counts.
_HEADERS = frozenset(
    {
        b"api-version",
        b"authorization",
        b"content-length",
        b"content-type",
        b"idempotency-key",
        b"transfer-encoding",
    }
)


def _bounds(name: str) -> tuple[int, int]:
    """The bounds of a ``VerifyIn`` field: of its length (strings) or its value (the cost).

    Read from the model so the two cannot drift apart; a constraint this module does not
    know fails at import rather than being skipped.
    """
    low, high = 0, sys.maxsize
    for item in VerifyIn.model_fields[name].metadata:
        if isinstance(item, annotated_types.MinLen):
            low = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            high = item.max_length
        elif isinstance(item, annotated_types.Ge):
            low = int(item.ge)  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Le):
            high = int(item.le)  # type: ignore[call-overload]
        elif not isinstance(item, Strict):
            raise TypeError(f"VerifyIn.{name}: the fast path does not check {item!r}")
    return low, high


if {name: field.annotation for name, field in VerifyIn.model_fields.items()} != {
    "key": str,
    "service": str,
    "cost": int,
}:
    raise TypeError("VerifyIn changed: update quotad.api.fastpath.verify_args")
_FIELDS = frozenset(VerifyIn.model_fields)
_KEY_MIN, _KEY_MAX = _bounds("key")
_SERVICE_MIN, _SERVICE_MAX = _bounds("service")
_COST_MIN, _COST_MAX = _bounds("cost")
_COST_DEFAULT: int = VerifyIn.model_fields["cost"].default


def verify_args(body: bytes) -> tuple[str, str, int] | None:
    """``(key, service, cost)`` of a body ``VerifyIn`` accepts as it is, else None.

    Stricter than pydantic where that is simpler (orjson refuses NaN and lone surrogates,
    reads integers past 64 bits as floats, knows only UTF-8): such bodies, and every one
    that fails validation, are left to the route to judge. What this accepts, the route
    accepts too, with the same values: ``cost`` an int and never a bool (strict), only
    known fields (``extra="forbid"``), lengths and bounds as declared.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _FIELDS:
        return None
    key, service, cost = data.get("key"), data.get("service"), data.get("cost", _COST_DEFAULT)
    if (
        type(key) is str
        and _KEY_MIN <= len(key) <= _KEY_MAX
        and type(service) is str
        and _SERVICE_MIN <= len(service) <= _SERVICE_MAX
        and type(cost) is int
        and _COST_MIN <= cost <= _COST_MAX
    ):
        return key, service, cost
    return None


def _is_plain_json(content_type: bytes) -> bool:
    # Only the usual media type: RequestGuard and FastAPI agree on it without doubt.
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


def _replaying(taken: list[Message], receive: Receive) -> Receive:
    """``receive``, giving back first the messages already taken from it."""
    pending = deque(taken)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


class VerifyRoute:
    """The raw ASGI answer to ``POST /v1/verify``; ``fallback`` answers what it does not."""

    def __init__(self, ctx: Context, fallback: ASGIApp) -> None:
        self.ctx = ctx
        self.fallback = fallback
        self.max_body_bytes = ctx.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ``POST /v1/verify``."""
        started = time.perf_counter()
        found: dict[bytes, bytes] = {}
        try:
            for name, value in scope["headers"]:
                if name in _HEADERS and name not in found:
                    found[name] = value
        except TypeError:  # a name that is not bytes, against the ASGI spec: the route copes
            found = {}
        length = self._admissible_length(found)
        if length is None:
            await self.fallback(scope, receive, send)
            return
        taken: list[Message] = [await receive()]
        first = taken[0]
        if (
            first["type"] == "http.request"
            and not first.get("more_body", False)
            and len(body := first.get("body", b"")) <= length
        ):
            args = verify_args(body)  # the usual case: the whole body in one message
        else:
            body = await self._read_rest(receive, taken, length)
            args = None if body is None else verify_args(body)
        raw_idempotency_key = found.get(b"idempotency-key")
        idempotency_key = (
            None if raw_idempotency_key is None else raw_idempotency_key.decode("latin-1")
        )
        if (
            args is None
            or (idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key))
            or not await self._is_operator(found[b"authorization"])
        ):
            await self.fallback(scope, _replaying(taken, receive), send)
            return
        request_id = new_request_id()
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            status = await self._answer(scope, receive, send, args, idempotency_key, request_id)
            if access_logged():
                log_request(scope, status, started)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    def _admissible_length(self, found: dict[bytes, bytes]) -> int | None:
        """The body's declared length when the headers pass ``RequestGuard`` as they are."""
        version = found.get(b"api-version")
        if version is not None and version.decode("latin-1").strip() not in API_VERSIONS:
            return None
        length = found.get(b"content-length")
        content_type = found.get(b"content-type")
        if (
            b"transfer-encoding" in found
            or not found.get(b"authorization")
            or length is None
            or not length.isdigit()
            or content_type is None
            or not _is_plain_json(content_type)
        ):
            return None
        if len(length) > len(str(self.max_body_bytes)):  # int() refuses 4,300 digits and more
            return None
        size = int(length)
        return size if 0 < size <= self.max_body_bytes else None

    @staticmethod
    async def _read_rest(receive: Receive, taken: list[Message], length: int) -> bytes | None:
        """The whole body from the messages ``taken`` and the rest, unless the client
        leaves or sends more than it declared."""
        chunks = []
        size = 0
        message = taken[-1]
        while True:
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > length:
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            taken.append(message)

    async def _is_operator(self, authorization: bytes) -> bool:
        """Whether the route's ``operator`` dependency would admit the request.

        Without side effects: a refusal (and the failure it counts) is the route's. As
        the route, it admits the right token whatever the client's failure budget holds.
        """
        ctx = self.ctx
        try:
            header = authorization.decode("latin-1")
            if not auth.operator_accepted(ctx, header):
                await auth.authenticate_operator(ctx, header)
        except Exception:  # whatever it is, the route answers it
            return False
        return True

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        args: tuple[str, str, int],
        idempotency_key: str | None,
        request_id: str,
    ) -> int:
        """Verify and send the answer, as the route and ``RequestGuard`` would; its status."""
        ctx = self.ctx
        started_response = False
        try:
            verdict = await verify.verify(ctx, *args, idempotency_key)
            body = orjson.dumps(verdict_body(verdict))
            headers = verdict_raw_headers(verdict, ctx.clock.now().timestamp())
            headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"content-type", b"application/json"))
            headers += echoed_headers(request_id)
            started_response = True
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except Exception as exc:
            if started_response:  # the answer has begun; nothing better can be sent now
                raise
            failure = (
                quotad_error_response(exc)
                if isinstance(exc, QuotadError)
                else unexpected_error(exc)
            )
            failure.raw_headers += echoed_headers(request_id)
            await failure(scope, receive, send)
            return failure.status_code
        return 200


class FastPathAPI(FastAPI):
    """FastAPI, with some routes answered by raw ASGI handlers before its middleware.

    A handler in ``fast_routes`` (by method and path) takes a request over from the start
    and owns its whole answer, handing what it does not answer to ``routed``, the ordinary
    stack. While FastAPI's own OpenTelemetry instrumentation is on, every request takes
    the ordinary stack, so that none is missing from the traces.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes: dict[tuple[str, str], ASGIApp] = {}
        self._instrumented_now = False
        self._instrumented_until = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if (
            scope["type"] == "http"
            and not scope.get("root_path")  # under a prefix, leave routing to Starlette
            and not self.root_path
        ):
            handler = self.fast_routes.get((scope["method"], scope["path"]))
            if handler is not None and not self._instrumented():
                await handler(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request through FastAPI's middleware and routes, as if no fast route existed."""
        await super().__call__(scope, receive, send)

    def _instrumented(self) -> bool:
        # Asking costs microseconds, so once a second: a tracer is set up at start-up.
        now = time.monotonic()
        if now >= self._instrumented_until:
            native = getattr(self, "_native_telemetry", None)
            self._instrumented_now = native is not None and bool(native.enabled())
            self._instrumented_until = now + 1.0
        return self._instrumented_now
