"""A Redis Cluster master dies under load and comes back empty: only its accounts notice.

A fresh 3-master Redis Cluster of this test's own (it kills a master, so never the session
one), records in PostgreSQL, three `quotad serve` nodes on ``redis+cluster://``. Twelve
accounts, four on each master (by the slot of their hash tag ``{account_id}``), each with a
quota of 250, take concurrent verifies over all three nodes. One master is SIGKILLed under
that load, then started again on its ports with its cluster config file, without its data.

While it is down, accounts on the live masters must be served as before (exactly 250
granted each) and only the dead master's accounts refused (503). After it is back, no
account may be granted past 250, and every account's stored usage must equal its grants.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import (
    LOOPBACK,
    REDIS_START_SECONDS,
    RedisClusterProcesses,
    RedisProcess,
    start_redis_cluster,
)
from tests.faults import (
    Account,
    Answer,
    Load,
    gc_paused,
    granted_by_account,
    http_client,
    provision,
    quotad_nodes,
    settled_usage,
    statuses,
)
from tests.servers import postgres_schema

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgresql,
    pytest.mark.timeout(180),
]

TOTAL = 250
PER_MASTER = 4
# Callers for the accounts of the live masters, and apart (so refusals, however slow, take
# no caller from them) for the accounts of the master that dies.
LIVE_CALLERS, DEAD_CALLERS = 24, 6
KILL_AT = 1500  # grants in all before the kill: about half of the 12 quotas
# The master stays down at most this long: within the cluster's node timeout (15 s), after
# which the live masters would mark it failed and refuse every slot (CLUSTERDOWN).
DOWN_AT_MOST = 11.0
SETTLING = 1.0  # seconds after the kill when a live account's verify may still fail
AFTER_RESTART_AT_LEAST = 3.0
AFTER_RESTART_AT_MOST = 12.0


def masters_by_slot(cluster: RedisClusterProcesses) -> Callable[[int], int]:
    """Which master (client port) serves a slot, as the cluster says (CLUSTER SLOTS)."""
    client = redis.Redis(host=LOOPBACK, port=cluster.ports[0])
    try:
        ranges = [
            (int(first), int(last), int(master[1]))
            for first, last, master, *_replicas in client.execute_command("CLUSTER", "SLOTS")
        ]
    finally:
        client.close()

    def master_of(slot: int) -> int:
        return next(port for first, last, port in ranges if first <= slot <= last)

    return master_of


def spread_accounts(cluster: RedisClusterProcesses) -> dict[str, int]:
    """``PER_MASTER`` account ids per master: id -> the port of the master holding its keys."""
    master_of = masters_by_slot(cluster)
    chosen: dict[str, int] = {}
    count: dict[int, int] = defaultdict(int)
    n = 0
    while len(chosen) < PER_MASTER * len(cluster.ports):
        account_id = f"acct-{n}"
        n += 1
        port = master_of(key_slot(f"{{{account_id}}}".encode()))  # the keys' hash tag
        if count[port] < PER_MASTER:
            count[port] += 1
            chosen[account_id] = port
    return chosen


def cluster_ok(nodes: list[RedisProcess]) -> None:
    """Return once every node says ``cluster_state:ok`` (fail the test after a while)."""
    deadline = time.monotonic() + REDIS_START_SECONDS
    while not all("cluster_state:ok" in node.cli_run("cluster", "info") for node in nodes):
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster never healed: {nodes[0].cli_run('cluster', 'nodes')}")
        time.sleep(0.05)


@dataclass
class Failover:
    """The accounts, where they live, when the master died and came back, every answer."""

    accounts: list[Account]
    dead: set[str]  # ids of the accounts on the killed master
    answers: list[Answer]
    killed: float = 0.0
    restart_sent: float = 0.0
    restarted: float = 0.0
    # When each account's latest verify refused for its quota was asked.
    last_exceeded: dict[str, float] = field(default_factory=dict)

    def observe(self, answer: Answer) -> None:
        """Note an answer as it arrives."""
        if answer.exceeded:
            previous = self.last_exceeded.get(answer.account_id, 0.0)
            self.last_exceeded[answer.account_id] = max(previous, answer.started)

    def done(self, account_id: str, since: float = 0.0) -> bool:
        """Whether the account was refused for its quota in a verify asked after ``since``."""
        return self.last_exceeded.get(account_id, -1.0) >= since

    def granted(self, asked_before: float = float("inf")) -> dict[str, int]:
        """Grants per account among the verifies asked before ``asked_before``."""
        return granted_by_account([a for a in self.answers if a.started < asked_before])


async def drive(
    loads: list[Load], failover: Failover, victim: RedisProcess, cluster: RedisClusterProcesses
) -> None:
    """Load until half is granted; kill; load; restart it empty; load; stop."""
    live = [a.id for a in failover.accounts if a.id not in failover.dead]
    started = time.monotonic()
    for load in loads:
        load.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(a.valid for a in failover.answers) >= KILL_AT:
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(victim.kill)
        failover.killed = time.monotonic()
        print(f"\n{KILL_AT} granted in {failover.killed - started:.1f} s; master killed")
        deadline = failover.killed + DOWN_AT_MOST
        while time.monotonic() < deadline:
            if all(map(failover.done, live)):
                break
            await asyncio.sleep(0.05)
        failover.restart_sent = time.monotonic()
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(cluster_ok, cluster.nodes)
        failover.restarted = time.monotonic()
        deadline = failover.restarted + AFTER_RESTART_AT_MOST
        while time.monotonic() < deadline:
            settled = time.monotonic() >= failover.restarted + AFTER_RESTART_AT_LEAST
            if settled and all(failover.done(a.id, failover.restarted) for a in failover.accounts):
                break
            await asyncio.sleep(0.05)
    finally:
        for load in loads:
            await load.stop()


async def test_a_dead_master_refuses_only_its_accounts_and_overgrants_none_when_back(
    tmp_path: Path,
) -> None:
    """One of 3 masters SIGKILLed, then back empty: others' accounts get exactly 250, none > 250."""
    with (
        start_redis_cluster(tmp_path / "cluster") as cluster,
        postgres_schema() as records,
    ):
        victim = cluster.nodes[2]  # not the node the URL names
        placed = spread_accounts(cluster)
        url = f"redis+cluster://{LOOPBACK}:{cluster.ports[0]}?prefix=fo&records={records}"
        with quotad_nodes(url, tmp_path, 3) as bases:
            async with http_client() as http:
                accounts = await provision(http, bases[0], list(placed), TOTAL)
                dead = {a.id for a in accounts if placed[a.id] == victim.port}
                failover = Failover(accounts, dead, [])

                def picker(group: list[Account]) -> Callable[[int], tuple[str, Account]]:
                    def pick(n: int) -> tuple[str, Account]:
                        # Each account is asked until refused for its quota (then it rests);
                        # after the restart every account is asked again until it is refused,
                        # to catch any granted twice, and every caller helps with that.
                        if failover.restarted:
                            since, pool = failover.restarted, accounts
                        else:
                            since, pool = 0.0, group
                        active = [a for a in pool if not failover.done(a.id, since)] or pool
                        account = active[n % len(active)]
                        return bases[(n // len(active)) % len(bases)], account

                    return pick

                loads = [
                    Load(http, picker(group), callers, failover.answers, failover.observe)
                    for group, callers in (
                        ([a for a in accounts if a.id not in dead], LIVE_CALLERS),
                        ([a for a in accounts if a.id in dead], DEAD_CALLERS),
                    )
                ]
                with gc_paused():
                    await drive(loads, failover, victim, cluster)
                granted = failover.granted()
                stored = await settled_usage(http, bases[0], granted)
    problems = check_failover(failover, granted, stored)
    assert problems == [], "\n".join(problems)


def check_failover(
    failover: Failover, granted: dict[str, int], stored: dict[str, int | None]
) -> list[str]:
    """The failover's checks; every violated one, described."""
    dead, answers = failover.dead, failover.answers
    down = [
        a for a in answers if a.started >= failover.killed and a.finished < failover.restart_sent
    ]
    after = [a for a in answers if a.started >= failover.restarted]
    before_restart = failover.granted(failover.restart_sent)
    last_second = [a for a in answers if failover.killed - 1 <= a.finished < failover.killed]
    print(  # the measured numbers, for the record (pytest -s)
        f"\n{len(answers)} verifies; master down {failover.restart_sent - failover.killed:.1f} s, "
        f"healed {failover.restarted - failover.restart_sent:.1f} s after its restart\n"
        f"while down: live accounts {statuses([a for a in down if a.account_id not in dead])}, "
        f"dead master's {statuses([a for a in down if a.account_id in dead])}\n"
        f"after the restart: {statuses(after)}\n"
        f"granted before the restart {before_restart}\ngranted {granted}\nstored  {stored}\n"
        f"dead master's accounts: {sorted(dead)}; their grants in the second before the kill: "
        f"{sum(a.valid and a.account_id in dead for a in last_second)}"
    )
    problems = []
    for account in failover.accounts:
        account_id = account.id
        if account_id in dead:
            wrong = [
                (a.status, a.body)
                for a in down
                if a.account_id == account_id and a.started >= failover.killed and not a.unavailable
            ]
            if wrong:
                problems.append(f"{account_id} (dead master) answered while down: {wrong[:2]}")
            if not any(a.status == 200 for a in after if a.account_id == account_id):
                problems.append(f"{account_id} (dead master) never answered after the restart")
        else:
            if before_restart[account_id] != TOTAL:
                problems.append(
                    f"{account_id} (live master) granted {before_restart[account_id]} "
                    f"of {TOTAL} while the other master was down"
                )
            refused = [
                a
                for a in down
                if a.account_id == account_id
                and a.started >= failover.killed + SETTLING
                and a.status != 200
            ]
            if refused:
                problems.append(
                    f"{account_id} (live master) refused {len(refused)} verifies while the "
                    f"other master was down: {statuses(refused)}"
                )
        if granted[account_id] > TOTAL:
            problems.append(f"{account_id}: granted {granted[account_id]} of {TOTAL}")
    if stored != granted:
        problems.append(f"stored {stored} != granted {granted}")
    return problems
