"""Fault injection for the fault tests: a TCP proxy that can drop traffic, and the load.

``BlackholeProxy`` forwards a loopback port to a server. ``blackhole()`` stops it forwarding
in both directions without closing anything: connections stay open, new ones are accepted,
and the bytes sent meanwhile are held, as packets dropped on a network path are held by TCP
(retransmitted) until the path is back. ``restore()`` delivers them and forwards again. So a
client sees a hung server, never a refused or reset connection. ``replies_held()`` does the
same to the server's replies only: the server gets and runs every request, and the client
hears nothing back.

The rest are the helpers the fault tests share: real ``quotad serve`` nodes, accounts made
over the admin API, verifies recorded with their timing, and a latency summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import httpx2

from tests.processes import BIN, OPERATOR, Spec, noon_zone, running_all

LOOPBACK = "127.0.0.1"
ERROR_KEYS = {"error", "id", "note", "validationErrors"}
CHUNK = 65_536


class BlackholeProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``host:port`` that can drop traffic.

    Runs its own event loop in a background thread, so a test can hang the path while
    its own loop (or a server process) keeps using it. Use it as a context manager.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"blackhole-proxy-{port}", daemon=True
        )
        self._flowing: asyncio.Event | None = None
        self._replying: asyncio.Event | None = None  # the server's direction only
        self._hold_after: bytes | None = None  # hold replies once a request holds this
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, where clients connect."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Listen on a free loopback port, forwarding."""
        self._thread.start()
        self._run(self._listen())

    def blackhole(self) -> None:
        """Stop forwarding both ways; hold the bytes; keep every connection open."""
        self._run(self._set_flowing(flowing=False))

    def restore(self) -> None:
        """Deliver the held bytes and forward again."""
        self._run(self._set_flowing(flowing=True))

    @contextmanager
    def replies_held(self) -> Iterator[None]:
        """Forwarding requests but holding the server's replies inside the ``with``
        block; delivering them and forwarding again after it."""
        self._run(self._set_replying(replying=False))
        try:
            yield
        finally:
            self._run(self._set_replying(replying=True))

    def hold_replies_after(self, request: bytes) -> None:
        """Hold the server's replies from the first request bytes containing ``request``
        on (that request is forwarded, and runs); ``release_replies()`` ends it."""
        self._hold_after = request

    def release_replies(self, *, reset: bool = False) -> None:
        """Forward replies again; with ``reset``, first reset every connection open now
        (their held replies dropped), as a connection lost after the request went out."""
        self._run(self._release(reset=reset))

    async def _release(self, *, reset: bool) -> None:
        assert self._replying is not None
        self._hold_after = None
        if reset:
            for writer in list(self._writers):
                writer.transport.abort()
        self._replying.set()

    @contextmanager
    def blackholed(self) -> Iterator[None]:
        """Dropping traffic inside the ``with`` block, forwarding again after it."""
        self.blackhole()
        try:
            yield
        finally:
            self.restore()

    def close(self) -> None:
        """Close the listener and every connection, stop the thread."""
        if self._thread.is_alive():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._replying = asyncio.Event()
        self._replying.set()
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_flowing(self, *, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _set_replying(self, *, replying: bool) -> None:
        assert self._replying is not None
        if replying:
            self._replying.set()
        else:
            self._replying.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        assert self._flowing is not None
        self._connections.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            # Accepted at once (the kernel completes the handshake anyway), but the server
            # hears of a connection made during a blackhole only once the path is back.
            await self._flowing.wait()
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            assert self._replying is not None
            await asyncio.gather(
                self._pump(reader, upstream, writer, watch=True),
                self._pump(upstream_reader, writer, upstream, self._replying),
            )
        except OSError:
            pass  # the target refused: the client sees its connection closed
        except asyncio.CancelledError:
            pass  # closing the proxy; asyncio's stream callback would log a cancelled task
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
                    self._writers.discard(end)
            self._connections.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        gate: asyncio.Event | None = None,
        *,
        watch: bool = False,
    ) -> None:
        """Copy ``reader`` to ``writer``, holding each chunk while the path is down (or
        ``gate``, this direction's own, is closed). ``watch``: the client's direction,
        where ``hold_replies_after`` looks for its request."""
        assert self._flowing is not None
        assert self._replying is not None
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                if gate is not None:
                    await gate.wait()
                if watch and self._hold_after is not None and self._hold_after in data:
                    self._replying.clear()
                writer.write(data)
                await writer.drain()
            await self._flowing.wait()  # a close is delivered in order, after the held bytes
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            other.transport.abort()  # one end reset: so is the other


def noting_answers(batcher: Any) -> list[tuple[Any, Any]]:
    """Every request ``batcher`` (a ``storage.batching.Batcher``) runs from now on, with
    its answer, in order: a test's view of what a store decided."""
    seen: list[tuple[Any, Any]] = []
    run = batcher._run

    async def noted(batch: list[Any]) -> list[Any]:
        answers = await run(batch)
        seen.extend(zip(batch, answers, strict=True))
        return list(answers)

    batcher._run = noted
    return seen


# Latency -----------------------------------------------------------------------------
def latency_summary(label: str, seconds: Sequence[float]) -> str:
    """``label: p50/p99/max ms (n)``, for the record (printed; ``pytest -s`` shows it)."""
    p50, p99, worst = percentiles(seconds)
    return f"{label}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms ({len(seconds)})"


def percentiles(seconds: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99 and the maximum of ``seconds`` (zeros when empty)."""
    if not seconds:
        return 0.0, 0.0, 0.0
    if len(seconds) == 1:
        return seconds[0], seconds[0], seconds[0]
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return statistics.median(seconds), cuts[98], max(seconds)


# Verifies as a client sees them ------------------------------------------------------
@dataclass
class Answer:
    """One verify: what was asked where, when, how long it took, and the answer."""

    account_id: str
    base: str
    started: float  # monotonic clock
    elapsed: float
    status: int  # 0: no answer (a transport error or the client's own timeout)
    body: dict[str, Any]

    @property
    def finished(self) -> float:
        """When the answer arrived (monotonic clock)."""
        return self.started + self.elapsed

    @property
    def valid(self) -> bool:
        """Granted (200 VALID), counted or not."""
        return self.status == 200 and (self.body.get("valid"), self.body.get("code")) == (
            True,
            "VALID",
        )

    @property
    def counted(self) -> bool:
        """Granted and counted: not an uncounted fail-open allow (which carries a note)."""
        return self.valid and isinstance(self.body.get("used"), int) and not self.body.get("note")

    @property
    def exceeded(self) -> bool:
        """Refused: the quota is used up."""
        return self.status == 200 and self.body.get("code") == "QUOTA_EXCEEDED"

    @property
    def unavailable(self) -> bool:
        """503 SERVICE_UNAVAILABLE with the contract's error body (fail-closed)."""
        return (
            self.status == 503
            and set(self.body) == ERROR_KEYS
            and (self.body["error"], self.body["validationErrors"]) == ("SERVICE_UNAVAILABLE", [])
        )

    @property
    def fail_open(self) -> bool:
        """An uncounted allow by the fail-open policy: 200 VALID with a note."""
        return self.valid and bool(self.body.get("note"))


@dataclass
class Account:
    """An account made for a test, and its key."""

    id: str
    key: str


async def verify(
    http: httpx2.AsyncClient,
    base: str,
    account: Account,
    idempotency_key: str | None = None,
) -> Answer:
    """One ``POST /v1/verify`` of 1 insights unit, timed."""
    headers = dict(OPERATOR)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    body = {"key": account.key, "service": "insights", "cost": 1}
    started = time.monotonic()
    try:
        response = await http.post(f"{base}/v1/verify", json=body, headers=headers)
    except httpx2.TransportError as exc:
        problem = {"transport_error": repr(exc)}
        return Answer(account.id, base, started, time.monotonic() - started, 0, problem)
    elapsed = time.monotonic() - started
    return Answer(account.id, base, started, elapsed, response.status_code, response.json())


async def verify_until_answered(
    http: httpx2.AsyncClient, base: str, account: Account, deadline: float, **options: Any
) -> Answer:
    """Verify, retrying a 503 (or no answer) until a verdict or the monotonic ``deadline``."""
    while True:
        answer = await verify(http, base, account, **options)
        if answer.status not in (0, 503) or time.monotonic() >= deadline:
            return answer
        await asyncio.sleep(0.05)


@dataclass
class Load:
    """Concurrent callers verifying in a loop until stopped; every answer is kept.

    ``pick`` chooses each call's node and account from the call's sequence number, or
    ``None`` to pause that caller briefly (nothing left to ask); ``observe`` sees each
    answer as it arrives.
    """

    http: httpx2.AsyncClient
    pick: Callable[[int], tuple[str, Account] | None]
    callers: int
    answers: list[Answer] = field(default_factory=list)
    observe: Callable[[Answer], None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sequence: int = 0

    def start(self) -> None:
        """Start the callers."""
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(self.callers)]

    async def stop(self) -> None:
        """Stop the callers and wait for their last answers."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _caller(self) -> None:
        while not self._stop.is_set():
            self._sequence += 1
            target = self.pick(self._sequence)
            if target is None:
                await asyncio.sleep(0.02)
                continue
            base, account = target
            answer = await verify(self.http, base, account)
            self.answers.append(answer)
            if self.observe is not None:
                self.observe(answer)


def statuses(answers: Sequence[Answer]) -> dict[str, int]:
    """How many answers of each kind, for messages."""
    kinds: dict[str, int] = {}
    for answer in answers:
        if answer.status == 200:
            kind = "fail-open" if answer.fail_open else str(answer.body.get("code"))
        else:
            kind = str(answer.status)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


# quotad nodes and their accounts -----------------------------------------------------
@contextmanager
def quotad_nodes(store_url: str, workdir: Path, count: int = 1, **env: str) -> Iterator[list[str]]:
    """``count`` `quotad serve` processes on ``store_url`` (default settings but ``env``);
    yields their base URLs."""
    # The nodes run in ``workdir``: a relative PYTHONPATH (``PYTHONPATH=src``, which puts a
    # worktree's code first) would no longer point at the code under test there.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    env = {"PYTHONPATH": os.pathsep.join(str(Path(p).resolve()) for p in paths if p), **env}
    specs = [
        Spec([str(BIN / "quotad"), "serve", "--store", store_url], f"quotad-{n}", env=env)
        for n in range(1, count + 1)
    ]
    with running_all(workdir, *specs) as handles:
        yield [handle.base for handle in handles]


def http_client(connections: int = 300) -> httpx2.AsyncClient:
    """A client allowing ``connections`` concurrent requests."""
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(limits=limits, timeout=15)


async def provision(
    http: httpx2.AsyncClient, base: str, account_ids: Sequence[str], total: int
) -> list[Account]:
    """Service insights, a plan of ``total`` a day, and each account with a key."""
    plan_id = f"plan-{uuid.uuid4().hex[:8]}"
    response = await http.post(
        f"{base}/admin/v1/services", json={"name": "insights"}, headers=OPERATOR
    )
    assert response.status_code in (201, 409), response.text
    plan = {"id": plan_id, "quotas": {"insights": {"total": total}}}
    response = await http.post(f"{base}/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    accounts = []
    for account_id in account_ids:
        # Near noon in its zone, so no test straddles the account's midnight.
        body = {
            "id": account_id,
            "name": account_id,
            "plan": plan_id,
            "timezone": noon_zone(),
        }
        response = await http.post(f"{base}/admin/v1/accounts", json=body, headers=OPERATOR)
        assert response.status_code == 201, response.text
        response = await http.post(
            f"{base}/admin/v1/accounts/{account_id}/keys", json={"name": "k"}, headers=OPERATOR
        )
        assert response.status_code == 201, response.text
        accounts.append(Account(account_id, str(response.json()["key"])))
    return accounts


async def stored_used(http: httpx2.AsyncClient, base: str, account_id: str) -> int | None:
    """Today's stored ``used`` of insights (admin API), or ``None`` when it cannot be read."""
    try:
        response = await http.get(
            f"{base}/admin/v1/accounts/{account_id}/usage/insights", headers=OPERATOR, timeout=5
        )
    except httpx2.TransportError:
        return None
    if response.status_code != 200:
        return None
    rows = response.json()
    return int(rows[-1]["used"]) if rows else 0


async def settled_usage(
    http: httpx2.AsyncClient, base: str, expected: dict[str, int], seconds: float = 5.0
) -> dict[str, int | None]:
    """Each account's stored used, polled until it equals ``expected`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        found = {account_id: await stored_used(http, base, account_id) for account_id in expected}
        if found == expected or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.25)


def granted_by_account(answers: Sequence[Answer], *, counted_only: bool = True) -> dict[str, int]:
    """How many answers granted (and counted) per account."""
    granted: dict[str, int] = {}
    for answer in answers:
        granted.setdefault(answer.account_id, 0)
        if answer.counted if counted_only else answer.valid:
            granted[answer.account_id] += 1
    return granted


def now_text() -> str:
    """The current instant, RFC 3339."""
    return datetime.now(UTC).isoformat()


def with_address(url: str, address: str) -> str:
    """``url`` with its host and port replaced by ``address`` (user and the rest kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{address}" if user else address
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No full garbage collection of this (large) pytest process while latencies are measured."""
    import gc

    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
