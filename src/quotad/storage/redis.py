"""Counters in Redis (or Redis Cluster), over records in SQL: the store for many quotad nodes.

``redis://host:6379/0?records=<SQL URL>`` (or ``redis+cluster://host:7000?records=…``).
``RedisCounters`` is a counter store only. The SQL store named by ``records`` (default:
``QUOTAD_RECORDS_URL``, else ``sqlite:///./quotad.db``) is the deployment's records
store, which ``RedisCounters`` opens and closes with itself; it also keeps gauges, event
ids and the durable copy of the counters. The hot path lives in Redis: each day's counter
and the Idempotency-Key answers, changed only by Lua scripts whose keys all carry the
account as hash tag, so every step is atomic on one Cluster slot, and no key shared by
accounts is ever on the hot path (losing one Cluster master touches only the accounts it
holds). The token buckets every node shares (``take_token``) live in Redis too.

Durability (the invariants; ``write_behind.py`` has the node's side):

- Redis is never the only copy of acknowledged usage. The node that granted a change
  keeps it (a delta, and the Idempotency-Key's answer) until SQL has it; a background
  task adds it to SQL every ``flush_interval``, once (flushes are numbered per node).
- Every account has a marker key in its slot, written only once its counters are whole.
  Each script checks it first, so a Redis that lost its data (restart without
  persistence, failover to an empty replica, ``FLUSHALL``) is noticed at the next call
  for that account, not when a key happens to be missing. The account's counters are
  then rebuilt from SQL only after every live node has flushed what it granted before
  (``counter_nodes``: each node's last flush and heartbeat), with its unexpired
  Idempotency-Key answers restored; nodes silent for ``node_timeout`` count as dead. A
  rebuild writes an intent key first and finishes only while it is unchanged, so one that
  began before a second loss cannot mark counters whole after it (``begin.lua``).
- Event ids are de-duplicated in SQL, in the transaction that adds the events, and only
  then added to the counters Redis holds.
- A consume carries its caller's deadline (in Redis's clock): a script that runs after it
  (Redis paused, then resumed) changes nothing, and a grant whose caller stopped waiting
  before the answer came is given back. A call whose answer never came (timed out) is
  asked again once Redis answers (Redis keeps its replies ``REPLAY_SECONDS``), and what it
  granted given back the same way. A give-back applies once however often it is sent
  (its own key, ``<prefix>:{<account>}:f:<id>``), and so does an adjustment (``:a:<id>``,
  holding its reply for the client library's resend).

Consumes are batched: the consumes that arrive while one round trip is in flight go
together in the next, as one script call (per Cluster slot: a slot whose master is down
fails only its own accounts' consumes), decided in arrival order inside the script.

Limits v2 (SPEC 9): a consume with several slots is one line of the same batch, decided
all or nothing by ``consume.lua``, which mirrors ``limits.fits`` and ``limits.decide``
line for line (a change to those is a change to it). A slot moves by what ``decide``
says, which for a credit slot (SPEC 10) is its take, not its cost: the node journals
(and an abandoned grant gives back) those moves, recomputed from the values the script
answers it found (``_moved``; the caller's verdict reads the same ``after``). Every key
of an account carries its hash tag, so a multi-slot consume stays in one Cluster slot.

- A window counter other than a day row is a hash like a day's,
  ``<prefix>:{<account>}:u:<name>:<period>``: loaded from SQL when Redis lacks it (the
  script answers "missing" with the slots to load), written behind to SQL like a day's
  (journal key ``(account, name, period)``, an ``usage_days`` row), so it survives a
  lost Redis as a day does: the rebuild after a loss reloads it lazily, on first use.
- A rate's bucket, ``<prefix>:{<account>}:t:<name>``, holds its GCRA theoretical arrival
  time in microseconds, decided against the calling node's clock as in every store (as
  its windows are: nodes keep their clocks in step with NTP; a node ``d`` seconds ahead
  lets at most ``d * rate`` tokens more through). It is never written to SQL nor loaded from
  it: a bucket Redis lost (or let expire, once full again) starts full, which lets at
  most one burst more through after a loss, and ``dump`` carries no rate buckets.
- The rates' arithmetic is exact in Lua's doubles while ``burst * µs per token`` stays
  below 2^53 (a burst of a billion at one per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from importlib.resources import files
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.crc import key_slot
from redis.exceptions import TimeoutError as RedisTimeout

from quotad.domain.credits import Hold
from quotad.domain.dump import DumpItem
from quotad.domain.limits import HARD, RATE_PERIOD, Slot, decide, is_day_row
from quotad.domain.models import (
    ConsumeOutcome,
    EventsOutcome,
    IdempotencyClaim,
    UsageDay,
    UsageEvent,
)
from quotad.errors import Conflict, QuotadError, StorageError
from quotad.storage.base import CALL_DEADLINE, NOT_EMPTY
from quotad.storage.batching import Batcher
from quotad.storage.slot_calls import SlotCalls
from quotad.storage.sql import SqlStore
from quotad.storage.under_way import UnderWay
from quotad.storage.write_behind import Journal, StoredClaim

log = structlog.get_logger("quotad.storage.redis")
T = TypeVar("T")


class _HiredisPacking:
    """Commands packed in C by hiredis (the redis extra installs it), as redis-py's own
    synchronous client does: its asyncio connection packs each argument in Python, about
    1.2 µs a consume in a batch of 25 (one script call with 51 keys)."""

    # redis-py 8.2 gave the serializer an __init__ without annotations (8.1 had none):
    # the ignore covers the one, and is allowed to be unused with the other.
    _packer = HiredisRespSerializer()  # type: ignore[no-untyped-call,unused-ignore]

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol."""
        packed: list[bytes] = self._packer.pack(*args)
        return packed


class _Connection(_HiredisPacking, aioredis.Connection):
    pass


class _SSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


MAX_CONNECTIONS = 64
COUNTER_TTL_SECONDS = 3 * 86_400  # far longer than any flush interval
RESTORE_CHUNK = 500  # Idempotency-Key answers restored per script call
# How long a consume call's replies are kept, to answer the client library's own resend of
# that call (after a connection failure or timeout) instead of applying it twice. redis-py
# resends at once; a resend later than this of a verify's consume is past its deadline, and
# so does nothing anyway.
REPLAY_SECONDS = 5
# A call whose answer was lost is asked again about this many times, over about 15 s
# (each attempt waits up to the socket timeout while Redis still does not answer).
SETTLE_ATTEMPTS = 16
REFUND_SECONDS = 60  # how long a refund's key is kept, past every resend of it
MAX_SETTLING = 64  # such calls asked again at once (a long hang times out a few a second)
MAX_DAY_KEYS = 20_000  # version-1 rows whose script keys are kept (about 6 MB at most)
_new = tuple.__new__  # a named tuple without its keyword ``__new__`` (one per consume)
BARRIER_POLL_SECONDS = 0.05
FORGET_NODES_AFTER_US = 86_400 * 1_000_000  # rows of nodes that died a day ago
_SCRIPTS = ("consume", "seed", "adjust", "events", "begin", "restore", "refund", "bucket")


def _settled(slots: tuple[Slot, ...], reply: _Reply) -> list[int]:
    """Every slot's counter after a granted v2 consume: ``limits.decide`` again over the
    values the script answers it found (``reply[8:]``) at its clock (``reply[7]``), as
    the script decided; computed once, when the batch is answered, and then appended to
    the reply (the caller's ``ConsumeOutcome.after``)."""
    count = len(slots)
    if len(reply) > 8 + count:
        after: list[int] = reply[8 + count]
        return after
    before = [int(value) for value in reply[8 : 8 + count]]
    after = decide(before, slots, int(reply[7]))[1]
    reply.append(after)
    return after


def _moved(slots: tuple[Slot, ...], reply: _Reply) -> list[int]:
    """What a granted v2 consume moved each slot by (0 for a rate, whose bucket SQL never
    holds): after (``_settled``) less before. A credit slot moves by its take and a
    LEDGER slot by the take before it, never simply by ``cost``."""
    after = _settled(slots, reply)
    return [
        0 if slot.interval else moved - int(found)
        for slot, found, moved in zip(slots, reply[8 : 8 + len(slots)], after, strict=True)
    ]


def _parse(url: str) -> tuple[str, bool, str, str]:
    """The Redis URL to connect to, whether it is a cluster, the key prefix, the records URL."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    cluster = parts.scheme == "redis+cluster" or query.pop("cluster", "") in ("true", "1", "yes")
    prefix = query.pop("prefix", "qd")
    records = query.pop("records", "") or os.environ.get(
        "QUOTAD_RECORDS_URL", "sqlite:///./quotad.db"
    )
    scheme = "rediss" if parts.scheme == "rediss" else "redis"
    redis_url = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))
    return redis_url, cluster, prefix, records


def _incarnation() -> str:
    """A fresh value for an account's marker: it names one life of its counters."""
    return uuid.uuid4().hex[:12]


def _now_us() -> int:
    return time.time_ns() // 1000


class _Consume(NamedTuple):
    """One ``consume`` call: what it changes, as script keys and its line of the batch.

    A named tuple: one is built per consume, and a frozen dataclass took 1.6 µs to build
    (its ``__init__`` sets each field through ``object.__setattr__``) against 0.3 µs.
    """

    account_id: str
    service: str
    day: str
    cost: int
    total: int
    claim: IdempotencyClaim | None
    keys: list[str]
    line: str
    slots: tuple[Slot, ...] = ()  # Limits v2: every slot (the day row first); () for v1


_Reply = list[Any]  # strings and integers, as the script answers
# A consume line's keys (the first slot's counter and the marker; the other slots') and
# its slot fields: see RedisCounters._shape.
_Shape = tuple[tuple[str, str], tuple[str, ...], str]


class RedisCounters:
    """A counter store in Redis, over the SQL records store that keeps its durable copy.

    Args:
        url: ``redis://…`` or ``redis+cluster://…``, with ``records=<SQL URL>``.
        flush_interval: seconds between writes of this node's changes to SQL.
        timeout: seconds to wait for Redis before the call fails.
        batch: batch concurrent consumes; ``False`` sends one script call per consume.
        node_timeout: seconds after which a node that has not written to SQL counts as
            dead (its unflushed grants are not waited for when counters are rebuilt);
            by default the larger of 10 s and three flush intervals.
    """

    def __init__(
        self,
        url: str,
        flush_interval: float = 1.0,
        timeout: float = 1.0,
        *,
        batch: bool = True,
        node_timeout: float | None = None,
    ) -> None:
        self.url = url
        redis_url, self._cluster, self._prefix, records_url = _parse(url)
        self._redis_url = redis_url
        self.records = SqlStore(records_url)
        self._flush_interval = flush_interval
        self._node_timeout_us = int(1e6 * (node_timeout or max(10.0, 3 * flush_interval)))
        self._timeout = timeout
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._inflight = asyncio.Semaphore(MAX_CONNECTIONS)
        self._under_way = UnderWay()  # commands to Redis, and consumes from queue to answer
        self._node_id = f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._batch_ids = itertools.count()
        self._batch_prefix = uuid.uuid4().hex[:10]
        self._journal = Journal()
        self._flushing = asyncio.Lock()  # one flush at a time: each has its own number
        self._clock_offset = 0.0  # Redis's clock minus ours, in seconds
        # A barrier whose snapshot of the nodes is not taken yet: losses noticed before
        # it starts share it (see _barrier).
        self._next_barrier: asyncio.Task[None] | None = None
        self._restores: dict[str, asyncio.Task[None]] = {}
        self._refunds: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Task[None]] = set()  # calls whose answer was lost
        # Two batches in flight: one is prepared while Redis runs the other. On a
        # Cluster, one batcher per slot, so a slot whose master is down holds up only
        # the consumes of its own accounts.
        self._batch = batch
        self._batcher = self._new_batcher()
        self._slot_batchers: dict[int, Batcher[_Consume, _Reply]] = {}
        # A Limits v2 call's slots and its consume line's shape (``slot_calls``).
        self._shapes: SlotCalls[_Shape] = SlotCalls(self._shape)
        # A version-1 row's day text and script keys, by (account, service, day).
        self._day_keys: dict[tuple[str, str, date], tuple[str, list[str]]] = {}

    def _new_batcher(self) -> Batcher[_Consume, _Reply]:
        return Batcher(self._consume_batch, in_flight=2, abandoned=self._abandoned)

    # Keys: "{account}" is the hash tag, so one account's keys share a Cluster slot.
    def _counter(self, account_id: str, service: str, day: date | str) -> str:
        day_text = day if isinstance(day, str) else day.isoformat()
        return f"{self._prefix}:{{{account_id}}}:u:{service}:{day_text}"

    def _bucket(self, account_id: str, name: str) -> str:
        """A Limits v2 rate's key: its theoretical arrival time (µs, the callers' clock)."""
        return f"{self._prefix}:{{{account_id}}}:t:{name}"

    def _slot_key(self, account_id: str, slot: Slot) -> str:
        if slot.interval:
            return self._bucket(account_id, slot.name)
        return self._counter(account_id, slot.name, slot.period)

    def _marker(self, account_id: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:m"

    def _intent(self, account_id: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:r"

    def _idempotency(self, account_id: str, key: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:i:{key}"

    async def open(self) -> None:
        """Open the records store, connect to Redis, load the scripts, start flushing."""
        await self.records.open()
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "decode_responses": True,
        }
        if self._cluster:
            self._client = RedisCluster.from_url(self._redis_url, **options)
            # Learn the slot map now: when hundreds of first calls race to do it, some
            # of them get a half-opened connection.
            await self._call(self._client.initialize)
        else:
            # Callers beyond the pool wait (a bounded time) for a free connection instead
            # of failing; one immediate retry replaces a connection that died with a
            # Redis restart (the default backoff would hold requests for seconds).
            secure = self._redis_url.startswith("rediss:")
            options["connection_class"] = _SSLConnection if secure else _Connection
            pool = aioredis.BlockingConnectionPool.from_url(
                self._redis_url,
                max_connections=MAX_CONNECTIONS,
                timeout=self._timeout,
                retry=Retry(NoBackoff(), 1),  # per connection: a client's retry is ignored here
                **options,
            )
            self._client = aioredis.Redis(connection_pool=pool)
        package = files("quotad.storage") / "lua"
        for name in _SCRIPTS:
            source = (package / f"{name}.lua").read_text()
            self._scripts[name] = self._client.register_script(source)
        with contextlib.suppress(StorageError):
            await self._measure_clock()
        marks = await self.records.counter_node_marks()
        now = _now_us()
        await self.records.forget_counter_nodes(
            [node for node, (_, beat) in marks.items() if now - beat > FORGET_NODES_AFTER_US]
        )
        await self._flush_once()  # on the roll at once: a rebuild elsewhere waits for us
        self._closing = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_forever(), name="quotad-redis-flush")

    async def close(self) -> None:
        """Let the calls under way finish, stop the flusher, write what is left to SQL,
        leave the roll, disconnect."""
        # First: a consume answered after the last flush below would be left out of SQL,
        # and one still running when the pool disconnects reconnects into a closed pool.
        await self._under_way.settled()
        if self._flusher is not None:
            # Asked to stop rather than cancelled: a driver that swallows a cancellation
            # mid-flush would leave a cancelled loop running, and close() waiting, forever.
            self._closing.set()
            await self._flusher
            self._flusher = None
        for task in list(self._settling):
            task.cancel()  # what those calls granted stays counted (see _settle_later)
        for task in list(self._refunds):
            with contextlib.suppress(Exception):
                await task
        if self._client is not None:
            try:
                await self._flush_once()
                await self.records.forget_counter_nodes([self._node_id])
            except StorageError:
                log.exception(
                    "closing with changes SQL does not have; they are lost with this node",
                    days=len(self._journal.pending.days),
                )
            if self._cluster:
                await self._client.aclose()
            else:  # the pool was built here, so the client does not close it by itself
                await self._client.aclose(close_connection_pool=True)
            self._client = None
        await self.records.close()

    async def _call(self, action: Callable[[], Awaitable[T]]) -> T:
        under_way = self._under_way
        under_way.begin()
        try:
            # Bounded in-flight commands: redis-py's cluster client fails (rather than
            # queues) when hundreds of calls race to open connections to a node.
            async with self._inflight:
                return await action()
        except QuotadError:
            raise
        except Exception as exc:
            # Not only RedisError and OSError: a connection torn down mid-call has been
            # seen to raise AttributeError inside redis-py. Every failure of the driver
            # is a store failure, answered by the on_store_error policy.
            raise StorageError("the counter store (Redis) could not be reached") from exc
        finally:
            under_way.end()

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda: self._scripts[name](keys=keys, args=args))

    async def _measure_clock(self) -> None:
        """How far Redis's clock is from ours: deadlines are checked in Redis's."""
        sent = time.time()
        seconds, micros = await self._call(self._client.time)
        self._clock_offset = seconds + micros / 1e6 - (sent + time.time()) / 2

    async def take_token(self, bucket_id: str, rate: float, burst: int) -> float:
        """Take a token from a bucket every node shares: 0.0, or the seconds to wait.

        The customer endpoints' throttle uses it (``TokenBuckets``, see ``Stores.buckets``).
        """
        key = f"{self._prefix}:{{{bucket_id}}}:rate"
        wait = await self._script("bucket", [key], [rate, burst])
        return float(wait)

    async def ping(self) -> None:
        """Ping Redis and the records store."""
        await self._call(self._client.ping)
        await self.records.ping()

    # Write-behind ---------------------------------------------------------------
    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._flush_interval)
            if self._closing.is_set():
                return
            try:
                await self._flush_once()
                await self._measure_clock()
            except Exception as exc:  # the loop must outlive any outage
                log.warning(
                    "writing counters to the records store failed; will retry", error=str(exc)
                )

    async def _flush_once(self) -> None:
        """Write this node's unflushed changes to SQL (and its heartbeat), once."""
        async with self._flushing:
            seq, changes = self._journal.take()
            await self.records.apply_counter_changes(self._node_id, seq, changes, datetime.now(UTC))
            self._journal.done(seq)

    async def flush(self) -> None:
        """Write every node's unflushed changes to SQL: ours now, the others' waited for."""
        await asyncio.shield(self._barrier())

    def _barrier(self) -> asyncio.Task[None]:
        """A task that ends once every live node has flushed what it had granted before.

        Callers that noticed a loss before the task takes its snapshot of the nodes
        share it: what they need flushed was granted before they noticed.
        """
        if self._next_barrier is None:
            self._next_barrier = asyncio.create_task(self._wait_for_nodes())
        return self._next_barrier

    async def _wait_for_nodes(self) -> None:
        self._next_barrier = None  # from here on, a loss noticed needs a later snapshot
        marks = await self.records.counter_node_marks()
        await self._flush_once()
        now = _now_us()
        # A flush that was under way at the snapshot may have been taken before it: the
        # one after it was taken after, so it holds everything granted before.
        waiting = {
            node: seq + 2
            for node, (seq, beat) in marks.items()
            if node != self._node_id and now - beat < self._node_timeout_us
        }
        while waiting:
            await asyncio.sleep(BARRIER_POLL_SECONDS)
            marks = await self.records.counter_node_marks()
            now = _now_us()
            for node, needed in list(waiting.items()):
                seq, beat = marks.get(node, (needed, now))  # gone: it flushed as it closed
                if seq >= needed or now - beat >= self._node_timeout_us:
                    del waiting[node]

    async def _recover(self, account_id: str, now: datetime | None = None) -> None:
        """Rebuild an account this Redis lost, once per loss however many callers ask.

        ``now`` is the caller's clock, which Idempotency-Key expiries are read against.
        """
        task = self._restores.get(account_id)
        if task is None:
            task = asyncio.create_task(self._restore(account_id, now or datetime.now(UTC)))
            self._restores[account_id] = task
            task.add_done_callback(lambda done: self._restores.pop(account_id, None))
        await asyncio.shield(task)

    async def _restore(self, account_id: str, now: datetime) -> None:
        marker, intent = self._marker(account_id), self._intent(account_id)
        for _ in range(3):
            begun = await self._script("begin", [marker, intent], [_incarnation()])
            if begun[0] == "present":
                return
            # Taken after the intent exists: whatever was granted before the loss is in
            # SQL once the barrier ends.
            await asyncio.shield(self._barrier())
            claims = await self.records.live_claims(account_id, now)
            if await self._finish_restore(account_id, begun[1], claims, now):
                log.warning("rebuilt counters Redis had lost", account_id=account_id)
                return
        raise StorageError("Redis kept losing the account's counters while they were rebuilt")

    async def _finish_restore(
        self, account_id: str, intent: str, claims: list[StoredClaim], now: datetime
    ) -> bool:
        """Restore the claims and the marker; ``False`` when the rebuild went stale."""
        now_ms = int(now.timestamp() * 1000)
        token = _incarnation()
        head = [self._marker(account_id), self._intent(account_id)]
        for start in range(0, max(len(claims), 1), RESTORE_CHUNK):
            chunk = claims[start : start + RESTORE_CHUNK]
            last = start + RESTORE_CHUNK >= len(claims)
            keys = head + [self._idempotency(account_id, claim.key) for claim in chunk]
            lines = "\n".join(
                f"{c.fingerprint} {int(c.granted)} {c.used} {c.total} {c.day} {c.expires_ms} "
                f"{max((c.expires_ms - now_ms) // 1000, 1)}"
                for c in chunk
            )
            args = [lines, "1" if last else "0", token, intent]
            outcome = await self._script("restore", keys, args)
            if outcome == "present":
                return True
            if outcome == "stale":
                return False
        return True

    async def _hydrate(self, account_id: str, counters: list[tuple[str, str, int]]) -> None:
        """Load counters ``(name, period, total)`` from SQL into Redis (those it lacks)."""
        # The marker is read before SQL is, and the seed checks it is unchanged: a read
        # that raced with a loss and a rebuild must not overwrite the rebuilt counters.
        marker = self._marker(account_id)
        incarnation = await self._call(lambda: self._client.get(marker))
        if incarnation is None:
            return  # lost: the consume hears so and rebuilds
        stored = await self.records.counter_rows(
            account_id, [(name, period) for name, period, _ in counters]
        )
        keys = [marker]
        args: list[Any] = [incarnation, COUNTER_TTL_SECONDS]
        for name, period, total in counters:
            keys.append(self._counter(account_id, name, period))
            row = stored.get((name, period))
            args += [*row, 0] if row is not None else [0, total, 0, 1]
        await self._script("seed", keys, args)

    # Usage --------------------------------------------------------------------
    async def consume(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
        extra: tuple[Slot, ...] = (),
        day_mode: int = HARD,
        hold: Hold | None = None,
    ) -> ConsumeOutcome:
        """One Lua script: replay or refuse the claim, then add within the total.

        A ``hold`` is not made here: reservations are kept in the records' SQL store, so
        the caller stores it after the consume (``hold.made`` stays None).
        """
        del hold
        # A negative cost (a give-back) goes as a v2 line too: the version-1 line's
        # pattern reads unsigned costs only, and a line it cannot read fails its batch.
        if extra or day_mode != HARD or cost < 0:
            slots, shape = self._shapes.slots_of(
                account_id, service, day, total, day_mode, cost, extra
            )
            return await self._consume_slots(account_id, day, slots, shape, claim, now)
        found = self._day_keys.get((account_id, service, day))
        if found is None:
            found = self._day_keys_of(account_id, service, day)
        day_text, keys = found
        deadline = CALL_DEADLINE.get()
        deadline_ms = 0 if deadline is None else int((deadline + self._clock_offset) * 1000)
        if claim is None:
            line = f"2 {cost} {total} {day_text} {deadline_ms}"
        else:
            keys = [*keys, self._idempotency(account_id, claim.key)]
            now_ms = 0 if now is None else int(now.timestamp() * 1000)
            expires_ms = int(claim.expires_at.timestamp() * 1000)
            idem_ttl = max((expires_ms - now_ms) // 1000, 1)
            idem = f"{claim.fingerprint} {expires_ms} {now_ms} {idem_ttl}"
            line = f"3 {cost} {total} {day_text} {deadline_ms} {idem}"
        request = _new(
            _Consume, (account_id, service, day_text, cost, total, claim, keys, line, ())
        )
        answer = await self._answer(request, now, lambda _: [(service, day_text, total)])
        kind, granted, used, stored_total, stored_day = answer[:5]
        return _new(
            ConsumeOutcome,
            (
                int(granted) == 1,
                int(used),
                int(stored_total),
                day if stored_day == day_text else date.fromisoformat(stored_day),
                kind == "replay",
                (),
                -1,
                0,
                (),
            ),
        )

    def _day_keys_of(self, account_id: str, service: str, day: date) -> tuple[str, list[str]]:
        """A version-1 consume's day text and script keys (its counter and the marker),
        kept for the next consume of the same row (never changed: a call with a claim
        copies them)."""
        if len(self._day_keys) >= MAX_DAY_KEYS:
            self._day_keys.clear()
        day_text = day.isoformat()
        found = self._day_keys[account_id, service, day] = (
            day_text,
            [self._counter(account_id, service, day_text), self._marker(account_id)],
        )
        return found

    async def _answer(
        self,
        request: _Consume,
        now: datetime | None,
        missing: Callable[[_Reply], list[tuple[str, str, int]]],
    ) -> _Reply:
        """Run ``request`` until Redis answers it ("ok" or "replay"): first loading the
        counters it lacks (``missing`` names them from the reply) or rebuilding the
        account's counters it lost."""
        # Under way from the first try to the last: between them (loading what Redis
        # lacked) no command of this consume is.
        under_way = self._under_way
        under_way.begin()
        try:
            batcher = self._batcher_for(request.keys[1])
            for _ in range(4):
                if self._batch:
                    answer = await batcher.submit(request)
                else:
                    [alone] = await self._consume_batch([request])
                    if isinstance(alone, Exception):
                        raise alone
                    answer = alone
                kind = answer[0]
                if kind == "missing":
                    await self._hydrate(request.account_id, missing(answer))
                    continue
                if kind == "lost":
                    await self._recover(request.account_id, now)
                    continue
                if kind == "late":
                    raise StorageError("the counter store (Redis) answered after the deadline")
                if kind == "conflict":
                    raise Conflict("Idempotency-Key was used with a different request")
                return answer
            raise StorageError("the call's counters could not be loaded into Redis")
        finally:
            under_way.end()

    def _deadline_ms(self) -> int:
        deadline = CALL_DEADLINE.get()
        return 0 if deadline is None else int((deadline + self._clock_offset) * 1000)

    def _batcher_for(self, marker: str) -> Batcher[_Consume, _Reply]:
        if not self._cluster:
            return self._batcher
        slot = key_slot(marker.encode())
        return self._slot_batchers.get(slot) or self._slot_batchers.setdefault(
            slot, self._new_batcher()
        )

    async def _consume_slots(
        self,
        account_id: str,
        day: date,
        slots: tuple[Slot, ...],
        shape: _Shape,
        claim: IdempotencyClaim | None,
        now: datetime | None,
    ) -> ConsumeOutcome:
        """Limits v2: every slot decided in the consume script, all or nothing.

        The script mirrors ``limits.decide`` (consume.lua), with
        the caller's ``now`` as the rates' now (Redis's TIME without one), returned as
        ``at_us``. It goes in the same batch (one script call) as version-1 consumes.
        """
        first = slots[0]
        head, rest, fields = shape
        if claim is None:
            keys = [*head, *rest]
            idem = "- 0 0 0"
        else:
            keys = [*head, self._idempotency(account_id, claim.key), *rest]
            now_ms = 0 if now is None else int(now.timestamp() * 1000)
            expires_ms = int(claim.expires_at.timestamp() * 1000)
            idem_ttl = max((expires_ms - now_ms) // 1000, 1)
            idem = f"{claim.fingerprint} {expires_ms} {now_ms} {idem_ttl}"
        now_us = 0 if now is None else int(now.timestamp() * 1_000_000)
        line = f"v {len(keys)} {first.period} {self._deadline_ms()} {idem} {now_us};{fields}"
        request = _new(
            _Consume,
            (
                account_id,
                first.name,
                first.period,
                first.cost,
                first.total,
                claim,
                keys,
                line,
                slots,
            ),
        )

        def missing(answer: _Reply) -> list[tuple[str, str, int]]:
            wanted = [slots[int(index) - 1] for index in answer[1:]]
            return [(slot.name, slot.period, slot.total) for slot in wanted]

        answer = await self._answer(request, now, missing)
        granted, used, stored_total, stored_day = answer[1:5]
        replay = answer[0] == "replay"
        count = len(slots)
        return _new(
            ConsumeOutcome,
            (
                int(granted) == 1,
                int(used),
                int(stored_total),
                day if stored_day == first.period else date.fromisoformat(stored_day),
                replay,
                () if replay else tuple([int(value) for value in answer[8 : 8 + count]]),
                int(answer[6]),
                int(answer[7]),
                tuple(answer[8 + count]) if len(answer) > 8 + count else (),
            ),
        )

    def _shape(self, account_id: str, slots: tuple[Slot, ...]) -> _Shape:
        """The keys and the slot fields of a consume line for ``slots``."""
        first = slots[0]
        head = (self._counter(account_id, first.name, first.period), self._marker(account_id))
        rest = tuple([self._slot_key(account_id, slot) for slot in slots[1:]])
        fields = " ".join(
            [
                f"{'r' if slot.interval else 'd' if is_day_row(slot) else 'w'}"
                f" {slot.mode} {slot.cost} {slot.total} {slot.interval}"
                for slot in slots
            ]
        )
        return head, rest, fields

    async def _consume_batch(self, batch: list[_Consume]) -> list[_Reply | Exception]:
        """Run consumes as one script call (all in one slot on a Cluster); note the grants."""
        # The call's own key, under its first account's tag (its slot, on a Cluster).
        call_id = f"{self._batch_prefix}.{next(self._batch_ids)}"
        keys = [f"{self._prefix}:{{{batch[0].account_id}}}:b:{call_id}"]
        keys += [key for request in batch for key in request.keys]
        lines = "\n".join([request.line for request in batch])
        args = [COUNTER_TTL_SECONDS, lines, REPLAY_SECONDS]
        try:
            replies: list[_Reply] = await self._script("consume", keys, args)
        except StorageError as exc:
            if isinstance(exc.__cause__, (RedisTimeout, TimeoutError)):
                self._settle_later(batch, keys, args)
            raise
        self._note(batch, replies)
        return list(replies)

    def _settle_later(self, batch: list[_Consume], keys: list[str], args: list[Any]) -> None:
        """A call that timed out (the client library's one resend included): Redis may have
        run it (a Redis paused right after running it, say), and its callers are told it
        failed. Redis keeps a call's replies ``REPLAY_SECONDS`` under its key, so the same
        call is asked again, in the background, until Redis answers; what it granted is
        then given back, as for a caller who stopped waiting. (A refused connection is not
        a timeout: that call never reached Redis.)"""
        if len(self._settling) >= MAX_SETTLING:
            log.warning("too many consume calls timed out at once; one is left counted")
            return
        task = asyncio.get_running_loop().create_task(self._settle_lost(batch, keys, args))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_lost(self, batch: list[_Consume], keys: list[str], args: list[Any]) -> None:
        for attempt in range(SETTLE_ATTEMPTS):
            await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
            try:
                replies: list[_Reply] = await self._script("consume", keys, args)
            except StorageError:
                continue
            # Replies of the first run, or (past REPLAY_SECONDS, or if it never ran) of
            # this one: "late" for a verify's consume, whose deadline has passed.
            self._note(batch, replies)
            for request, reply in zip(batch, replies, strict=True):
                # Not a call with an Idempotency-Key: its retry may have been answered
                # this grant as a replay already, and giving it back would lose it.
                if request.claim is None:
                    self._abandoned(request, reply)
            return
        log.warning("a consume call's answer was lost; what it granted stays counted")

    def _note(self, batch: list[_Consume], replies: list[_Reply]) -> None:
        """Journal what a call's replies granted and refused (for SQL)."""
        journal = self._journal.pending
        for request, reply in zip(batch, replies, strict=True):
            if reply[0] != "ok":
                continue
            granted = int(reply[1]) == 1
            if request.slots:
                self._journal_slots(request, reply)
            else:
                day_key = (request.account_id, request.service, request.day)
                journal.add(
                    day_key, request.cost if granted else 0, 0 if granted else 1, request.total
                )
            claim = request.claim
            if claim is not None:
                journal.claims[(request.account_id, claim.key)] = StoredClaim(
                    request.account_id,
                    claim.key,
                    claim.fingerprint,
                    int(claim.expires_at.timestamp() * 1000),
                    granted,
                    int(reply[2]),
                    request.total,
                    request.day,
                )

    def _journal_slots(self, request: _Consume, reply: _Reply) -> None:
        """Note a v2 consume's changes: what each window moved when granted (a credit slot
        its take, not its cost: ``_moved``; rates are never written to SQL), else one
        rejection on each day row."""
        journal = self._journal.pending
        if int(reply[1]) == 1:
            for slot, moved in zip(request.slots, _moved(request.slots, reply), strict=True):
                if moved:
                    journal.add((request.account_id, slot.name, slot.period), moved, 0, slot.total)
            return
        for slot in request.slots:
            if is_day_row(slot):
                journal.add((request.account_id, slot.name, slot.period), 0, 1, slot.total)

    def _abandoned(self, request: _Consume, reply: _Reply) -> None:
        """Give back a grant whose caller stopped waiting before it was answered: what it
        moved on every window (a credit slot its take; a rate's tokens stay taken)."""
        if reply[0] != "ok" or int(reply[1]) != 1:
            return
        journal = self._journal.pending
        moved = _moved(request.slots, reply) if request.slots else [request.cost]
        journal.add((request.account_id, request.service, request.day), -moved[0], 0, request.total)
        # The idempotency hash's place holds the marker again when there is no claim.
        keys = [*request.keys[:2], request.keys[2] if request.claim else request.keys[1]]
        keys.append(f"{self._prefix}:{{{request.account_id}}}:f:{uuid.uuid4().hex}")
        args: list[Any] = [moved[0], reply[5], "", REFUND_SECONDS]
        if request.claim is not None:
            journal.claims[(request.account_id, request.claim.key)] = None
            args[2] = request.claim.fingerprint
        for slot, amount in zip(request.slots[1:], moved[1:], strict=True):
            if amount:
                journal.add((request.account_id, slot.name, slot.period), -amount, 0, slot.total)
                keys.append(self._counter(request.account_id, slot.name, slot.period))
                args.append(amount)
        task = asyncio.get_running_loop().create_task(self._refund(keys, args))
        self._refunds.add(task)
        task.add_done_callback(self._refunds.discard)

    async def _refund(self, keys: list[str], args: list[Any]) -> None:
        for attempt in range(5):
            try:
                await self._script("refund", keys, args)
            except StorageError:
                await asyncio.sleep(0.2 * 2**attempt)
            else:
                return
        # SQL is right already (the journal has the refund); Redis holds the units until
        # the counter is next rebuilt.
        log.error("could not give a refused call's units back in Redis", key=keys[0])

    async def adjust(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...] = (),
    ) -> UsageDay:
        """Add ``delta`` to a day's counter and to each window of ``extra`` (rates are left
        alone), flooring each at zero, in one script call."""
        adjusted, _ = await self._adjust(account_id, service, day, delta, total, extra)
        return adjusted

    async def adjust_once(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[UsageDay, bool]:
        """``adjust`` unless ``claim`` was seen before (``Store.adjust_once``), in its
        script call; the claim is kept as a verify's is (journaled to SQL, restored with
        the account's counters)."""
        return await self._adjust(account_id, service, day, delta, total, extra, claim, now)

    async def _adjust(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
    ) -> tuple[UsageDay, bool]:
        windows = [slot for slot in extra if not slot.interval]
        day_text = day.isoformat()
        counters = [(service, day_text, total)]
        counters += [(slot.name, slot.period, slot.total) for slot in windows]
        keys = [self._counter(account_id, service, day), self._marker(account_id), "", ""]
        keys += [self._counter(account_id, name, period) for name, period, _ in counters[1:]]
        args: list[Any] = [delta, COUNTER_TTL_SECONDS, REPLAY_SECONDS, "-", 0, 0, day_text, 0]
        if claim is not None:
            keys[3] = self._idempotency(account_id, claim.key)
            now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
            expires_ms = int(claim.expires_at.timestamp() * 1000)
            args[3:6] = [claim.fingerprint, max((expires_ms - now_ms) // 1000, 1), expires_ms]
            args[7] = now_ms
        args += [each for _, _, each in counters]
        for _ in range(4):
            # Each call its own key: a resend of it (redis-py's) is answered, not applied.
            keys[2] = f"{self._prefix}:{{{account_id}}}:a:{uuid.uuid4().hex}"
            if claim is None:
                keys[3] = keys[2]
            answer = await self._script("adjust", keys, args)
            if answer[0] == "missing":
                await self._hydrate(account_id, [counters[int(i) - 1] for i in answer[1:]])
                continue
            if answer[0] == "lost":
                await self._recover(account_id, now)
                continue
            if answer[0] == "conflict":
                raise Conflict("Idempotency-Key was used with a different request")
            if answer[0] == "replay":
                used, stored_total, rejected = (int(v or 0) for v in answer[1:4])
                return UsageDay(day, used, stored_total, rejected), True
            used, stored_total, rejected = (int(v or 0) for v in answer[:3])
            journal = self._journal.pending
            journal.add((account_id, service, day_text), int(answer[3]), 0, stored_total)
            for (name, period, window_total), applied in zip(counters[1:], answer[4:], strict=True):
                journal.add((account_id, name, period), int(applied), 0, window_total)
            if claim is not None:
                journal.claims[(account_id, claim.key)] = StoredClaim(
                    account_id,
                    claim.key,
                    claim.fingerprint,
                    int(claim.expires_at.timestamp() * 1000),
                    True,
                    used,
                    stored_total,
                    day_text,
                )
            return UsageDay(day, used, stored_total, rejected), False
        raise StorageError("the day's counter could not be loaded into Redis")

    async def read_counters(self, account_id: str, keys: list[tuple[str, str]]) -> list[int]:
        """Counters by ``(name, period)``: Redis's where it holds them, else SQL's, else 0.

        A rate's (its theoretical arrival time) is Redis's only: a bucket Redis does not
        hold is full, 0.
        """

        async def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for name, period in keys:
                if period == RATE_PERIOD:
                    pipe.get(self._bucket(account_id, name))
                else:
                    pipe.hget(self._counter(account_id, name, period), "used")
            return list(await pipe.execute())

        live = await self._call(read) if keys else []
        absent = [
            key
            for key, value in zip(keys, live, strict=True)
            if value is None and key[1] != RATE_PERIOD
        ]
        stored = await self.records.counter_rows(account_id, absent) if absent else {}
        return [
            int(value) if value is not None else stored.get(key, (0, 0, 0))[0]
            for key, value in zip(keys, live, strict=True)
        ]

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add unseen events in SQL (de-duplicated there), then to the live counters."""
        accepted = await self.records.record_new_events(events)
        by_account: dict[str, list[UsageEvent]] = defaultdict(list)
        for item in accepted:
            by_account[item.account_id].append(item)
        for account_id, items in by_account.items():
            keys = [self._marker(account_id)]
            args: list[Any] = [COUNTER_TTL_SECONDS]
            for item in items:
                keys.append(self._counter(account_id, item.service, item.day))
                args += [item.amount, item.total]
                for name, period in item.windows:
                    keys.append(self._counter(account_id, name, period))
                    args += [item.amount, "-"]
            try:
                await self._script("events", keys, args)
            except StorageError:
                # SQL has them; Redis takes them when it next loads the day (a counter it
                # holds undercounts them until then).
                log.warning("events recorded in SQL but not in Redis", account_id=account_id)
        return EventsOutcome(len(accepted), len(events) - len(accepted))

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Write days to SQL, then drop their Redis counters so the next use reloads them.

        Meant for restoring an export while the deployment is quiet: a consume racing
        with it on the same day may be overwritten by the imported value.
        """
        if not rows:
            return
        await self.flush()
        await self.records.put_usage_days(account_id, rows)
        counters = [self._counter(account_id, service, row.day) for service, row in rows]

        async def drop() -> None:
            for start in range(0, len(counters), 500):  # one account: one hash slot
                await self._client.delete(*counters[start : start + 500])

        await self._call(drop)

    async def _read_counters(self, keys: list[str]) -> list[tuple[str, UsageDay]]:
        async def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "used", "total", "rejected", "fresh")
            return list(await pipe.execute())

        rows = []
        for key, values in zip(keys, await self._call(read), strict=True):
            if values[0] is None or values[3] == "1":
                continue
            _, service, day = key.rsplit(":", 2)
            used, total, rejected = (int(v or 0) for v in values[:3])
            rows.append((service, UsageDay(date.fromisoformat(day), used, total, rejected)))
        return rows

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """Durable days from SQL, overlaid with the live counters Redis holds."""
        stored = {row.day: row for row in await self.records.usage(account_id, service, start, end)}
        days = [date.fromordinal(n) for n in range(start.toordinal(), end.toordinal() + 1)]
        live = await self._read_counters([self._counter(account_id, service, d) for d in days])
        stored.update({row.day: row for _service, row in live})
        return [stored[day] for day in sorted(stored)]

    async def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every usage day, once every node has written its changes to SQL."""
        await self.flush()
        async for item in self.records.export_usage():
            yield item

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Redis expires its own keys; purge what the records store keeps."""
        await self.records.purge(now, events_before)

    # Gauges: in the SQL store ------------------------------------------------------
    async def gauges(self, account_id: str) -> dict[str, int]:
        """An account's gauges, from SQL."""
        return await self.records.gauges(account_id)

    async def set_gauge(self, account_id: str, name: str, usage: int) -> int:
        """Set a gauge."""
        return await self.records.set_gauge(account_id, name, usage)

    async def acquire(self, account_id: str, name: str, amount: int, limit: int) -> int | None:
        """Acquire within a limit."""
        return await self.records.acquire(account_id, name, amount, limit)

    async def release(self, account_id: str, name: str, amount: int) -> int | None:
        """Release what is in use."""
        return await self.records.release(account_id, name, amount)

    async def move_gauge_once(
        self,
        account_id: str,
        name: str,
        delta: int,
        limit: int,
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[int | None, bool]:
        """Gauges are kept in the records' SQL (``SqlStore.move_gauge_once``)."""
        return await self.records.move_gauge_once(account_id, name, delta, limit, claim, now)

    # Account lifecycle ----------------------------------------------------------
    async def open_account(self, account_id: str) -> None:
        """Mark a new account's counters whole in Redis from the start."""
        # A new account has no usage anywhere, so its first call needs no rebuild (which
        # waits for every node to flush). Without the marker it just gets one.
        try:
            await self._call(lambda: self._client.set(self._marker(account_id), _incarnation()))
        except StorageError:
            log.warning("Redis unreachable: the new account is rebuilt on first use")

    async def forget_account(self, account_id: str) -> None:
        """Drop a deleted account's counters (its marker too); SQL dropped its rows."""
        self._journal.forget(account_id)  # not to be flushed into an account re-created
        pattern = f"{self._prefix}:{{{account_id}}}:*"

        async def drop() -> None:
            keys = [key async for key in self._client.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                await self._client.delete(*keys[start : start + 500])

        await self._call(drop)

    # The whole deployment ---------------------------------------------------------
    async def dump(self) -> AsyncIterator[DumpItem]:
        """Every record and counter, from SQL once every node has written its changes there."""
        await self.flush()
        async for item in self.records.dump():
            yield item

    async def restore(self, items: AsyncIterable[DumpItem]) -> None:
        """Restore into the SQL store, in one transaction; Redis takes the counters from it.

        No account's marker is set, so each account's first call rebuilds its counters
        from SQL, Idempotency-Key answers included. Counters Redis still holds under this
        prefix belong to no account of the empty store (a deployment deleted, say): they
        are dropped first, so none can stand in for a restored account's.
        """
        if not await self.records.is_empty():
            raise Conflict(NOT_EMPTY)
        await self._drop_account_counters()
        await self.records.restore(items)

    async def _drop_account_counters(self) -> None:
        """Delete every account's keys under this prefix (the token buckets stay)."""
        head = f"{self._prefix}:{{"

        async def drop() -> None:
            by_tag: dict[str, list[str]] = defaultdict(list)
            async for key in self._client.scan_iter(match=head + "*", count=1000):
                tag = key[len(head) : key.find("}", len(head))]
                if key != f"{head}{tag}}}:rate":  # not a throttle's bucket (take_token)
                    by_tag[tag].append(key)
            for keys in by_tag.values():  # one tag: one Cluster slot
                for start in range(0, len(keys), 500):
                    await self._client.delete(*keys[start : start + 500])

        await self._call(drop)
