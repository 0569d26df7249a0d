"""How quotad's processes serve HTTP: uvicorn, with each answer written in one piece.

uvicorn writes a response's head and its body with one system call each. The reader (a
client, a load balancer) is woken by the first and often sleeps again before the second
arrives, so every small answer costs two wake-ups of the reader's CPU; on a virtual
machine, where waking another CPU is expensive, that was a third of a verify's time.
``CoalescingTransport`` keeps what is written during one turn of the event loop and sends
it in one write when the turn ends: the same bytes in the same order, one wake-up.

Before serving, the objects made while starting (the imported modules, the app) are moved
out of the garbage collector's sight with ``gc.freeze``: they live as long as the process,
and scanning them in every full collection paused the server for 45 ms a few times a
second under load (collecting nothing).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes of one event-loop turn go out as one write at its end.

    Everything but writing is the wrapped transport's own; closing sends what is held
    first, aborting drops it (as aborting drops the transport's own buffer).
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data`` until the end of this turn of the loop."""
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        """Hold each of ``lines``."""
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held, in one write."""
        held = self._held
        if held:
            self._held = []
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is held, then half-close."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is held and abort."""
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set the connection up as uvicorn does, then hold its writes per loop turn."""
        super().connection_made(transport)  # type: ignore[arg-type]
        # Flow control keeps the real transport (its buffer is the one that fills up).
        self.transport = CoalescingTransport(self.transport, self.loop)  # type: ignore[assignment]


def proxy_options(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's options for ``X-Forwarded-*``: believed from ``trusted_proxies`` only.

    uvicorn's own default believes them from 127.0.0.1, so any local client could pick
    the address its failed authentications are counted against. Without a trusted proxy
    the headers are not read at all: the connection's peer is the client.
    """
    if not trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


def run(
    app: Any, host: str, port: int, trusted_proxies: Sequence[str] = (), **options: Any
) -> None:
    """Serve ``app`` until stopped: uvicorn, quietly, on the coalescing protocol.

    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` set the client's address and scheme
    only on connections from ``trusted_proxies`` (``QUOTAD_TRUSTED_PROXIES``).
    """
    gc.collect()  # what is garbage now is not frozen for ever
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=CoalescingHttpToolsProtocol,
        log_level="warning",
        access_log=False,
        log_config=None,
        **proxy_options(trusted_proxies),
        **options,
    )
