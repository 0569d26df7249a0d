"""HTTP load: wrk when installed, else a small asyncio load generator.

Both are closed-loop: each connection sends a request, waits for its answer, and sends
the next (after ``delay_ms`` when a rate is asked for). Latency is measured from a
request's write to its answer, so it does not include the time a request would have
waited had it been sent on a fixed schedule (no coordinated-omission correction): at a
rate well below the server's peak, as used here, the two differ little.

wrk reports through a Lua ``done()`` hook that prints one ``BENCH-JSON`` line with the
exact request count, duration, error counters and latency percentiles, instead of the
rounded human-readable summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

from common import latency_summary, run_async


@dataclass(frozen=True)
class HttpRequest:
    """One request of the rotation a load run cycles through."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LoadResult:
    """One load run: throughput, latency, and everything that went wrong."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # answers with status >= 400 (wrk: "Non-2xx or 3xx responses")
    socket_errors: dict[str, int] = field(default_factory=dict)
    generator: str = "wrk"


def _lua_string(text: str) -> str:
    # A long bracket needs no escaping; pick a level that the text does not contain.
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def wrk_script(requests: list[HttpRequest], delay_ms: float | None) -> str:
    """The Lua script: rotate over ``requests``, optionally pace, report as JSON."""
    rows = []
    for request in requests:
        headers = ", ".join(
            # "[ [[k]] ]": without the spaces "[[[" would open a long string.
            f"[ {_lua_string(k)} ] = {_lua_string(v)}"
            for k, v in request.headers.items()
        )
        rows.append(
            f"  {{{_lua_string(request.method)}, {_lua_string(request.path)}, "
            f"{{{headers}}}, {_lua_string(request.body.decode())}}},"
        )
    lines = [
        "local specs = {",
        *rows,
        "}",
        "local prepared = {}",
        "local n = 0",
        "function init(args)",
        "  for i, s in ipairs(specs) do prepared[i] = wrk.format(s[1], s[2], s[3], s[4]) end",
        "end",
        "function request()",
        "  n = n % #prepared + 1",
        "  return prepared[n]",
        "end",
    ]
    if delay_ms is not None:
        # wrk truncates delay() to whole milliseconds; rounding at random keeps the
        # average pause at exactly delay_ms, so the offered rate is the one asked for.
        lines += [
            f"local mean = {delay_ms:.6f}",
            "math.randomseed(os.time())",
            "function delay()",
            "  local d = math.floor(mean)",
            "  if math.random() < mean - d then d = d + 1 end",
            "  return d",
            "end",
        ]
    lines += [
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        '  io.write(string.format(\'BENCH-JSON {"requests": %.0f, "duration_us": %.0f, \'',
        '    .. \'"status": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, \'',
        '    .. \'"timeout": %.0f, "p50_us": %.0f, "p99_us": %.0f}\\n\',',
        "    summary.requests, summary.duration, e.status, e.connect, e.read, e.write,",
        "    e.timeout, latency:percentile(50), latency:percentile(99)))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def run_wrk(
    wrk: str,
    base_url: str,
    requests: list[HttpRequest],
    connections: int,
    seconds: int,
    delay_ms: float | None = None,
) -> LoadResult:
    """``wrk -t1 -c<connections> -d<seconds>s --latency -s <script>`` against ``base_url``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-", delete=False) as f:
        f.write(wrk_script(requests, delay_ms))
        script = Path(f.name)
    try:
        command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
        done = subprocess.run(
            [*command, base_url + requests[0].path],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        script.unlink(missing_ok=True)
    match = re.search(r"^BENCH-JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data: dict[str, float] = json.loads(match.group(1))
    elapsed = data["duration_us"] / 1e6
    return LoadResult(
        requests=int(data["requests"]),
        seconds=elapsed,
        rps=data["requests"] / elapsed,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non_2xx=int(data["status"]),
        socket_errors={k: int(data[k]) for k in ("connect", "read", "write", "timeout")},
        generator="wrk",
    )


# The fallback ---------------------------------------------------------------------
def _raw(request: HttpRequest, host: str, port: int) -> bytes:
    head = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    head.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", lowered)
    if length is not None:
        await reader.readexactly(int(length.group(1)))
    elif b"transfer-encoding: chunked" in lowered:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _python_load(
    host: str,
    port: int,
    requests: list[HttpRequest],
    connections: int,
    seconds: float,
    delay_ms: float | None,
) -> LoadResult:
    raw = [_raw(r, host, port) for r in requests]
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0}
    non_2xx = 0
    start = perf_counter()
    deadline = start + seconds

    async def connection(index: int) -> None:
        nonlocal non_2xx
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors["connect"] += 1
            return
        turn = index
        try:
            while perf_counter() < deadline:
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                began = perf_counter()
                writer.write(raw[turn % len(raw)])
                turn += 1
                status = await _read_response(reader)
                latencies.append(perf_counter() - began)
                if status >= 400:
                    non_2xx += 1
        except (OSError, asyncio.IncompleteReadError):
            errors["read"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    elapsed = perf_counter() - start
    p50, p99 = latency_summary(latencies) if latencies else (0.0, 0.0)
    return LoadResult(len(latencies), elapsed, len(latencies) / elapsed, p50, p99, non_2xx, errors)


def run_python(
    base_url: str,
    requests: list[HttpRequest],
    connections: int,
    seconds: float,
    delay_ms: float | None = None,
) -> LoadResult:
    """The asyncio fallback: slower than wrk, so it may be the bottleneck (said in the notes)."""
    match = re.match(r"http://([^:/]+):(\d+)", base_url)
    if match is None:
        raise ValueError(f"not an http://host:port URL: {base_url}")
    loader = _python_load(
        match.group(1), int(match.group(2)), requests, connections, seconds, delay_ms
    )
    result = run_async(loader)
    result.generator = "python"
    return result
