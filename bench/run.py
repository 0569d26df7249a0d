"""quotad against the peers a Python team would pick instead, in one run on one machine.

    .venv/bin/pip install -e '.[bench]'        # limits[async-redis], slowapi
    .venv/bin/python bench/run.py               # every section, medians of 5 (< 10 min)
    .venv/bin/python bench/run.py --quick       # a smoke run (~30-60 s), 1 repetition
    .venv/bin/python bench/run.py --only memory,redis --repeat 9 --json /tmp/r.json

Sections (a ratio is quotad's median throughput over the peer's):

1. ``memory``: in-process consume, one coroutine, tight loop: ``MemoryStore.consume`` vs
   ``limits``' ``FixedWindowRateLimiter(MemoryStorage())`` (target ≥ 5x) and vs a bare
   ``dict`` + ``threading.Lock`` function doing the same work (target ≥ 0.7).
2. ``redis``: consume over Redis, 50 concurrent asyncio callers in one process, one
   account each: ``RedisCounters`` vs ``limits.aio`` on ``RedisStorage`` (≥ 5x), and vs
   ``redis-benchmark`` running quotad's own Lua consume script, the engine's ceiling
   (≥ 0.5).
3. ``sqlite``: durable SQLite consume (WAL, synchronous=FULL), 50 callers: group commit
   (quotad's default) vs ``batch=False``, one transaction per consume (≥ 5x).
4. ``postgresql``: the same on PostgreSQL (``synchronous_commit`` printed) (≥ 3x), and
   the ratio to hand-written psycopg 3 upserts on an ``AsyncConnectionPool``. Runs in a
   ``bench_<id>`` schema that is dropped afterwards.
5. ``http``: ``POST /v1/verify`` on ``quotad serve`` (memory and SQLite stores) vs a bare
   ASGI app (≥ 0.5 of it) and FastAPI + slowapi on Redis (≥ 3x), all on uvicorn, loaded
   by wrk with 50 connections; then quotad's p99 at half its peak rate (≤ 5 ms).
6. ``scaling``: 1, 2 and 4 quotad processes consuming over one Redis: aggregate and
   per-process throughput.

Limits v2 rows, added to the memory, sqlite, postgresql, redis and http sections: the
store-level consume of a plan of three limits (a rate, a day and a month: three slots in
one atomic step) against one daily quota on the same store with the same callers
(target ≥ 0.7x), and ``POST /v1/verify`` on the memory store with that plan against the
bare ASGI app (≥ 0.4x) and against plain verify. Each pair is measured interleaved in
the same run (``limits_rows``); a store whose consume takes no slots yet says so.

Credits rows (SPEC 10), in the memory, sqlite, postgresql and redis sections: verify on
a priced service with that plan of three limits (credits + three limits in one atomic
step) against verify with one daily quota (target ≥ 0.6x), and a reserve + commit pair
against the same plain verify (≥ 0.4x), interleaved in one run (``credits_pairs``).

Every subject is measured ``--repeat`` times (5 by default), interleaved with its
section's other subjects, in alternating order (as declared, then reversed). A ratio is
taken in each repetition, quotad over the peer measured just before or after it, and the
ratio reported is the median of those, with their spread (min to max and each one); the
targets table at the end says which targets that median meets. Every run also records
where the machine's CPU went meanwhile (``cpu.py``): the subject's process, Redis, the
server under load, and "others", the programs that are not part of the benchmark, so a
figure measured on a busy machine says so. What is missing is installed or started when it can
be (peer libraries with pip, wrk with apt-get, Redis and PostgreSQL locally; disable
with ``--no-install``); a section whose server is absent is skipped with the reason.
Progress goes to stderr; stdout gets the notes, the markdown table, the machine and the
JSON, which is also written to ``--json`` (default ``bench/results.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import itertools
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Run as a script, this folder is on sys.path already; also when imported otherwise.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import environment  # noqa: E402
import http_section  # noqa: E402
import sections  # noqa: E402
import workloads  # noqa: E402
from common import SERVICE, TOTAL, Config, Measurement, run_async, run_callers  # noqa: E402
from cpu import CpuProbe, redis_server_pid  # noqa: E402
from environment import log  # noqa: E402
from report import Section, Target, markdown_table, table_rows, targets_table  # noqa: E402

from quotad.domain.limits import HARD, RATE_PERIOD, Slot, Window, interval_us, span  # noqa: E402

SECTIONS = ("memory", "redis", "sqlite", "postgresql", "http", "scaling")
# What each section cannot run without.
NEEDS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "postgresql": ("postgresql",),
    "scaling": ("redis",),
}
TIME_BUDGET_S = 600
# Cores other programs may keep busy (the median over a target's runs) before the run
# says its ratios were measured on a busy machine: on two cores, a neighbour taking a
# quarter of one already moves the Redis and HTTP ratios by more than their margins.
BUSY_CORES = 0.25
# Medians of 5: one repetition disturbed by a neighbour moves a median of 3 a long way.
DEFAULT_REPEAT = 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark quotad against its peers (see the module docstring).",
    )
    parser.add_argument("--repeat", type=int, help="repetitions per subject (default 5; 1 quick)")
    parser.add_argument("--only", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="JSON output")
    parser.add_argument("--seconds", type=float, help="one in-process measurement (default 3)")
    parser.add_argument("--http-seconds", type=int, help="one wrk run (default 5)")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers/connections")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load generator (auto: wrk if installed or installable, else Python)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not pip/apt-get install anything nor start Redis/PostgreSQL",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.only = [s for s in SECTIONS if s in only]
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Durations from the options (``--quick`` shortens everything)."""
    quick = args.quick
    repeat = args.repeat or (1 if quick else DEFAULT_REPEAT)
    seconds = args.seconds or (0.5 if quick else 3.0)
    return Config(
        repeat=repeat,
        seconds=seconds,
        warmup=0.2 if quick else 0.5,
        http_seconds=args.http_seconds or (1 if quick else 5),
        callers=args.callers,
        redis_url=args.redis_url,
        postgres_url=args.postgres_url,
        allow_changes=not args.no_install,
        load="python",
        wrk=None,
        run_id=f"{os.getpid()}{secrets.token_hex(2)}",
    )


def prepare(cfg: Config, args: argparse.Namespace) -> dict[str, str | None]:
    """Install and start what is missing; per server, ``None`` or why it is unavailable."""
    cfg.peers = environment.ensure_peer_libraries(cfg.allow_changes)
    for module, reason in cfg.peers.items():
        if reason is not None:
            log(f"peer library {module}: {reason}")
    servers: dict[str, str | None] = {}
    wanted = {need for section in args.only for need in NEEDS.get(section, ())}
    if "http" in args.only:
        wanted.add("redis")  # slowapi's storage
    if "redis" in wanted:
        servers["redis"] = environment.ensure_redis(cfg.redis_url, cfg.allow_changes)
    if "postgresql" in wanted:
        servers["postgresql"] = environment.ensure_postgres(cfg.postgres_url, cfg.allow_changes)
    for name, reason in servers.items():
        if reason is not None:
            log(f"{name}: {reason}")
    if "http" in args.only and args.load != "python":
        cfg.wrk = environment.ensure_wrk(cfg.allow_changes)
        if cfg.wrk is None and args.load == "wrk":
            sys.exit("wrk is not installed (`apt-get install -y wrk`) and --load wrk was given")
        cfg.load = "wrk" if cfg.wrk else "python"
        if cfg.wrk is None:
            log("wrk is unavailable: using the Python load generator (a lower bound)")
    return servers


def run_sections(
    cfg: Config, only: list[str], servers: dict[str, str | None]
) -> tuple[list[Section], float]:
    """Every chosen section, skipped with a reason when its server is absent."""
    runners: dict[str, Callable[[Config], Section]] = {
        "memory": sections.memory,
        "redis": sections.redis,
        "sqlite": sections.sqlite,
        "postgresql": sections.postgresql,
        "http": http_section.http,
        "scaling": sections.scaling,
    }
    results: list[Section] = []
    started = time.monotonic()
    for name in only:
        missing = [servers[n] for n in NEEDS.get(name, ()) if servers.get(n)]
        if missing:
            section = Section(name, status="skipped", reason="; ".join(str(m) for m in missing))
            log(f"[{name}] skipped: {section.reason}")
            results.append(section)
            continue
        log(f"[{name}] running ({cfg.repeat} repetition(s))")
        began = time.monotonic()
        try:
            section = runners[name](cfg)
        except Exception as exc:
            section = Section(name, status="failed", reason=f"{type(exc).__name__}: {exc}")
            log(f"[{name}] FAILED: {section.reason}")
        if section.status == "ok" and name in LIMITS_ROWS:
            log(f"[{name}] Limits v2 rows")
            try:
                LIMITS_ROWS[name](cfg, section)
            except Exception as exc:
                section.notes.append(f"WARNING: Limits v2 rows failed: {type(exc).__name__}: {exc}")
                log(f"[{name}] Limits v2 rows FAILED: {type(exc).__name__}: {exc}")
        section.seconds = time.monotonic() - began
        log(f"[{name}] done in {section.seconds:.0f} s")
        results.append(section)
    return results, time.monotonic() - started


# Limits v2 rows -------------------------------------------------------------------------
# The plan of three limits every row uses: none is ever reached, so every call is granted
# and each row measures the work of deciding and moving three counters instead of one.
THREE_LIMITS = [
    {"rate": {"per_second": 1_000_000, "burst": 1_000_000}},
    {"window": "day", "total": 10**12},
    {"window": "month", "total": 10**13},
]
LIMITS_TARGET, HTTP_LIMITS_TARGET = 0.7, 0.4
WEBHOOKS_TARGET = 0.95


def three_slots() -> tuple[Slot, ...]:
    """The slots a verify of ``THREE_LIMITS`` hands the store besides its day row."""
    month = span(Window.MONTH, datetime.now(UTC), "UTC").period
    return (
        Slot(f"{SERVICE}.rate", RATE_PERIOD, 1_000_000, HARD, 1, interval_us(1_000_000)),
        Slot(f"{SERVICE}.month", month, 10**13, HARD, 1),
    )


def takes_slots(store: Any) -> bool:
    """Whether ``store``'s consume takes a call's other slots (Limits v2) yet."""
    return "extra" in inspect.signature(store.consume).parameters


def pair_names(store: str) -> tuple[str, str]:
    """The two subjects of a store's row: three slots, and the one daily quota."""
    return (
        f"Limits v2: {store} consume, rate + day + month",
        f"Limits v2: {store} consume, one daily quota",
    )


def declare_pair(section: Section, store: str, callers: str) -> tuple[str, str]:
    """Declare a store's pair of store-level subjects (their ratio reported, the target is
    verify's: ``verify_pair``); their names."""
    three, one = pair_names(store)
    section.subject(three, f"{callers}: three slots (THREE_LIMITS) in one atomic consume")
    section.subject(one, f"{callers}: consume(account, service, day, 1, total), as 0.1")
    section.targets.append(Target(three, one))
    return three, one


async def verify_limits(
    url: str,
    cfg: Config,
    three: bool | str,
    fresh: bool,
    hooks: bool = False,
    history: int = 0,
) -> Measurement:
    """``service.verify.verify`` (record cache on, as served) by ``cfg.callers`` callers,
    one account and key each, on a plan of THREE_LIMITS or of one daily quota.

    ``three`` names the workload (``WORKLOADS``; True and False are "three" and "one"):
    ``credits`` is THREE_LIMITS on a priced service, each account with a grant that never
    runs out; ``reserve`` is a reserve (verify with ``"reserve": true``) then a commit of
    the same cost, on one daily quota.
    ``fresh``: the store is new (seed it); else it was seeded by an earlier run (the keys
    are those of ``_VERIFY_KEYS``). ``hooks``: three webhook endpoints are registered and
    the node's delivery loop runs beside the callers, as on a served node.
    ``history``: a new SQLite store also gets that many earlier day rows (``add_history``).
    """
    kind = {True: "three", False: "one"}.get(three, three) if isinstance(three, bool) else three
    import asyncio

    from quotad.domain.clock import SystemClock
    from quotad.service import deliveries, reservations, webhooks
    from quotad.service.context import Context
    from quotad.service.verify import verify
    from quotad.settings import Settings
    from quotad.storage import stores_from_url

    stores = stores_from_url(url)
    await stores.open()
    try:
        settings = Settings(
            _env_file=None,
            store_url=url,
            admin_token="bench-" + "x" * 32,
            webhook_allow_private=True,
            store_timeout_ms=VERIFY_DEADLINE_MS,
        )
        ctx = Context(stores, settings, SystemClock())
        if fresh:
            names = [f"{kind}-{n}" for n in range(cfg.callers)]
            _VERIFY_KEYS[url, kind] = await seed_verify(ctx, kind, names)
            if history:
                add_history(url, names, history)
            for n in range(3 if hooks else 0):
                events = ["quota.threshold", "quota.exceeded"]
                await webhooks.create(ctx, f"http://127.0.0.1:9/hook-{n}", events)
        keys = _VERIFY_KEYS[url, kind]

        async def op(i: int) -> bool:
            return (await verify(ctx, keys[i], SERVICE, 1)).valid

        async def reserve_commit(i: int) -> bool:
            # As the endpoint does it: the verify, then its reservation under the deadline.
            asked = ((SERVICE, 1),)
            _, held = await reservations.verify_and_reserve(ctx, keys[i], asked, 300, None)
            if held is None:
                return False
            await reservations.commit(ctx, held.id, 1)
            return True

        chosen = reserve_commit if kind == "reserve" else op

        sender = asyncio.create_task(deliveries.deliver_forever(ctx)) if hooks else None
        try:
            return await run_callers(chosen, cfg.callers, cfg.seconds, cfg.warmup)
        finally:
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
    finally:
        await stores.close()


async def seed_verify(ctx: Any, kind: str, names: list[str]) -> list[str]:
    """Seed ``verify_limits``' store: the service, a plan named ``kind`` (THREE_LIMITS for
    "three" and "credits", else one daily quota), an account each of ``names`` with a
    key (and, for "credits", a grant that never runs out); the keys, in order."""
    from quotad.domain.limits import parse_limits
    from quotad.domain.models import Overrides, Quota
    from quotad.service import admin, credits

    shape = THREE_LIMITS if kind in ("three", "credits") else {"total": TOTAL}
    price = 1 if kind == "credits" else None  # a micro-credit a unit
    await admin.create_service(ctx, SERVICE, "benchmark", price)
    await admin.create_plan(ctx, kind, {SERVICE: Quota(parse_limits(shape))}, [], "benchmark")
    keys = []
    for name in names:
        await admin.create_account(ctx, name, name, kind, "UTC", Overrides())
        keys.append((await admin.create_key(ctx, name, "bench")).secret)
        if price is not None:
            await credits.grant(ctx, name, 10**15)
    return keys


_VERIFY_KEYS: dict[tuple[str, str], list[str]] = {}
# Each verify still runs under a store deadline, as served (its cost is part of what is
# measured), but a far one: a serving node answers a call past 800 ms with 503, and one
# such call would void the whole subject. The smoke run in CI shares two cores with the
# other test workers, and a Redis verify once took longer than that there.
VERIFY_DEADLINE_MS = 30_000
CREDITS_TARGET, RESERVE_TARGET = 0.6, 0.4
CREDIT_WORKLOADS = ("credits", "reserve", "one")


def credits_pairs(
    cfg: Config,
    section: Section,
    store: str,
    url_for: Callable[[str], tuple[str, bool]],
    probe_for: Callable[[str], CpuProbe] | None = None,
) -> None:
    """Credits' targets (SPEC 10), against verify with one daily quota on the same store
    and callers: verify with credits + THREE_LIMITS >= 0.6x, a reserve + commit pair
    >= 0.4x. ``url_for(workload)`` is the store URL of a run and whether to seed it."""
    callers = f"{cfg.callers} asyncio callers, one account and key each"
    priced = f"Credits: verify on {store}, credits + rate + day + month"
    held = f"Credits: reserve + commit on {store}, one daily quota"
    plain = f"Credits: verify on {store}, one daily quota"
    section.subject(priced, f"{callers}: priced service, a grant each, plan THREE_LIMITS")
    section.subject(held, f"{callers}: verify with reserve, then commit the same cost")
    section.subject(plain, f"{callers}: service verify, plan {{'total': N}}")
    section.targets.append(Target(priced, plain, min_ratio=CREDITS_TARGET))
    section.targets.append(Target(held, plain, min_ratio=RESERVE_TARGET))

    def runner(kind: str) -> Callable[[], Measurement]:
        def run() -> Measurement:
            url, fresh = url_for(kind)
            return run_async(verify_limits(url, cfg, kind, fresh))

        return run

    runners = {priced: runner("credits"), held: runner("reserve"), plain: runner("one")}
    sections.interleave(section, runners, cfg.repeat, probe_for)


def verify_pair(
    cfg: Config,
    section: Section,
    store: str,
    url_for: Callable[[bool], tuple[str, bool]],
    probe_for: Callable[[str], CpuProbe] | None = None,
) -> None:
    """The issue's target: verify with three limits >= 0.7x verify with one daily quota,
    same store and callers. ``url_for(three)`` is the store URL of a run and whether it is
    a new store to seed."""
    callers = f"{cfg.callers} asyncio callers, one account and key each"
    verify_pair_of(
        cfg,
        section,
        (
            f"Limits v2: verify on {store}, rate + day + month",
            f"{callers}: service verify, plan THREE_LIMITS",
        ),
        (
            f"Limits v2: verify on {store}, one daily quota",
            f"{callers}: service verify, plan {{'total': N}}",
        ),
        LIMITS_TARGET,
        url_for,
        lambda url, fresh, three: verify_limits(url, cfg, three, fresh),
        probe_for,
    )


def verify_pair_of(
    cfg: Config,
    section: Section,
    measured: tuple[str, str],
    baseline: tuple[str, str],
    min_ratio: float,
    url_for: Callable[[bool], tuple[str, bool]],
    verify_of: Callable[[str, bool, bool], Awaitable[Measurement]],
    probe_for: Callable[[str], CpuProbe] | None = None,
) -> None:
    """Declare the subject ``measured`` (name, description) against ``baseline`` with
    ``min_ratio``, and measure the two interleaved: each run is ``verify_of(url, fresh,
    is_measured)`` on the store ``url_for(is_measured)`` gives (and whether it is new)."""
    section.subject(*measured)
    section.subject(*baseline)
    section.targets.append(Target(measured[0], baseline[0], min_ratio=min_ratio))

    def runner(is_measured: bool) -> Callable[[], Measurement]:
        def run() -> Measurement:
            url, fresh = url_for(is_measured)
            return run_async(verify_of(url, fresh, is_measured))

        return run

    runners = {measured[0]: runner(True), baseline[0]: runner(False)}
    sections.interleave(section, runners, cfg.repeat, probe_for)


def webhooks_pair(
    cfg: Config,
    section: Section,
    store: str,
    url_for: Callable[[bool], tuple[str, bool]],
    probe_for: Callable[[str], CpuProbe] | None = None,
) -> None:
    """Alerts' target (SPEC 11): verify with three webhook endpoints registered and the
    delivery loop running >= 0.95x verify without, same store, plan and callers.
    ``url_for(hooks)`` is the store URL of a run and whether it is a new store to seed."""
    callers = f"{cfg.callers} asyncio callers, one account and key each, one daily quota"
    verify_pair_of(
        cfg,
        section,
        (
            f"Alerts: verify on {store}, 3 webhook endpoints",
            f"{callers}: 3 endpoints registered, delivery loop running",
        ),
        (
            f"Alerts: verify on {store}, no webhook endpoint",
            f"{callers}: no endpoint, no delivery loop",
        ),
        WEBHOOKS_TARGET,
        url_for,
        lambda url, fresh, hooks: verify_limits(url, cfg, False, fresh, hooks),
        probe_for,
    )


HISTORY_DAYS, HISTORY_TARGET = 200_000, 0.8
HISTORY_SERVICES = 10  # services each account used in the past


def add_history(url: str, accounts: list[str], rows: int) -> None:
    """Give a seeded SQLite store ``rows`` earlier day rows, spread over ``accounts`` and
    ``HISTORY_SERVICES`` past services each, written straight into its file."""
    import sqlite3

    per_account = -(-rows // (len(accounts) * HISTORY_SERVICES))
    yesterday = workloads.today() - timedelta(days=1)
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        db.executemany(
            "INSERT INTO usage_days (account_id, service, day, used, total, rejected)"
            " VALUES (?, ?, ?, 1, 100, 0)",
            (
                (account, f"old-{n}", (yesterday - timedelta(days=back)).isoformat())
                for account in accounts
                for n in range(HISTORY_SERVICES)
                for back in range(per_account)
            ),
        )


def history_pair(
    cfg: Config, section: Section, url_for: Callable[[bool], tuple[str, bool]]
) -> None:
    """SQLite finds a batch's rows by key (``tests/test_sql_lookups.py``): verify on a
    store holding ``HISTORY_DAYS`` earlier day rows >= 0.8x verify on a store holding
    none, same plan and callers. (Before, each consume batch read the whole table.)"""
    callers = f"{cfg.callers} asyncio callers, one account and key each, one daily quota"
    verify_pair_of(
        cfg,
        section,
        (
            f"History: verify on SQLite, {HISTORY_DAYS:,} earlier days stored",
            f"{callers}: {HISTORY_DAYS:,} day rows of earlier days in the file",
        ),
        ("History: verify on SQLite, no earlier day", f"{callers}: a new file"),
        HISTORY_TARGET,
        url_for,
        lambda url, fresh, old: verify_limits(
            url, cfg, False, fresh, history=HISTORY_DAYS if old else 0
        ),
    )


def seeded_once(make: Callable[[Any], str]) -> Callable[[Any], tuple[str, bool]]:
    """A store URL per plan (or workload), new (to seed) on its first run only."""
    made: dict[Any, str] = {}

    def url_for(three: Any) -> tuple[str, bool]:
        if three in made:
            return made[three], False
        made[three] = make(three)
        return made[three], True

    return url_for


async def memory_limits(seconds: float, three: bool) -> Measurement:
    """``MemoryStore.consume`` in memory's loop shape, with or without the other slots."""
    store = workloads.MemoryStore()
    consume = store.consume
    extra = three_slots()
    day, names = workloads.today(), workloads.MEMORY_ACCOUNTS
    batches: list[float] = []
    refused = 0
    gc.collect()
    deadline = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        if three:
            for account in names:
                if not (await consume(account, SERVICE, day, 1, TOTAL, None, None, extra))[0]:
                    refused += 1
        else:
            for account in names:
                if not (await consume(account, SERVICE, day, 1, TOTAL))[0]:
                    refused += 1
        ended = time.perf_counter()
        batches.append(ended - began)
        if ended >= deadline:
            return workloads._from_batches(batches, refused)


def memory_limits_rows(cfg: Config, section: Section) -> None:
    """Memory: three slots vs one daily quota, one coroutine over 1000 accounts."""
    three, one = declare_pair(section, "MemoryStore", "one coroutine, tight loop")
    if not takes_slots(workloads.MemoryStore()):
        section.subjects[three].error = "this store's consume takes no slots yet"
    runners = {
        three: lambda: run_async(memory_limits(cfg.seconds, True)),
        one: lambda: run_async(memory_limits(cfg.seconds, False)),
    }
    sections.interleave(section, runners, cfg.repeat)
    # A memory store lives as long as its process: each run seeds a new one.
    verify_pair(cfg, section, "MemoryStore", lambda three: ("memory://", True))
    webhooks_pair(cfg, section, "MemoryStore", lambda hooks: ("memory://", True))
    credits_pairs(cfg, section, "MemoryStore", lambda kind: ("memory://", True))


async def store_limits(store: Any, names: list[str], cfg: Config, three: bool) -> Measurement:
    """Open ``store``, run ``cfg.callers`` callers (one account each), close it."""
    await store.open()
    day, extra = workloads.today(), three_slots()
    try:
        consume = store.consume

        async def with_slots(i: int) -> bool:
            return bool((await consume(names[i], SERVICE, day, 1, TOTAL, None, None, extra))[0])

        async def daily(i: int) -> bool:
            return bool((await consume(names[i], SERVICE, day, 1, TOTAL))[0])

        op: Callable[[int], Awaitable[bool]] = with_slots if three else daily
        return await run_callers(op, cfg.callers, cfg.seconds, cfg.warmup)
    finally:
        await store.close()


def networked_rows(
    cfg: Config,
    section: Section,
    store: str,
    make: Callable[[], Any],
    probe_for: Callable[[str], CpuProbe] | None = None,
    settle: Callable[[str], None] | None = None,
) -> None:
    """A store's pair over ``cfg.callers`` callers, each run on a store ``make()`` opens."""
    names = workloads.accounts(cfg.callers)
    three, one = declare_pair(section, store, f"{cfg.callers} asyncio callers, one account each")
    if not takes_slots(make()):
        section.subjects[three].error = "this store's consume takes no slots yet"
    runners = {
        three: lambda: run_async(store_limits(make(), names, cfg, True)),
        one: lambda: run_async(store_limits(make(), names, cfg, False)),
    }
    sections.interleave(section, runners, cfg.repeat, probe_for, settle=settle)


def sqlite_limits_rows(cfg: Config, section: Section) -> None:
    """SQLite (batched, the default): three slots vs one daily quota; a fresh file a run."""
    names = workloads.accounts(cfg.callers)
    counter = itertools.count()
    paths: list[Path] = []

    def make() -> Any:
        path = Path(f"/tmp/bench-limits-{cfg.run_id}-{next(counter)}.db")
        paths.append(path)
        run_async(workloads.seed_sql(f"sqlite:///{path}", names))
        return workloads.SqlStore(f"sqlite:///{path}")

    def settle(_: str) -> None:
        while paths:
            sections._remove_sqlite(paths.pop())

    def verify_file(three: bool) -> str:
        path = Path(f"/tmp/bench-verify-{cfg.run_id}-{int(three)}.db")
        paths.append(path)
        return f"sqlite:///{path}"

    def hooks_file(hooks: bool) -> str:
        path = Path(f"/tmp/bench-hooks-{cfg.run_id}-{int(hooks)}.db")
        paths.append(path)
        return f"sqlite:///{path}"

    try:
        networked_rows(cfg, section, "SqlStore SQLite", make, settle=settle)
        verify_pair(cfg, section, "SQLite", seeded_once(verify_file))
        webhooks_pair(cfg, section, "SQLite", seeded_once(hooks_file))

        def history_file(history: bool) -> str:
            path = Path(f"/tmp/bench-history-{cfg.run_id}-{int(history)}.db")
            paths.append(path)
            return f"sqlite:///{path}"

        history_pair(cfg, section, seeded_once(history_file))

        def credits_file(kind: str) -> str:
            path = Path(f"/tmp/bench-credits-{cfg.run_id}-{kind}.db")
            paths.append(path)
            return f"sqlite:///{path}"

        credits_pairs(cfg, section, "SQLite", seeded_once(credits_file))
    finally:
        settle("")


def postgresql_limits_rows(cfg: Config, section: Section) -> None:
    """PostgreSQL (batched): three slots vs one daily quota, in a schema of their own."""
    import psycopg

    names = workloads.accounts(cfg.callers)
    schema = f"bench_{cfg.run_id}_limits"
    url = sections.with_search_path(cfg.postgres_url, schema)
    with psycopg.connect(cfg.postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            run_async(workloads.seed_sql(url, names))
            networked_rows(
                cfg,
                section,
                "SqlStore PostgreSQL",
                lambda: workloads.SqlStore(url),
                lambda _: CpuProbe(names=("postgres",)),
            )
            for three in (True, False):
                admin.execute(f'CREATE SCHEMA "{schema}_v{int(three)}"')

            def verify_schema(three: bool) -> str:
                return sections.with_search_path(cfg.postgres_url, f"{schema}_v{int(three)}")

            verify_pair(
                cfg,
                section,
                "PostgreSQL",
                seeded_once(verify_schema),
                lambda _: CpuProbe(names=("postgres",)),
            )
            for kind in CREDIT_WORKLOADS:
                admin.execute(f'CREATE SCHEMA "{schema}_{kind}"')

            def credits_schema(kind: str) -> str:
                return sections.with_search_path(cfg.postgres_url, f"{schema}_{kind}")

            credits_pairs(
                cfg,
                section,
                "PostgreSQL",
                seeded_once(credits_schema),
                lambda _: CpuProbe(names=("postgres",)),
            )
        finally:
            for three in (True, False):
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}_v{int(three)}" CASCADE')
            for kind in CREDIT_WORKLOADS:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}_{kind}" CASCADE')
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def redis_limits_rows(cfg: Config, section: Section) -> None:
    """Redis: three slots vs one daily quota; the reply keys a run leaves are deleted."""
    names = workloads.accounts(cfg.callers)
    records = Path(f"/tmp/bench-records-{cfg.run_id}-limits.db")
    prefix = f"bench{cfg.run_id}v"
    url = f"{sections._with_query(cfg.redis_url)}prefix={prefix}&records=sqlite:///{records}"
    redis_pid = redis_server_pid(cfg.redis_url)
    watched = {"redis": redis_pid} if redis_pid is not None else {}
    extra: list[Path] = []
    try:
        run_async(workloads.seed_sql(f"sqlite:///{records}", names))
        networked_rows(
            cfg,
            section,
            "RedisCounters",
            lambda: workloads.RedisCounters(url),
            lambda _: CpuProbe(dict(watched)),
            lambda _: sections.delete_redis_keys(cfg.redis_url, f"{prefix}:*:b:*"),
        )

        def verify_store(three: bool) -> str:
            path = Path(f"/tmp/bench-records-{cfg.run_id}-verify{int(three)}.db")
            extra.append(path)
            query = f"prefix={prefix}w{int(three)}&records=sqlite:///{path}"
            return f"{sections._with_query(cfg.redis_url)}{query}"

        verify_pair(
            cfg, section, "Redis", seeded_once(verify_store), lambda _: CpuProbe(dict(watched))
        )

        def credits_store(kind: str) -> str:
            path = Path(f"/tmp/bench-records-{cfg.run_id}-credits-{kind}.db")
            extra.append(path)
            query = f"prefix={prefix}c{kind}&records=sqlite:///{path}"
            return f"{sections._with_query(cfg.redis_url)}{query}"

        credits_pairs(
            cfg, section, "Redis", seeded_once(credits_store), lambda _: CpuProbe(dict(watched))
        )
    finally:
        for path in extra:
            sections._remove_sqlite(path)
        sections.delete_redis_keys(cfg.redis_url, f"{prefix}*")
        sections._remove_sqlite(records)


def provision_plan(
    server: http_section.Server, token: str, names: list[str], quotas: Any
) -> list[Any]:
    """``http_section.provision`` with the plan's ``quotas`` given: the verify requests."""
    base = server.base
    steps: list[tuple[str, Any]] = [
        ("/admin/v1/services", {"name": SERVICE, "description": "benchmark"}),
        ("/admin/v1/plans", {"id": workloads.PLAN, "quotas": {SERVICE: quotas}}),
        *[("/admin/v1/accounts", {"id": n, "name": n, "plan": workloads.PLAN}) for n in names],
    ]
    for path, body in steps:
        status, answer = http_section._request(base, "POST", path, token, body)
        if status != 201:
            raise RuntimeError(f"{server.name}: POST {path} answered {status}: {answer}")
    requests = []
    for name in names:
        path = f"/admin/v1/accounts/{name}/keys"
        status, answer = http_section._request(base, "POST", path, token, {})
        if status != 201:
            raise RuntimeError(f"{server.name}: creating a key answered {status}: {answer}")
        requests.append(http_section.verify_request(token, name, answer["key"]))
    return requests


def http_limits_rows(cfg: Config, section: Section) -> None:
    """HTTP: verify on the memory store with three limits vs plain verify and the bare app."""
    three = "Limits v2: quotad serve, memory store, rate + day + month"
    one = "Limits v2: quotad serve, memory store, one daily quota"
    bare = "Limits v2: bare ASGI app on uvicorn"
    section.subject(three, "POST /v1/verify, the plan THREE_LIMITS, through the real app")
    section.subject(one, "POST /v1/verify, the plan {'total': N}, a server of its own")
    section.subject(bare, "the bare ASGI app, measured with these two")
    section.targets += [
        Target(three, bare, min_ratio=HTTP_LIMITS_TARGET),
        Target(three, one, min_ratio=LIMITS_TARGET),
    ]
    token = f"bench-operator-{cfg.run_id}-token"
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-limits-{cfg.run_id}-"))
    names = workloads.accounts(cfg.callers)
    servers: dict[str, http_section.Server] = {}
    requests: dict[str, list[Any]] = {}
    try:
        plans = {three: THREE_LIMITS, one: {"total": TOTAL}}
        for name, quotas in plans.items():
            with http_section._recorded(section, name):
                servers[name] = http_section.start_quotad(
                    f"limits-{len(servers)}", "memory://", token, workdir
                )
                requests[name] = provision_plan(servers[name], token, names, quotas)
                http_section.check(servers[name], requests[name][0], quotad=True)
        with http_section._recorded(section, bare):
            servers[bare] = http_section.start_peer(
                "limits-bare", "bare", workdir, cfg.redis_url, f"bench{cfg.run_id}vh"
            )
            requests[bare] = requests.get(one) or requests.get(three) or []
            if not requests[bare]:
                raise RuntimeError("no quotad server to take the requests from")
        live = [name for name in servers if section.subjects[name].error is None]
        for name in live:  # a warm-up, not counted
            http_section.load(cfg, servers[name], requests[name], cfg.callers, 1)

        def runner(name: str) -> Callable[[], Measurement]:
            def run() -> Measurement:
                result = http_section.load(
                    cfg, servers[name], requests[name], cfg.callers, cfg.http_seconds
                )
                return http_section._measurement(section, name, result)

            return run

        sections.interleave(
            section,
            {name: runner(name) for name in live},
            cfg.repeat,
            lambda name: CpuProbe({"server": servers[name].process.pid}),
            unit="req/s",
        )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


LIMITS_ROWS: dict[str, Callable[[Config, Section], None]] = {
    "memory": memory_limits_rows,
    "sqlite": sqlite_limits_rows,
    "postgresql": postgresql_limits_rows,
    "redis": redis_limits_rows,
    "http": http_limits_rows,
}


def machine_text(machine: dict[str, Any]) -> str:
    """The machine, as lines under the table."""
    pg = machine.get("postgresql") or {}
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        f"- date: {machine['date']}",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; {machine['platform']}",
        f"- Python {machine['python']}; load average at start: {machine['load_average_at_start']}",
        f"- Redis {machine.get('redis') or 'n/a'}; PostgreSQL "
        f"{pg.get('server_version', 'n/a')} (synchronous_commit={pg.get('synchronous_commit')}, "
        f"fsync={pg.get('fsync')}); {machine.get('wrk') or 'wrk n/a'}",
        f"- packages: {packages}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print, write the JSON; exit 0 unless a section failed outright."""
    args = parse_args(argv)
    cfg = build_config(args)
    from quotad import logs

    logs.configure("error")  # the stores' logs would drown the progress lines
    begun = time.monotonic()
    servers = prepare(cfg, args)
    machine = environment.machine(cfg.redis_url, cfg.postgres_url, cfg.wrk or shutil.which("wrk"))
    results, _ = run_sections(cfg, args.only, servers)
    total = time.monotonic() - begun
    rows = table_rows(results)
    notes = [note for section in results for note in section.notes]
    document = {
        "machine": machine,
        "options": {
            "repeat": cfg.repeat,
            "seconds": cfg.seconds,
            "warmup": cfg.warmup,
            "http_seconds": cfg.http_seconds,
            "callers": cfg.callers,
            "load_generator": cfg.load,
            "quick": args.quick,
            "sections": args.only,
        },
        "total_seconds": round(total, 1),
        "sections": {section.name: section.as_json() for section in results},
        "table": rows,
        "targets": [
            {"section": section.name, **target.evaluate(section.subjects)}
            for section in results
            if section.status == "ok"
            for target in section.targets
            if target.min_ratio is not None or target.max_p99_ms is not None
        ],
    }
    targets = targets_table(results)
    busy = [
        row["others_cores"]
        for row in document["targets"]
        if row["others_cores"] is not None and row["others_cores"] > BUSY_CORES
    ]
    if busy:
        notes.append(
            f"WARNING: other programs kept up to {max(busy):.2f} cores busy during "
            f"{len(busy)} of the targets' runs (column 'others'): these ratios move with "
            "that contention (docs/performance.md); quote a run on a quiet machine."
        )
    document["notes"] = notes
    print("## Notes\n")
    print("\n".join(f"- {note}" for note in notes) or "- (none)")
    print(
        f"\n## Results (medians of {cfg.repeat} repetition(s); ratio = the median of each "
        "repetition's quotad ops/s ÷ peer ops/s)\n"
    )
    print(markdown_table(rows))
    print("\n## Machine\n")
    print(machine_text(machine))
    print(f"\nTotal run time: {total:.0f} s")
    if total > TIME_BUDGET_S:
        print(f"WARNING: over the {TIME_BUDGET_S} s budget")
    print("\n## JSON\n")
    text = json.dumps(document, indent=2, default=str)
    print(text)
    print(
        f"\n## Targets ({cfg.repeat} repetition(s); others = cores busy with other programs; "
        "CPU/op = the peer's CPU per operation over quotad's)\n"
    )
    print(targets)
    warning = f"\n{notes[-1]}" if busy else ""
    print(warning)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    log(f"\n{targets}\n{warning}\nwrote {args.json}; total {total:.0f} s")
    return 1 if any(s.status == "failed" for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
