"""Real processes for the embedding tests: quotad servers, example apps, proxies, upstreams.

Each process writes to a log file (never a pipe), is polled until it answers, and is
stopped and reaped afterwards, so no test leaves a process or an open file behind.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from quotad.domain.models import Limit, Overrides, Quota
from quotad.errors import Conflict
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "embedding-operator-token"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def probed_cli(probe: str, out: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``quotad *argv`` in a fresh interpreter under ``probe``: Python that takes the
    path ``out`` (where it writes what it saw) as its first argument and runs the command."""
    return subprocess.run(
        [sys.executable, "-c", probe, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    """A started process and where it answers."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def output(self) -> str:
        """What the process wrote so far (the end of it)."""
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Spec:
    """A process to start: ``argv --host 127.0.0.1 --port port``, ready once a path answers."""

    argv: list[str]
    name: str
    ready_path: str = "/healthz"
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        """Where it will answer (known before it starts, so others can be pointed at it)."""
        return f"http://127.0.0.1:{self.port}"


def _start(spec: Spec, workdir: Path) -> Running:
    log_path = workdir / f"{spec.name}.log"
    environment = {
        **os.environ,
        "QUOTAD_ADMIN_TOKEN": ADMIN_TOKEN,
        "QUOTAD_LOG_LEVEL": "warning",
        "QUOTAD_RATE_LIMIT_PER_SECOND": "1000",
        "QUOTAD_RATE_LIMIT_BURST": "1000",
        **spec.env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*spec.argv, "--host", "127.0.0.1", "--port", str(spec.port)],
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Running(process, spec.base, log_path)


def _wait_ready(handle: Running, spec: Spec, deadline: float) -> None:
    while True:
        if handle.process.poll() is not None:
            pytest.fail(f"{spec.name} exited with {handle.process.returncode}: {handle.output()}")
        try:
            if httpx2.get(handle.base + spec.ready_path, timeout=1).status_code < 500:
                return
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{spec.name} did not answer {spec.ready_path}: {handle.output()}")
        time.sleep(0.05)


def _stop(handle: Running) -> None:
    handle.process.terminate()
    try:
        handle.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        handle.process.kill()
        handle.process.wait(timeout=10)


@contextmanager
def running_all(workdir: Path, *specs: Spec) -> Iterator[list[Running]]:
    """Start every process at once, yield when all answer, stop them all afterwards."""
    handles: list[Running] = []
    try:
        for spec in specs:
            handles.append(_start(spec, workdir))
        deadline = time.monotonic() + 60
        for handle, spec in zip(handles, specs, strict=True):
            _wait_ready(handle, spec, deadline)
        yield handles
    finally:
        for handle in handles:
            _stop(handle)


@contextmanager
def running(
    argv: list[str], workdir: Path, name: str, ready_path: str = "/healthz", **env: str
) -> Iterator[Running]:
    """Start one process (see ``running_all``)."""
    with running_all(workdir, Spec(argv, name, ready_path, env)) as [handle]:
        yield handle


def quotad_spec(store_url: str) -> Spec:
    """``quotad serve`` on ``store_url``."""
    return Spec([str(BIN / "quotad"), "serve", "--store", store_url], "quotad")


@contextmanager
def quotad_serve(store_url: str, workdir: Path) -> Iterator[Running]:
    """``quotad serve`` on ``store_url``."""
    with running_all(workdir, quotad_spec(store_url)) as [handle]:
        yield handle


def memory_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in KiB, from ``/proc``."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def noon_zone() -> str:
    """A fixed-offset zone where it is now near noon, so no test straddles a local midnight."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. 12, all valid Etc/GMT zones
    if offset == 0:
        return "UTC"
    # POSIX sign convention: Etc/GMT-5 is five hours ahead of UTC.
    return f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}"


# Provisioning straight into a store (the embedded mode has no admin API) -------------
async def _provision(store_url: str, account_id: str, total: int) -> str:
    ctx = Context(stores_from_url(store_url), Settings(_env_file=None, store_url=store_url))
    await ctx.stores.open()
    try:
        for name in ("insights", "scoring"):
            with suppress(Conflict):
                await admin.create_service(ctx, name, "")
        plan_id = f"plan-{account_id}"
        limits = [Limit("cohort.max_count", "Number of known contacts (KCs) allowed", 10)]
        await admin.create_plan(ctx, plan_id, {"insights": Quota.daily(total)}, limits, "")
        account = await admin.create_account(
            ctx, account_id, account_id.title(), plan_id, noon_zone(), Overrides()
        )
        return (await admin.create_key(ctx, account.id, "test")).secret
    finally:
        await ctx.stores.close()


def provision_store(store_url: str, account_id: str, total: int) -> str:
    """An account with an insights quota of ``total`` in the store; returns its key."""
    return asyncio.run(_provision(store_url, account_id, total))
