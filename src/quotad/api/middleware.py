"""Pure-ASGI guards that run before routing: request ids, ``api-version``, body checks."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import structlog

from quotad import logs
from quotad.api.errors import error_response, unexpected_error
from quotad.errors import ErrorCode, FieldError
from quotad.http.types import ASGIApp, Message, Receive, Scope, Send

API_VERSIONS = ("v1",)
LATEST_VERSION = API_VERSIONS[-1]
_BODY_METHODS = {"POST", "PUT", "PATCH"}
log = structlog.get_logger("quotad.access")

# A request id is a random UUID4's 32 hex digits. Every request makes one, so they are
# built from the bits directly (uuid.uuid4() costs twice as much), and the random bits
# are drawn from the OS 256 ids at a time (one system call each is most of the cost).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_IDS_PER_DRAW = 256
_random_ids: list[int] = []
os.register_at_fork(after_in_child=_random_ids.clear)  # a child must not reuse its parent's
_SERVED_VERSION = LATEST_VERSION.encode()


def new_request_id() -> str:
    """A fresh request id, the ``x-request-id`` of the answer (a UUID4 in hex)."""
    try:
        bits = _random_ids.pop()  # atomic: threads never share an id
    except IndexError:
        drawn = os.urandom(16 * _IDS_PER_DRAW)
        _random_ids.extend(int.from_bytes(drawn[i : i + 16]) for i in range(16, len(drawn), 16))
        bits = int.from_bytes(drawn[:16])
    return f"{bits & _UUID4_CLEAR | _UUID4_SET:032x}"


def echoed_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries: the ``api-version`` served and the request id."""
    return [(b"api-version", _SERVED_VERSION), (b"x-request-id", request_id.encode())]


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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequestGuard:
    """Gives each request an id, pins ``api-version``, and checks the body's type and size.

    Every response echoes ``api-version`` and ``x-request-id``. A body that is not JSON,
    or larger than ``max_body_bytes``, is refused here, before any route reads it, except
    under the ``own_bodies`` path prefixes (the web UI, which reads and bounds its forms).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, own_bodies: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.own_bodies = own_bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        started = time.perf_counter()
        status_seen: list[int] = []
        extra = echoed_headers(request_id)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            refusal, receive = await self._check(scope, receive)
            try:
                await (refusal or self.app)(scope, receive, send_with_headers)
            except Exception as exc:
                if status_seen:  # the answer has begun; nothing better can be sent now
                    raise
                await unexpected_error(exc)(scope, receive, send_with_headers)
            log_request(scope, status_seen[0] if status_seen else None, started)

    async def _check(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        version = _header(scope, b"api-version")
        if version is not None and version.strip() not in API_VERSIONS:
            return error_response(
                ErrorCode.VALIDATION_FAILED,
                f"unknown api-version; supported: {', '.join(API_VERSIONS)}",
                [
                    FieldError(
                        "/header/api-version",
                        "api-version must be one of: " + ", ".join(API_VERSIONS),
                        "enum",
                        f"send api-version: {LATEST_VERSION} or omit the header",
                    )
                ],
            ), receive
        if scope["method"] not in _BODY_METHODS or self._owns_body(scope["path"]):
            return None, receive
        length_header = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            return error_response(ErrorCode.BAD_REQUEST, "invalid Content-Length"), receive
        if not chunked and not length:
            return None, receive
        content_type = _header(scope, b"content-type")
        if content_type is None or not _is_json(content_type):
            return error_response(
                ErrorCode.BAD_REQUEST, "the body must be JSON (Content-Type: application/json)"
            ), receive
        if length is not None and length > self.max_body_bytes:
            return self._too_large(), receive
        if length is not None:
            return None, receive
        # No length given: read the body here, bounded, and hand it on whole.
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return self._too_large(), receive
            if not message.get("more_body", False):
                break
        return None, _replay(bytes(body))

    def _owns_body(self, path: str) -> bool:
        return any(path == area or path.startswith(area + "/") for area in self.own_bodies)

    def _too_large(self) -> Any:
        return error_response(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the body is larger than the limit of {self.max_body_bytes} bytes",
        )


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
