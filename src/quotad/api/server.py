"""How quotad's processes serve HTTP: uvicorn, with each answer written in one piece.

uvicorn writes a response's head and its body with one system call each. The reader (a
client, a load balancer) is woken by the first and often sleeps again before the second
arrives, so every small answer costs two wake-ups of the reader's CPU; on a virtual
machine, where waking another CPU is expensive, that was a third of a verify's time.
``CoalescingTransport`` keeps what is written during one turn of the event loop and sends
it in one write when the turn ends: the same bytes in the same order, one wake-up.

``QuotadHttpProtocol`` also holds the line against slow and idle clients, which uvicorn
alone lets hold a connection (and a file descriptor) for ever: a request head must be
complete within ``Limits.header_timeout`` of the connection (or of its first byte, after an
earlier answer), a body within ``Limits.body_timeout`` of its head (``quotad serve`` sets
one; ``quotad proxy`` streams bodies at its upstream's pace); a trickle of bytes extends
neither. At most ``Limits.max_connections`` connections are open: a new one past that
closes the connection idle for longest (waiting for a head, or kept alive between
requests), and is itself refused with 503 when every connection is busy. What uvicorn
would answer itself (400 for what the parser refuses, 500 when the app answers nothing)
carries the contract's error body, as every other refusal does.

Before serving, the objects made while starting (the imported modules, the app) are moved
out of the garbage collector's sight with ``gc.freeze``: they live as long as the process,
and scanning them in every full collection paused the server for 45 ms a few times a
second under load (collecting nothing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
import sys
from collections.abc import Sequence
from contextlib import suppress
from http import HTTPStatus
from types import FrameType
from typing import Any, ClassVar

import orjson
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from quotad.errors import ErrorCode
from quotad.http.errors import logged_error_body
from quotad.http.ids import echoed_headers, new_request_id
from quotad.settings import Settings

log = structlog.get_logger("quotad.server")

# What QuotadHttpProtocol takes from uvicorn's private classes: the methods it overrides or
# calls (with their parameters) and the attributes it reads or sets. tests/test_uvicorn_pin.py
# checks the installed uvicorn against this, within the range pyproject.toml pins.
RELIES_ON: dict[str, Sequence[str]] = {
    "HttpToolsProtocol.connection_made": ("self", "transport"),
    "HttpToolsProtocol.connection_lost": ("self", "exc"),
    "HttpToolsProtocol.data_received": ("self", "data"),
    "HttpToolsProtocol.on_headers_complete": ("self",),
    "HttpToolsProtocol.on_message_complete": ("self",),
    "HttpToolsProtocol.on_response_complete": ("self",),
    "HttpToolsProtocol.send_400_response": ("self", "msg"),
    "RequestResponseCycle.send_500_response": ("self",),
    "RequestResponseCycle.send": ("self", "message"),
}
RELIES_ON_ATTRIBUTES: dict[str, Sequence[str]] = {
    "HttpToolsProtocol": ("transport", "loop", "cycle", "pipeline", "server_state"),
    "RequestResponseCycle": (
        "response_started",
        "response_complete",
        "disconnected",
        "message_event",
    ),
    "ServerState": ("default_headers",),
}


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

    def is_closing(self) -> bool:
        """Whether the transport is closing (asked on every answer: not via ``__getattr__``)."""
        return self._transport.is_closing()

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


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """How long a client may take, and how many connections one process holds open.

    The defaults are those of a server started without settings (``quotad proxy``): its
    bodies stream to an upstream at the upstream's pace, so they have no deadline (None).
    """

    max_connections: int = 4096
    header_timeout: float = 10.0
    body_timeout: float | None = None
    keep_alive_timeout: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits the ``QUOTAD_*`` settings name."""
        return cls(
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            keep_alive_timeout=settings.keep_alive_timeout_seconds,
        )


def error_answer(
    status: int,
    code: ErrorCode,
    note: str,
    default_headers: Sequence[tuple[bytes, bytes]] = (),
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole HTTP/1.1 answer carrying the contract's error body, closing the connection."""
    request_id = new_request_id()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        body = orjson.dumps(logged_error_body(code, note, status))
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    for name, value in (
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *echoed_headers(request_id),
        *headers,
    ):
        lines += [name, b": ", value, b"\r\n"]
    lines += [b"\r\n", body]
    return b"".join(lines)


class ContractCycle(RequestResponseCycle):
    """uvicorn's request cycle, whose last-resort 500 is the contract's error body."""

    async def send_500_response(self) -> None:
        """Answer 500 INTERNAL_SERVER_ERROR (the app failed, or returned without answering)."""
        request_id = new_request_id()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            body = orjson.dumps(
                logged_error_body(
                    ErrorCode.INTERNAL_SERVER_ERROR, "an unexpected error occurred", 500
                )
            )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *echoed_headers(request_id),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class Connections:
    """The open connections of one server; the idle ones in the order they became idle."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[QuotadHttpProtocol] = set()
        self.idle: dict[QuotadHttpProtocol, None] = {}  # insertion order: longest idle first

    def admit(self, connection: QuotadHttpProtocol) -> bool:
        """Count ``connection`` in, closing the longest-idle one to make room if need be.

        False when the limit is reached and no connection is idle: ``connection`` must go.
        """
        if len(self.open) >= self.limit:
            if not self.idle:
                return False
            next(iter(self.idle)).shed()
        self.open.add(connection)
        self.idle[connection] = None
        return True

    def rest(self, connection: QuotadHttpProtocol) -> None:
        """``connection`` waits for its next request (the newest idle one)."""
        if connection in self.open:
            self.idle[connection] = None

    def forget(self, connection: QuotadHttpProtocol) -> None:
        """``connection`` is closed or closing."""
        self.open.discard(connection)
        self.idle.pop(connection, None)


class QuotadHttpProtocol(CoalescingHttpToolsProtocol):
    """The coalescing protocol with time and connection limits and the contract's errors.

    Built per server by ``protocol_for``, which gives it its ``limits`` and ``registry``.
    """

    limits: ClassVar[Limits] = Limits()
    registry: ClassVar[Connections] = Connections(Limits().max_connections)

    # Per connection; class-level defaults so that uvicorn's __init__ is left alone.
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _head_begun = False  # bytes of a request head have arrived since the last head completed
    _reading_body = False  # a head is complete and its body is not

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the connection in (shedding an idle one past the limit) and start its clock."""
        super().connection_made(transport)
        if not self.registry.admit(self):
            self._close_with(
                503,
                ErrorCode.SERVICE_UNAVAILABLE,
                "the server is at its connection limit; retry shortly",
                [(b"retry-after", b"1")],
            )
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and its clocks, then as uvicorn does."""
        self.registry.forget(self)
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; start the head's or the body's clock when one begins."""
        cycle = self.cycle
        if cycle is None or (cycle.response_complete and not self._reading_body):
            self._head_begun = True
        super().data_received(data)
        if self._reading_body:
            if (
                self._body_timer is None
                and self.limits.body_timeout is not None
                and not self.transport.is_closing()
            ):
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout, self._body_timed_out
                )
        elif (
            self._head_timer is None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        ):
            # uvicorn stopped its keep-alive clock at this first byte of a next request: it
            # must now come whole in time, however slowly its bytes arrive.
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )

    def on_headers_complete(self) -> None:
        """Start the request as uvicorn does; the connection is busy until it is answered."""
        super().on_headers_complete()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_begun = False
        self._reading_body = True
        self.registry.idle.pop(self, None)  # busy: not to be shed
        if self.cycle is not None:
            # uvicorn builds its cycle by name in the method above; only its 500 differs.
            self.cycle.__class__ = ContractCycle

    def on_message_complete(self) -> None:
        """The body is complete: stop its clock."""
        super().on_message_complete()
        self._reading_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        """As uvicorn does; with nothing more to answer, the connection is idle."""
        super().on_response_complete()
        if self.cycle.response_complete:  # and no pipelined request was started
            self.registry.rest(self)

    def send_400_response(self, msg: str) -> None:
        """Refuse what the HTTP parser could not read, with the contract's error body."""
        self._close_with(400, ErrorCode.BAD_REQUEST, "the request is not valid HTTP/1.1")

    def shed(self) -> None:
        """Close this idle connection to make room for a new one."""
        if self._head_begun:
            self._close_with(
                503,
                ErrorCode.SERVICE_UNAVAILABLE,
                "the server is at its connection limit; retry shortly",
                [(b"retry-after", b"1")],
            )
        else:
            self._close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            note = f"the request head did not arrive within {self.limits.header_timeout:g} s"
            self._close_with(408, ErrorCode.BAD_REQUEST, note)
        else:  # nothing was asked: nothing to answer
            self._close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        timeout = self.limits.body_timeout
        assert timeout is not None  # noqa: S101 - armed only with a timeout
        if self.pipeline:
            # A queued request's body is not read until the ones before it are answered.
            self._body_timer = self.loop.call_later(timeout, self._body_timed_out)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self._close()
            return
        # The app waiting for the body hears that the client is gone; nothing it sends
        # now goes out.
        cycle.disconnected = True
        cycle.message_event.set()
        note = f"the request body did not arrive within {timeout:g} s"
        self._close_with(408, ErrorCode.BAD_REQUEST, note)

    def _close_with(
        self,
        status: int,
        code: ErrorCode,
        note: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        answer = error_answer(status, code, note, self.server_state.default_headers, headers)
        self.transport.write(answer)
        self._close()

    def _close(self) -> None:
        self.registry.forget(self)
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def protocol_for(limits: Limits) -> type[QuotadHttpProtocol]:
    """A protocol class for one server: its limits, and the registry of its connections."""

    class ServingProtocol(QuotadHttpProtocol):
        pass

    ServingProtocol.limits = limits
    ServingProtocol.registry = Connections(limits.max_connections)
    return ServingProtocol


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit of open files to its hard limit; the soft limit now.

    None where there is no such limit to read (Windows).
    """
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one (the kernel caps it at nr_open).
    wanted = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else sys.maxsize


def connection_cap(requested: int, open_files: int) -> int:
    """How many connections fit in ``open_files`` descriptors beside the process's others
    (its store's connections, its logs, the listening socket)."""
    reserve = min(256, open_files // 4)
    return max(1, min(requested, open_files - reserve))


class Interrupts:
    """Ctrl-C and SIGTERM for ``quotad serve``, from before the server starts to its end.

    Python's own SIGINT handler is one asyncio replaces with cancelling its main task,
    which uvicorn starting up can absorb; and a KeyboardInterrupt that a signal raises
    inside a garbage-collection callback is dropped (seen when Ctrl-C came 50 ms after
    the banner: the server went on serving). So a signal is first noted here: before the
    server exists it also interrupts what runs; once it does, the server is told to stop
    (uvicorn's own handlers take over while it serves, and do the same).
    """

    def __init__(self) -> None:
        self.requested = False
        self._server: uvicorn.Server | None = None

    def install(self) -> None:
        """Take SIGINT and SIGTERM (from the main thread)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def serving(self, server: uvicorn.Server) -> None:
        """From now on a signal stops ``server``."""
        self._server = server

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.requested = True
        server = self._server
        if server is None:
            raise KeyboardInterrupt
        if server.should_exit:
            # uvicorn has shut down and raises the signal again, as the process is to end
            # by it (SIGTERM's exit status), or this is a second one: the default handling.
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default)
            signal.raise_signal(signum)
            return
        server.should_exit = True


def run(
    app: Any,
    host: str,
    port: int,
    trusted_proxies: Sequence[str] = (),
    limits: Limits | None = None,
    interrupts: Interrupts | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until stopped: uvicorn, quietly, on quotad's protocol.

    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` set the client's address and scheme
    only on connections from ``trusted_proxies`` (``QUOTAD_TRUSTED_PROXIES``).
    """
    limits = limits or Limits()
    open_files = raise_open_file_limit()
    if open_files is not None:
        cap = connection_cap(limits.max_connections, open_files)
        if cap < limits.max_connections:
            log.warning(
                "connection limit lowered to fit the open-file limit",
                max_connections=limits.max_connections,
                open_files=open_files,
                now=cap,
            )
            limits = dataclasses.replace(limits, max_connections=cap)
    gc.unfreeze()  # what the command froze while it started (quotad.cli.startup) included
    gc.collect()  # what is garbage now is not frozen for ever
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(limits),
        ws="none",  # quotad has no WebSocket route; an upgrade is an ordinary request
        timeout_keep_alive=limits.keep_alive_timeout,
        log_level="warning",
        access_log=False,
        log_config=None,
        **proxy_options(trusted_proxies),
        **options,
    )
    server = uvicorn.Server(config)
    if interrupts is not None:
        interrupts.serving(server)
        if interrupts.requested:
            return  # stopped before it started
    with suppress(KeyboardInterrupt):  # a Ctrl-C that ended it: as uvicorn.run takes it
        server.run()
    if not server.started and not (interrupts is not None and interrupts.requested):
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the address in use, say
