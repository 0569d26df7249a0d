"""``/metrics``: the counters match what happened, in one process and across several."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quotad.api.app import create_app
from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import StorageError
from quotad.service.context import Context
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, make_settings, seed
from tests.processes import ADMIN_TOKEN as SERVER_TOKEN
from tests.processes import BIN, running

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """Metrics are counted above the store: a memory store is enough here."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: httpx2.AsyncClient) -> Samples:
    """The app's current metrics."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes (the registry is process-wide)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_consume_counters_match_the_calls(client: httpx2.AsyncClient) -> None:
    """After 7 granted, 3 refused and 2 bad-key verifies, the counters grew by exactly that."""
    acme = await seed(client, "acme", total=7)
    before = await scrape(client)
    body = {"key": acme.key, "service": "insights", "cost": 1}
    for _ in range(10):
        assert (await client.post("/v1/verify", json=body, headers=OPERATOR)).status_code == 200
    bad = {**body, "key": "qd_" + "0" * 36}
    for _ in range(2):
        assert (await client.post("/v1/verify", json=bad, headers=OPERATOR)).status_code == 200
    after = await scrape(client)
    name = "quotad_consumes_total"
    assert delta(before, after, name, service="insights", result="VALID") == 7
    assert delta(before, after, name, service="insights", result="QUOTA_EXCEEDED") == 3
    assert delta(before, after, name, service="insights", result="MALFORMED_API_KEY") == 2
    assert delta(before, after, name, service="scoring", result="VALID") == 0
    assert delta(before, after, "quotad_consume_seconds_count") == 12


@pytest.fixture
async def throttled(ctx: Context, clock: FakeClock) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of an app whose customer endpoints allow one request per key, then 429."""
    settings = make_settings(ctx.stores.url, rate_limit_per_second=0.001, rate_limit_burst=1)
    app = create_app(Context(ctx.stores, settings, clock), manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        yield http


async def test_rate_limited_requests_are_counted(throttled: httpx2.AsyncClient) -> None:
    """Each 429 RATE_LIMITED of a customer endpoint adds one to quotad_rate_limited_total."""
    acme = await seed(throttled, "acme")
    before = await scrape(throttled)
    statuses = [(await throttled.get("/v1/usages", headers=acme.bearer)).status_code]
    statuses += [(await throttled.get("/v1/usages", headers=acme.bearer)).status_code]
    statuses += [(await throttled.get("/usage/insights", headers=acme.bearer)).status_code]
    assert statuses == [200, 429, 429]
    after = await scrape(throttled)
    assert delta(before, after, "quotad_rate_limited_total") == 2


class BrokenCounters(MemoryStore):
    """A memory store whose consume always fails as an unreachable store would."""

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
        """Fail."""
        raise StorageError("the store is down (test)")


@pytest.mark.parametrize("policy", ["fail-closed", "fail-open"])
async def test_store_errors_are_counted(clock: FakeClock, policy: str) -> None:
    """A verify that meets a failing store counts a store error (and a fail-open when allowed)."""
    store = BrokenCounters()
    settings = make_settings(store.url, on_store_error=policy)
    app = create_app(Context(Stores.of(store), settings, clock), manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        acme = await seed(http, "acme")
        before = await scrape(http)
        body = {"key": acme.key, "service": "insights", "cost": 1}
        response = await http.post("/v1/verify", json=body, headers=OPERATOR)
        assert response.status_code == (503 if policy == "fail-closed" else 200)
        after = await scrape(http)
    assert delta(before, after, "quotad_store_errors_total", operation="verify") == 1
    opened = delta(before, after, "quotad_fail_open_total", service="insights")
    assert opened == (1 if policy == "fail-open" else 0)


WORKER = """
import sys
from quotad import metrics
for _ in range(int(sys.argv[1])):
    metrics.CONSUMES.labels("insights", "VALID").inc()
metrics.RATE_LIMITED.inc(int(sys.argv[2]))
"""
SCRAPER = """
import sys
from quotad import metrics
body, _ = metrics.exposition()
sys.stdout.write(body.decode())
"""


def test_multiprocess_mode_adds_up_every_worker(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, any process's /metrics shows every worker's sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for consumes, limited in ((5, 1), (7, 2)):
        subprocess.run(
            [sys.executable, "-c", WORKER, str(consumes), str(limited)], env=env, check=True
        )
    scraped = subprocess.run(
        [sys.executable, "-c", SCRAPER], env=env, check=True, capture_output=True, text=True
    )
    samples = parse(scraped.stdout)
    consumes = ("quotad_consumes_total", (("result", "VALID"), ("service", "insights")))
    assert samples[consumes] == 12
    assert samples[("quotad_rate_limited_total", ())] == 3


@pytest.mark.slow
def test_several_uvicorn_workers_report_one_sum(tmp_path: Path) -> None:
    """Two uvicorn workers built by quotad.factory: every scrape shows the exact total."""
    url = f"sqlite:///{tmp_path / 'quotad.db'}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    subprocess.run(
        [str(BIN / "quotad"), "migrate", "--store", url], check=True, capture_output=True
    )
    argv = [str(BIN / "uvicorn"), "--factory", "quotad.factory:create_from_env", "--workers", "2"]
    env = {"QUOTAD_STORE_URL": url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    operator = {"Authorization": f"Bearer {SERVER_TOKEN}"}
    with running(argv, tmp_path, "workers", **env) as server:
        with httpx2.Client(base_url=server.base, headers=operator) as http:
            assert http.post("/admin/v1/services", json={"name": "insights"}).status_code == 201
            plan = {"id": "p", "quotas": {"insights": {"total": 6}}}
            assert http.post("/admin/v1/plans", json=plan).status_code == 201
            account = {"id": "acme", "name": "Acme", "plan": "p"}
            assert http.post("/admin/v1/accounts", json=account).status_code == 201
            key = http.post("/admin/v1/accounts/acme/keys", json={"name": "k"}).json()["key"]
        body = {"key": key, "service": "insights", "cost": 1}
        for _ in range(10):  # a new connection each time: the workers share the calls
            response = httpx2.post(f"{server.base}/v1/verify", json=body, headers=operator)
            assert response.status_code == 200
        for _ in range(6):
            samples = parse(httpx2.get(f"{server.base}/metrics").text)
            name = "quotad_consumes_total"
            assert samples[(name, (("result", "VALID"), ("service", "insights")))] == 6
            assert samples[(name, (("result", "QUOTA_EXCEEDED"), ("service", "insights")))] == 4
