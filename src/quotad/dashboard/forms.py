"""Plain HTML forms for the dashboard and the portal, on an API that only accepts JSON.

``RequestGuard`` refuses any request body that is not JSON, before routing. The pages'
forms post ``application/x-www-form-urlencoded``, so that they work without JavaScript;
this adapter, placed outside the guard, turns such a body into the equivalent JSON object
(``{"field": "value"}``, the last value of a repeated field winning) for the two HTML
areas only. The guard then checks the converted body like any other, and every other
path is passed through untouched.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson

from quotad.http.types import ASGIApp, Message, Receive, Scope, Send

FORM_TYPE = "application/x-www-form-urlencoded"
AREAS = ("/dashboard", "/portal")
MAX_FORM_BYTES = 64 * 1024  # the pages' forms hold a token, a name, two dates


def _in_area(path: str) -> bool:
    return any(path == area or path.startswith(area + "/") for area in AREAS)


def _content_type(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return bytes(value).decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


class FormBodies:
    """Converts url-encoded form posts under ``/dashboard`` and ``/portal`` to JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_FORM_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not _in_area(scope["path"])
            or _content_type(scope) != FORM_TYPE
        ):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more and len(body) <= self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
        if more or len(body) > self.max_bytes:
            # Too large for a form: hand the request on as it came, so the guard refuses it
            # (and logs the refusal with the request's id) like any other non-JSON body.
            await self.app(scope, _replay(bytes(body), receive if more else None), send)
            return
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        converted = orjson.dumps(fields)
        headers = [
            (key, value)
            for key, value in scope.get("headers", ())
            if key not in (b"content-type", b"content-length", b"transfer-encoding")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(converted)).encode()),
        ]
        await self.app({**scope, "headers": headers}, _replay(converted, None), send)


def _replay(first: bytes, rest: Receive | None) -> Receive:
    """A ``receive`` that yields ``first``, then whatever ``rest`` still has (if given)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": rest is not None}
        if rest is not None:
            return await rest()
        return {"type": "http.disconnect"}

    return receive
