"""Section 5: ``POST /v1/verify`` over HTTP, quotad serve vs two peers on uvicorn.

Servers: ``quotad serve`` on the memory store and on a SQLite file, a bare ASGI app, and
FastAPI + slowapi on Redis, each one process on 127.0.0.1, started once and loaded in
turn (interleaved repetitions). Every server gets the same request shape: a JSON body
``{"key", "service", "cost": 1}`` with the operator token, rotating over 50 accounts'
keys, 50 connections. Then quotad (memory) is loaded at half its median peak rate to
read its p99 latency there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import workloads
from common import SERVICE, TOTAL, Config, Measurement, fmt_ops
from cpu import CpuProbe, redis_server_pid
from environment import log, redis_reason
from http_load import HttpRequest, LoadResult, run_python, run_wrk
from report import Section, Target
from sections import delete_redis_keys, interleave

HERE = Path(__file__).resolve().parent
LATENCY_CONNECTIONS = 20


@dataclass
class Server:
    """One HTTP server process on 127.0.0.1."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Terminate it (then kill it if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(
    base: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def start_server(name: str, command: list[str], env: dict[str, str], workdir: Path) -> Server:
    """Start ``command`` (which must take its port from ``{port}``) and wait until it answers.

    Tried twice: the free port picked can be taken by another program before the server
    binds it, and a loaded machine can make a first start miss its deadline.
    """
    try:
        return _start_once(name, command, env, workdir)
    except RuntimeError as first:
        log(f"  [http] {name}: retrying once on another port ({str(first).splitlines()[0]})")
        return _start_once(name, command, env, workdir)


def _start_once(name: str, command: list[str], env: dict[str, str], workdir: Path) -> Server:
    port = _free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,  # not the repo: a developer's .env there must not change the server
        )
    server = Server(name, process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{server.base}/healthz", timeout=2).close()
        except urllib.error.HTTPError:
            return server  # answered, if only with 404: it is up
        except OSError:
            time.sleep(0.2)
            continue
        return server
    server.stop()
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{name} did not start:\n{tail}")


def _quotad_command() -> list[str]:
    script = Path(sys.executable).with_name("quotad")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from quotad.cli import main; main()"]


def start_quotad(
    name: str, store: str, token: str, workdir: Path, settings: dict[str, str] | None = None
) -> Server:
    """``quotad serve --store <store>`` with the operator token, logging warnings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAD_")}
    env |= {"QUOTAD_ADMIN_TOKEN": token, "QUOTAD_LOG_LEVEL": "warning", **(settings or {})}
    command = [*_quotad_command(), "serve", "--store", store, "--host", "127.0.0.1"]
    return start_server(name, [*command, "--port", "{port}"], env, workdir)


def start_peer(name: str, kind: str, workdir: Path, redis_url: str, key_prefix: str) -> Server:
    """One of ``peers.py``'s servers."""
    command = [sys.executable, str(HERE / "peers.py"), kind, "--port", "{port}"]
    command += ["--redis", redis_url, "--key-prefix", key_prefix]
    return start_server(name, command, dict(os.environ), workdir)


def provision(server: Server, token: str, names: list[str]) -> list[HttpRequest]:
    """Service, plan, accounts and one key each, through the operator API; the requests."""
    base = server.base
    steps: list[tuple[str, Any]] = [
        ("/admin/v1/services", {"name": SERVICE, "description": "benchmark"}),
        ("/admin/v1/plans", {"id": workloads.PLAN, "quotas": {SERVICE: {"total": TOTAL}}}),
    ]
    steps += [("/admin/v1/accounts", {"id": n, "name": n, "plan": workloads.PLAN}) for n in names]
    for path, body in steps:
        status, answer = _request(base, "POST", path, token, body)
        if status != 201:
            raise RuntimeError(f"{server.name}: POST {path} answered {status}: {answer}")
    requests = []
    for name in names:
        status, answer = _request(base, "POST", f"/admin/v1/accounts/{name}/keys", token, {})
        if status != 201:
            raise RuntimeError(f"{server.name}: creating a key answered {status}: {answer}")
        requests.append(verify_request(token, name, answer["key"]))
    return requests


def verify_request(token: str, account: str, key: str) -> HttpRequest:
    """A verify call; ``X-Bench-Account`` is slowapi's rate-limit key (quotad ignores it)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "X-Bench-Account": account,
    }
    body = json.dumps({"key": key, "service": SERVICE, "cost": 1}).encode()
    return HttpRequest("POST", "/v1/verify", headers, body)


def check(server: Server, request: HttpRequest, quotad: bool) -> Any:
    """One request by hand: 200 (and for quotad a granted verdict), else an error."""
    status, answer = _request(
        server.base,
        request.method,
        request.path,
        request.headers["Authorization"].removeprefix("Bearer "),
        json.loads(request.body),
    )
    if status != 200 or (quotad and not (isinstance(answer, dict) and answer.get("valid"))):
        raise RuntimeError(f"{server.name}: verify answered {status}: {answer}")
    return answer


def load(
    cfg: Config,
    server: Server,
    requests: list[HttpRequest],
    connections: int,
    seconds: int,
    delay_ms: float | None = None,
) -> LoadResult:
    """One load run with wrk (or the Python fallback)."""
    if cfg.load == "wrk" and cfg.wrk is not None:
        return run_wrk(cfg.wrk, server.base, requests, connections, seconds, delay_ms)
    return run_python(server.base, requests, connections, seconds, delay_ms)


def _measurement(section: Section, name: str, result: LoadResult) -> Measurement:
    """A load run as a measurement (answers other than 2xx count as refused); socket
    errors go to the notes."""
    extra = {"socket_errors": result.socket_errors, "generator": result.generator}
    problems = [f"{n} socket {kind} errors" for kind, n in result.socket_errors.items() if n]
    if problems:
        section.notes.append(f"WARNING: {name}: {', '.join(problems)}")
    return Measurement(
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.requests,
        result.seconds,
        result.non_2xx,
        extra,
    )


@contextlib.contextmanager
def _recorded(section: Section, name: str) -> Iterator[None]:
    """Record a failure of ``name``'s server on its subject instead of raising it."""
    try:
        yield
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        section.subjects[name].error = f"{type(exc).__name__}: {exc}"
        log(f"  [http] {name}: FAILED: {section.subjects[name].error}")


MEMORY, SQLITE = "quotad serve, memory store", "quotad serve, SQLite store"
BARE, SLOW = "bare ASGI app on uvicorn", "FastAPI + slowapi (Redis) on uvicorn"
PACED = "quotad serve, memory store, at 50% of peak"
# Plain verify without the store deadline (QUOTAD_STORE_TIMEOUT_MS=0, the 0.1 default):
# what bounding every verify by a deadline costs.
UNBOUNDED = "quotad serve, memory store, no store timeout"


def _declare(cfg: Config) -> Section:
    section = Section("http")
    section.subject(MEMORY, "quotad serve --store memory://, POST /v1/verify")
    section.subject(SQLITE, "quotad serve --store sqlite:///… (WAL, synchronous=FULL)")
    section.subject(BARE, "reads the body, answers a small JSON: the server's ceiling")
    section.subject(SLOW, "POST route, pydantic body, @limiter.limit('1000000000/day')")
    section.subject(PACED, f"{LATENCY_CONNECTIONS} connections paced to half of the median peak")
    section.subject(UNBOUNDED, "QUOTAD_STORE_TIMEOUT_MS=0: verify without its deadline")
    section.targets = [
        Target(MEMORY, BARE, min_ratio=0.5),
        Target(MEMORY, SLOW, min_ratio=3),
        Target(SQLITE, BARE, min_ratio=0.5),
        Target(SQLITE, SLOW, min_ratio=3),
        Target(PACED, max_p99_ms=5),
        Target(MEMORY, UNBOUNDED),  # the deadline's cost, reported
    ]
    generator = (
        f"wrk -t1 -c{cfg.callers} -d{cfg.http_seconds}s --latency (Lua: rotating requests)"
        if cfg.load == "wrk"
        else "the Python asyncio load generator (wrk unavailable or --load python), itself "
        "CPU-bound on the same cores: numbers are lower bounds"
    )
    section.notes.append(
        f"http: each server one process on 127.0.0.1, run as quotad serve runs quotad "
        f"(quotad.api.server: uvicorn, uvloop, httptools, answers written in one piece); load: "
        f"{generator}; {cfg.callers} connections; requests/s = answers / duration; p50/p99 "
        "from the load generator, measured from a request's write to its answer."
    )
    return section


def _start(
    cfg: Config,
    section: Section,
    servers: dict[str, Server],
    workdir: Path,
    token: str,
    key_prefix: str,
) -> dict[str, list[HttpRequest]]:
    """Start, provision and check every server; the requests each one is loaded with.

    quotad on the memory store is the section's reference: without it there is nothing
    to compare, so its failure fails the section. Any other server's failure is recorded
    on its subject and the rest go on.
    """
    names = workloads.accounts(cfg.callers)
    servers[MEMORY] = start_quotad("quotad-memory", "memory://", token, workdir)
    requests = {MEMORY: provision(servers[MEMORY], token, names)}
    starters: dict[str, Callable[[], Server]] = {
        SQLITE: lambda: start_quotad(
            "quotad-sqlite", f"sqlite:///{workdir}/http.db", token, workdir
        ),
        UNBOUNDED: lambda: start_quotad(
            "quotad-unbounded", "memory://", token, workdir, {"QUOTAD_STORE_TIMEOUT_MS": "0"}
        ),
        BARE: lambda: start_peer("bare", "bare", workdir, cfg.redis_url, key_prefix),
        SLOW: lambda: start_peer("slowapi", "slowapi", workdir, cfg.redis_url, key_prefix),
    }
    slow_reason = cfg.peers.get("slowapi") or redis_reason(cfg.redis_url)
    if slow_reason is not None:
        section.subjects[SLOW].error = slow_reason
        del starters[SLOW]
    for name, starter in starters.items():
        with _recorded(section, name):
            servers[name] = starter()
            if name in (SQLITE, UNBOUNDED):
                requests[name] = provision(servers[name], token, names)
    for name, server in servers.items():
        # The peers get quotad's requests: the same bytes, their keys meaningless to them.
        wanted = requests.get(name, requests[MEMORY])
        with _recorded(section, name):
            check(server, wanted[0], quotad=name in (MEMORY, SQLITE, UNBOUNDED))
            requests[name] = wanted
    return requests


def _measure(
    cfg: Config,
    section: Section,
    servers: dict[str, Server],
    requests: dict[str, list[HttpRequest]],
) -> None:
    """A warm-up per server, then the interleaved repetitions."""
    live = [name for name in servers if section.subjects[name].error is None]
    for name in live:
        with _recorded(section, name):
            load(cfg, servers[name], requests[name], cfg.callers, 1)  # not counted
    redis_pid = redis_server_pid(cfg.redis_url)

    def probe_for(name: str) -> CpuProbe:
        watched = {"server": servers[name].process.pid}
        if redis_pid is not None:
            watched["redis"] = redis_pid  # slowapi's storage
        return CpuProbe(watched)

    def runner(name: str) -> Callable[[], Measurement]:
        def run() -> Measurement:
            result = load(cfg, servers[name], requests[name], cfg.callers, cfg.http_seconds)
            return _measurement(section, name, result)

        return run

    runners = {name: runner(name) for name in live if section.subjects[name].error is None}
    interleave(section, runners, cfg.repeat, probe_for, unit="req/s")
    if section.subjects[MEMORY].error is not None:
        raise RuntimeError(f"{MEMORY}: {section.subjects[MEMORY].error}")


def http(cfg: Config) -> Section:
    """The HTTP section (see the module docstring)."""
    section = _declare(cfg)
    token = f"bench-operator-{cfg.run_id}-token"
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-http-{cfg.run_id}-"))
    key_prefix = f"bench{cfg.run_id}h"
    servers: dict[str, Server] = {}
    try:
        requests = _start(cfg, section, servers, workdir, token, key_prefix)
        _measure(cfg, section, servers, requests)
        with _recorded(section, PACED):
            _paced(cfg, section, servers[MEMORY], requests[MEMORY], MEMORY, PACED)
        for name in (MEMORY, SQLITE):
            if section.subjects[name].error is not None:
                continue
            answer = check(servers[name], requests[name][0], quotad=True)
            section.notes.append(
                f"{name}: after the runs, account {workloads.accounts(1)[0]} had used "
                f"{answer.get('used')} units (every verify consumed)."
            )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if redis_reason(cfg.redis_url) is None:
            delete_redis_keys(cfg.redis_url, f"*{key_prefix}*")
    return section


def _paced(
    cfg: Config,
    section: Section,
    server: Server,
    requests: list[HttpRequest],
    peak_name: str,
    name: str,
) -> None:
    """p99 at half of quotad's median peak: paced connections, the pause calibrated once."""
    peak = section.subjects[peak_name].ops
    if not peak:
        section.subjects[name].error = "no peak throughput to take half of"
        return
    target = peak / 2
    connections = LATENCY_CONNECTIONS
    cycle_ms = connections * 1000 / target  # each connection's period at the target rate
    # A connection's period is its pause plus the request's own time: one probe run
    # measures the latter, and the pause is shortened by it.
    probe = load(cfg, server, requests, connections, max(1, cfg.http_seconds // 2), cycle_ms)
    request_ms = max(0.0, connections * 1000 / probe.rps - cycle_ms)
    delay_ms = max(0.0, cycle_ms - request_ms)
    section.notes.append(
        f"{name}: target {fmt_ops(target)} req/s (half of the median peak), "
        f"{connections} connections, a pause of {delay_ms:.2f} ms before each request "
        f"(probe: {fmt_ops(probe.rps)} req/s with {cycle_ms:.2f} ms); "
        "ops/s is the rate achieved."
    )
    probe = CpuProbe({"server": server.process.pid})
    interleave(
        section,
        {
            name: lambda: _measurement(
                section,
                name,
                load(cfg, server, requests, connections, cfg.http_seconds, delay_ms),
            )
        },
        cfg.repeat,
        lambda _: probe,
        unit="req/s",
    )
