"""The two pure-ASGI layers in front of quotad's routes.

``RequestContext`` is the app's: every request, whatever answers it, gets an id (bound
to its log lines and echoed as ``x-request-id``), its ``api-version`` checked and
echoed, one access line, and a contract 500 for whatever fails unexpectedly.
``JsonBodyGuard`` is the API's: a body that is not JSON, or is larger than the limit,
is refused before any route reads it. It leaves alone the paths it is told to (the
HTML areas, which take forms).
"""

from __future__ import annotations

import logging
import time

import structlog

from quotad import logs
from quotad.http.errors import unexpected_error_answer
from quotad.http.headers import (
    BODY_METHODS,
    api_version_refusal,
    body_refusal,
    size_unknown,
    too_large,
)
from quotad.http.ids import echoed_headers, new_request_id
from quotad.http.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("quotad.access")


def access_logged() -> bool:
    """Whether access lines are written at the configured level (info and below)."""
    return logs.configured_level <= logging.INFO


def log_request(scope: Scope, status: int | None, started: float) -> None:
    """A request's access line; its ``request_id`` comes from the bound log context."""
    log.info(
        "request",
        method=scope["method"],
        path=scope["path"],
        status=status,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )


class RequestContext:
    """Request id, ``api-version``, access line and last-resort 500 for every HTTP request.

    Every answer echoes ``api-version`` and ``x-request-id``. An exception that reaches
    this layer before the answer began becomes the contract's 500 (logged once, here);
    after it began, nothing better can be sent, and it goes on to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = new_request_id()
        echoed = echoed_headers(request_id)
        status: int | None = None
        whole = False  # the answer's last body message has gone

        async def send_echoing(message: Message) -> None:
            nonlocal status, whole
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *echoed]
            elif not message.get("more_body", False):
                whole = True
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            refusal = None
            for name, value in scope["headers"]:
                if name == b"api-version":
                    refusal = api_version_refusal(bytes(value).decode("latin-1"))
                    break
            try:
                await (refusal or self.app)(scope, receive, send_echoing)
            except Exception as exc:
                if status == 500 and whole:
                    # A mounted app (the API) answered with the contract's 500 and logged it;
                    # Starlette raises on after answering, and there is nothing left to do.
                    pass
                elif status is not None:  # the answer has begun; nothing better can be sent now
                    raise
                else:
                    await unexpected_error_answer(exc)(scope, receive, send_echoing)
            if access_logged():
                log_request(scope, status, started)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


class JsonBodyGuard:
    """Refuses request bodies that are not JSON or exceed ``max_body_bytes``.

    A body whose size is known only once read (chunked, without a length) is read here,
    bounded, and handed on whole. Paths under ``exempt`` (each a path and what lies
    below it) are passed on untouched.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.exempt = frozenset(exempt)
        self.exempt_below = tuple(f"{path}/" for path in exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.exempt or path.startswith(self.exempt_below):
            await self.app(scope, receive, send)
            return
        content_length: bytes | None = None
        transfer_encoding: bytes | None = None
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if content_length is None:
                    content_length = bytes(value)
            elif name == b"content-type":
                if content_type is None:
                    content_type = bytes(value)
            elif name == b"transfer-encoding" and transfer_encoding is None:
                transfer_encoding = bytes(value)
        refusal = body_refusal(content_length, transfer_encoding, content_type, self.max_body_bytes)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if size_unknown(content_length, transfer_encoding):
            body = await self._read_bounded(receive)
            if body is None:
                await too_large(self.max_body_bytes)(scope, receive, send)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    async def _read_bounded(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it grows past the limit."""
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return bytes(body)


def _replay(body: bytes) -> Receive:
    """A ``receive`` that gives ``body`` whole, then says the client has gone."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
