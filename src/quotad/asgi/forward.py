"""Relaying one HTTP request to another server, streaming both bodies.

Neither body is ever held whole: the request body is read from ASGI ``receive`` as the
upstream asks for it, and the answer is sent on chunk by chunk as it arrives, so memory
stays bounded whatever the sizes (ASGI servers apply back-pressure on ``send``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

import httpx2

from quotad.errors import ErrorCode
from quotad.http.errors import error_answer
from quotad.http.types import Receive, Scope, Send

# RFC 9110 7.6.1: connection-specific fields are not forwarded; ``host`` is the upstream's.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)


class ClientDisconnectedError(Exception):
    """The client went away while its request body was being relayed."""


def target_url(upstream: httpx2.URL, scope: Scope) -> httpx2.URL:
    """The upstream URL for a request: the upstream's base path + the request's path and query."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    prefix = upstream.raw_path.split(b"?", 1)[0].rstrip(b"/")
    return upstream.copy_with(raw_path=prefix + raw_path + (b"?" + query if query else b""))


def forwarded_headers(scope: Scope, drop: Collection[bytes] = ()) -> list[tuple[bytes, bytes]]:
    """The request's headers minus hop-by-hop ones and ``drop``, plus ``X-Forwarded-*``."""
    headers: list[tuple[bytes, bytes]] = []
    host = b""
    for name, value in scope.get("headers", ()):
        lowered = bytes(name).lower()
        if lowered == b"host":
            host = bytes(value)
        if lowered in HOP_BY_HOP or lowered in drop:
            continue
        headers.append((lowered, bytes(value)))
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode()))
    headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
    if host:
        headers.append((b"x-forwarded-host", host))
    return headers


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        lowered = bytes(name).lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length":
            return bytes(value).strip() not in (b"", b"0")
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def forward(
    client: httpx2.AsyncClient,
    url: httpx2.URL,
    scope: Scope,
    receive: Receive,
    send: Send,
    drop_headers: Collection[bytes] = (),
) -> None:
    """Send the request of ``scope`` to ``url`` and relay the answer, streaming both ways.

    An upstream that cannot be reached answers 502 (504 when it timed out) with the
    contract's error body.
    """
    request = client.build_request(
        scope["method"],
        url,
        headers=forwarded_headers(scope, drop_headers),
        content=_request_body(receive) if _has_body(scope) else None,
    )
    try:
        response = await client.send(request, stream=True)
    except ClientDisconnectedError:
        return
    except httpx2.TransportError as exc:
        timed_out = isinstance(exc, httpx2.TimeoutException)
        note = "the upstream did not answer in time" if timed_out else "the upstream is unreachable"
        refusal = error_answer(
            ErrorCode.SERVICE_UNAVAILABLE, note, status=504 if timed_out else 502
        )
        await refusal(scope, receive, send)
        return
    try:
        headers = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in HOP_BY_HOP and name.lower() != b"date"  # the server sets it
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()
