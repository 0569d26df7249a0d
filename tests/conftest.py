"""Shared fixtures: every behavioural test runs once per store, over real connections."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.domain.models import Account
from quotad.sdk import Client, ConflictError
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.processes import (
    ADMIN_TOKEN as PROCESS_TOKEN,
)
from tests.processes import (
    ROOT,
    Running,
    Spec,
    noon_zone,
    provision_store,
    quotad_spec,
    running,
    running_all,
)
from tests.servers import migrated_sqlite_copy, postgres_schema, redis_namespace, unavailable

# The real webhook receiver process (``receiver``), for every test that takes it.
pytest_plugins = ("tests.webhook_fixtures", "tests.browser_fixtures")

ADMIN_TOKEN = "test-operator-token"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STORES = [
    pytest.param("memory", marks=pytest.mark.memory, id="memory"),
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
]
# Opt-in (``with_cluster = True`` in a test module): the same tests on a Redis Cluster.
CLUSTER = pytest.param("redis-cluster", marks=pytest.mark.redis, id="redis-cluster")


@contextmanager
def store_url(
    kind: str, tmp_path: Path, cluster: RedisClusterProcesses | None = None
) -> Iterator[str]:
    """The URL of a fresh, empty store of ``kind``, cleaned up afterwards.

    ``redis-cluster`` needs the running ``cluster`` (the ``redis_cluster`` fixture).
    """
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{migrated_sqlite_copy(tmp_path / 'quotad.db')}"
    elif kind == "postgresql":
        with postgres_schema(migrated=True) as url:
            yield url
    elif kind == "redis":
        with redis_namespace(f"sqlite:///{migrated_sqlite_copy(tmp_path / 'records.db')}") as url:
            yield url
    elif kind == "redis-cluster":
        assert cluster is not None, "the redis-cluster store needs the redis_cluster fixture"
        records = migrated_sqlite_copy(tmp_path / "records.db")
        with cluster.namespace(f"sqlite:///{records}") as url:
            yield url
    else:
        raise AssertionError(kind)


# Modules whose tests time what they do (a hung store answered within a second, a p99
# bound), kill or pause servers, or start many servers at once: ``make test`` runs them
# alone after the rest, which runs on three workers (pytest-xdist), so no other test's load
# moves their clocks. The benchmark smoke test, the fuzzers and the browser tests time
# nothing (their figures are not asserted; Playwright waits up to 10 s for each step), and
# the tests that kill nodes of their own and then wait (webhook durability, reservations of
# a killed node) or race concurrent calls with long deadlines (test_race) assert what is
# stored, not how fast: they run with the rest.
SERIAL_MODULES = frozenset(
    {
        "test_cluster_failover",
        "test_crash",
        "test_deadline",
        "test_demo",
        "test_hangs",
        "test_health",
        "test_multinode",
        "test_outage",
        "test_redis_loss",
        "test_slow_clients",
        "test_smoke",
    }
)


# Modules with a test that runs for a minute or more (a quick benchmark run, schemathesis'
# own CLI, a browser crawl): collected first, so that a worker starts them while the others
# work through the rest, instead of one of them running alone at the end.
LONG_MODULES = ("test_bench", "test_fuzz", "test_dashboard_quality", "test_cli_remote")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of ``SERIAL_MODULES`` ``serial``; order the modules ``LONG_MODULES``
    first, then by their number of tests, most first (as pytest-xdist would, which
    ``make test`` tells not to: ``--no-loadscope-reorder``), each module's tests as written."""
    sizes: dict[Path, int] = {}
    for item in items:
        if item.path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        sizes[item.path] = sizes.get(item.path, 0) + 1

    def rank(path: Path) -> tuple[int, int]:
        stem = path.stem
        return (
            LONG_MODULES.index(stem) if stem in LONG_MODULES else len(LONG_MODULES),
            -sizes[path],
        )

    position = {path: n for n, path in enumerate(sorted(sizes, key=rank))}
    items.sort(key=lambda item: position[item.path])  # stable: a module's order is kept


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One run per store kind for every test using ``store_kind``, plus the Redis Cluster
    for test modules that set ``with_cluster = True``."""
    if "store_kind" not in metafunc.fixturenames:
        return
    kinds = [*STORES, CLUSTER] if getattr(metafunc.module, "with_cluster", False) else STORES
    metafunc.parametrize("store_kind", kinds, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store a test runs against (one run per kind)."""
    kind: str = request.param
    return kind


@pytest.fixture
async def stores(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stores]:
    """Opened, empty records and counters of one store URL."""
    cluster = request.getfixturevalue("redis_cluster") if store_kind == "redis-cluster" else None
    with store_url(store_kind, tmp_path, cluster) as url:
        opened = stores_from_url(url)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


async def create_account(stores: Stores, account: Account) -> None:
    """Add an account as the service layer does: its records, then its counters."""
    await stores.records.create_account(account)
    await stores.counters.open_account(account.id)


@pytest.fixture
def clock() -> FakeClock:
    """A clock standing at 2024-11-07T12:00:00Z until a test moves it."""
    return FakeClock()


def make_settings(url: str, **overrides: Any) -> Settings:
    """Settings for tests: no .env, a known operator token, generous throttling and timeout.

    The store timeout (1 s by default) is raised so that a machine busy with the rest of
    the suite does not turn a slow answer into a 503; the tests of that timeout set it, and
    the tests that start ``quotad serve`` run it at its default.
    """
    values: dict[str, Any] = {
        "store_url": url,
        "admin_token": ADMIN_TOKEN,
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
        "store_timeout_ms": 10_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def ctx(stores: Stores, clock: FakeClock) -> Context:
    """A service context over the test's stores and fake clock."""
    return Context(stores, make_settings(stores.url), clock)


@pytest.fixture
async def client(ctx: Context) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    app = create_app(ctx, manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        yield http


@dataclass
class Deployment:
    """The records most tests start from."""

    account_id: str
    key: str
    key_id: str

    @property
    def bearer(self) -> dict[str, str]:
        """Customer headers with the key as a bearer token."""
        return {"Authorization": f"Bearer {self.key}"}


async def seed(http: httpx2.AsyncClient, account_id: str = "acme", total: int = 250) -> Deployment:
    """Services insights and scoring, plan free, one account and one key, over the API."""
    for name in ("insights", "scoring"):
        response = await http.post("/admin/v1/services", json={"name": name}, headers=OPERATOR)
        assert response.status_code in (201, 409), response.text
    plan = {
        "id": f"plan-{account_id}",
        "quotas": {"insights": {"total": total}, "scoring": {"total": 100}},
        "limits": [
            {
                "name": "cohort.max_count",
                "description": "Number of known contacts (KCs) allowed",
                "limit": 10,
            }
        ],
    }
    response = await http.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    body = {"id": account_id, "name": account_id.title(), "plan": plan["id"]}
    response = await http.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    response = await http.post(
        f"/admin/v1/accounts/{account_id}/keys", json={"name": "test"}, headers=OPERATOR
    )
    assert response.status_code == 201, response.text
    return Deployment(account_id, response.json()["key"], response.json()["id"])


@pytest.fixture
async def deployment(client: httpx2.AsyncClient) -> Deployment:
    """Account ``acme`` on a plan with insights 250/day, scoring 100/day, cohorts 10."""
    return await seed(client)


def pytest_configure(config: pytest.Config) -> None:
    """Log as the server does off a terminal: JSON lines with plain tracebacks."""
    del config
    from quotad import logs

    logs.configure("info", "json")


# Private Redis servers: the Redis Cluster of the opt-in above, and the outage tests ----
LOOPBACK = "127.0.0.1"
CLUSTER_MASTERS = 3
REDIS_START_SECONDS = 30.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports nothing listens on right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def redis_binaries() -> tuple[str, str]:
    """Paths of redis-server and redis-cli; skips (fails under CI=true) without them."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        unavailable("redis-server and redis-cli are not installed (apt-get install redis-server)")
    return server, cli


def redis_ping(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING."""
    import redis

    client = redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=0.2, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisProcess:
    """A private ``redis-server`` on a loopback port, without persistence, logging to a file.

    It can be killed (it loses everything) and started again on the same port.
    """

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.server, self.cli = redis_binaries()
        [self.port] = free_ports(1) if port is None else [port]
        self.workdir = workdir
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        """Where the server logs."""
        return self.workdir / f"redis-{self.port}.log"

    def start(self, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once it answers PING."""
        assert self.process is None, "redis-server is already running"
        command = [
            self.server,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Return once the server answers PING; fail the test if it never does."""
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not redis_ping(self.port):
            if self.process is None or self.process.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited: {self.read_log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} never answered: {self.read_log()}")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the server and reap it (a no-op when it is not running)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def read_log(self) -> str:
        """The tail of the server's log."""
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def cli_run(self, *args: str) -> str:
        """``redis-cli -p <port> <args>``'s output; fails the test when redis-cli does."""
        done = subprocess.run(
            [self.cli, "-h", LOOPBACK, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout


class RedisClusterProcesses:
    """A running Redis Cluster of three masters without replicas."""

    def __init__(self, nodes: list[RedisProcess]) -> None:
        self.nodes = nodes

    @property
    def ports(self) -> list[int]:
        """The client port of each master."""
        return [node.port for node in self.nodes]

    @contextmanager
    def namespace(self, records_url: str) -> Iterator[str]:
        """A ``redis+cluster://`` store URL under a fresh key prefix, its keys deleted after."""
        import redis

        prefix = f"t{uuid.uuid4().hex[:12]}"
        try:
            yield (
                f"redis+cluster://{LOOPBACK}:{self.ports[0]}?prefix={prefix}&records={records_url}"
            )
        finally:
            for port in self.ports:  # each master SCANs (and deletes) only its own keys
                client = redis.Redis(host=LOOPBACK, port=port)
                try:
                    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                        client.delete(key)
                finally:
                    client.close()


@contextmanager
def start_redis_cluster(workdir: Path) -> Iterator[RedisClusterProcesses]:
    """Three cluster-enabled redis-servers joined by ``redis-cli --cluster create``."""
    redis_binaries()
    # The cluster bus listens on a second port (by default the client port + 10000, which
    # does not exist for a high free port), so each node gets a free port for it too.
    ports = free_ports(2 * CLUSTER_MASTERS)
    nodes = []
    for port, bus in zip(ports[::2], ports[1::2], strict=True):
        config = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
        nodes.append(RedisProcess(workdir, port, (*config, "--cluster-port", str(bus))))
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        addresses = [f"{LOOPBACK}:{node.port}" for node in nodes]
        nodes[0].cli_run(
            "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"
        )
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not all("cluster_state:ok" in node.cli_run("cluster", "info") for node in nodes):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the Redis Cluster never reached cluster_state:ok: {nodes[0].read_log()}"
                )
            time.sleep(0.05)
        yield RedisClusterProcesses(nodes)
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A 3-master Redis Cluster on free loopback ports, for the whole session."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


# The FastAPI example app behind QuotadMiddleware, as real processes (module-scoped) ------
EXAMPLE = [sys.executable, str(ROOT / "examples" / "fastapi_app.py"), "--no-demo"]


@dataclass
class Example:
    """The example app in one mode, and how to make an account with a key for it."""

    mode: str
    app: Running
    store_url: str | None = None
    quotad: Running | None = None

    def provision(self, total: int) -> str:
        """A fresh account with ``total`` insights a day; returns its key."""
        account_id = f"a{uuid.uuid4().hex[:10]}"
        if self.store_url is not None:
            return provision_store(self.store_url, account_id, total)
        assert self.quotad is not None
        with Client(self.quotad.base, operator_token=PROCESS_TOKEN) as quotad:
            with contextlib.suppress(ConflictError):
                quotad.create_service("insights")
            plan = quotad.create_plan(f"p-{account_id}", {"insights": total})
            quotad.create_account("Test", plan.id, account_id=account_id, timezone=noon_zone())
            return quotad.create_key(account_id).key


@pytest.fixture(scope="module")
def embedded_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example app on an embedded SQLite store (no quotad server)."""
    workdir = tmp_path_factory.mktemp("embedded")
    store_url = f"sqlite:///{workdir / 'quotad.db'}"
    provision_store(store_url, "warmup", 1)  # creates the schema before the app opens it
    with running(EXAMPLE, workdir, "example", QUOTAD_STORE_URL=store_url) as app:
        yield Example("embedded", app, store_url=store_url)


@pytest.fixture(scope="module")
def remote_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The example app asking a real ``quotad serve`` through the SDK (both started at once)."""
    workdir = tmp_path_factory.mktemp("remote")
    server = quotad_spec(f"sqlite:///{workdir / 'quotad.db'}")
    example = Spec(EXAMPLE, "example", env={"QUOTAD_URL": server.base})
    with running_all(workdir, server, example) as [quotad, app]:
        yield Example("remote", app, quotad=quotad)


@pytest.fixture(params=["embedded", "remote"])
def example(request: pytest.FixtureRequest) -> Example:
    """The example app, once per backend."""
    fixture: Example = request.getfixturevalue(f"{request.param}_example")
    return fixture
