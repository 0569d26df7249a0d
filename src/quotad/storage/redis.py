"""Counters in Redis (or Redis Cluster), records in SQL: the store for many quotad nodes.

``redis://host:6379/0?records=<SQL URL>`` (or ``redis+cluster://host:7000?records=…``).
Accounts, plans, keys, gauges and the durable usage history live in the SQL store named
by ``records`` (default: ``QUOTAD_RECORDS_URL``, else ``sqlite:///./quotad.db``). The hot
path lives in Redis: each day's counter, idempotency answers and event de-duplication,
changed only by Lua scripts whose keys all carry the account as hash tag, so every step
is atomic on one Cluster slot.

Durability: every changed counter is marked dirty in the same script that changes it, and
a background task copies dirty counters to SQL (absolute values) every ``flush_interval``.
A counter missing from Redis (a new day, or a Redis restarted without its data) is loaded
from SQL before it is used. So a Redis restart loses at most the last flush interval of
usage, and nothing at all when Redis runs with ``appendonly yes`` and ``appendfsync always``.

Consumes are batched (``batch=True``, the default): the consumes that arrive while one
round trip is in flight go together in the next, as one script call per Cluster slot
(one call in all on a single Redis), decided in arrival order inside the script.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from importlib.resources import files
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from quotad.domain.models import (
    Account,
    ApiKey,
    ConsumeOutcome,
    EventsOutcome,
    IdempotencyClaim,
    Plan,
    Service,
    TotalChange,
    UsageDay,
    UsageEvent,
)
from quotad.errors import Conflict, StorageError
from quotad.service.throttle import refuse
from quotad.storage.batching import Batcher
from quotad.storage.sql import SqlStore

log = structlog.get_logger("quotad.storage.redis")
T = TypeVar("T")

MAX_CONNECTIONS = 64
COUNTER_TTL_SECONDS = 3 * 86_400  # far longer than any flush interval
EVENT_DEDUP_SECONDS = 91 * 86_400  # events older than 90 days are refused upstream
_SCRIPTS = ("consume", "seed", "adjust", "events", "take_dirty", "bucket")


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


class RedisThrottle:
    """A throttle whose buckets live in Redis (see ``lua/bucket.lua``)."""

    def __init__(self, store: RedisStore, rate: float, burst: int) -> None:
        self._store, self._rate, self._burst = store, rate, burst

    async def check(self, bucket_id: str) -> None:
        """Take one token for ``bucket_id``."""
        if self._rate <= 0:
            return
        wait = await self._store.take_token(bucket_id, self._rate, self._burst)
        if wait > 0:
            raise refuse(wait)


@dataclass(frozen=True, slots=True)
class _Consume:
    """One ``consume`` call as script keys and its line of the batch (see ``lua/consume.lua``)."""

    account_id: str
    keys: list[str]
    line: str


_Reply = list[Any]  # strings and integers, as the script answers


class RedisStore:
    """A Store whose counters live in Redis and whose records live in SQL.

    Args:
        url: ``redis://…`` or ``redis+cluster://…``, with ``records=<SQL URL>``.
        flush_interval: seconds between copies of changed counters to SQL.
        timeout: seconds to wait for Redis before the call fails.
        batch: batch concurrent consumes; ``False`` sends one script call per consume.
    """

    def __init__(
        self,
        url: str,
        flush_interval: float = 1.0,
        timeout: float = 1.0,
        *,
        batch: bool = True,
    ) -> None:
        self.url = url
        redis_url, self._cluster, self._prefix, records_url = _parse(url)
        self._redis_url = redis_url
        self.records = SqlStore(records_url)
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._inflight = asyncio.Semaphore(MAX_CONNECTIONS)
        # One flush at a time in this node, so an export that flushes first also waits for
        # counters the background flush has taken but not yet written.
        self._flushing = asyncio.Lock()
        # Two batches in flight: one is prepared while Redis runs the other.
        self._batcher: Batcher[_Consume, _Reply] | None = (
            Batcher(self._consume_batch, in_flight=2) if batch else None
        )

    # Keys: "{account}" is the hash tag, so one account's keys share a Cluster slot.
    def _counter(self, account_id: str, service: str, day: date) -> str:
        return f"{self._prefix}:{{{account_id}}}:u:{service}:{day.isoformat()}"

    def _dirty(self, account_id: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:dirty"

    def _idempotency(self, account_id: str, key: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:i:{key}"

    def _event(self, account_id: str, event_id: str) -> str:
        return f"{self._prefix}:{{{account_id}}}:e:{event_id}"

    @property
    def _dirty_accounts(self) -> str:
        return f"{self._prefix}:dirty-accounts"

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
            # Callers beyond the pool wait for a free connection instead of failing; one
            # immediate retry replaces a connection that died with a Redis restart (the
            # default backoff would hold requests for seconds while Redis is down).
            pool = aioredis.BlockingConnectionPool.from_url(
                self._redis_url,
                max_connections=MAX_CONNECTIONS,
                timeout=5,
                retry=Retry(NoBackoff(), 1),  # per connection: a client's retry is ignored here
                **options,
            )
            self._client = aioredis.Redis(connection_pool=pool)
        package = files("quotad.storage") / "lua"
        for name in _SCRIPTS:
            source = (package / f"{name}.lua").read_text()
            self._scripts[name] = self._client.register_script(source)
        self._closing = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_forever(), name="quotad-redis-flush")

    async def close(self) -> None:
        """Stop the flusher, flush what is left, disconnect."""
        if self._flusher is not None:
            # Asked to stop rather than cancelled: a driver that swallows a cancellation
            # mid-flush would leave a cancelled loop running, and close() waiting, forever.
            self._closing.set()
            await self._flusher
            self._flusher = None
        if self._client is not None:
            with contextlib.suppress(StorageError):
                await self.flush()
            if self._cluster:
                await self._client.aclose()
            else:  # the pool was built here, so the client does not close it by itself
                await self._client.aclose(close_connection_pool=True)
            self._client = None
        await self.records.close()

    async def _call(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            # Bounded in-flight commands: redis-py's cluster client fails (rather than
            # queues) when hundreds of calls race to open connections to a node.
            async with self._inflight:
                return await action()
        except (RedisError, OSError) as exc:
            raise StorageError("the counter store (Redis) could not be reached") from exc

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda: self._scripts[name](keys=keys, args=args))

    def throttle(self, rate: float, burst: int) -> RedisThrottle:
        """Token buckets shared by every node, kept in Redis."""
        return RedisThrottle(self, rate, burst)

    async def take_token(self, bucket_id: str, rate: float, burst: int) -> float:
        """Take a token from a shared bucket: 0.0, or the seconds to wait."""
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
                await self.flush()
            except Exception as exc:  # the loop must outlive any outage
                log.warning("flush to the records store failed; will retry", error=str(exc))

    async def flush(self) -> None:
        """Copy every dirty counter to the records store (absolute values)."""
        async with self._flushing:
            await self._drain()

    async def _drain(self) -> None:
        while True:
            batch = await self._call(lambda: self._client.spop(self._dirty_accounts, 100))
            if not batch:
                return
            for account_id in batch:
                await self._flush_account(account_id)

    async def _flush_account(self, account_id: str) -> None:
        dirty = self._dirty(account_id)
        keys: list[str] = await self._script("take_dirty", [dirty], [])
        if not keys:
            return
        try:
            rows = await self._read_counters(keys)
            await self.records.put_usage_days(account_id, rows)
        except Conflict:
            log.info("dropping counters of a deleted account", account_id=account_id)
        except Exception:
            # Put the marks back so the next flush retries these counters.
            await self._call(lambda: self._client.sadd(dirty, *keys))
            await self._call(lambda: self._client.sadd(self._dirty_accounts, account_id))
            raise

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

    async def _mark_dirty(self, account_id: str) -> None:
        # Before the change: a crash in between leaves a harmless spare mark, never a
        # changed counter that no flush will find.
        await self._call(lambda: self._client.sadd(self._dirty_accounts, account_id))

    async def _hydrate(self, account_id: str, service: str, day: date, total: int) -> None:
        stored = await self.records.usage(account_id, service, day, day)
        row = stored[0] if stored else UsageDay(day, 0, total)
        await self._script(
            "seed",
            [self._counter(account_id, service, day)],
            [row.used, row.total, row.rejected, COUNTER_TTL_SECONDS, 0 if stored else 1],
        )

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
    ) -> ConsumeOutcome:
        """One Lua script: replay or refuse the claim, then add within the total."""
        day_text = day.isoformat()
        tag = f"{self._prefix}:{{{account_id}}}"  # as _counter and _dirty build them
        keys = [f"{tag}:u:{service}:{day_text}", f"{tag}:dirty"]
        if claim is None:
            line = f"2 {cost} {total} {day_text}"
        else:
            keys.append(self._idempotency(account_id, claim.key))
            now_ms = 0 if now is None else int(now.timestamp() * 1000)
            expires_ms = int(claim.expires_at.timestamp() * 1000)
            idem_ttl = max((expires_ms - now_ms) // 1000, 1)
            idem = f"{claim.fingerprint} {expires_ms} {now_ms} {idem_ttl}"
            line = f"3 {cost} {total} {day_text} {idem}"
        request = _Consume(account_id, keys, line)
        for _ in range(3):
            if self._batcher is not None:
                answer = await self._batcher.submit(request)
            else:
                [alone] = await self._consume_batch([request])
                if isinstance(alone, Exception):
                    raise alone
                answer = alone
            if answer[0] == "missing":
                await self._hydrate(account_id, service, day, total)
                continue
            if answer[0] == "conflict":
                raise Conflict("Idempotency-Key was used with a different request")
            granted, used, stored_total, stored_day = answer[1:5]
            return ConsumeOutcome(
                int(granted) == 1,
                int(used),
                int(stored_total),
                day if stored_day == day_text else date.fromisoformat(stored_day),
                answer[0] == "replay",
            )
        raise StorageError("the day's counter could not be loaded into Redis")

    async def _consume_batch(self, batch: list[_Consume]) -> list[_Reply | Exception]:
        """Run consumes as one script call per Cluster slot; one reply per consume."""
        if not self._cluster:  # one round trip: the script marks the dirty accounts too
            keys = [self._dirty_accounts]
            for request in batch:
                keys += request.keys
            lines = "\n".join([request.line for request in batch])
            args = [COUNTER_TTL_SECONDS, len(self._prefix) + 3, lines]
            replies: list[_Reply] = await self._script("consume", keys, args)
            return list(replies)
        # The set of dirty accounts has a slot of its own: marked first, in a call of its
        # own (a crash in between leaves a harmless spare mark).
        accounts = list({request.account_id for request in batch})
        await self._call(lambda: self._client.sadd(self._dirty_accounts, *accounts))
        groups: dict[int, list[int]] = defaultdict(list)
        for index, request in enumerate(batch):
            groups[key_slot(request.keys[0].encode())].append(index)

        async def run(indexes: list[int]) -> list[_Reply]:
            keys = [key for i in indexes for key in batch[i].keys]
            lines = "\n".join([batch[i].line for i in indexes])
            replies: list[_Reply] = await self._script(
                "consume", keys, [COUNTER_TTL_SECONDS, 0, lines]
            )
            return replies

        replies = await asyncio.gather(*(run(indexes) for indexes in groups.values()))
        answers: list[_Reply | Exception] = [[] for _ in batch]
        for indexes, group_replies in zip(groups.values(), replies, strict=True):
            for index, reply in zip(indexes, group_replies, strict=True):
                answers[index] = reply
        return answers

    async def adjust(
        self, account_id: str, service: str, day: date, delta: int, total: int
    ) -> UsageDay:
        """Add ``delta`` to a day's counter, flooring at zero."""
        keys = [self._counter(account_id, service, day), self._dirty(account_id)]
        await self._mark_dirty(account_id)
        for _ in range(3):
            answer = await self._script("adjust", keys, [delta, COUNTER_TTL_SECONDS, total])
            if answer[0] == "missing":
                await self._hydrate(account_id, service, day, total)
                continue
            return UsageDay(day, int(answer[0]), int(answer[1]), int(answer[2] or 0))
        raise StorageError("the day's counter could not be loaded into Redis")

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add unseen events, one atomic script per account (retries are de-duplicated)."""
        by_account: dict[str, list[UsageEvent]] = defaultdict(list)
        for item in events:
            by_account[item.account_id].append(item)
        accepted = 0
        for account_id, items in by_account.items():
            keys = [self._dirty(account_id)]
            args: list[Any] = [EVENT_DEDUP_SECONDS, COUNTER_TTL_SECONDS]
            for item in items:
                keys += [
                    self._event(account_id, item.id),
                    self._counter(account_id, item.service, item.day),
                ]
                args += [item.amount, item.total]
            await self._mark_dirty(account_id)
            totals: dict[tuple[str, date], int] = {}
            for item in items:  # a new day takes the total of its first event, as in SQL
                totals.setdefault((item.service, item.day), item.total)
            for _ in range(len(totals) + 2):
                answer = await self._script("events", keys, args)
                if answer[0] == "missing":
                    _, service, day_text = answer[1].rsplit(":", 2)
                    day = date.fromisoformat(day_text)
                    await self._hydrate(account_id, service, day, totals[(service, day)])
                    continue
                accepted += int(answer[1])
                break
            else:
                raise StorageError("the day's counters could not be loaded into Redis")
        return EventsOutcome(accepted, len(events) - accepted)

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Write days to SQL, then drop their Redis counters so the next use reloads them.

        Meant for restoring an export while the deployment is quiet: a consume racing
        with it on the same day may be overwritten by the imported value.
        """
        if not rows:
            return
        await self.records.put_usage_days(account_id, rows)
        counters = [self._counter(account_id, service, row.day) for service, row in rows]

        async def drop() -> None:
            for start in range(0, len(counters), 500):  # one account: one hash slot
                await self._client.delete(*counters[start : start + 500])

        await self._call(drop)

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """Durable days from SQL, overlaid with the live counters Redis holds."""
        stored = {row.day: row for row in await self.records.usage(account_id, service, start, end)}
        days = [date.fromordinal(n) for n in range(start.toordinal(), end.toordinal() + 1)]
        live = await self._read_counters([self._counter(account_id, service, d) for d in days])
        stored.update({row.day: row for _service, row in live})
        return [stored[day] for day in sorted(stored)]

    async def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every usage day, after flushing the live counters to SQL."""
        await self.flush()
        async for item in self.records.export_usage():
            yield item

    async def delete_account(self, account_id: str) -> None:
        """Delete the account's records, then its counters."""
        await self.records.delete_account(account_id)
        pattern = f"{self._prefix}:{{{account_id}}}:*"

        async def drop() -> None:
            keys = [key async for key in self._client.scan_iter(match=pattern, count=500)]
            for start in range(0, len(keys), 500):
                await self._client.delete(*keys[start : start + 500])

        await self._call(drop)

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Redis expires its own keys; purge what the records store keeps."""
        await self.records.purge(now, events_before)

    # Records: delegated to the SQL store ----------------------------------------
    async def get_setting(self, name: str) -> str | None:
        """A stored setting."""
        return await self.records.get_setting(name)

    async def put_setting(self, name: str, value: str) -> None:
        """Store a setting."""
        await self.records.put_setting(name, value)

    async def create_service(self, service: Service) -> None:
        """Register a service."""
        await self.records.create_service(service)

    async def get_service(self, name: str) -> Service | None:
        """The named service."""
        return await self.records.get_service(name)

    async def list_services(self) -> list[Service]:
        """Every service."""
        return await self.records.list_services()

    async def create_plan(self, plan: Plan) -> None:
        """Add a plan."""
        await self.records.create_plan(plan)

    async def get_plan(self, plan_id: str) -> Plan | None:
        """A plan."""
        return await self.records.get_plan(plan_id)

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """A page of plans."""
        return await self.records.list_plans(limit, after)

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan."""
        await self.records.replace_plan(plan)

    async def delete_plan(self, plan_id: str) -> None:
        """Delete an unused plan."""
        await self.records.delete_plan(plan_id)

    async def create_account(self, account: Account) -> None:
        """Add an account."""
        await self.records.create_account(account)

    async def get_account(self, account_id: str) -> Account | None:
        """An account."""
        return await self.records.get_account(account_id)

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None
    ) -> list[Account]:
        """A page of accounts."""
        return await self.records.list_accounts(limit, after, search)

    async def update_account(self, account: Account) -> None:
        """Change an account."""
        await self.records.update_account(account)

    async def create_key(self, key: ApiKey) -> None:
        """Store a key record."""
        await self.records.create_key(key)

    async def get_key(self, key_id: str) -> ApiKey | None:
        """A key record by id."""
        return await self.records.get_key(key_id)

    async def find_key(self, digest: str) -> ApiKey | None:
        """A key record by digest."""
        return await self.records.find_key(digest)

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """A key with its account and plan, from the records store."""
        return await self.records.find_key_records(digest)

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """An account's keys."""
        return await self.records.list_keys(account_id)

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Revoke a key."""
        return await self.records.revoke_key(key_id, at)

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Rotate a key."""
        await self.records.rotate_key(key_id, new_key, old_valid_until)

    async def gauges(self, account_id: str) -> dict[str, int]:
        """An account's gauges."""
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

    async def record_totals(
        self, at: datetime, *, account_id: str | None = None, plan_id: str | None = None
    ) -> None:
        """Note changed totals in the records store."""
        await self.records.record_totals(at, account_id=account_id, plan_id=plan_id)

    async def total_changes(self, account_id: str, service: str) -> list[TotalChange]:
        """Noted totals, from the records store."""
        return await self.records.total_changes(account_id, service)

    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a dashboard session in the records store."""
        await self.records.create_session(session_id, expires_at, now)

    async def session_live(self, session_id: str, now: datetime) -> bool:
        """Whether the records store holds the session, unexpired."""
        return await self.records.session_live(session_id, now)

    async def end_session(self, session_id: str) -> None:
        """Forget a dashboard session in the records store."""
        await self.records.end_session(session_id)
