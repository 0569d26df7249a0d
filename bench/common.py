"""What every benchmark section shares: one measurement, percentiles, the caller loop.

A ``Measurement`` is one timed run of one subject (one repetition). ``run_callers`` is
the closed-loop driver used by every "N concurrent callers" workload: each caller
awaits one operation, times it and starts the next at once, until the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import statistics
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import Any, TypeVar

from cpu import CpuProbe

# Every consume in every section asks for 1 unit of a total no run can reach, so every
# call is granted and every subject does the same work (a refusal would be cheaper).
# Below 10**14: Redis's Lua prints larger numbers in exponent form ("1e+15").
TOTAL = 10**12
SERVICE = "bench"


@dataclass
class Measurement:
    """One timed run of one subject.

    ``ops_per_s`` is completed operations divided by wall-clock seconds (including the
    last in-flight operations after the deadline). ``p50_ms``/``p99_ms`` are per-operation
    latencies in milliseconds, or ``None`` where the subject cannot report them.
    ``refused`` counts operations that were answered but not granted (expected: 0).
    ``cpu`` says who kept the cores busy meanwhile, the subject and everyone else.
    """

    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    ops: int
    seconds: float
    refused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    rep: int = 0  # the repetition it belongs to (1-based): ratios pair runs of one rep
    cpu: dict[str, Any] = field(default_factory=dict)  # where the CPU went (see cpu.py)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest-rank."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of per-operation latencies given in seconds."""
    values = sorted(seconds)
    return percentile(values, 50) * 1000, percentile(values, 99) * 1000


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the values that are present, or ``None``."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


Operation = Callable[[int], Awaitable[bool]]
T = TypeVar("T")

# The CPU probe of the run in progress, set by ``sections.interleave``: ``run_callers``
# restarts it for the timed phase, so that store set-up and warm-up, which take longer
# on a busy machine, do not count in a subject's CPU per operation.
running_probe: list[CpuProbe] = []


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (the loop ``quotad serve`` runs on, via
    uvicorn), else on asyncio's own loop; every in-process subject, quotad's and its
    peers', runs on the same one."""
    runner: Callable[[Coroutine[Any, Any, T]], T] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    return runner(main)


async def run_callers(
    op: Operation, callers: int, seconds: float, warmup: float, keep_every: int = 1
) -> Measurement:
    """``callers`` concurrent closed-loop callers of ``op(caller_index)`` for ``seconds``.

    ``op`` returns whether the operation was granted. A warm-up phase of ``warmup``
    seconds runs first (connections opened, counters loaded, statements prepared) and is
    not counted. ``keep_every`` keeps one latency sample in that many (all by default).
    """
    if warmup > 0:
        await timed_phase(op, callers, warmup, keep_every)
    # A collection now, rather than in the middle of the timed phase of this subject
    # because the previous subject left garbage behind.
    gc.collect()
    probe = running_probe[-1].start() if running_probe else None
    measured = await timed_phase(op, callers, seconds, keep_every)
    if probe is not None:
        measured.cpu = probe.stop()
    return measured


async def timed_phase(
    op: Operation,
    callers: int,
    seconds: float,
    keep_every: int = 1,
    samples: list[float] | None = None,
) -> Measurement:
    """One closed-loop phase of ``callers`` concurrent callers for ``seconds``.

    Latencies (seconds) go to ``samples`` when given, so a caller can merge them with
    other processes' samples; the measurement's own p50/p99 are computed either way.
    """
    latencies: list[float] = [] if samples is None else samples
    counts = [0] * callers
    refused = 0
    start = perf_counter()
    deadline = start + seconds

    async def caller(index: int) -> None:
        nonlocal refused
        keep = latencies.append
        done = 0
        while True:
            began = perf_counter()
            if began >= deadline:
                break
            granted = await op(index)
            if done % keep_every == 0:
                keep(perf_counter() - began)
            done += 1
            if not granted:
                refused += 1
        counts[index] = done

    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = perf_counter() - start
    ops = sum(counts)
    p50, p99 = latency_summary(latencies) if latencies else (None, None)
    return Measurement(ops / elapsed, p50, p99, ops, elapsed, refused)


def fmt_ops(value: float | None) -> str:
    """Operations per second with thousands separators."""
    return "—" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds with as many decimals as the magnitude needs."""
    if value is None:
        return "—"
    if value < 0.01:  # sub-10 µs: three significant digits
        return f"{value:.3g}"
    if value < 10:
        return f"{value:.3f}"
    return f"{value:.1f}"


@dataclass
class Config:
    """One harness run's settings (see ``run.py --help``)."""

    repeat: int
    seconds: float  # one in-process measurement
    warmup: float  # untimed run before each in-process measurement
    http_seconds: int  # one wrk run (wrk takes whole seconds)
    callers: int  # concurrent callers / connections
    redis_url: str
    postgres_url: str
    allow_changes: bool  # install packages, start servers
    load: str  # "wrk" or "python"
    wrk: str | None
    run_id: str  # unique in names of keys, schemas and files, so runs never collide
    scaling_processes: tuple[int, ...] = (1, 2, 4)
    peers: dict[str, str | None] = field(default_factory=dict)  # peer module -> why missing
