"""Scale-out (README "Scaling out"): three `quotad serve` nodes over one store never pass a quota.

Each run starts three real server processes on one shared store (PostgreSQL, or Redis
counters with PostgreSQL records), provisions one account through node 1's admin API, and
races 600 verifies spread round-robin over the three nodes against a total of 250.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from tests.conftest import OPERATOR
from tests.servers import postgres_schema, redis_namespace
from tests.test_race import gather_all, noon_zone, running_server

pytestmark = pytest.mark.slow

NODES = 3
TOTAL = 250
ATTEMPTS = 600
SHARED = [
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgresql], id="redis"),
]


@contextmanager
def shared_store(kind: str) -> Iterator[str]:
    """One store URL for every node: a fresh PostgreSQL schema, alone or as Redis's records."""
    with postgres_schema() as records:
        if kind == "postgresql":
            yield records
        else:
            with redis_namespace(records) as url:
                yield url


@contextmanager
def nodes(store_url: str, workdir: Path, count: int) -> Iterator[list[str]]:
    """``count`` `quotad serve` processes over ``store_url``, started together (they race
    to migrate the schema under its advisory lock); yields their base URLs."""
    servers = []
    for n in range(1, count + 1):
        (workdir / f"node-{n}").mkdir()
        servers.append(running_server(store_url, workdir / f"node-{n}"))
    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        starts = [pool.submit(server.__enter__) for server in servers]
        wait(starts)
        for server, start in zip(servers, starts, strict=True):
            if start.exception() is None:
                stack.push(server)  # stopped on the way out, even if another did not start
        yield [start.result() for start in starts]


async def provision(http: httpx2.AsyncClient, base: str) -> tuple[str, str]:
    """Service insights, a plan of ``TOTAL`` a day, an account and its key, via ``base``."""
    steps: list[tuple[str, dict[str, object]]] = [
        ("/admin/v1/services", {"name": "insights"}),
        ("/admin/v1/plans", {"id": "scale", "quotas": {"insights": {"total": TOTAL}}}),
        (
            "/admin/v1/accounts",
            # Near noon in its zone, so the 600 verifies never straddle a day boundary.
            {
                "id": "fleet",
                "name": "Fleet",
                "plan": "scale",
                "timezone": noon_zone(datetime.now(UTC)),
            },
        ),
        ("/admin/v1/accounts/fleet/keys", {"name": "fleet"}),
    ]
    response = None
    for path, body in steps:
        response = await http.post(f"{base}{path}", json=body, headers=OPERATOR)
        assert response.status_code == 201, (path, response.text)
    assert response is not None
    return "fleet", str(response.json()["key"])


@pytest.mark.parametrize("kind", SHARED)
async def test_three_nodes_on_one_store_grant_exactly_the_quota(kind: str, tmp_path: Path) -> None:
    """600 concurrent verifies round-robin over 3 nodes grant exactly 250 and refuse 350."""
    limits = httpx2.Limits(max_connections=ATTEMPTS + 10, max_keepalive_connections=ATTEMPTS + 10)
    with shared_store(kind) as url, nodes(url, tmp_path, NODES) as bases:
        async with httpx2.AsyncClient(limits=limits, timeout=60) as http:
            account_id, key = await provision(http, bases[0])
            body = {"key": key, "service": "insights", "cost": 1}
            targets = [bases[n % NODES] for n in range(ATTEMPTS)]
            responses = await gather_all(
                http.post(f"{base}/v1/verify", json=body, headers=OPERATOR) for base in targets
            )

            per_node = Counter(r.url.port for r in responses)
            assert sorted(per_node.values()) == [ATTEMPTS // NODES] * NODES, per_node
            statuses = Counter((r.url.port, r.status_code) for r in responses)
            odd = next((r.text for r in responses if r.status_code != 200), "")
            # Every verify is answered with a verdict. KNOWN SRC BUG (src/quotad/storage/
            # sql.py): when a node's 20 pooled PostgreSQL connections stay busy for over
            # pool_timeout=5 s, the sqlalchemy.exc.TimeoutError is not mapped to StorageError
            # by SqlStore._read/_write, so the verify answers 500 INTERNAL_SERVER_ERROR (not
            # 503 / the fail-open policy). 200 concurrent verifies per node on this busy
            # 2-core box get there: each makes ~4 record reads, each a BEGIN/SELECT/ROLLBACK
            # holding a connection across event-loop turns; on PostgreSQL, moreover,
            # SqlStore.consume holds the account's row lock from its upsert until COMMIT two
            # or three round trips later, and consumes on every node queue on that lock.
            assert Counter(r.status_code for r in responses) == {200: ATTEMPTS}, (statuses, odd)
            verdicts = [r.json() for r in responses]
            codes = Counter(v["code"] for v in verdicts)
            assert codes == {"VALID": TOTAL, "QUOTA_EXCEEDED": ATTEMPTS - TOTAL}, codes
            granted = [v for v in verdicts if v["valid"] is True]
            assert len(granted) == TOTAL
            assert sorted(v["used"] for v in granted) == list(range(1, TOTAL + 1))
            assert all(v["used"] == TOTAL for v in verdicts if v["valid"] is False)

            for base in bases:  # every node reads the same stored day
                response = await http.get(
                    f"{base}/admin/v1/accounts/{account_id}/usage/insights", headers=OPERATOR
                )
                assert response.status_code == 200, response.text
                [today] = response.json()
                assert (today["used"], today["remaining"], today["total"]) == (TOTAL, 0, TOTAL)
