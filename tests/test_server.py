"""quotad's HTTP server writes each answer in one piece, and otherwise as uvicorn does."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from quotad.api.server import CoalescingHttpToolsProtocol, CoalescingTransport
from tests.conftest import free_ports


class RecordingTransport(asyncio.Transport):
    """A transport that records what is written to it and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        """Record one write."""
        self.writes.append(bytes(data))

    def close(self) -> None:
        """Record the close."""
        self.closed = True

    def abort(self) -> None:
        """Record the abort."""
        self.aborted = True

    def is_closing(self) -> bool:
        """Whether it was closed."""
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """A loopback peer and socket name, no TLS."""
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        """Nothing to pause."""

    def resume_reading(self) -> None:
        """Nothing to resume."""


async def next_turn() -> None:
    """Let the loop finish its current turn (and run what was scheduled for its end)."""
    await asyncio.sleep(0)


async def test_writes_of_one_turn_go_out_as_one_write_in_order() -> None:
    """Three writes made together reach the transport once, joined, at the turn's end."""
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(bytearray(b"{"))
    transport.writelines([b'"a"', b":1}"])
    assert inner.writes == []
    await next_turn()
    assert inner.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']
    transport.write(b"later")
    await next_turn()
    assert inner.writes[1:] == [b"later"]


async def test_closing_sends_what_is_held_first_and_aborting_drops_it() -> None:
    """``close`` flushes before closing; ``abort`` discards, as a transport's own buffer."""
    closing, aborting = RecordingTransport(), RecordingTransport()
    loop = asyncio.get_running_loop()
    first, second = CoalescingTransport(closing, loop), CoalescingTransport(aborting, loop)
    first.write(b"bye")
    first.close()
    assert (closing.writes, closing.closed) == ([b"bye"], True)
    second.write(b"lost")
    second.abort()
    await next_turn()
    assert (aborting.writes, aborting.aborted) == ([], True)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer with a head and a body sent as two ASGI messages."""
    assert scope["type"] == "http"
    await receive()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_an_answer_sent_as_head_and_body_is_one_write() -> None:
    """Through the protocol, a request's head and body reach the socket in one write."""
    config = Config(app=app, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: quotad\r\n\r\n")
    for _ in range(5):
        await next_turn()
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b"\r\n\r\nhello")


@pytest.mark.slow
async def test_a_served_app_answers_keep_alive_requests_in_turn() -> None:
    """Over a real socket, many requests on one connection each get their whole answer."""
    import uvicorn

    [port] = free_ports(1)
    config = Config(
        app=app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        for _ in range(1000):  # up to 10 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [await client.get("/") for _ in range(20)]
        assert [(a.status_code, a.text) for a in answers] == [(200, "hello")] * 20
    finally:
        server.should_exit = True
        await serving


def test_the_connection_limit_leaves_room_for_the_other_descriptors() -> None:
    """The connection limit is lowered to fit the open-file limit, less what the process
    needs besides (store connections, logs, the listening socket)."""
    from quotad.api.server import connection_cap

    assert connection_cap(4096, 20_000) == 4096
    assert connection_cap(4096, 1024) == 768
    assert connection_cap(4096, 100) == 75
    assert connection_cap(10, 1) == 1
