"""Shared fixtures: every behavioural test runs once per store, over real connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.api import create_app
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Store, store_from_url
from quotad.testing import FakeClock
from tests.servers import postgres_schema, redis_namespace

ADMIN_TOKEN = "test-operator-token"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STORES = [
    pytest.param("memory", marks=pytest.mark.memory, id="memory"),
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
]


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty store of ``kind``, cleaned up afterwards."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'quotad.db'}"
    elif kind == "postgresql":
        with postgres_schema() as url:
            yield url
    elif kind == "redis":
        with redis_namespace(f"sqlite:///{tmp_path / 'records.db'}") as url:
            yield url
    else:
        raise AssertionError(kind)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store a test runs against (one run per kind)."""
    kind: str = request.param
    return kind


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store."""
    with store_url(store_kind, tmp_path) as url:
        opened = store_from_url(url)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock standing at 2024-11-07T12:00:00Z until a test moves it."""
    return FakeClock()


def make_settings(url: str, **overrides: Any) -> Settings:
    """Settings for tests: no .env, a known operator token, generous throttling."""
    values: dict[str, Any] = {
        "store_url": url,
        "admin_token": ADMIN_TOKEN,
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def ctx(store: Store, clock: FakeClock) -> Context:
    """A service context over the test's store and fake clock."""
    return Context(store, make_settings(store.url), clock)


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
