"""Slow and idle clients cannot starve ``quotad serve`` of connections or file descriptors.

Each test starts a real server with short timeouts and talks to it over raw sockets on
127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import resource
import select
import selectors
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

from tests.processes import (
    OPERATOR,
    Running,
    provision_store,
    quotad_spec,
    running_all,
)
from tests.rawhttp import parse, read_all

pytestmark = pytest.mark.slow

PARTIAL_HEAD = (
    b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"X-Padding: " + b"a" * 200
)
BODY_HEAD = (
    b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer embedding-operator-token\r\nContent-Length: 60\r\n\r\n"
)


@dataclass
class Server:
    """A running ``quotad serve``, the port it answers on and a key to verify with."""

    process: Running
    port: int
    key: str

    def verify(self) -> tuple[int, float]:
        """One verify on a fresh connection: its status and how long it took."""
        started = time.monotonic()
        response = httpx2.post(
            f"http://127.0.0.1:{self.port}/v1/verify",
            json={"key": self.key, "service": "insights", "cost": 1},
            headers=OPERATOR,
            timeout=30,
        )
        return response.status_code, time.monotonic() - started


Serve = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """A function starting ``quotad serve`` (SQLite, one account) with extra settings."""
    with ExitStack() as stack:

        def start(**env: str) -> Server:
            store = f"sqlite:///{tmp_path / 'quotad.db'}"
            key = provision_store(store, "acme", 10**9)
            spec = quotad_spec(store)
            spec.env.update(env)
            [process] = stack.enter_context(running_all(tmp_path, spec))
            return Server(process, spec.port, key)

        yield start


def raise_fd_limit(needed: int) -> None:
    """Let this process hold ``needed`` descriptors (up to the hard limit), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def connect(port: int) -> socket.socket:
    """An open connection to the server, non-blocking."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (without consuming what it sent)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def wait_for_close(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes ``sock``, and when it closed (seconds from now)."""
    started = time.monotonic()
    sock.setblocking(True)
    sock.settimeout(limit)
    try:
        data = read_all(sock)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s")
    return data, time.monotonic() - started


@dataclass
class Slow:
    """One slowloris connection: silent, or sending a request head one byte at a time."""

    sock: socket.socket
    partial: bool
    opened: float = field(default_factory=time.monotonic)
    sent: int = 0
    received: bytes = b""
    closed: float | None = None


class Slowloris:
    """Many slow connections, half of them trickling a request head, half silent."""

    def __init__(self, port: int, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.connections: list[Slow] = []
        self.open = 0
        for index in range(count):
            connection = Slow(connect(port), partial=index % 2 == 0)
            self.selector.register(connection.sock, selectors.EVENT_READ, connection)
            self.connections.append(connection)
            self.open += 1

    def read(self) -> None:
        """Take what the server sent; note the connections it closed."""
        for key, _ in self.selector.select(timeout=0):
            connection = key.data
            try:
                chunk = connection.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            connection.received += chunk
            if not chunk:
                connection.closed = time.monotonic()
                self.selector.unregister(connection.sock)
                connection.sock.close()
                self.open -= 1

    def trickle(self) -> None:
        """One more byte of the head on every trickling connection still open."""
        for connection in self.connections:
            if connection.partial and connection.closed is None:
                with suppress(OSError):  # closed by the server: read() sees it next
                    connection.sock.send(PARTIAL_HEAD[connection.sent : connection.sent + 1])
                    connection.sent += 1

    def close(self) -> None:
        """Close every connection."""
        self.selector.close()
        for connection in self.connections:
            connection.sock.close()


def test_slow_connections_are_closed_after_the_header_timeout_while_verifies_answer(
    serve: Serve,
) -> None:
    """5,000 slow connections (half trickling a head, half silent) are each closed when the
    header timeout has passed, while real verifies on fresh connections keep answering 200."""
    count, timeout = 5000, 5.0
    raise_fd_limit(count + 500)
    server = serve(
        QUOTAD_HEADER_TIMEOUT_SECONDS=str(timeout), QUOTAD_MAX_CONNECTIONS=str(count + 1000)
    )
    verifies: list[tuple[int, float, int]] = []  # status, seconds, slow connections open
    slowloris = Slowloris(server.port, count)
    try:
        deadline = time.monotonic() + timeout + 20
        while slowloris.open and time.monotonic() < deadline:
            tick = time.monotonic()
            slowloris.read()
            slowloris.trickle()
            status, seconds = server.verify()
            verifies.append((status, seconds, slowloris.open))
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
    finally:
        slowloris.close()

    assert all(status == 200 for status, _, _ in verifies), verifies
    during = [seconds for _, seconds, open_now in verifies if open_now >= count * 0.9]
    assert len(during) >= 3, verifies
    assert max(seconds for _, seconds, _ in verifies) < 3.0, verifies
    connections = slowloris.connections
    still_open = [c for c in connections if c.closed is None]
    assert not still_open, f"{len(still_open)} slow connections were never closed"
    lifetimes = [c.closed - c.opened for c in connections if c.closed is not None]
    assert min(lifetimes) >= timeout - 0.1, min(lifetimes)
    assert max(lifetimes) <= timeout + 10, max(lifetimes)
    for connection in connections:
        if connection.partial:
            answer = parse(connection.received)
            assert answer.status == 408
            assert answer.error()["error"] == "BAD_REQUEST"
        else:
            assert connection.received == b""


def test_idle_connections_beyond_the_limit_are_shed_oldest_first(serve: Serve) -> None:
    """Past QUOTAD_MAX_CONNECTIONS a new connection closes the longest-idle one, so verifies
    are still answered while idle connections keep arriving."""
    limit, count = 50, 150
    raise_fd_limit(count + 100)
    server = serve(QUOTAD_MAX_CONNECTIONS=str(limit), QUOTAD_HEADER_TIMEOUT_SECONDS="60")
    idle = []
    try:
        for _ in range(count):
            idle.append(connect(server.port))
            time.sleep(0.002)  # accepted in this order
        for _ in range(5):
            status, seconds = server.verify()
            assert status == 200
            assert seconds < 3.0
        time.sleep(0.5)
        closed = [closed_by_server(sock) for sock in idle]
    finally:
        for sock in idle:
            sock.close()
    shed = closed.index(False) if False in closed else count
    assert count - limit <= shed <= count - limit + 15, closed
    assert not any(closed[shed:]), "a newer idle connection was shed before an older one"


def test_when_no_connection_is_idle_a_new_one_is_refused_with_503(serve: Serve) -> None:
    """With every connection busy (a request whose body is awaited), a new connection gets
    503 SERVICE_UNAVAILABLE with the error body and is closed at once."""
    limit = 8
    server = serve(QUOTAD_MAX_CONNECTIONS=str(limit), QUOTAD_BODY_TIMEOUT_SECONDS="30")
    busy = []
    try:
        for _ in range(limit):
            busy.append(connect(server.port))
            busy[-1].sendall(BODY_HEAD + b"{")
        time.sleep(0.5)
        with connect(server.port) as refused:
            data, seconds = wait_for_close(refused, 5)
    finally:
        for sock in busy:
            sock.close()
    answer = parse(data)
    assert answer.status == 503
    assert answer.error()["error"] == "SERVICE_UNAVAILABLE"
    assert answer.headers["retry-after"] == "1"
    assert seconds < 2.0


@pytest.fixture
def strict(serve: Serve) -> Server:
    """A server with short head, body and keep-alive timeouts."""
    return serve(
        QUOTAD_HEADER_TIMEOUT_SECONDS="2",
        QUOTAD_BODY_TIMEOUT_SECONDS="2",
        QUOTAD_KEEP_ALIVE_TIMEOUT_SECONDS="1",
    )


def trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> None:
    """Send ``data`` a byte every ``every`` seconds until the server answers or ``limit``."""
    ends = time.monotonic() + limit
    for byte in data:
        if select.select([sock], [], [], every)[0] or time.monotonic() > ends:
            return
        sock.sendall(bytes([byte]))


def test_a_body_that_does_not_arrive_in_time_is_408(strict: Server) -> None:
    """A request whose body stalls, or trickles, is answered 408 once the body timeout passes."""
    for rest in (b"{", b'{"key": "' + b"x" * 40):
        with connect(strict.port) as sock:
            sock.setblocking(True)
            started = time.monotonic()
            sock.sendall(BODY_HEAD)
            trickle(sock, rest, every=0.2, limit=10)
            data, _ = wait_for_close(sock, 10)
        elapsed = time.monotonic() - started
        answer = parse(data)
        assert answer.status == 408, answer
        assert answer.error()["error"] == "BAD_REQUEST"
        assert 1.9 <= elapsed <= 6, elapsed
    assert strict.verify()[0] == 200


def test_a_keep_alive_connection_is_closed_after_its_idle_timeout(strict: Server) -> None:
    """After an answer, an idle kept-alive connection is closed after its keep-alive timeout."""
    with connect(strict.port) as sock:
        sock.setblocking(True)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
        answer = parse(sock.recv(65536))
        assert answer.status == 200
        data, seconds = wait_for_close(sock, 10)
    assert data == b""
    assert seconds <= 2.5


def test_trickling_the_next_head_on_a_keep_alive_connection_is_408(strict: Server) -> None:
    """Bytes of a next request arriving slowly do not keep a connection open past the header
    timeout (each byte would otherwise restart the keep-alive timer)."""
    with connect(strict.port) as sock:
        sock.setblocking(True)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
        assert parse(sock.recv(65536)).status == 200
        started = time.monotonic()
        trickle(sock, PARTIAL_HEAD, every=0.3, limit=15)
        data, _ = wait_for_close(sock, 10)
    elapsed = time.monotonic() - started
    answer = parse(data)
    assert answer.status == 408, answer
    assert answer.error()["error"] == "BAD_REQUEST"
    assert 1.9 <= elapsed <= 6, elapsed


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    """``quotad serve`` started with a low soft RLIMIT_NOFILE raises it to the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"no room to raise: hard limit {hard}")
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    store = f"sqlite:///{tmp_path / 'quotad.db'}"
    spec = quotad_spec(store)
    spec.argv = ["prlimit", f"--nofile=1024:{hard}", "--", *spec.argv]
    with running_all(tmp_path, spec) as [process]:
        # prlimit execs quotad, so the pid is quotad's own.
        limits = Path(f"/proc/{process.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert line.split()[3:5] == [str(hard), str(hard)], line
