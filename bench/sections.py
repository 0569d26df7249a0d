"""The in-process sections: memory, redis, sqlite, postgresql, scaling.

Each returns a ``report.Section``. Subjects of a section are measured interleaved (one
repetition of every subject, then the next repetition), so slow drift on a shared
machine spreads over all subjects instead of favouring whichever ran first.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import itertools
import multiprocessing
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import workloads
from common import (
    SERVICE,
    TOTAL,
    Config,
    Measurement,
    fmt_ms,
    fmt_ops,
    latency_summary,
    run_async,
    running_probe,
)
from cpu import CpuProbe, describe, redis_server_pid
from environment import log
from report import Section, Target

from quotad.storage.redis import RedisCounters
from quotad.storage.sql import SqlStore

Runner = Callable[[], Measurement]


def order(names: list[str], rep: int) -> list[str]:
    """The subjects in repetition ``rep``'s order: as declared, then reversed, and so on.

    Alternating cancels what a subject inherits from the one run just before it (a Redis
    still expiring the last subject's keys, a disk still writing its last file back):
    each subject follows each of its neighbours as often.
    """
    return names if rep % 2 == 1 else names[::-1]


def interleave(
    section: Section,
    runners: dict[str, Runner],
    repeat: int,
    probe_for: Callable[[str], CpuProbe] | None = None,
    unit: str = "ops/s",
    settle: Callable[[str], None] | None = None,
) -> None:
    """Run every runner ``repeat`` times, interleaved, into its subject's runs.

    Each run records its repetition (ratios pair the runs of one repetition) and the CPU
    spent meanwhile, by this process, by the processes ``probe_for(name)`` watches (Redis,
    the server under load) and by the rest of the machine. ``settle(name)``, untimed,
    runs after each run: to clear what it left behind before the next subject starts.
    """
    for rep in range(1, repeat + 1):
        for name in order(list(runners), rep):
            subject = section.subjects[name]
            if subject.error is not None:
                continue
            probe = (probe_for(name) if probe_for is not None else CpuProbe()).start()
            running_probe.append(probe)
            try:
                measured = runners[name]()
            except Exception as exc:
                subject.error = f"{type(exc).__name__}: {exc}"
                log(f"  [{section.name}] {name}: FAILED: {subject.error}")
                continue
            finally:
                running_probe.pop()
            if not measured.cpu:  # else the run measured its timed phase alone
                measured.cpu = probe.stop()
            measured.rep = rep
            if settle is not None:
                settle(name)
            subject.runs.append(measured)
            refused = f", {measured.refused} NOT GRANTED" if measured.refused else ""
            log(
                f"  [{section.name}] rep {rep}/{repeat} {name}: {fmt_ops(measured.ops_per_s)} "
                f"{unit}, p50 {fmt_ms(measured.p50_ms)} ms, p99 {fmt_ms(measured.p99_ms)} ms"
                f"{refused}{describe(measured.cpu)}"
            )
            if measured.refused:
                section.notes.append(
                    f"WARNING: {name} rep {rep}: {measured.refused} operations not granted"
                )


def _missing(cfg: Config, *modules: str) -> str | None:
    reasons = [f"{m} {cfg.peers[m]}" for m in modules if cfg.peers.get(m)]
    return "; ".join(reasons) or None


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def delete_redis_keys(redis_url: str, pattern: str) -> int:
    """Delete every key matching ``pattern``; the number deleted."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


# 1. memory ------------------------------------------------------------------------
def memory(cfg: Config) -> Section:
    """In-process consume: quotad's memory store vs limits vs a bare dict + lock."""
    section = Section("memory")
    quotad, limits, bare = (
        "quotad MemoryStore.consume",
        "limits FixedWindowRateLimiter + MemoryStorage",
        "dict + threading.Lock",
    )
    section.subject(quotad, "await store.consume(account, 'bench', day, 1, total) in a loop")
    section.subject(limits, "limiter.hit(RateLimitItemPerDay(total), account, 'bench') (sync)")
    section.subject(bare, "a plain (sync) function: dict of [used, rejected] under a Lock")
    runners: dict[str, Runner] = {
        quotad: lambda: run_async(workloads.memory_quotad(cfg.seconds)),
        limits: lambda: run_async(workloads.memory_limits(cfg.seconds)),
        bare: lambda: run_async(workloads.memory_dict(cfg.seconds)),
    }
    if (reason := _missing(cfg, "limits")) is not None:
        section.subjects[limits].error = reason
    section.targets = [Target(quotad, limits, min_ratio=5), Target(quotad, bare, min_ratio=0.7)]
    section.notes += [
        "memory: single thread, one coroutine, tight loop over 1000 accounts (same day, "
        "service, cost 1, never-reached total: every call granted); ops/s = calls / "
        "wall time; p50/p99 = per-call time of batches of 1000 calls.",
    ]
    interleave(section, runners, cfg.repeat)
    return section


# 2. redis --------------------------------------------------------------------------
async def _record_consume_call(url: str, account: str) -> tuple[str, list[str]]:
    """The SHA and EVALSHA arguments (numkeys, keys, argv) of one consume by RedisCounters.

    quotad's script and its argument layout change as the store evolves (batching moved
    the dirty marks into the script, for one), so rather than rebuild the call here, one
    real ``consume`` goes through a recorder wrapped around the store's script object,
    and the call it made is what redis-benchmark replays.
    """
    store = RedisCounters(url)
    await store.open()
    calls: list[tuple[list[Any], list[Any]]] = []
    try:
        script = store._scripts["consume"]

        async def recorder(keys: list[Any], args: list[Any]) -> Any:
            calls.append((list(keys), list(args)))
            return await script(keys=keys, args=args)

        store._scripts["consume"] = recorder
        outcome = await store.consume(account, SERVICE, workloads.today(), 1, TOTAL)
    finally:
        await store.close()
    if not calls or not outcome.granted:
        raise RuntimeError(f"could not record quotad's consume call ({outcome})")
    keys, args = calls[-1]  # the last: an earlier one may have answered "missing"
    # The first key names the call, so that a resend of it is answered, not applied again:
    # every replayed call gets its own (redis-benchmark fills in __rand_int__, see -r).
    keys[0] = f"{keys[0]}:__rand_int__"
    return str(script.sha), [str(len(keys)), *map(str, keys), *map(str, args)]


def _redis_benchmark_once(
    cfg: Config, sha: str, args: list[str], requests: int, clients: int, pipeline: int
) -> Measurement:
    parts = urlsplit(cfg.redis_url)
    command = ["redis-benchmark", "-h", parts.hostname or "127.0.0.1"]
    command += ["-p", str(parts.port or 6379)]
    if parts.password:
        command += ["-a", parts.password]
    if parts.path.strip("/"):
        command += ["--dbnum", parts.path.strip("/")]
    command += ["-c", str(clients), "-P", str(pipeline), "-n", str(requests), "--csv"]
    command += ["-r", str(2**31 - 1)]  # __rand_int__: a random number per call (an int)
    # redis-benchmark seeds its random numbers with time(NULL) ^ getpid(): two runs a
    # second apart by consecutive processes can draw the same numbers, and every call of
    # the second would then be answered as a resend of the first's. A token per run keeps
    # their call keys apart.
    run_token = secrets.token_hex(4)
    args = [arg.replace(":__rand_int__", f":{run_token}:__rand_int__") for arg in args]
    done = subprocess.run(
        [*command, "EVALSHA", sha, *args], capture_output=True, text=True, check=False, timeout=300
    )
    rows = list(csv.reader(io.StringIO(done.stdout)))
    if done.returncode != 0 or len(rows) < 2 or "Error" in done.stdout + done.stderr:
        raise RuntimeError(f"redis-benchmark failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    values = dict(zip(rows[0], rows[1], strict=True))
    rps = float(values["rps"])
    p50, p99 = float(values["p50_latency_ms"]), float(values["p99_latency_ms"])
    return Measurement(rps, p50, p99, requests, requests / rps, 0, {"pipeline": pipeline})


def redis_benchmark_runner(cfg: Config, url: str, account: str) -> Runner:
    """redis-benchmark replaying quotad's own consume call: the engine's ceiling."""
    import redis as redis_py

    sha, args = run_async(_record_consume_call(url, account))
    client = redis_py.Redis.from_url(cfg.redis_url, decode_responses=True)
    # The counter is the hash among the call's keys that holds "used".
    numkeys = int(args[0])
    counters = [
        k
        for k in args[1 : 1 + numkeys]
        if client.type(k) == "hash" and client.hexists(k, "used")  # not the account's marker
    ]
    if len(counters) != 1:
        raise RuntimeError(f"cannot tell the counter among the keys {args[1 : 1 + numkeys]}")
    counter = counters[0]
    clients, pipeline = 50, 16
    sized: list[int] = []

    def run() -> Measurement:
        if not sized:  # a short first run finds the count that lasts cfg.seconds
            probe = _redis_benchmark_once(cfg, sha, args, 20_000, clients, pipeline)
            sized.append(max(int(probe.ops_per_s * cfg.seconds), 20_000))
        before = int(client.hget(counter, "used") or 0)
        measured = _redis_benchmark_once(cfg, sha, args, sized[0], clients, pipeline)
        granted = int(client.hget(counter, "used") or 0) - before
        # redis-benchmark may send a few more than -n to fill its last pipelines, and two
        # calls within the replay window may draw the same __rand_int__ (about 1 in 2,000 of
        # a 5 s run; the second is answered, not applied).
        if granted < sized[0] * 0.999:
            raise RuntimeError(f"only {granted} of {sized[0]} script calls consumed")
        return measured

    return run


def redis(cfg: Config) -> Section:
    """Consume over Redis, 50 callers: quotad vs limits.aio vs redis-benchmark."""
    section = Section("redis")
    quotad, limits, ceiling = (
        "quotad RedisCounters.consume",
        "limits.aio FixedWindowRateLimiter + RedisStorage",
        "redis-benchmark EVALSHA consume.lua",
    )
    section.subject(quotad, f"{cfg.callers} asyncio callers, one account each, one process")
    section.subject(limits, f"{cfg.callers} asyncio callers, one account each (coredis client)")
    section.subject(ceiling, "redis-benchmark -c 50 -P 16 EVALSHA of quotad's script, one counter")
    section.targets = [Target(quotad, limits, min_ratio=5), Target(quotad, ceiling, min_ratio=0.5)]
    names = workloads.accounts(cfg.callers)
    records = Path(f"/tmp/bench-records-{cfg.run_id}.db")
    prefix = f"bench{cfg.run_id}"
    records_url = f"sqlite:///{records}"
    url = f"{_with_query(cfg.redis_url)}prefix={prefix}q&records={records_url}"
    runners: dict[str, Runner] = {
        quotad: lambda: run_async(
            workloads.redis_quotad(url, names, cfg.seconds, cfg.warmup, cfg.callers)
        ),
        limits: lambda: run_async(
            workloads.redis_limits(
                cfg.redis_url, f"{prefix}l", names, cfg.seconds, cfg.warmup, cfg.callers
            )
        ),
    }
    if (reason := _missing(cfg, "limits", "coredis")) is not None:
        section.subjects[limits].error = reason
    try:
        run_async(workloads.seed_sql(records_url, names))
        if shutil.which("redis-benchmark") is None:
            section.subjects[ceiling].error = "redis-benchmark is not installed"
        else:
            try:
                ceiling_url = f"{_with_query(cfg.redis_url)}prefix={prefix}b&records={records_url}"
                runners[ceiling] = redis_benchmark_runner(cfg, ceiling_url, names[0])
            except Exception as exc:
                section.subjects[ceiling].error = f"{type(exc).__name__}: {exc}"
        redis_pid = redis_server_pid(cfg.redis_url)
        watched = {"redis": redis_pid} if redis_pid is not None else {}
        # Every consume call keeps its replies for a few seconds under a key of its own
        # (REPLAY_SECONDS): a run leaves that many keys behind, over 200,000 after the
        # redis-benchmark run, and Redis expiring them took CPU from whichever subject
        # ran next (limits.aio's Redis CPU per hit: 23 µs after it against 11 µs).
        leftovers = {quotad: f"{prefix}q:*:b:*", ceiling: f"{prefix}b:*:b:*"}

        def settle(name: str) -> None:
            if name in leftovers:
                delete_redis_keys(cfg.redis_url, leftovers[name])

        section.notes += [
            f"redis: {cfg.callers} concurrent asyncio callers in one process, one account "
            f"each ({cfg.callers} accounts) for quotad and limits; closed loop; ops/s = "
            "granted consumes / wall time; p50/p99 per call. quotad's records (SQLite) get "
            "the counters' write-behind flush every second, as in production. Both run on "
            "uvloop (as every in-process subject here: the loop quotad serve runs on).",
            "redis-benchmark: 50 connections, pipelines of 16, replaying the exact EVALSHA "
            "of lua/consume.lua that RedisCounters sends for one consume (recorded from a real "
            "call), one account; p50/p99 as redis-benchmark reports them (per pipelined "
            "request). The reply keys a run leaves behind are deleted before the next run.",
        ]
        interleave(section, runners, cfg.repeat, lambda _: CpuProbe(dict(watched)), settle=settle)
    finally:
        delete_redis_keys(cfg.redis_url, f"{prefix}*")
        _remove_sqlite(records)
    return section


def _with_query(url: str) -> str:
    return url + ("&" if "?" in url else "?")


# 3. sqlite -------------------------------------------------------------------------
def _batch_supported() -> bool:
    return "batch" in inspect.signature(SqlStore).parameters


def sqlite(cfg: Config) -> Section:
    """Durable SQLite consume, 50 callers: group commit vs one transaction per consume."""
    section = Section("sqlite")
    batched, single = (
        "quotad SqlStore SQLite (batched, default)",
        "quotad SqlStore SQLite batch=False",
    )
    section.subject(batched, "group commit: concurrent consumes share one transaction")
    section.subject(single, "one transaction (one fsync) per consume")
    section.targets = [Target(batched, single, min_ratio=5)]
    names = workloads.accounts(cfg.callers)
    counter = itertools.count()

    def runner(batch: bool) -> Runner:
        def run() -> Measurement:
            # A fresh database file for every run: no run inherits another's WAL.
            path = Path(f"/tmp/bench-sqlite-{cfg.run_id}-{next(counter)}.db")
            url = f"sqlite:///{path}"
            try:
                run_async(workloads.seed_sql(url, names))
                return run_async(
                    workloads.sql_quotad(
                        url, names, cfg.seconds, cfg.warmup, cfg.callers, batch=batch
                    )
                )
            finally:
                _remove_sqlite(path)

        return run

    if not _batch_supported():
        section.subjects[single].error = "this SqlStore has no batch argument yet"
    section.notes.append(
        f"sqlite: file in /tmp (WAL, synchronous=FULL), fresh per run; {cfg.callers} "
        f"concurrent callers, one account each; ops/s = committed consumes / wall time."
    )
    interleave(section, {batched: runner(True), single: runner(False)}, cfg.repeat)
    return section


# 4. postgresql ---------------------------------------------------------------------
def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (as tests/servers.py does)."""
    return f"{_with_query(url)}options=-csearch_path%3D{schema}"


def postgresql(cfg: Config) -> Section:
    """Durable PostgreSQL consume, 50 callers: batched vs not vs raw psycopg upserts."""
    import psycopg

    section = Section("postgresql")
    batched = "quotad SqlStore PostgreSQL (batched, default)"
    single = "quotad SqlStore PostgreSQL batch=False"
    pool_size = 20  # SqlStore's own maximum: pool_size 10 + max_overflow 10
    raw = f"psycopg AsyncConnectionPool upsert ({pool_size} conns)"
    section.subject(batched, "group commit: concurrent consumes share one transaction")
    section.subject(single, "one transaction per consume (pool of 10 + 10 overflow)")
    section.subject(raw, "one autocommitted INSERT … ON CONFLICT DO UPDATE … RETURNING per consume")
    section.targets = [Target(batched, single, min_ratio=3), Target(batched, raw)]
    names = workloads.accounts(cfg.callers)
    schema = f"bench_{cfg.run_id}"
    url = with_search_path(cfg.postgres_url, schema)
    with psycopg.connect(cfg.postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            row = admin.execute("SHOW synchronous_commit").fetchone()
            sync_commit = str(row[0]) if row else "?"
            log(f"  [postgresql] SHOW synchronous_commit = {sync_commit}")
            run_async(workloads.seed_sql(url, names))
            if not _batch_supported():
                section.subjects[single].error = "this SqlStore has no batch argument yet"
            section.notes.append(
                f"postgresql: schema {schema} (dropped afterwards), synchronous_commit="
                f"{sync_commit}; {cfg.callers} concurrent callers, one account each; "
                "ops/s = committed consumes / wall time."
            )
            runners: dict[str, Runner] = {
                batched: lambda: run_async(
                    workloads.sql_quotad(
                        url, names, cfg.seconds, cfg.warmup, cfg.callers, batch=True
                    )
                ),
                single: lambda: run_async(
                    workloads.sql_quotad(
                        url, names, cfg.seconds, cfg.warmup, cfg.callers, batch=False
                    )
                ),
                raw: lambda: run_async(
                    workloads.postgres_raw(
                        url, names, cfg.seconds, cfg.warmup, cfg.callers, pool_size
                    )
                ),
            }
            interleave(section, runners, cfg.repeat, lambda _: CpuProbe(names=("postgres",)))
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return section


# 6. scaling ------------------------------------------------------------------------
def _scaling_run(cfg: Config, url: str, names: list[str], processes: int) -> Measurement:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate nodes
    start = context.Barrier(processes + 1)
    results: Any = context.Queue()
    children = [
        context.Process(
            target=workloads.scaling_worker,
            args=(
                workloads.ScalingJob(
                    url,
                    names[i * cfg.callers : (i + 1) * cfg.callers],
                    cfg.seconds,
                    cfg.warmup,
                    cfg.callers,
                ),
                start,
                results,
            ),
            daemon=True,
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    # Every child connected and warmed up; a broken barrier means a child failed, and
    # its error is in the queue.
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait(timeout=300)
    answers = [results.get(timeout=cfg.seconds + 300) for _ in children]
    for child in children:
        child.join(timeout=30)
    errors = [a["error"] for a in answers if not a["ok"]]
    if errors:
        raise RuntimeError("; ".join(errors))
    measured = [a["measurement"] for a in answers]
    samples = [s for m in measured for s in m["samples"]]
    p50, p99 = latency_summary(samples)
    per_process = [m["ops_per_s"] for m in measured]
    return Measurement(
        sum(per_process),
        p50,
        p99,
        sum(m["ops"] for m in measured),
        max(m["seconds"] for m in measured),
        sum(m["refused"] for m in measured),
        {"per_process_ops_per_s": per_process},
    )


def scaling(cfg: Config) -> Section:
    """1, 2 and 4 quotad processes consuming over one Redis: aggregate and per process."""
    section = Section("scaling")
    names_of = {n: f"{n} process" + ("es" if n > 1 else "") for n in cfg.scaling_processes}
    for n, name in names_of.items():
        section.subject(
            name, f"{n} processes of (RedisCounters, {cfg.callers} callers, own accounts)"
        )
    first = names_of[cfg.scaling_processes[0]]
    section.targets = [Target(name, first) for name in list(names_of.values())[1:]]
    most = max(cfg.scaling_processes)
    names = workloads.accounts(cfg.callers * most)
    records = Path(f"/tmp/bench-records-{cfg.run_id}-scaling.db")
    prefix = f"bench{cfg.run_id}s"
    url = f"{_with_query(cfg.redis_url)}prefix={prefix}&records=sqlite:///{records}"
    try:
        run_async(workloads.seed_sql(f"sqlite:///{records}", names))
        runners: dict[str, Runner] = {
            name: functools.partial(_scaling_run, cfg, url, names, n)
            for n, name in names_of.items()
        }
        redis_pid = redis_server_pid(cfg.redis_url)
        watched = {"redis": redis_pid} if redis_pid is not None else {}
        interleave(section, runners, cfg.repeat, lambda _: CpuProbe(dict(watched)))
    finally:
        delete_redis_keys(cfg.redis_url, f"{prefix}*")
        _remove_sqlite(records)
    for n, name in names_of.items():
        subject = section.subjects[name]
        if subject.ops is not None:
            subject.label = f"{name} (per process {fmt_ops(subject.ops / n)}/s)"
    section.notes.append(
        f"scaling: N spawned processes, each a RedisCounters with {cfg.callers} asyncio callers "
        "on its own accounts, started together; ops/s = sum of the processes' rates "
        "(per process = that / N); ratio = N processes' aggregate over 1 process's; "
        "p50/p99 over every process's calls; all on the same "
        f"{_cores()}-core machine as Redis itself, so the aggregate is bounded by cores."
    )
    return section


def _cores() -> int:
    return multiprocessing.cpu_count()
