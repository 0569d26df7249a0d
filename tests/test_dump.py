"""`quotad dump` / `quotad restore`: a whole deployment moved between stores, losing nothing."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner

from quotad.api.app import create_app
from quotad.cli import app
from quotad.cli.dump import read_dump, write_dump
from quotad.domain import credits
from quotad.domain.models import Account, Service
from quotad.domain.operators import AuditQuery
from quotad.domain.webhooks import EVENT_TYPES, AlertEvent, Attempt
from quotad.errors import AuthError, Conflict, StorageError, ValidationFailed
from quotad.service import auth, webhooks
from quotad.service.context import Context
from quotad.service.dump import VERSION, dump_lines, restore_lines
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, make_settings, store_url
from tests.servers import POSTGRES_URL, REDIS_URL, postgres_schema, redis_namespace

runner = CliRunner()
with_cluster = True  # the store-parametrised tests run on a Redis Cluster too
START = datetime.fromisoformat("2024-11-07T12:00:00+00:00")  # FakeClock's default
DAYS = [date(2024, 11, 7) + timedelta(days=n) for n in range(-2, 4)]
HOOK_URL = "https://93.184.215.14/hooks"  # a public address, given as one: no DNS asked


@dataclass
class Populated:
    """What the tests check after a move: the raw keys, the operator token, the clock."""

    keys: dict[str, str]
    operator_token: str
    clock: FakeClock
    deliveries: dict[str, str] = field(default_factory=dict)  # how each was left -> its id
    reservations: dict[str, str] = field(default_factory=dict)  # how each was left -> its id


async def call(http: httpx2.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    """An operator request that must succeed; its JSON body."""
    response = await http.request(method, path, json=body, headers=OPERATOR)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


async def verify(
    http: httpx2.AsyncClient, key: str, service: str, cost: int, idem: str | None = None
) -> dict[str, Any]:
    """POST /v1/verify as the operator; the answer's body."""
    headers = {**OPERATOR, **({"Idempotency-Key": idem} if idem else {})}
    body = {"key": key, "service": service, "cost": cost}
    response = await http.post("/v1/verify", json=body, headers=headers)
    assert response.status_code in (200, 429), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def populate(http: httpx2.AsyncClient, ctx: Context, clock: FakeClock) -> Populated:
    """Every kind of record over the API, over four days: services, plans with quotas and
    limits, accounts (overrides, timezones, one suspended), keys (scoped, expiring,
    rotated, revoked), usage with refusals, adjustments and events, gauges, plan and
    override changes (total history), an Idempotency-Key answer, a stored operator
    token, named operator tokens (one revoked), webhook endpoints (one rotated in its grace,
    one disabled), the alert events verify noticed, their deliveries (delivered, retried,
    given up, in flight, pending), a plan's and an account's alert thresholds, and the
    audit log of it all."""
    clock.set(START - timedelta(days=2))
    for name in ("insights", "scoring"):
        await call(http, "POST", "/admin/v1/services", {"name": name, "description": name})
    # Endpoints first, so that the alerts noticed below have deliveries.
    await webhooks.create(ctx, HOOK_URL + "/quota", ["quota.threshold", "quota.exceeded"], "ops")
    every = await webhooks.create(ctx, HOOK_URL + "/all", list(EVENT_TYPES))
    limits = [
        {"name": "cohort.max_count", "description": "Cohorts", "limit": 10},
        {"name": "seats", "description": "Seats", "limit": 3},
    ]
    free = {"id": "free", "quotas": {"insights": {"total": 50}, "scoring": {"total": 20}}}
    await call(http, "POST", "/admin/v1/plans", {**free, "limits": limits})
    pro = {"id": "pro", "description": "Pro", "quotas": {"insights": {"total": 500}}}
    await call(http, "POST", "/admin/v1/plans", {**pro, "limits": limits[:1]})
    pro_plan = await ctx.records.get_plan("pro")
    assert pro_plan is not None
    await ctx.records.replace_plan(replace(pro_plan, alert_thresholds=(50, 90)))
    await call(http, "POST", "/admin/v1/accounts", {"id": "acme", "name": "Acme", "plan": "free"})
    beta = {
        "id": "beta",
        "name": "Beta GmbH",
        "plan": "pro",
        "timezone": "Europe/Paris",
        "overrides": {"quotas": {"insights": {"total": 80}}, "limits": {"cohort.max_count": 20}},
    }
    await call(http, "POST", "/admin/v1/accounts", beta)
    gamma = {"id": "gamma", "name": "Gamma", "plan": "free", "timezone": "America/New_York"}
    await call(http, "POST", "/admin/v1/accounts", gamma)

    keys: dict[str, str] = {}

    async def new_key(account: str, name: str, **extra: Any) -> str:
        issued = await call(
            http, "POST", f"/admin/v1/accounts/{account}/keys", {"name": name, **extra}
        )
        keys[name] = issued["key"]
        return str(issued["id"])

    await new_key("acme", "acme-main")
    await new_key("acme", "acme-scoped", scopes=["consume:insights"])
    expires = (START + timedelta(days=30)).isoformat()
    await new_key("acme", "acme-expiring", expires_at=expires)
    old_beta = await new_key("beta", "beta-old")
    revoked = await new_key("gamma", "gamma-revoked")
    await new_key("gamma", "gamma-main")
    await call(http, "DELETE", f"/admin/v1/keys/{revoked}")

    for day in range(3):
        for _ in range(3):
            await verify(http, keys["acme-main"], "insights", 5)
        await verify(http, keys["acme-main"], "insights", 1000)  # refused: a rejection
        await verify(http, keys["acme-scoped"], "insights", 2)
        await verify(http, keys["beta-old"], "insights", 7 + day)
        await verify(http, keys["gamma-main"], "scoring", 3)
        if day == 0:
            await call(
                http,
                "PUT",
                "/admin/v1/plans/free",
                {"quotas": {"insights": {"total": 60}, "scoring": {"total": 20}}, "limits": limits},
            )
        if day == 1:
            await call(
                http,
                "PATCH",
                "/admin/v1/accounts/beta",
                {"overrides": {"quotas": {"insights": {"total": 90}}}},
            )
        clock.advance(days=1)
    # Day four (START + 1 day): an adjustment, events, gauges, a rotation, an answer.
    await call(
        http,
        "POST",
        "/admin/v1/accounts/acme/usage/scoring/adjust",
        {"date": DAYS[0].isoformat(), "delta": 4},
    )
    events = [
        {"id": "ev-1", "account_id": "beta", "service": "insights", "amount": 3,
         "timestamp": clock.now().isoformat()},
        {"id": "ev-2", "account_id": "acme", "service": "scoring", "amount": 2,
         "timestamp": (clock.now() - timedelta(days=1)).isoformat()},
    ]  # fmt: skip
    await call(http, "POST", "/v1/events", {"events": events})
    await call(http, "PUT", "/admin/v1/accounts/acme/limits/cohort.max_count", {"usage": 4})
    await call(
        http, "POST", "/admin/v1/accounts/beta/limits/cohort.max_count/acquire", {"amount": 2}
    )
    rotated = await call(
        http, "POST", f"/admin/v1/keys/{old_beta}/rotate", {"grace_seconds": 86400}
    )
    keys["beta-new"] = rotated["key"]
    await verify(http, keys["acme-main"], "insights", 4, idem="req-1")
    await call(http, "PATCH", "/admin/v1/accounts/gamma", {"status": "suspended"})
    reader = await call(http, "POST", "/admin/v1/tokens", {"name": "reader", "role": "read"})
    keys["reader"] = reader["token"]
    gone = await call(http, "POST", "/admin/v1/tokens", {"name": "gone", "role": "verify"})
    await call(http, "DELETE", f"/admin/v1/tokens/{gone['id']}")
    acme = await ctx.records.get_account("acme")
    assert acme is not None
    own = replace(acme.overrides, alert_thresholds=(25, 75, 100))
    await ctx.records.update_account(replace(acme, overrides=own))
    deliveries = await settle_some_deliveries(ctx, clock)
    await webhooks.rotate_secret(ctx, every.id, grace_seconds=3600)
    quiet = await webhooks.create(ctx, HOOK_URL + "/quiet", ["key.expiring"], "off for now")
    await webhooks.update(ctx, quiet.id, enabled=False)
    reservations = await add_credits(http, keys, clock)
    token = await auth.reset_operator_token(ctx)
    return Populated(keys, token, clock, deliveries, reservations)


async def add_credits(
    http: httpx2.AsyncClient, keys: dict[str, str], clock: FakeClock
) -> dict[str, str]:
    """A priced service on a plan with a refill, an account with grants (one with an expiry
    and a priority, one voided), priced verifies, and reservations: one pending, one
    committed for less. The pending one's id and the committed one's, by how each was left."""
    await call(http, "POST", "/admin/v1/services", {"name": "enrich", "credit_price": 0.25})
    metered = {
        "id": "metered",
        "quotas": {"enrich": [{"window": "month", "total": 100_000}]},
        "refill": {"amount": 50, "window": "month", "mode": "top_up"},
    }
    await call(http, "POST", "/admin/v1/plans", metered)
    await call(http, "POST", "/admin/v1/accounts", {"id": "delta", "name": "D", "plan": "metered"})
    issued = await call(http, "POST", "/admin/v1/accounts/delta/keys", {"name": "delta-main"})
    keys["delta-main"] = issued["key"]
    expires = (clock.now() + timedelta(days=10)).isoformat()
    promo = {"amount": 100, "expires_at": expires, "priority": 1, "note": "promo"}
    await call(http, "POST", "/admin/v1/accounts/delta/grants", promo)
    await call(http, "POST", "/admin/v1/accounts/delta/grants", {"amount": 30.5})
    voided = await call(http, "POST", "/admin/v1/accounts/delta/grants", {"amount": 5})
    await call(http, "DELETE", f"/admin/v1/accounts/delta/grants/{voided['id']}")
    for _ in range(3):
        assert (await verify(http, keys["delta-main"], "enrich", 8))["valid"]
    reserved: dict[str, str] = {}
    for left in ("pending", "committed"):
        body = {"key": keys["delta-main"], "service": "enrich", "cost": 4, "reserve": True}
        answer = await http.post("/v1/verify", json=body, headers=OPERATOR)
        assert answer.status_code == 200, answer.text
        assert answer.json()["valid"], answer.text
        reserved[left] = answer.json()["reservation_id"]
    await call(http, "POST", f"/v1/reservations/{reserved['committed']}/commit", {"cost": 2})
    return reserved


async def settle_some_deliveries(ctx: Context, clock: FakeClock) -> dict[str, str]:
    """Leave deliveries delivered, retried (a 500), given up (timed out) and in flight
    (claimed by a node the dump does not carry); the rest pending.

    A node holds one delivery per endpoint at a time: two endpoints take the quota
    events, so two rounds of claims settle three and leave one in flight.
    """
    await ctx.noticer.drain()  # the alerts verify noticed are written
    now = clock.now()
    alerts = ctx.stores.alerts
    until = now + timedelta(seconds=30)
    first = await alerts.claim_deliveries(now, until, "node-a", 100)
    assert len(first) == 2
    settles = [
        (first[0], Attempt(now, 200, 42, None, "ok"), None, True),
        (first[1], Attempt(now, 500, 31, None, "oops"), now + timedelta(seconds=5), False),
    ]
    for held, attempt, next_at, delivered in settles:
        assert await alerts.finish_delivery(
            held.delivery.id, held.claim, attempt, next_at, delivered=delivered
        )
    second = await alerts.claim_deliveries(now, until, "node-a", 100)
    assert len(second) == 2
    gave_up, in_flight = second
    timed_out = Attempt(now, None, 10_000, "timed out", "")
    assert await alerts.finish_delivery(
        gave_up.delivery.id, gave_up.claim, timed_out, None, delivered=False
    )
    pending = await alerts.claim_deliveries(now, now, "peek", 100)  # lapses at once
    assert pending, "populate notices more alerts than four"
    return {
        "delivered": first[0].delivery.id,
        "retried": first[1].delivery.id,
        "failed": gave_up.delivery.id,
        "in_flight": in_flight.delivery.id,
        "pending": pending[0].delivery.id,
    }


@asynccontextmanager
async def opened(
    url: str, clock: FakeClock | None = None
) -> AsyncIterator[tuple[Context, httpx2.AsyncClient]]:
    """A context and an in-process HTTP client over the store ``url``."""
    stores = stores_from_url(url)
    await stores.open()
    try:
        ctx = Context(stores, make_settings(url), clock or FakeClock())
        transport = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            yield ctx, http
    finally:
        await stores.close()


async def state(stores: Stores) -> dict[str, Any]:
    """Everything a deployment holds, read through the ordinary store methods (not dump)."""
    records, counters = stores.records, stores.counters
    accounts = await records.list_accounts(1000, None)
    services = [s.name for s in await records.list_services()]
    alerts = stores.alerts
    endpoints = await alerts.list_webhooks()
    return {
        "services": await records.list_services(),
        "plans": await records.list_plans(1000, None),
        "accounts": accounts,
        "keys": {a.id: await records.list_keys(a.id) for a in accounts},
        "totals": {
            (a.id, s): await records.total_changes(a.id, s) for a in accounts for s in services
        },
        "usage": {
            (a.id, s): await counters.usage(a.id, s, DAYS[0], DAYS[-1])
            for a in accounts
            for s in services
        },
        "gauges": {a.id: await counters.gauges(a.id) for a in accounts},
        "tokens": await records.list_operator_tokens(),
        "audit": await records.audit_entries(AuditQuery(limit=10_000)),
        "operator": await records.get_setting(auth.ADMIN_TOKEN_SETTING),
        "webhooks": endpoints,
        "alerts": await alerts.alert_events(10_000),
        "deliveries": {e.id: await alerts.list_deliveries(e.id, 10_000) for e in endpoints},
        "credits": {a.id: await credit_state(stores, a.id) for a in accounts},
    }


async def credit_state(stores: Stores, account_id: str) -> Any:
    """An account's grants, each with its counters' values (what is left of it), and the
    reservations the dump test leaves."""
    grants = await stores.credits.list_grants(account_id)
    names = [(credits.counter_name(g.id), credits.GRANT_PERIOD) for g in grants]
    return grants, await stores.counters.read_counters(account_id, names)


def body(lines: list[bytes] | str) -> list[str]:
    """A dump's lines without its header (which names the time and the store it came from)."""
    text = lines if isinstance(lines, str) else b"".join(lines).decode()
    found = text.splitlines()
    assert json.loads(found[0])["kind"] == "header"
    return found[1:]


# The CLI, SQLite -> PostgreSQL and SQLite -> Redis + PostgreSQL -------------------------
@contextmanager
def redis_over_postgres() -> Iterator[str]:
    """A Redis store whose records are in a fresh PostgreSQL schema."""
    with postgres_schema() as records, redis_namespace(records) as url:
        yield url


def cli(*args: str, stdin: bytes | None = None) -> Any:
    """``quotad <args>`` in-process."""
    return runner.invoke(app, list(args), input=stdin)


async def check_credits_moved(http: httpx2.AsyncClient, populated: Populated) -> None:
    """The balance moved whole: a priced verify draws on from it, and a reservation left
    pending before the move commits after it (one left committed stays settled)."""
    before = await call(http, "GET", "/admin/v1/accounts/delta/credits")
    answer = await verify(http, populated.keys["delta-main"], "enrich", 4)
    assert answer["valid"], answer
    assert answer["credits"]["debited"] == 1
    after = await call(http, "GET", "/admin/v1/accounts/delta/credits")
    assert after["balance"] == before["balance"] - 1
    pending, committed = populated.reservations["pending"], populated.reservations["committed"]
    settled = await call(http, "POST", f"/v1/reservations/{pending}/commit", {"cost": 4})
    assert (settled["status"], settled["committed"]) == ("committed", 4)
    again = await call(http, "POST", f"/v1/reservations/{committed}/commit", {"cost": 2})
    assert (again["status"], again["committed"]) == ("committed", 2)
    ledger = await call(http, "GET", "/admin/v1/accounts/delta/credits/ledger?limit=500")
    assert ledger["items"][-1]["balance_after"] == after["balance"]


async def check_moved(url: str, source: dict[str, Any], populated: Populated) -> None:
    """The store at ``url`` holds what the source held, and the old keys still work."""
    clock = FakeClock(populated.clock.now())
    async with opened(url, clock) as (ctx, http):
        assert await state(ctx.stores) == source
        keys = populated.keys
        # Usage continues from the dumped values: acme used 4 today (the Idempotency-Key call).
        answer = await verify(http, keys["acme-main"], "insights", 1)
        today = (await state(ctx.stores))["usage"][("acme", "insights")][-1]
        assert (answer["valid"], answer["used"], answer["total"]) == (True, today.used, 60)
        assert today.used == 4 + 1
        # An Idempotency-Key answered before the move is answered again, consuming nothing.
        again = await verify(http, keys["acme-main"], "insights", 4, idem="req-1")
        assert (again["valid"], again["used"]) == (True, 4)
        for name in ("acme-scoped", "acme-expiring", "beta-old", "beta-new"):
            assert (await verify(http, keys[name], "insights", 1))["valid"] is True, name
        revoked = await verify(http, keys["gamma-revoked"], "scoring", 1)
        assert revoked["code"] == "INVALID_AUTHORIZATION"
        suspended = await verify(http, keys["gamma-main"], "scoring", 1)
        assert suspended["valid"] is False
        refused = await verify(http, keys["acme-scoped"], "scoring", 1)
        assert refused["valid"] is False  # the key's scope survived the move
        # A metering event counted before the move is not counted again.
        resent = await call(http, "POST", "/v1/events", {"events": [
            {"id": "ev-1", "account_id": "beta", "service": "insights", "amount": 3,
             "timestamp": clock.now().isoformat()}]})  # fmt: skip
        assert resent == {"accepted": 0, "duplicates": 1}
        await check_credits_moved(http, populated)
        # The stored operator token still admits the operator (no token configured here).
        ctx.settings = make_settings(url, admin_token=None)
        await auth.authenticate_operator(ctx, f"Bearer {populated.operator_token}")
        with pytest.raises(AuthError):
            await auth.authenticate_operator(ctx, f"Bearer {populated.operator_token}x")
        # So does a named token, with its role.
        reader = await auth.authenticate_operator(ctx, f"Bearer {populated.keys['reader']}")
        assert reader.name == "reader"
        await check_alerts_moved(ctx, source, populated)


async def check_alerts_moved(ctx: Context, source: dict[str, Any], populated: Populated) -> None:
    """The moved alerts: an event noticed again is not written (nor sent) again, the
    delivery in flight is due at once, the settled ones stay settled."""
    alerts = ctx.stores.alerts
    for event in source["alerts"]:
        again = AlertEvent("evt_again", event.type, event.at, event.dedupe, event.data)
        assert await alerts.record_alert(again, [e.id for e in source["webhooks"]]) is False
    now = populated.clock.now()
    due = await alerts.claim_deliveries(now, now + timedelta(seconds=30), "node-b", 100)
    claimed = {held.delivery.id for held in due}
    moved = populated.deliveries
    assert {moved["in_flight"], moved["pending"]} <= claimed
    assert not {moved["delivered"], moved["retried"], moved["failed"]} & claimed


def test_sqlite_moves_to_postgresql_and_to_redis_over_postgresql(tmp_path: Path) -> None:
    """A populated SQLite deployment dumped by the CLI restores into PostgreSQL and into
    Redis + PostgreSQL with every record equal, keys that still verify, usage that goes on
    from the dumped values; each restored store dumps the same lines again."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"

    async def fill() -> tuple[Populated, dict[str, Any]]:
        async with opened(source_url) as (ctx, http):
            assert isinstance(ctx.clock, FakeClock)
            populated = await populate(http, ctx, ctx.clock)
            return populated, await state(ctx.stores)

    populated, source = asyncio.run(fill())
    kept = ("keys", "totals", "usage", "gauges", "operator", "webhooks", "alerts", "deliveries")
    kept += ("credits",)
    assert all(source[kind] for kind in kept)
    printed = cli("dump", "--store", source_url)
    assert printed.exit_code == 0, printed.output
    dump = tmp_path / "quotad.jsonl"
    written = cli("dump", "-o", str(dump), "--store", source_url)
    assert written.exit_code == 0, written.output
    assert "to " + str(dump) in written.stdout
    assert "8 key" in written.stdout
    assert body(dump.read_text()) == body(printed.stdout)
    kinds = {json.loads(line)["kind"] for line in body(printed.stdout)}
    assert kinds == {"setting", "service", "plan", "account", "key", "total", "usage", "gauge",
                     "idempotency", "event", "token", "audit", "webhook", "alert", "delivery",
                     "counter", "grant", "reservation", "end"}  # fmt: skip
    assert not any(raw in printed.stdout for raw in populated.keys.values())
    # A dump holds the endpoints' secrets (a rotated one's previous too): they go on signing.
    for endpoint in source["webhooks"]:
        assert endpoint.secret in printed.stdout
    assert any(e.previous_secret for e in source["webhooks"])

    for target in (postgres_schema, redis_over_postgres):
        with target() as url:
            restored = cli("restore", str(dump), "--store", url)
            assert restored.exit_code == 0, restored.output
            assert "restored " in restored.stdout
            assert "4 account" in restored.stdout
            again = cli("dump", "--store", url)
            assert again.exit_code == 0, again.output
            assert body(again.stdout) == body(printed.stdout)
            asyncio.run(check_moved(url, source, populated))


def populated_sqlite(tmp_path: Path) -> str:
    """The URL of a SQLite store filled by ``populate``."""
    url = f"sqlite:///{tmp_path / 'source.db'}"

    async def fill() -> None:
        async with opened(url) as (ctx, http):
            assert isinstance(ctx.clock, FakeClock)
            await populate(http, ctx, ctx.clock)

    asyncio.run(fill())
    return url


def test_restore_reads_stdin(tmp_path: Path) -> None:
    """`quotad restore -` reads the dump from stdin."""
    source_url = populated_sqlite(tmp_path)
    printed = cli("dump", "--store", source_url)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    restored = cli("restore", "-", "--store", target, stdin=printed.stdout.encode())
    assert restored.exit_code == 0, restored.output
    assert body(cli("dump", "--store", target).stdout) == body(printed.stdout)


def test_restore_into_a_store_in_use_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """`quotad restore` into a store with a service exits 1 saying so; the store is unchanged."""
    source_url = populated_sqlite(tmp_path)
    dump = tmp_path / "quotad.jsonl"
    assert cli("dump", "-o", str(dump), "--store", source_url).exit_code == 0
    with postgres_schema() as url:

        async def occupy() -> None:
            async with opened(url) as (ctx, _http):
                await ctx.records.create_service(Service("other", "", START))

        asyncio.run(occupy())
        before = cli("dump", "--store", url).stdout
        refused = cli("restore", str(dump), "--store", url)
        assert refused.exit_code == 1
        assert "error CONFLICT: the target store is not empty" in refused.stderr
        assert "nothing was restored" in refused.stderr
        assert body(cli("dump", "--store", url).stdout) == body(before)


def test_restore_of_a_dump_cut_short_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    """`quotad restore` of a dump without its end line says it was cut short, exits 1 and
    leaves the store empty."""
    printed = cli("dump", "--store", populated_sqlite(tmp_path)).stdout
    dump = tmp_path / "cut.jsonl"
    dump.write_text("".join(printed.splitlines(keepends=True)[:-1]))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    refused = cli("restore", str(dump), "--store", target)
    assert refused.exit_code == 1
    assert "error VALIDATION_FAILED" in refused.stderr
    assert "cut short" in refused.stderr
    assert [json.loads(line)["kind"] for line in body(cli("dump", "--store", target).stdout)] == [
        "end"
    ]


def test_restore_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    """`quotad restore` of a file that does not exist says so and exits 2."""
    answer = cli("restore", str(tmp_path / "nope.jsonl"), "--store", f"sqlite:///{tmp_path}/t.db")
    assert answer.exit_code == 2
    assert "cannot read" in answer.stderr
    assert "No such file or directory" in answer.stderr


def test_every_kind_has_its_line_and_its_table() -> None:
    """Each record kind of a dump has one line model and one SQL reader and writer, in order."""
    from quotad.domain.dump import DUMP_ORDER
    from quotad.service import dump
    from quotad.storage.sql import dump as sql_dump

    assert tuple(dump._LINES) == DUMP_ORDER
    assert tuple(kind.type for kind in sql_dump._KINDS) == DUMP_ORDER
    assert len(set(dump.KINDS)) == len(DUMP_ORDER)


# Every store ------------------------------------------------------------------------
async def dumped(ctx: Context) -> list[bytes]:
    """The context's store as dump lines."""
    return [line async for _kind, line in dump_lines(ctx)]


@pytest.fixture
async def target(
    store_kind: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Context]:
    """A second, empty, opened store of the test's kind, as a context."""
    cluster = request.getfixturevalue("redis_cluster") if store_kind == "redis-cluster" else None
    with store_url(store_kind, tmp_path / "target", cluster) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            yield Context(stores, make_settings(url), clock)
        finally:
            await stores.close()


async def test_dump_restore_dump_gives_the_same_lines(
    ctx: Context, client: httpx2.AsyncClient, clock: FakeClock, target: Context
) -> None:
    """A dump restored into an empty store of the same kind dumps the same lines again, and
    reads back the same records (but for dashboard sessions, which a dump leaves out)."""
    await populate(client, ctx, clock)
    later = clock.now() + timedelta(hours=1)
    await ctx.records.create_session("signed-in", later, clock.now())
    lines = await dumped(ctx)
    assert len(lines) > 40
    counts = await restore_lines(target, lines)
    # Dashboard sessions stay behind: their owners sign in again.
    assert await ctx.records.session_live("signed-in", clock.now())
    assert not await target.records.session_live("signed-in", clock.now())
    assert counts["key"] == 8
    assert counts["account"] == 4
    assert counts["grant"] == 4  # three given (one voided) and the month's refill
    assert counts["reservation"] == 2
    assert counts["webhook"] == 3
    assert counts["delivery"] > 4
    assert body(await dumped(target)) == body(lines)
    assert await state(target.stores) == await state(ctx.stores)


async def test_a_dump_is_one_snapshot(
    ctx: Context, client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A record written while a dump is being read is not in it (nor half in it)."""
    await populate(client, ctx, clock)
    reading = ctx.counters.dump()
    first = await anext(reading)
    await call(client, "POST", "/admin/v1/accounts", {"id": "late", "name": "Late", "plan": "pro"})
    await call(
        client, "POST", "/admin/v1/accounts/late/limits/cohort.max_count/acquire", {"amount": 1}
    )
    rest = [item async for item in reading]
    assert not any(getattr(item, "id", None) == "late" for item in [first, *rest])
    assert not any(getattr(item, "account_id", None) == "late" for item in rest)
    assert sum(isinstance(item, Account) for item in rest) == 4


async def test_restore_into_a_store_in_use_is_refused(
    ctx: Context, client: httpx2.AsyncClient, clock: FakeClock, target: Context
) -> None:
    """Restoring into a store that has a plan, service or account raises Conflict and writes
    nothing, not even the dump's settings."""
    await populate(client, ctx, clock)
    lines = await dumped(ctx)
    await target.records.create_service(Service("other", "", START))
    before = await dumped(target)
    with pytest.raises(Conflict, match="not empty"):
        await restore_lines(target, lines)
    assert body(await dumped(target)) == body(before)
    assert await target.records.get_setting(auth.ADMIN_TOKEN_SETTING) is None


def _mangle(lines: list[bytes], number: int, change: dict[str, Any]) -> list[bytes]:
    data = json.loads(lines[number - 1])
    data.update(change)
    return [*lines[: number - 1], json.dumps(data).encode() + b"\n", *lines[number:]]


async def test_a_bad_dump_restores_nothing(
    ctx: Context, client: httpx2.AsyncClient, clock: FakeClock, target: Context
) -> None:
    """A dump with a bad line near its end, or cut short, is refused naming the line, and
    leaves the store empty: the good dump restores into it afterwards."""
    await populate(client, ctx, clock)
    lines = await dumped(ctx)
    last_usage = max(i for i, raw in enumerate(lines, 1) if b'"kind":"usage"' in raw)
    key_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"key"' in raw)
    account_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"account"' in raw)
    plan_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"plan"' in raw)
    webhook_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"webhook"' in raw)
    alert_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"alert"' in raw)
    delivery_line = next(i for i, raw in enumerate(lines, 1) if b'"kind":"delivery"' in raw)
    no_thresholds = {"quotas": {}, "limits": {}, "alert_thresholds": [80, 80]}
    other_id = _mangle(lines, alert_line, {"id": "evt_other"})[alert_line - 1]
    same_dedupe = [*lines[:alert_line], other_id, *lines[alert_line:]]
    cases = [
        (
            _mangle(lines, plan_line, {"alert_thresholds": [0]}),
            f"/line/{plan_line}/alert_thresholds",
        ),
        (
            _mangle(lines, account_line, {"overrides": no_thresholds}),
            f"/line/{account_line}/overrides/alert_thresholds",
        ),
        (
            _mangle(lines, webhook_line, {"events": ["quota.nope"]}),
            f"/line/{webhook_line}/events/0",
        ),
        (same_dedupe, f"/line/{alert_line + 1}"),  # one crossing written twice
        (
            _mangle(lines, delivery_line, {"endpoint_id": "wh_gone"}),
            f"/line/{delivery_line}/endpoint_id",
        ),
        (
            _mangle(lines, delivery_line, {"status": "pending", "next_at": None}),
            f"/line/{delivery_line}",
        ),
        (_mangle(lines, last_usage, {"used": -1}), f"/line/{last_usage}/used"),
        (_mangle(lines, last_usage, {"account_id": "nobody"}), f"/line/{last_usage}/account_id"),
        (_mangle(lines, key_line, {"digest": "secret"}), f"/line/{key_line}/digest"),
        (_mangle(lines, account_line, {"timezone": "Mars/Base"}), f"/line/{account_line}/timezone"),
        (lines[:-1], f"/line/{len(lines)}"),  # no end line: cut short
        (lines[1:], "/line/1/kind"),  # no header
        (_mangle(lines, 1, {"version": VERSION + 1}), "/line/1/version"),  # newer
        ([*lines[:-1], lines[key_line - 1], lines[-1]], f"/line/{len(lines)}/kind"),  # order
        (_mangle(lines, len(lines), {"counts": {"usage": 1}}), f"/line/{len(lines)}/counts"),
    ]
    empty = body(await dumped(target))
    assert len(empty) == 1  # the end line alone
    for bad, path in cases:
        with pytest.raises(ValidationFailed) as raised:
            await restore_lines(target, bad)
        assert [e.path for e in raised.value.validation_errors] == [path], path
        assert "nothing was restored" in raised.value.note
        assert body(await dumped(target)) == empty
    await restore_lines(target, lines)
    assert body(await dumped(target)) == body(lines)


async def test_a_row_twice_restores_nothing(
    ctx: Context, client: httpx2.AsyncClient, clock: FakeClock, target: Context
) -> None:
    """A dump that holds one usage day twice is refused as a Conflict; nothing is written."""
    await populate(client, ctx, clock)
    lines = await dumped(ctx)
    usage = next(i for i, raw in enumerate(lines) if b'"kind":"usage"' in raw)
    end = json.loads(lines[-1])
    end["counts"]["usage"] += 1
    twice = [*lines[: usage + 1], lines[usage], *lines[usage + 1 : -1], json.dumps(end).encode()]
    with pytest.raises(Conflict, match="twice"):
        await restore_lines(target, twice)
    assert await target.records.list_accounts(10, None) == []


def old_dump() -> list[bytes]:
    """A dump as quotad wrote it before alerts (format version 1): no alert thresholds, no
    webhooks, alert events nor deliveries."""
    at = "2024-11-05T12:00:00+00:00"
    lines: list[dict[str, Any]] = [
        {"kind": "header", "format": "quotad-dump", "version": 1, "quotad": "0.1.0",
         "created_at": at, "store": "sqlite"},
        {"kind": "service", "name": "insights", "description": "", "created_at": at},
        {"kind": "plan", "id": "free", "description": "", "limits": [], "created_at": at,
         "quotas": {"insights": {"total": 50, "period": "day"}}},
        {"kind": "account", "id": "acme", "name": "Acme", "plan": "free", "timezone": "UTC",
         "status": "active", "overrides": {"quotas": {}, "limits": {}}, "billing_anchor": None,
         "created_at": at},
        {"kind": "end", "counts": {"setting": 0, "service": 1, "plan": 1, "account": 1,
                                   "key": 0, "audit": 0}},
    ]  # fmt: skip
    return [json.dumps(line).encode() + b"\n" for line in lines]


async def test_an_old_dump_without_alerts_still_restores(target: Context) -> None:
    """A version 1 dump restores: its plan and account have no alert thresholds of their
    own (the defaults apply), and there are no webhooks, alert events or deliveries."""
    counts = await restore_lines(target, old_dump())
    assert counts == {"service": 1, "plan": 1, "account": 1}
    plan = await target.records.get_plan("free")
    account = await target.records.get_account("acme")
    assert plan is not None
    assert account is not None
    assert plan.alert_thresholds is None
    assert account.overrides.alert_thresholds is None
    alerts = target.stores.alerts
    assert await alerts.list_webhooks() == []
    assert await alerts.alert_events(10) == []
    again = [json.loads(line) for line in body(await dumped(target))]
    assert [line["kind"] for line in again] == ["service", "plan", "account", "end"]
    assert again[1]["alert_thresholds"] is None


async def test_a_memory_deployment_moves_to_every_store(target: Context) -> None:
    """A populated memory deployment (alerts and thresholds included) restores into each
    store kind with every record equal, and dumps the same lines there."""
    async with opened("memory://") as (source, http):
        assert isinstance(source.clock, FakeClock)
        populated = await populate(http, source, source.clock)
        lines = await dumped(source)
        expected = await state(source.stores)
    await restore_lines(target, lines)
    assert await state(target.stores) == expected
    assert body(await dumped(target)) == body(lines)
    await check_alerts_moved(target, expected, populated)


@pytest.mark.postgresql
def test_a_connection_lost_mid_restore_restores_nothing(tmp_path: Path) -> None:
    """PostgreSQL ending the restore's connection after accounts and keys were written
    fails the restore, saying nothing was restored; and nothing was."""
    import psycopg

    lines = cli("dump", "--store", populated_sqlite(tmp_path)).stdout.splitlines()
    name = f"dumptest{uuid.uuid4().hex[:12]}"
    with postgres_schema() as schema_url:
        url = f"{schema_url}&application_name={name}"

        def cut_at_usage() -> Iterator[bytes]:
            for line in lines:
                if json.loads(line)["kind"] == "usage":
                    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                        admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = %s",
                            (name,),
                        )
                yield line.encode()

        async def restore() -> None:
            async with opened(url) as (ctx, _http):
                with pytest.raises(StorageError, match="nothing was restored"):
                    await restore_lines(ctx, cut_at_usage())
            async with opened(url) as (ctx, _http):
                assert await ctx.records.list_accounts(10, None) == []
                assert await ctx.records.list_services() == []
                assert await ctx.records.get_setting(auth.ADMIN_TOKEN_SETTING) is None

        asyncio.run(restore())


def test_progress_shows_only_on_a_terminal(tmp_path: Path) -> None:
    """Dump and restore draw their progress on a terminal, and write nothing to one that is not."""
    source_url = f"sqlite:///{tmp_path / 'source.db'}"

    async def run(terminal: bool, target: str) -> tuple[str, str]:
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=100)
        sink = io.BytesIO()
        async with opened(source_url) as (ctx, http):
            if not await ctx.records.list_services():
                assert isinstance(ctx.clock, FakeClock)
                await populate(http, ctx, ctx.clock)
            await write_dump(ctx, sink, console)
        drawn = out.getvalue()
        out.truncate(0)
        async with opened(target) as (ctx, _http):
            await read_dump(ctx, io.BytesIO(sink.getvalue()), len(sink.getvalue()), console)
        return drawn, out.getvalue()

    dumping, restoring = asyncio.run(run(True, f"sqlite:///{tmp_path / 'a.db'}"))
    assert "dumping" in dumping
    assert "restoring" in restoring
    assert asyncio.run(run(False, f"sqlite:///{tmp_path / 'b.db'}")) == ("", "")


@pytest.mark.redis
def test_redis_restore_drops_counters_left_under_its_prefix(tmp_path: Path) -> None:
    """Counters an earlier deployment left in Redis under the prefix do not stand in for a
    restored account's: its usage continues from the dump."""

    async def main(url: str) -> None:
        async with opened("memory://") as (ctx, http):
            assert isinstance(ctx.clock, FakeClock)
            populated = await populate(http, ctx, ctx.clock)
            lines = await dumped(ctx)
        async with opened(url, FakeClock(populated.clock.now())) as (target, http):
            await restore_lines(target, lines)
            answer = await verify(http, populated.keys["acme-main"], "insights", 1)
            assert answer["used"] == 4 + 1

    with store_url("redis", tmp_path) as url:
        prefix = url.split("prefix=")[1].split("&")[0]
        leftover = redis.Redis.from_url(REDIS_URL)
        try:
            day = (START + timedelta(days=1)).date().isoformat()
            counter = {"used": 55, "total": 60, "rejected": 0}
            leftover.hset(f"{prefix}:{{acme}}:u:insights:{day}", mapping=counter)
            leftover.set(f"{prefix}:{{acme}}:m", "stale")
        finally:
            leftover.close()
        asyncio.run(main(url))
