"""``QuotadMiddleware``: per-key quotas for any ASGI app (Starlette, FastAPI, or raw ASGI).

For each HTTP request it metered, in order:

1. takes the caller's key from ``Authorization: Bearer`` or ``x-api-key`` (401 without one,
   400 when the two carry different keys; see ``quotad.service.auth.key_from_headers``);
2. consumes the request's cost through the backend, all or nothing (401/403 for a key
   problem, 429 ``QUOTA_EXCEEDED`` with ``Retry-After`` when a quota is used up, 429
   ``RATE_LIMITED`` with ``Retry-After`` when a rate has no tokens yet; any other error
   of quotad's reaches the caller with quotad's status and body);
3. runs the app with the granted verdict in the request's state (``scope["state"]
   ["quotad"]``: ``request.state.quotad.limits`` in Starlette lists every limit checked),
   adding ``RateLimit-Policy``, ``RateLimit`` and ``X-RateLimit-*`` to its
   answer, and, on request, a ``quota`` object to its JSON object bodies;
4. refunds the cost when the app answered 5xx or raised, or answered a status of
   ``refund_statuses`` (404 and 405 by default: nothing was there to serve).

With ``reserve=True`` step 2 reserves the cost instead (SPEC 10), and before the last
byte of the app's answer is passed on the reservation is committed at the cost the app
reports (``request.state.quotad_cost = n``, or the ``cost_header`` of its answer; else
the reserved cost), or cancelled when the app raised or its answer refunds. A call
refused for credits (``CREDITS_EXHAUSTED``) is answered 429, with ``Retry-After`` only
when quotad said when.
Refunds give a priced call's credits back with ``EmbeddedBackend``; through
``RemoteBackend`` only a reservation's cancel does, so use ``reserve=True`` there.

Paths of ``exclude_paths`` (the app's API docs by default) are never metered.

Refusals carry the contract's error body (``quotad.http.errors``) and the same quota
headers as quotad's own answers (``quotad.http.quota``). Non-HTTP scopes pass through;
the lifespan's shutdown closes the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog

from quotad.asgi.backends import QuotaBackend, RelayedError, Reserved
from quotad.asgi.routes import check_pattern, matches
from quotad.asgi.usage import is_usage_path
from quotad.domain import days
from quotad.errors import AuthError, ErrorCode, QuotadError, StorageError, ValidationFailed
from quotad.http.errors import (
    STATUS,
    ErrorAnswer,
    error_answer,
    quotad_error_answer,
)
from quotad.http.quota import verdict_headers
from quotad.http.types import ASGIApp, Message, Receive, Scope, Send
from quotad.service.auth import key_from_headers
from quotad.service.verify import Verdict

log = structlog.get_logger("quotad.asgi")

STATE_KEY = "quotad"  # the granted verdict in scope["state"]: request.state.quotad
# With reserve=True: the reservation's id, and where the app reports the actual cost.
RESERVATION_STATE_KEY = "quotad_reservation"
COST_STATE_KEY = "quotad_cost"
INCLUDE_QUOTA_HEADER = "x-quotad-include-quota"
INCLUDE_QUOTA_PARAM = "include_quota"
_TRUE = frozenset({"1", "true", "yes", "on"})
Cost = int | Callable[[Scope], int | None]
# FastAPI's and Starlette's API documentation: free, and usable without a key.
DOCS_PATHS: frozenset[str] = frozenset(
    {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# Answers that say nothing was served: the cost is given back.
REFUND_STATUSES: frozenset[int] = frozenset({404, 405})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def wants_quota(scope: Scope) -> bool:
    """Whether the request asks for the ``quota`` object in JSON bodies.

    ``X-Quotad-Include-Quota: true`` or ``?include_quota=true`` (``1``, ``yes``, ``on``
    work too).
    """
    flag = _header(scope, INCLUDE_QUOTA_HEADER.encode())
    if flag is not None:
        return flag.strip().lower() in _TRUE
    query = scope.get("query_string", b"")
    if INCLUDE_QUOTA_PARAM.encode() not in query:
        return False
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any(name == INCLUDE_QUOTA_PARAM and value.lower() in _TRUE for name, value in pairs)


def quota_object(verdict: Verdict) -> dict[str, Any]:
    """``{"used", "remaining", "total", "reset"}`` of a verdict, for a JSON body."""
    return {
        "used": verdict.used,
        "remaining": verdict.remaining,
        "total": verdict.total,
        "reset": None if verdict.reset is None else days.rfc3339(verdict.reset),
    }


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    content_type, encoded = b"", False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif lowered == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            encoded = True
    is_json = content_type == b"application/json" or (
        content_type.startswith(b"application/") and content_type.endswith(b"+json")
    )
    return is_json and not encoded


def _relayed(exc: RelayedError) -> ErrorAnswer:
    """quotad's own error answer, passed on with its body and ``Retry-After``."""
    retry = [] if exc.retry_after is None else [(b"retry-after", str(exc.retry_after).encode())]
    return ErrorAnswer.of(exc.status, exc.body, retry)


class QuotadMiddleware:
    """Authenticates each request's API key and consumes its cost against a daily quota.

    Args:
        app: the ASGI app to protect.
        service: the quotad service the requests consume (e.g. ``"insights"``).
        backend: ``EmbeddedBackend`` (a local store) or ``RemoteBackend`` (a quotad server).
        cost: units per request, or a function of the ASGI scope giving them; a function
            returning ``None`` leaves that request alone (no key needed, nothing consumed).
        refund_on_error: give the units back when the app answers 5xx or raises.
        refund_statuses: other answer statuses whose units are given back (by default
            404 and 405: no such route, or not with that method); ``()`` for none.
        exclude_paths: paths never metered (no key needed, nothing consumed). Each is
            matched exactly, except one ending in ``/``, which covers every path under
            it (``"/static/"``). By default ``DOCS_PATHS``: ``/docs``,
            ``/docs/oauth2-redirect``, ``/redoc`` and ``/openapi.json``; pass ``()`` to
            meter them too.
        exempt: requests never metered; by default the two customer usage endpoints
            (mount them with ``mount_usage_endpoints``).
        max_quota_buffer: the largest JSON body held back to add the ``quota`` object to;
            a larger one is passed on unchanged.
        reserve: reserve the cost rather than consume it, and settle it once the app is
            done: commit the actual cost the app reports, or cancel (see the module).
        reserve_ttl: seconds a reservation is held if this process never settles it.
        cost_header: the app's answer header carrying the actual cost (removed from the
            answer); ``request.state.quotad_cost`` takes precedence over it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        backend: QuotaBackend,
        cost: Cost = 1,
        refund_on_error: bool = True,
        refund_statuses: Iterable[int] = REFUND_STATUSES,
        exclude_paths: Iterable[str] = DOCS_PATHS,
        exempt: Callable[[Scope], bool] | None = is_usage_path,
        max_quota_buffer: int = 8 * 1024 * 1024,
        reserve: bool = False,
        reserve_ttl: int = 300,
        cost_header: str | None = None,
    ) -> None:
        self.app = app
        self.reserve = reserve
        self.reserve_ttl = reserve_ttl
        if cost_header is not None and not reserve:
            msg = "cost_header settles a reservation: pass reserve=True too"
            raise ValueError(msg)
        self.cost_header = None if cost_header is None else cost_header.lower().encode("latin-1")
        self.service = service
        self.backend = backend
        self.cost = cost
        self.refund_on_error = refund_on_error
        self.refund_statuses = frozenset(refund_statuses)
        if any(status >= 500 or status < 400 for status in self.refund_statuses):
            msg = "refund_statuses are 4xx statuses (5xx ones follow refund_on_error)"
            raise ValueError(msg)
        self.exclude_paths = tuple(check_pattern(path) for path in exclude_paths)
        self.exempt = exempt
        self.max_quota_buffer = max_quota_buffer

    def cost_of(self, scope: Scope) -> int | None:
        """The units this request consumes, or ``None`` when it is not metered."""
        if self.exempt is not None and self.exempt(scope):
            return None
        if self.excluded(scope["path"]):
            return None
        if callable(self.cost):
            return self.cost(scope)
        return self.cost

    def excluded(self, path: str) -> bool:
        """Whether ``path`` is one of ``exclude_paths`` (never metered)."""
        return any(matches(pattern, path) for pattern in self.exclude_paths)

    def refunds(self, status: int) -> bool:
        """Whether an answer with ``status`` gives its cost back."""
        if status >= 500:
            return self.refund_on_error
        return status in self.refund_statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        cost = self.cost_of(scope) if scope["type"] == "http" else None
        if cost is None:
            await self.app(scope, receive, send)
            return
        granted = await self._decide(scope, receive, send, cost)
        if granted is not None:
            state = scope.setdefault("state", {})
            state[STATE_KEY] = granted.verdict
            if granted.reservation_id is not None:
                state[RESERVATION_STATE_KEY] = granted.reservation_id
            await self._run(scope, receive, send, granted.verdict, cost, granted.reservation_id)

    async def _ask(self, key: str, cost: int) -> Reserved:
        if self.reserve:
            return await self.backend.reserve(key, self.service, cost, self.reserve_ttl)
        return Reserved(await self.backend.consume(key, self.service, cost), None)

    async def _decide(
        self, scope: Scope, receive: Receive, send: Send, cost: int
    ) -> Reserved | None:
        """The granted verdict (and reservation), or ``None`` once a refusal has been sent."""
        try:
            key = key_from_headers(_header(scope, b"authorization"), _header(scope, b"x-api-key"))
            granted = await self._ask(key, cost)
        except StorageError as exc:
            log.warning("quota backend unavailable", error=exc.note)
            await error_answer(ErrorCode.SERVICE_UNAVAILABLE, "the quota service is unavailable")(
                scope, receive, send
            )
            return None
        except RelayedError as exc:
            # quotad's own answer (a 429 with Retry-After, say) is the caller's to see,
            # with the id quotad logged it under.
            if exc.status != 429:
                log.warning("quotad refused the check", status=exc.status, error_id=exc.body["id"])
            await _relayed(exc)(scope, receive, send)
            return None
        except QuotadError as exc:
            if not isinstance(exc, AuthError | ValidationFailed):  # not the caller's doing
                log.warning("quota backend refused the check", error=exc.note, code=exc.code.value)
            await quotad_error_answer(exc)(scope, receive, send)
            return None
        if granted.verdict.valid:
            return granted
        await self._refuse(scope, receive, send, granted.verdict)
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, verdict: Verdict) -> None:
        try:
            code = ErrorCode(verdict.code)
        except ValueError:
            code = ErrorCode.FORBIDDEN
        note = verdict.note
        if code is ErrorCode.QUOTA_EXCEEDED:
            reset = "" if verdict.reset is None else f"; it resets at {days.rfc3339(verdict.reset)}"
            # A version-2 verdict names the limit that refused (its window may not be a day).
            refused_by = getattr(verdict, "refused_by", None)
            daily = refused_by in (None, f"{self.service}.day")
            what = f"the daily {self.service} quota" if daily else f"the {refused_by} limit"
            note = f"{what} of {verdict.total} is used up{reset}"
        headers = verdict_headers(verdict, self.backend.now().timestamp())
        if code is ErrorCode.CREDITS_EXHAUSTED and verdict.retry_after is None:
            # A limit's reset brings no credits back: no Retry-After unless quotad knows.
            headers = [(name, value) for name, value in headers if name != b"retry-after"]
        refusal = error_answer(
            code, note or "the request was refused", status=STATUS.get(code, 403), headers=headers
        )
        await refusal(scope, receive, send)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        verdict: Verdict,
        cost: int,
        reservation_id: str | None = None,
    ) -> None:
        extra = self._headers(verdict)
        replaced = self._replaced(extra, reservation_id is not None)
        include = wants_quota(scope)
        refunded = False
        status: int | None = None  # of the app's answer, once started
        reported: str | None = None  # the cost_header's value
        held: Message | None = None  # the response start, while a JSON body is buffered
        body = bytearray()
        settled = reservation_id is None

        async def settling(message: Message) -> None:
            # A reservation is settled before the answer's last byte leaves, so a caller
            # who has read the whole answer sees the settled counters.
            nonlocal settled
            if not settled and not message.get("more_body", False):
                settled = True
                await self._settle_answered(scope, reservation_id, status, reported, cost)
            await send(message)

        async def send_with_quota(message: Message) -> None:
            nonlocal refunded, held, extra, verdict, status, reported
            if message["type"] == "http.response.start":
                status = message["status"]
                if reservation_id is not None:
                    reported = self._reported(message)
                # Refund before the client can see the answer, and say so in the headers
                # (a reservation is settled before the answer's last byte).
                elif self.refunds(status):
                    refunded = True
                    if await self._refund(verdict, cost, f"answered {status}"):
                        verdict = verdict._replace(used=max((verdict.used or 0) - cost, 0))
                        extra = self._headers(verdict)
                headers = [
                    (bytes(k), bytes(v))
                    for k, v in message.get("headers", ())
                    if bytes(k).lower() not in replaced
                ]
                message["headers"] = headers + extra
                if include and _is_json(headers):
                    held = message
                    return
                await send(message)
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False) and len(body) <= self.max_quota_buffer:
                    return
                start, held = held, None
                if message.get("more_body", False):  # too large: pass it on as it is
                    await send(start)
                    await send({**message, "body": bytes(body)})
                    return
                await self._send_with_quota_object(start, bytes(body), verdict, settling)
            elif message["type"] == "http.response.body":
                await settling(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, send_with_quota)
        except Exception:  # a cancelled request (client gone) is not refunded
            await self._raised(verdict, cost, reservation_id, settled, refunded)
            raise
        if not settled:  # the app answered no body
            await self._settle_answered(scope, reservation_id, status, reported, cost)

    def _replaced(self, extra: list[tuple[bytes, bytes]], reserving: bool) -> set[bytes]:
        """The app's headers not passed on: the quota headers this middleware writes, and
        the ``cost_header`` (the app's word to the middleware, not the caller's)."""
        replaced = {name for name, _ in extra}
        if reserving and self.cost_header is not None:
            replaced.add(self.cost_header)
        return replaced

    async def _raised(
        self,
        verdict: Verdict,
        cost: int,
        reservation_id: str | None,
        settled: bool,
        refunded: bool,
    ) -> None:
        """What the app's exception gives back: its reservation (unless already settled),
        or the consumed cost (unless already refunded)."""
        if reservation_id is not None:
            if not settled:
                actual = None if self.refund_on_error else cost
                await self._settle(reservation_id, actual, "the app raised")
        elif self.refund_on_error and not refunded:
            await self._refund(verdict, cost, "the app raised")

    async def _settle_answered(
        self,
        scope: Scope,
        reservation_id: str | None,
        status: int | None,
        reported: str | None,
        cost: int,
    ) -> None:
        """Cancel for an answer that refunds (or none), else commit the actual cost."""
        if reservation_id is None:
            return
        if status is None or self.refunds(status):
            await self._settle(reservation_id, None, f"answered {status}")
        else:
            await self._settle(reservation_id, self._actual(scope, reported, cost), "answered")

    def _reported(self, start: Message) -> str | None:
        """The value of the app's ``cost_header``, if it sent one."""
        if self.cost_header is None:
            return None
        for name, value in start.get("headers", ()):
            if bytes(name).lower() == self.cost_header:
                return bytes(value).decode("latin-1")
        return None

    def _actual(self, scope: Scope, reported: str | None, reserved: int) -> int:
        """The cost to commit: the app's state, else its header, else the reserved cost.

        A value that is not an integer >= 0 is ignored (logged): the reserved cost stands.
        """
        value: object = scope.get("state", {}).get(COST_STATE_KEY)
        if value is None:
            value = reported
        if value is None:
            return reserved
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        log.warning("ignored an invalid actual cost", cost=str(value)[:40], reserved=reserved)
        return reserved

    async def _settle(self, reservation_id: str | None, actual: int | None, why: str) -> None:
        """Commit ``actual`` (None: cancel); a failure is logged, never raised (quotad gives
        an unsettled reservation back when it expires)."""
        if reservation_id is None:
            return
        try:
            if actual is None:
                await self.backend.cancel(reservation_id)
            else:
                await self.backend.commit(reservation_id, actual)
        except Exception as exc:
            log.warning(
                "settling a reservation failed",
                why=why,
                reservation_id=reservation_id,
                error=str(exc),
            )
            return
        what = "cancelled" if actual is None else "committed"
        log.info(what, why=why, reservation_id=reservation_id, cost=actual)

    async def _send_with_quota_object(
        self, start: Message, body: bytes, verdict: Verdict, send: Send
    ) -> None:
        try:
            document = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and "quota" not in document:
            document["quota"] = quota_object(verdict)
            body = orjson.dumps(document)
            start["headers"] = [
                (k, v) for k, v in start["headers"] if k.lower() != b"content-length"
            ] + [(b"content-length", str(len(body)).encode())]
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _headers(self, verdict: Verdict) -> list[tuple[bytes, bytes]]:
        """The quota headers of a granted verdict, as ASGI header pairs."""
        return verdict_headers(verdict, self.backend.now().timestamp())

    async def _refund(self, verdict: Verdict, cost: int, why: str) -> bool:
        """Give the cost back; whether that worked (a failure is logged, never raised)."""
        if cost <= 0:
            return False
        try:
            await self.backend.refund(verdict, cost)
        except Exception as exc:  # a failed refund must not hide the app's answer
            log.warning("refund failed", why=why, account_id=verdict.account_id, error=str(exc))
            return False
        log.info("refunded", why=why, account_id=verdict.account_id, cost=cost)
        return True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan through; open the backend at startup, close it at shutdown."""

        async def receive_opening() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.backend.open()
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.backend.close()
            await send(message)

        await self.app(scope, receive_opening, send_closing)
