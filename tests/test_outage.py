"""A Redis outage under load (README "Scaling out"): no hang, the policy answers, self-recovery.

A private redis-server (never the shared one on 6379) backs one `quotad serve`; concurrent
workers verify in a loop while the Redis is SIGKILLed and, 1.5 s later, started again on the same
port without its data. Every request issued after the kill must be answered within 100 ms,
as QUOTAD_ON_STORE_ERROR says; once Redis is back the node consumes again by itself, its
counter reloaded from the SQL records (flushed every second) rather than restarted at zero.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.storage import stores_from_url
from tests.conftest import LOOPBACK, OPERATOR, RedisProcess
from tests.test_race import DAY, TOTAL, add_account, noon_zone, running_server

pytestmark = pytest.mark.redis

# A verify with SQLite records costs the server ~12 ms of CPU here (~3 ms on memory://),
# so 20 concurrent workers would queue ~240 ms per request even with a healthy Redis and
# the 100 ms bound would measure the queue, not the outage. Four keep a steady concurrent
# load (~70 verifies/s on this 2-core box) whose healthy latency stays well under 100 ms.
WORKERS = 4
BEFORE_KILL = 2.0  # > one flush interval (1 s), so some usage is durable before the kill
OUTAGE = 1.5
AFTER_RESTART = 2.0
LATENCY_LIMIT = 0.100  # seconds, for every request issued after the kill
OUTLIER_SLACK = 0.05  # share of answers over the limit beyond what a healthy Redis shows
# No answer may take this long: half RedisCounters' 1 s socket timeout, so a request that
# waited on a dead connection (or 5 s on its pool, or a reconnect backoff) is caught, while
# the slowest healthy answers seen on this box under other load (~300 ms) are not.
HANG_BOUND = 0.5
WARM_UP = 0.25  # seconds of load before the healthy reference starts
DURABLE_MARGIN = 1.5  # grants answered this long before the kill were flushed to SQL
ERROR_KEYS = {"error", "id", "note", "validationErrors"}


@dataclass
class Answer:
    """One verify as the client saw it."""

    started: float
    elapsed: float
    status: int
    body: dict[str, Any]

    @property
    def finished(self) -> float:
        """When the answer arrived (monotonic clock)."""
        return self.started + self.elapsed


@dataclass
class Timeline:
    """When the outage began and ended (monotonic clock), and every answer."""

    answers: list[Answer] = field(default_factory=list)
    load_started: float = 0.0
    kill_sent: float = 0.0
    killed: float = 0.0
    restart_sent: float = 0.0
    restarted: float = 0.0

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to requests issued at or after ``start`` and answered by ``end``."""
        return [a for a in self.answers if a.started >= start and a.finished <= end]


async def provision(http: httpx2.AsyncClient) -> str:
    """Service insights, a plan far above what the test consumes, an account; its key."""
    steps: list[tuple[str, dict[str, object]]] = [
        ("/admin/v1/services", {"name": "insights"}),
        ("/admin/v1/plans", {"id": "big", "quotas": {"insights": {"total": 1_000_000}}}),
        # Near noon in its zone, so the load never straddles a day boundary.
        ("/admin/v1/accounts", {"id": "steady", "name": "Steady", "plan": "big",
                                "timezone": noon_zone(datetime.now(UTC))}),
        ("/admin/v1/accounts/steady/keys", {"name": "steady"}),
    ]  # fmt: skip
    response = None
    for path, body in steps:
        response = await http.post(path, json=body, headers=OPERATOR)
        assert response.status_code == 201, (path, response.text)
    assert response is not None
    return str(response.json()["key"])


async def worker(
    http: httpx2.AsyncClient, key: str, timeline: Timeline, stop: asyncio.Event
) -> None:
    """Verify in a loop until ``stop``; a request that gets no answer in 5 s is status 0."""
    body = {"key": key, "service": "insights", "cost": 1}
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = await http.post("/v1/verify", json=body, headers=OPERATOR, timeout=5)
        except httpx2.TimeoutException:
            timeline.answers.append(Answer(started, time.monotonic() - started, 0, {}))
            continue
        elapsed = time.monotonic() - started
        timeline.answers.append(Answer(started, elapsed, response.status_code, response.json()))


async def drive_outage(http: httpx2.AsyncClient, key: str, redis_server: RedisProcess) -> Timeline:
    """Load, kill Redis, load, restart it on the same port, load; the answers and the times."""
    timeline = Timeline()
    stop = asyncio.Event()
    # The latencies are measured in this (large) pytest process, whose full garbage
    # collections pause it for ~100 ms: keep them out of the few seconds measured.
    gc.collect()
    gc.disable()
    timeline.load_started = time.monotonic()
    workers = [asyncio.create_task(worker(http, key, timeline, stop)) for _ in range(WORKERS)]
    try:
        await asyncio.sleep(BEFORE_KILL)
        timeline.kill_sent = time.monotonic()
        await asyncio.to_thread(redis_server.kill)  # SIGKILL, then reap it off the loop
        timeline.killed = time.monotonic()
        await asyncio.sleep(OUTAGE)
        timeline.restart_sent = time.monotonic()
        redis_server.start(wait=False)
        await redis_answers(redis_server.port)  # polled on the loop: no thread competes
        timeline.restarted = time.monotonic()
        await asyncio.sleep(AFTER_RESTART)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        gc.enable()
    return timeline


async def redis_answers(port: int) -> None:
    """Return once the Redis on ``port`` answers PING (fail after 10 s)."""
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                if (await reader.readline()).startswith(b"+PONG"):
                    return
            finally:
                writer.close()
                await writer.wait_closed()


def fail_open_total(metrics_text: str) -> float:
    """The sum of quotad_fail_open_total over its labels (0 when absent)."""
    pattern = re.compile(r"^quotad_fail_open_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(metrics_text))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["fail-closed", "fail-open"])
async def test_a_redis_outage_is_answered_fast_and_recovered_from(
    policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis SIGKILLed under load: verifies answer fast per the policy, then recover by themselves."""
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.start()
    try:
        url = f"redis://{LOOPBACK}:{redis_server.port}/0?records=sqlite:///{tmp_path / 'r.db'}"
        monkeypatch.setenv("QUOTAD_ON_STORE_ERROR", policy)
        limits = httpx2.Limits(max_connections=WORKERS + 5, max_keepalive_connections=WORKERS + 5)
        with running_server(url, tmp_path) as base:
            async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=5) as http:
                key = await provision(http)
                timeline = await drive_outage(http, key, redis_server)
                metrics = (await http.get("/metrics", headers=OPERATOR)).text
    finally:
        redis_server.kill()
    check_outage(policy, timeline, metrics)


def summary(answers: list[Answer]) -> str:
    """p50/p95/max latency of ``answers`` in milliseconds."""
    ms = sorted(a.elapsed * 1000 for a in answers) or [0.0]
    return f"{ms[len(ms) // 2]:.0f}/{ms[int(len(ms) * 0.95)]:.0f}/{ms[-1]:.0f} ({len(ms)})"


def counted(answer: Answer) -> bool:
    """Whether the verify was granted and counted (not an uncounted fail-open allow)."""
    body = answer.body
    return (
        answer.status == 200
        and (body.get("valid"), body.get("code")) == (True, "VALID")
        and isinstance(body.get("used"), int)
        and not body.get("note")
    )


def check_outage(policy: str, timeline: Timeline, metrics: str) -> None:
    """The outage test's checks, phase by phase; every violated one is reported at once."""
    answers = timeline.answers
    before = [a for a in answers if a.finished <= timeline.kill_sent]
    # The latency reference with Redis up starts after a warm-up (first connections...).
    healthy = [a for a in before if a.started >= timeline.load_started + WARM_UP]
    during = timeline.between(timeline.killed, timeline.restart_sent)
    after = [a for a in answers if a.started >= timeline.restarted]
    since_kill = [a for a in answers if a.started >= timeline.killed]
    slowest = max(a.elapsed for a in since_kill)
    print(  # the measured numbers, for the record (pytest -s)
        f"\n{policy}: {len(answers)} verifies, statuses {dict(Counter(a.status for a in answers))}; "
        f"latency ms (p50/p95/max): {summary(healthy)} before the kill, {summary(during)} during "
        f"the outage, {summary(after)} after the restart; max after the kill {slowest * 1000:.1f}"
    )
    for phase in (healthy, during, after):  # each phase really ran under load
        assert len(phase) >= 2 * WORKERS, (len(healthy), len(during), len(after))
    problems: list[str] = []

    # Before the kill: every call is consumed.
    if not all(counted(a) for a in before):
        problems.append(f"before the kill: {Counter(a.status for a in before)}")

    # No request hangs: each one issued after the kill is answered within 100 ms. Outliers
    # are tolerated only as the machine's own noise: no more often than with a healthy
    # Redis under the same load before the kill, plus 5 points of slack for sampling noise
    # and for the ~110 ms full garbage collection of the quotad process that the burst of
    # exceptions at the kill sets off (measured with a gc callback), and never anywhere
    # near a socket timeout.
    late = sorted(round(a.elapsed * 1000, 1) for a in since_kill if a.elapsed > LATENCY_LIMIT)
    healthy_share = sum(a.elapsed > LATENCY_LIMIT for a in healthy) / len(healthy)
    if len(late) > int((healthy_share + OUTLIER_SLACK) * len(since_kill)):
        problems.append(
            f"{len(late)} of {len(since_kill)} answers after the kill took > 100 ms "
            f"(with Redis up: {healthy_share:.0%}); slowest ms: {late[-10:]}"
        )
    if slowest >= HANG_BOUND:
        problems.append(f"an answer after the kill took {slowest * 1000:.0f} ms")

    # During the outage the policy answers, in the contract's shapes.
    if policy == "fail-closed":
        wrong = [
            (a.status, a.body)
            for a in during
            if a.status != 503
            or set(a.body) != ERROR_KEYS
            or (a.body["error"], a.body["validationErrors"]) != ("SERVICE_UNAVAILABLE", [])
        ]
    else:
        wrong = [
            (a.status, a.body)
            for a in during
            if a.status != 200
            or (a.body.get("valid"), a.body.get("code")) != (True, "VALID")
            or not a.body.get("note")  # allowed uncounted, and says so
        ]
        if fail_open_total(metrics) <= 0:
            problems.append("quotad_fail_open_total is not above 0 in /metrics")
    if wrong:
        problems.append(f"{len(wrong)} of {len(during)} outage answers are wrong: {wrong[:3]}")

    # After the restart quotad (never restarted itself) recovers by itself: nearly every
    # verify is counted again, and so are the last answers of the load...
    in_order = sorted(after, key=lambda a: a.finished)
    if sum(map(counted, after)) < 0.9 * len(after) or not all(map(counted, in_order[-WORKERS:])):
        problems.append(f"never recovered after the restart: {Counter(map(counted, after))}")
    # ...from the very first request. KNOWN SRC BUG (src/quotad/storage/redis.py,
    # RedisCounters.open): the Retry(NoBackoff(), 1) meant to replace "a connection that died
    # with a Redis restart" is given to aioredis.Redis next to connection_pool=, where
    # redis-py ignores it; pooled connections have no retry, so each one that died with
    # the old server fails its first command after the restart (503 / uncounted allow).
    failing = [
        (round((a.started - timeline.restarted) * 1000), a.status, a.body.get("note"))
        for a in after
        if not counted(a)
    ]
    if failing:
        problems.append(f"after the restart (ms after it, status, note): {failing[:5]}")

    # ...and the day was reloaded from SQL, not restarted at zero: it keeps at least what
    # was granted a flush interval (plus margin) before the kill.
    durable = [a.body["used"] for a in before if a.finished <= timeline.kill_sent - DURABLE_MARGIN]
    assert durable, "no grant was answered early enough to have been flushed"
    reloaded = [a.body["used"] for a in after if counted(a)]
    if not reloaded or min(reloaded) <= max(durable):
        problems.append(f"the day lost flushed usage: {max(durable)} -> {reloaded[:1]}")

    assert problems == [], "\n".join(problems)


async def test_the_first_consume_after_a_redis_restart_succeeds(tmp_path: Path) -> None:
    """A consume right after Redis restarted (no request in between) is answered, not refused."""
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.start()
    try:
        url = f"redis://{LOOPBACK}:{redis_server.port}/0?records=sqlite:///{tmp_path / 'r.db'}"
        stores = stores_from_url(url)
        await stores.open()
        try:
            await add_account(stores)
            assert (await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)).granted
            redis_server.kill()
            redis_server.start()
            # KNOWN SRC BUG (src/quotad/storage/redis.py, RedisCounters.open): the pooled
            # connection died with the old server and has no retry (the Retry passed to
            # aioredis.Redis beside connection_pool= is ignored by redis-py), so this
            # raises StorageError although Redis is up again.
            outcome = await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)
            assert outcome.granted
        finally:
            await stores.close()
    finally:
        redis_server.kill()
