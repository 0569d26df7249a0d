"""One attempt at a webhook delivery: a signed POST, and what came back (SPEC 11).

The attempt never follows a redirect (a 3xx is a failed attempt: following it could lead
past the URL guard of ``webhook_urls``), is bounded as a whole by ``timeout`` (httpx's
timeouts are per read, so a receiver dripping its answer could hold it longer), and keeps
only the head of the answer. Its error says what happened in a few words: never the
headers (they carry the signature), never the URL (its query may carry a token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import httpx2

from quotad import __version__
from quotad.domain.webhooks import RESPONSE_KEPT, Attempt

USER_AGENT = f"quotad-webhooks/{__version__}"
# At most 4 bytes a character in UTF-8: enough bytes for RESPONSE_KEPT characters.
_BYTES_KEPT = RESPONSE_KEPT * 4
_CONNECT_TIMEOUT = 5.0
_DEFAULT_TIMEOUT = 10.0


def new_client() -> httpx2.AsyncClient:
    """The pooled client deliveries are sent with.

    Redirects are not followed, and the environment's proxies are ignored (``trust_env``):
    a delivery goes straight to the address the URL guard checked.
    """
    return httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx2.Timeout(_DEFAULT_TIMEOUT, connect=_CONNECT_TIMEOUT),
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": USER_AGENT},
    )


def _failure(exc: httpx2.TransportError) -> str:
    """A few words on why no answer came (httpx's messages may name the host or URL)."""
    if isinstance(exc, httpx2.ConnectError):
        return "could not connect (refused or unreachable)"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "the connection closed without a valid answer"
    if isinstance(exc, httpx2.ReadError | httpx2.WriteError | httpx2.CloseError):
        return "the connection broke"
    if isinstance(exc, httpx2.UnsupportedProtocol):
        return "the URL's scheme is not supported"
    return f"transport error ({type(exc).__name__})"


async def _read_head(response: httpx2.Response, kept: bytearray) -> None:
    """Read the first bytes of the answer's body into ``kept``: a long page is not kept whole."""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= _BYTES_KEPT:
            return


async def send(
    client: httpx2.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,  # noqa: ASYNC109 (the endpoint's budget, enforced inside)
    now: Callable[[], datetime],
) -> Attempt:
    """POST one delivery to ``url`` and report the attempt; never raises for the receiver."""
    at = now()
    started = time.perf_counter()

    def elapsed_ms() -> int:
        return round((time.perf_counter() - started) * 1000)

    timed_out = f"timed out after {timeout:g}s"
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request("POST", url, content=body, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
    except (TimeoutError, httpx2.TimeoutException):
        return Attempt(at=at, status_code=None, latency_ms=elapsed_ms(), error=timed_out)
    except httpx2.TransportError as exc:
        return Attempt(at=at, status_code=None, latency_ms=elapsed_ms(), error=_failure(exc))
    except httpx2.InvalidURL:
        return Attempt(at=at, status_code=None, latency_ms=elapsed_ms(), error="invalid URL")
    # The status came in time, so it stands (a 2xx is delivered); the body gets what is
    # left of the time, and whatever arrived of it is kept.
    error = "redirect not followed" if 300 <= response.status_code < 400 else None
    kept = bytearray()
    remaining = max(timeout - (time.perf_counter() - started), 0.001)
    try:
        async with asyncio.timeout(remaining):
            await _read_head(response, kept)
    except (TimeoutError, httpx2.TransportError, httpx2.DecodingError):
        error = error or "the answer's body did not arrive in full"
    finally:
        await response.aclose()
    return Attempt(
        at=at,
        status_code=response.status_code,
        latency_ms=elapsed_ms(),
        error=error,
        response=bytes(kept[:_BYTES_KEPT]).decode("utf-8", errors="replace")[:RESPONSE_KEPT],
    )
