"""The in-process store: dictionaries, for tests, benchmarks and embedded use.

Nothing survives the process. Every method runs to completion without awaiting, so
on one event loop each is atomic; a lock makes that true across threads as well.

``consume`` is the hot path of an embedded quotad and is written to cost little more
than a dictionary update: counters are mutable ``[used, total, rejected]`` lists (a
``UsageDay`` is built only when usage is read), and the outcome is a tuple.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, assert_never

from quotad.domain.credits import Grant, Hold, Reservation
from quotad.domain.dump import (
    AccountTotal,
    AccountUsage,
    DumpItem,
    Gauge,
    IdempotencyAnswer,
    SeenEvent,
    Setting,
    WindowCounter,
)
from quotad.domain.limits import HARD, Limits, Slot, decide, is_day_row
from quotad.domain.models import (
    Account,
    ApiKey,
    ConsumeOutcome,
    EventsOutcome,
    IdempotencyClaim,
    Plan,
    Service,
    TotalChange,
    UsageDay,
    UsageEvent,
    effective_totals,
)
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.domain.webhooks import AlertEvent, Delivery, WebhookEndpoint
from quotad.errors import Conflict, NotFound
from quotad.storage.base import NOT_EMPTY
from quotad.storage.memory_alerts import MemoryAlerts
from quotad.storage.memory_credits import MemoryCredits
from quotad.storage.memory_reservations import MemoryReservations
from quotad.storage.slot_calls import SlotCalls

_UsageKey = tuple[str, str, date]
_USED, _TOTAL, _REJECTED = 0, 1, 2
_new = tuple.__new__  # builds a named tuple (a ConsumeOutcome, a Slot) without its Python __new__


class MemoryStore(MemoryAlerts, MemoryCredits, MemoryReservations):
    """Everything in dictionaries guarded by one lock."""

    def __init__(self, url: str = "memory://") -> None:
        MemoryAlerts.__init__(self)
        MemoryCredits.__init__(self)
        MemoryReservations.__init__(self)
        self.url = url
        self._lock = threading.Lock()
        self._settings: dict[str, str] = {}
        self._services: dict[str, Service] = {}
        self._plans: dict[str, Plan] = {}
        self._accounts: dict[str, Account] = {}
        self._keys: dict[str, ApiKey] = {}
        self._key_by_digest: dict[str, str] = {}
        self._usage: dict[_UsageKey, list[int]] = {}
        # Limits v2's other counters, (account, name, period) -> [value, total].
        self._counters: dict[tuple[str, str, str], list[int]] = {}
        # Every counter a slot has named, by (account, name, period) text: the other
        # counters and the day rows of ``_usage`` (the same lists), so that a slot finds
        # its row in one lookup. Cleared whenever a day row is replaced or removed.
        self._cells: dict[tuple[str, str, str], list[int]] = {}
        # A Limits v2 call's slots and their rows (``slot_calls``), found under the lock.
        # Cleared with ``_cells``.
        self._calls: SlotCalls[list[list[int]]] = SlotCalls(self._rows_of)
        self._events: dict[tuple[str, str], datetime] = {}  # -> when it was recorded
        self._idempotency: dict[tuple[str, str], tuple[IdempotencyClaim, ConsumeOutcome]] = {}
        self._gauges: dict[tuple[str, str], int] = {}
        # The Idempotency-Keys of gauge moves: the claim only (no answer to replay).
        self._gauge_claims: dict[tuple[str, str], IdempotencyClaim] = {}
        self._totals: dict[tuple[str, str], list[TotalChange]] = {}
        self._sessions: dict[str, datetime] = {}
        self._tokens: dict[str, OperatorToken] = {}
        self._audit: list[AuditEntry] = []  # by id, ascending

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def ping(self) -> None:
        """Always reachable."""

    async def get_setting(self, name: str) -> str | None:
        """A stored setting."""
        return self._settings.get(name)

    async def put_setting(self, name: str, value: str) -> None:
        """Store a setting."""
        with self._lock:
            self._settings[name] = value

    async def records_version(self) -> int | None:
        """None: one process holds this store, and its writes clear its record cache."""
        return None

    async def create_service(self, service: Service) -> None:
        """Register a service."""
        with self._lock:
            if service.name in self._services:
                raise Conflict(f"service {service.name!r} already exists")
            self._services[service.name] = service

    async def get_service(self, name: str) -> Service | None:
        """The named service."""
        return self._services.get(name)

    async def list_services(self) -> list[Service]:
        """Every service by name."""
        return sorted(self._services.values(), key=lambda s: s.name)

    async def update_service(self, service: Service) -> None:
        """Change a service's description and credit price."""
        with self._lock:
            old = self._services.get(service.name)
            if old is None:
                raise NotFound(f"service {service.name!r} is not configured")
            self._services[service.name] = replace(service, created_at=old.created_at)

    async def create_plan(self, plan: Plan) -> None:
        """Add a plan."""
        with self._lock:
            if plan.id in self._plans:
                raise Conflict(f"plan {plan.id!r} already exists")
            self._plans[plan.id] = plan

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan with this id."""
        return self._plans.get(plan_id)

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """A page of plans."""
        ids = sorted(i for i in self._plans if after is None or i > after)
        return [self._plans[i] for i in ids[:limit]]

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan, keeping its creation time."""
        with self._lock:
            old = self._plans.get(plan.id)
            if old is None:
                raise NotFound(f"plan {plan.id!r} not found")
            self._plans[plan.id] = replace(plan, created_at=old.created_at)

    async def delete_plan(self, plan_id: str) -> None:
        """Delete an unused plan."""
        with self._lock:
            if plan_id not in self._plans:
                raise NotFound(f"plan {plan_id!r} not found")
            if any(a.plan_id == plan_id for a in self._accounts.values()):
                raise Conflict(f"plan {plan_id!r} is used by accounts")
            del self._plans[plan_id]

    async def create_account(self, account: Account) -> None:
        """Add an account."""
        with self._lock:
            if account.id in self._accounts:
                raise Conflict(f"account {account.id!r} already exists")
            if account.plan_id not in self._plans:
                raise NotFound(f"plan {account.plan_id!r} not found")
            self._accounts[account.id] = account

    async def get_account(self, account_id: str) -> Account | None:
        """The account with this id."""
        return self._accounts.get(account_id)

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None, plan_id: str | None = None
    ) -> list[Account]:
        """A page of accounts, optionally matching ``search`` in id or name, and a plan."""
        needle = (search or "").casefold()
        ids = sorted(
            i
            for i, a in self._accounts.items()
            if (after is None or i > after)
            and (not needle or needle in i.casefold() or needle in a.name.casefold())
            and (plan_id is None or a.plan_id == plan_id)
        )
        return [self._accounts[i] for i in ids[:limit]]

    async def count_accounts_by_plan(self) -> dict[str, int]:
        """Accounts per plan."""
        with self._lock:
            counts: dict[str, int] = {}
            for account in self._accounts.values():
                counts[account.plan_id] = counts.get(account.plan_id, 0) + 1
            return counts

    async def update_account(self, account: Account) -> None:
        """Replace an account's fields."""
        with self._lock:
            if account.id not in self._accounts:
                raise NotFound(f"account {account.id!r} not found")
            if account.plan_id not in self._plans:
                raise NotFound(f"plan {account.plan_id!r} not found")
            self._accounts[account.id] = account

    async def delete_account(self, account_id: str) -> None:
        """Delete an account and everything it owns."""
        with self._lock:
            if self._accounts.pop(account_id, None) is None:
                raise NotFound(f"account {account_id!r} not found")
            for key in [k for k in self._keys.values() if k.account_id == account_id]:
                del self._keys[key.id]
                del self._key_by_digest[key.digest]
            for usage_key in [u for u in self._usage if u[0] == account_id]:
                del self._usage[usage_key]
            self._forget_cells()
            for counter_key in [c for c in self._counters if c[0] == account_id]:
                del self._counters[counter_key]
            with self._credits_lock:
                self._grants.pop(account_id, None)  # its credits go with it
            for gauge_key in [g for g in self._gauges if g[0] == account_id]:
                del self._gauges[gauge_key]
            for idem_key in [i for i in self._idempotency if i[0] == account_id]:
                del self._idempotency[idem_key]
            for claim_key in [c for c in self._gauge_claims if c[0] == account_id]:
                del self._gauge_claims[claim_key]
            for totals_key in [t for t in self._totals if t[0] == account_id]:
                del self._totals[totals_key]

    async def create_key(self, key: ApiKey) -> None:
        """Store a key record."""
        with self._lock:
            self._insert_key(key)

    def _insert_key(self, key: ApiKey) -> None:
        if key.account_id not in self._accounts:
            raise NotFound(f"account {key.account_id!r} not found")
        if key.id in self._keys or key.digest in self._key_by_digest:
            raise Conflict("key already exists")
        self._keys[key.id] = key
        self._key_by_digest[key.digest] = key.id

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key record with this id."""
        return self._keys.get(key_id)

    async def find_key(self, digest: str) -> ApiKey | None:
        """The key record with this digest."""
        key_id = self._key_by_digest.get(digest)
        return None if key_id is None else self._keys.get(key_id)

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """The key with this digest, its account and the account's plan."""
        with self._lock:
            key_id = self._key_by_digest.get(digest)
            key = None if key_id is None else self._keys.get(key_id)
            account = None if key is None else self._accounts.get(key.account_id)
            plan = None if account is None else self._plans.get(account.plan_id)
        return None if key is None or account is None or plan is None else (key, account, plan)

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """An account's keys, oldest first."""
        keys = [k for k in self._keys.values() if k.account_id == account_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Revoke a key."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                raise NotFound(f"key {key_id!r} not found")
            if key.revoked_at is None or key.revoked_at > at:
                key = replace(key, revoked_at=at)
                self._keys[key_id] = key
            return key

    async def set_key_limits(self, key_id: str, own: dict[str, Limits]) -> ApiKey:
        """Replace a key's own limits."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                raise NotFound(f"key {key_id!r} not found")
            key = self._keys[key_id] = replace(key, limits=dict(own))
            return key

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Replace a key, keeping the old one valid until ``old_valid_until``."""
        with self._lock:
            old = self._keys.get(key_id)
            if old is None:
                raise NotFound(f"key {key_id!r} not found")
            self._insert_key(new_key)
            expires = old_valid_until
            if old.expires_at is not None and old.expires_at < expires:
                expires = old.expires_at
            self._keys[key_id] = replace(old, expires_at=expires, replaced_by=new_key.id)

    async def consume(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
        extra: tuple[Slot, ...] = (),
        day_mode: int = HARD,
        hold: Hold | None = None,
    ) -> ConsumeOutcome:
        """Add ``cost`` within ``total``, all or nothing (and make ``hold``'s reservation
        with a grant: nothing runs between the two)."""
        if extra or day_mode != HARD or (hold is not None and claim is not None):
            args = (account_id, service, day, total, day_mode, cost, extra)
            outcome, slots = self._consume_slots(args, claim, now)
            if hold is not None and outcome.granted and not outcome.replayed:
                self._make(hold, account_id, day, slots, outcome.before, outcome.after)
            return outcome
        if claim is not None:
            return self._consume_claimed(account_id, service, day, cost, total, claim, now)
        key = (account_id, service, day)
        lock = self._lock
        # acquire/try/finally rather than ``with``: the same guarantee, and on Python 3.11
        # ``with`` costs about a sixth of this whole method.
        lock.acquire()
        try:
            row = self._usage.get(key)
            if row is None:
                row = self._usage[key] = [0, total, 0]
            # Literal indexes: [used, total, rejected]; a global name costs a lookup here.
            row[1] = total
            used = row[0] + cost
            if used <= total:
                row[0] = used
                granted = _new(ConsumeOutcome, (True, used, total, day, False, (), -1, 0, ()))
                if hold is None:
                    return granted
            else:
                row[2] += 1
                return _new(ConsumeOutcome, (False, row[0], total, day, False, (), 0, 0, ()))
        finally:
            lock.release()
        # A grant with a hold: its reservation, before anything else can run.
        slot = Slot(service, day.isoformat(), total, HARD, cost)
        self._make(hold, account_id, day, (slot,), (used - cost,), (used,))
        return granted

    def _make(
        self,
        hold: Hold,
        account_id: str,
        day: date,
        slots: tuple[Slot, ...],
        before: tuple[int, ...],
        after: tuple[int, ...],
    ) -> None:
        """Store the reservation ``hold`` makes of a grant (nothing awaited before it)."""
        made = hold.reservation_of(account_id, day, slots, before, after)
        self._create_made(made)
        hold.made = made

    def _forget_cells(self) -> None:
        """Forget where every counter is (a day row was replaced or removed)."""
        self._cells.clear()
        self._calls.clear()

    def _row(self, account_id: str, slot: Slot) -> list[int]:
        """The stored counter of ``slot`` (created empty): a day row's ``[used, total,
        rejected]`` or another counter's ``[value, total]``."""
        cell_key = (account_id, slot.name, slot.period)
        row = self._cells.get(cell_key)
        if row is not None:
            return row
        if is_day_row(slot):
            key = (account_id, slot.name, date.fromisoformat(slot.period))
            row = self._usage.get(key)
            if row is None:
                row = self._usage[key] = [0, slot.total, 0]
        else:
            row = self._counters.get(cell_key)
            if row is None:
                row = self._counters[cell_key] = [0, slot.total]
        self._cells[cell_key] = row
        return row

    def _rows_of(self, account_id: str, slots: tuple[Slot, ...]) -> list[list[int]]:
        """The stored counter of each of a call's slots (its lock held)."""
        return [self._row(account_id, slot) for slot in slots]

    def _consume_slots(
        self,
        args: tuple[str, str, date, int, int, int, tuple[Slot, ...]],
        claim: IdempotencyClaim | None,
        now: datetime | None,
    ) -> tuple[ConsumeOutcome, tuple[Slot, ...]]:
        """Limits v2: every slot of a call (``SlotCalls.slots_of``'s ``args``: its day row,
        then its other slots) decided together, all or nothing (``limits.decide``); the
        outcome, and the slots."""
        now_us = int((now or datetime.now(UTC)).timestamp() * 1_000_000)
        account_id, day = args[0], args[2]
        lock = self._lock
        lock.acquire()  # not ``with``: see ``consume``
        try:
            slots, rows = self._calls.slots_of(*args)
            if claim is not None:
                seen = self._idempotency.get((account_id, claim.key))
                if seen is not None and (now is None or seen[0].expires_at > now):
                    if seen[0].fingerprint != claim.fingerprint:
                        raise Conflict("Idempotency-Key was used with a different request")
                    replayed = seen[1]._replace(replayed=True, before=(), at_us=now_us, after=())
                    return replayed, slots
            before = tuple([row[0] for row in rows])
            refused, after = decide(before, slots, now_us)
            # ``rows`` were found for ``slots``, one each (walked by index: cheaper than zip).
            index = 0
            if refused < 0:
                for row in rows:
                    row[0] = after[index]
                    row[1] = slots[index][2]  # its total
                    index += 1
            else:
                for row in rows:
                    row[1] = slots[index][2]
                    index += 1
                    if len(row) == 3:  # a day row: it counts refused calls
                        row[2] += 1
            outcome: ConsumeOutcome = _new(
                ConsumeOutcome,
                (
                    refused < 0,
                    rows[0][0],
                    slots[0][2],
                    day,
                    False,
                    before,
                    refused,
                    now_us,
                    tuple(after) if refused < 0 else before,
                ),
            )
            if claim is not None:
                self._idempotency[(account_id, claim.key)] = (claim, outcome)
            return outcome, slots
        finally:
            lock.release()

    async def read_counters(self, account_id: str, keys: list[tuple[str, str]]) -> list[int]:
        """Counters by (name, period), 0 where absent."""
        values = []
        with self._lock:
            for name, period in keys:
                if "." in name:
                    counter = self._counters.get((account_id, name, period))
                else:
                    counter = self._usage.get((account_id, name, date.fromisoformat(period)))
                values.append(0 if counter is None else counter[0])
        return values

    def _consume_claimed(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim,
        now: datetime | None,
    ) -> ConsumeOutcome:
        with self._lock:
            seen = self._idempotency.get((account_id, claim.key))
            if seen is not None and (now is None or seen[0].expires_at > now):
                if seen[0].fingerprint != claim.fingerprint:
                    raise Conflict("Idempotency-Key was used with a different request")
                return seen[1]._replace(replayed=True)
            row = self._usage.setdefault((account_id, service, day), [0, total, 0])
            row[_TOTAL] = total
            granted = row[_USED] + cost <= total
            if granted:
                row[_USED] += cost
            else:
                row[_REJECTED] += 1
            outcome = ConsumeOutcome(granted, row[_USED], total, day)
            self._idempotency[(account_id, claim.key)] = (claim, outcome)
            return outcome

    async def adjust(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...] = (),
    ) -> UsageDay:
        """Add ``delta`` to a day (and to ``extra``'s windows), flooring at zero."""
        with self._lock:
            return self._adjusted(account_id, service, day, delta, total, extra)

    def _adjusted(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
    ) -> UsageDay:
        row = self._usage.setdefault((account_id, service, day), [0, total, 0])
        row[_USED] = max(row[_USED] + delta, 0)
        for slot in extra:
            if not slot.interval:
                counter = self._row(account_id, slot)
                counter[0] = max(counter[0] + delta, 0)
        return UsageDay(day, *row)

    async def adjust_once(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...],
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[UsageDay, bool]:
        """``adjust`` unless ``claim`` was seen before (``Store.adjust_once``)."""
        with self._lock:
            seen = self._idempotency.get((account_id, claim.key))
            if seen is not None and seen[0].expires_at > now:
                if seen[0].fingerprint != claim.fingerprint:
                    raise Conflict("Idempotency-Key was used with a different request")
                row = self._usage.get((account_id, service, day))
                return (UsageDay(day, 0, total) if row is None else UsageDay(day, *row)), True
            adjusted = self._adjusted(account_id, service, day, delta, total, extra)
            outcome = ConsumeOutcome(True, adjusted.used, adjusted.total, day)
            self._idempotency[(account_id, claim.key)] = (claim, outcome)
            return adjusted, False

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add unseen events to their days."""
        with self._lock:
            accepted = 0
            for event in events:
                if (event.account_id, event.id) in self._events:
                    continue
                self._events[(event.account_id, event.id)] = event.timestamp
                key = (event.account_id, event.service, event.day)
                row = self._usage.setdefault(key, [0, event.total, 0])
                row[_USED] += event.amount
                for name, period in event.windows:
                    counter = self._counters.setdefault((event.account_id, name, period), [0, 0])
                    counter[0] += event.amount
                accepted += 1
            return EventsOutcome(accepted, len(events) - accepted)

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Store days' absolute values, replacing what those days held."""
        with self._lock:
            if rows and account_id not in self._accounts:
                raise Conflict(f"account {account_id!r} does not exist")
            for service, row in rows:
                self._usage[(account_id, service, row.day)] = [row.used, row.total, row.rejected]
            self._forget_cells()

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """Stored days in a range."""
        with self._lock:
            rows = [
                UsageDay(day, *row)
                for (acc, svc, day), row in self._usage.items()
                if acc == account_id and svc == service and start <= day <= end
            ]
        return sorted(rows, key=lambda r: r.day)

    async def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every stored day."""
        with self._lock:
            days = sorted((k, UsageDay(k[2], *row)) for k, row in self._usage.items())
        for (account_id, service, _day), day in days:
            yield account_id, service, day

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Forget expired idempotency answers; event ids are kept (memory dies with the process)."""
        del events_before
        with self._lock:
            for key in [
                k for k, (claim, _) in self._idempotency.items() if claim.expires_at <= now
            ]:
                del self._idempotency[key]
            claims = self._gauge_claims
            for key in [k for k, claim in claims.items() if claim.expires_at <= now]:
                del claims[key]

    async def gauges(self, account_id: str) -> dict[str, int]:
        """An account's gauges."""
        return {name: v for (acc, name), v in self._gauges.items() if acc == account_id}

    async def set_gauge(self, account_id: str, name: str, usage: int) -> int:
        """Set a gauge."""
        with self._lock:
            self._gauges[(account_id, name)] = usage
            return usage

    async def acquire(self, account_id: str, name: str, amount: int, limit: int) -> int | None:
        """Acquire within the limit."""
        with self._lock:
            usage = self._gauges.get((account_id, name), 0)
            if usage + amount > limit:
                return None
            self._gauges[(account_id, name)] = usage + amount
            return usage + amount

    async def release(self, account_id: str, name: str, amount: int) -> int | None:
        """Release what is in use."""
        with self._lock:
            usage = self._gauges.get((account_id, name), 0)
            if amount > usage:
                return None
            self._gauges[(account_id, name)] = usage - amount
            return usage - amount

    async def move_gauge_once(
        self,
        account_id: str,
        name: str,
        delta: int,
        limit: int,
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[int | None, bool]:
        """``acquire`` or ``release`` unless ``claim`` was seen (``Store.move_gauge_once``)."""
        with self._lock:
            usage = self._gauges.get((account_id, name), 0)
            seen = self._gauge_claims.get((account_id, claim.key))
            if seen is not None and seen.expires_at > now:
                if seen.fingerprint != claim.fingerprint:
                    raise Conflict("Idempotency-Key was used with a different request")
                return usage, True
            moved = usage + delta
            if moved < 0 or (delta > 0 and moved > limit):
                return None, False
            self._gauges[(account_id, name)] = moved
            self._gauge_claims[(account_id, claim.key)] = claim
            return moved, False

    async def record_totals(
        self, at: datetime, *, account_id: str | None = None, plan_id: str | None = None
    ) -> None:
        """Note the totals of an account (or of a plan's accounts) that changed."""
        with self._lock:
            chosen = [
                account
                for account in self._accounts.values()
                if (account_id is None or account.id == account_id)
                and (plan_id is None or account.plan_id == plan_id)
                and account.plan_id in self._plans
            ]
            noted: dict[str, set[str]] = {account.id: set() for account in chosen}
            for owner, service in self._totals:
                if owner in noted:
                    noted[owner].add(service)
            for account in chosen:
                plan = self._plans[account.plan_id]
                for service, total in effective_totals(plan, account, noted[account.id]).items():
                    history = self._totals.setdefault((account.id, service), [])
                    _note(history, TotalChange(at, total))

    async def total_changes(self, account_id: str, service: str) -> list[TotalChange]:
        """An account's noted totals of a service, oldest first."""
        with self._lock:
            return list(self._totals.get((account_id, service), ()))

    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a session; forget the expired ones."""
        with self._lock:
            for expired in [s for s, until in self._sessions.items() if until <= now]:
                del self._sessions[expired]
            self._sessions[session_id] = expires_at

    async def session_live(self, session_id: str, now: datetime) -> bool:
        """Whether the session is recorded and unexpired."""
        until = self._sessions.get(session_id)
        return until is not None and now < until

    async def end_session(self, session_id: str) -> None:
        """Forget a session."""
        with self._lock:
            self._sessions.pop(session_id, None)

    # Operator tokens --------------------------------------------------------
    async def create_operator_token(self, token: OperatorToken) -> None:
        """Store an operator token."""
        with self._lock:
            if any(t.name == token.name for t in self._tokens.values()):
                raise Conflict(f"an operator token named {token.name!r} already exists")
            self._tokens[token.id] = token

    async def get_operator_token(self, token_id: str) -> OperatorToken | None:
        """The operator token with this id."""
        return self._tokens.get(token_id)

    async def find_operator_token(self, digest: str) -> OperatorToken | None:
        """The operator token with this digest."""
        return next((t for t in self._tokens.values() if t.digest == digest), None)

    async def list_operator_tokens(self) -> list[OperatorToken]:
        """Every operator token, oldest first."""
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))

    async def revoke_operator_token(self, token_id: str, at: datetime) -> OperatorToken:
        """Revoke an operator token."""
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                raise NotFound(f"operator token {token_id!r} not found")
            if token.revoked_at is None or token.revoked_at > at:
                token = replace(token, revoked_at=at)
                self._tokens[token_id] = token
            return token

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        """Nothing to hold: each write is applied as it is made, and none outlives the
        process (a block that fails keeps the writes made before the failure)."""
        yield

    # Audit log --------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        """Add an audit entry in id order."""
        with self._lock:
            bisect.insort(self._audit, entry, key=lambda e: e.id)

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """The matching entries, newest first."""
        with self._lock:
            entries = list(self._audit)
        found: list[AuditEntry] = []
        for entry in reversed(entries):
            if len(found) >= query.limit:
                break
            if query.matches(entry):
                found.append(entry)
        return found

    # Counters of one account: this store keeps them with its records.
    async def open_account(self, account_id: str) -> None:
        """Nothing to start: a new account's counters are whole (empty) from the start."""

    async def forget_account(self, account_id: str) -> None:
        """Nothing left: ``delete_account`` deleted the account's counters with it."""

    # The whole deployment ---------------------------------------------------------
    async def dump(self) -> AsyncIterator[DumpItem]:
        """Every record and counter, as they stood at the first step."""
        with self._lock, self._alerts_lock, self._credits_lock, self._reservations_lock:
            items = self._snapshot()
        for item in items:
            yield item

    def _snapshot(self) -> list[DumpItem]:
        items: list[DumpItem] = [Setting(n, v) for n, v in sorted(self._settings.items())]
        items += [self._services[name] for name in sorted(self._services)]
        items += [self._plans[plan_id] for plan_id in sorted(self._plans)]
        items += [self._accounts[account_id] for account_id in sorted(self._accounts)]
        keys = sorted(self._keys.values(), key=lambda k: (k.account_id, k.created_at, k.id))
        items += keys
        items += [
            AccountTotal(account_id, service, change)
            for (account_id, service), history in sorted(self._totals.items())
            for change in history
        ]
        items += [
            AccountUsage(account_id, service, UsageDay(day, *row))
            for (account_id, service, day), row in sorted(self._usage.items())
        ]
        items += [
            WindowCounter(account_id, name, period, value, total)
            for (account_id, name, period), (value, total) in sorted(self._counters.items())
        ]
        items += [Gauge(a, name, usage) for (a, name), usage in sorted(self._gauges.items())]
        items += [
            IdempotencyAnswer(
                account_id,
                key,
                claim.fingerprint,
                claim.expires_at,
                outcome.granted,
                outcome.used,
                outcome.total,
                outcome.day,
            )
            for (account_id, key), (claim, outcome) in sorted(
                self._idempotency.items(), key=lambda item: item[0]
            )
        ]
        items += [SeenEvent(a, ident, at) for (a, ident), at in sorted(self._events.items())]
        tokens = sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))
        items += tokens
        items += self._audit
        items += [self._webhooks[ident] for ident in sorted(self._webhooks)]
        items += [self._alert_events[ident] for ident in sorted(self._alert_events)]
        items += [self._deliveries[ident] for ident in sorted(self._deliveries)]  # no claims
        items += [
            grant
            for account_id in sorted(self._grants)
            for grant in sorted(self._grants[account_id].values(), key=lambda g: g.id)
        ]
        kept = {ident: found[0] for ident, found in self._reservations.items()}
        kept.update(self._settled)
        kept.update(self._recent)
        items += [kept[ident] for ident in sorted(kept)]
        return items

    async def restore(self, items: AsyncIterable[DumpItem]) -> None:
        """Fill this empty store from a dump, in a copy swapped in once the dump is whole."""
        with self._lock:
            self._require_empty()
        staged = MemoryStore(self.url)
        async for item in items:
            staged._restore_one(item)
        with self._lock, self._alerts_lock:
            self._require_empty()
            for name in (
                "_settings",
                "_services",
                "_plans",
                "_accounts",
                "_keys",
                "_key_by_digest",
                "_usage",
                "_counters",
                "_cells",
                "_events",
                "_idempotency",
                "_gauges",
                "_totals",
                "_tokens",
                "_audit",
                "_webhooks",
                "_alert_events",
                "_dedupes",
                "_deliveries",
                "_claims",
                "_grants",
                "_reservations",
                "_settled",
                "_recent",
                "_from_consumes",
            ):
                setattr(self, name, getattr(staged, name))
            self._calls.clear()  # its rows were this store's own (it held none)

    def _require_empty(self) -> None:
        if self._services or self._plans or self._accounts:
            raise Conflict(NOT_EMPTY)

    def _restore_one(self, item: DumpItem) -> None:  # noqa: PLR0912 (a branch per kind)
        def once(table: dict[Any, Any], key: Any, what: str) -> None:
            if key in table:
                raise Conflict(f"the dump holds {what} twice")

        if isinstance(item, Setting):
            self._settings[item.name] = item.value
        elif isinstance(item, Service):
            once(self._services, item.name, f"service {item.name!r}")
            self._services[item.name] = item
        elif isinstance(item, Plan):
            once(self._plans, item.id, f"plan {item.id!r}")
            self._plans[item.id] = item
        elif isinstance(item, Account):
            once(self._accounts, item.id, f"account {item.id!r}")
            if item.plan_id not in self._plans:
                raise NotFound(f"plan {item.plan_id!r} not found")
            self._accounts[item.id] = item
        elif isinstance(item, ApiKey):
            self._insert_key(item)
        elif isinstance(item, AccountTotal):
            history = self._totals.setdefault((item.account_id, item.service), [])
            bisect.insort(history, item.change, key=lambda c: c.effective_from)
        elif isinstance(item, AccountUsage):
            key = (item.account_id, item.service, item.day.day)
            once(self._usage, key, f"usage day {key}")
            self._usage[key] = [item.day.used, item.day.total, item.day.rejected]
        elif isinstance(item, WindowCounter):
            counter_key = (item.account_id, item.name, item.period)
            once(self._counters, counter_key, f"counter {counter_key}")
            if item.account_id not in self._accounts:
                raise NotFound(f"account {item.account_id!r} not found")
            self._counters[counter_key] = [item.value, item.total]
        elif isinstance(item, Gauge):
            once(self._gauges, (item.account_id, item.name), f"gauge {item.name!r}")
            self._gauges[(item.account_id, item.name)] = item.usage
        elif isinstance(item, IdempotencyAnswer):
            claim = IdempotencyClaim(item.key, item.fingerprint, item.expires_at)
            outcome = ConsumeOutcome(item.granted, item.used, item.total, item.day)
            self._idempotency[(item.account_id, item.key)] = (claim, outcome)
        elif isinstance(item, SeenEvent):
            self._events[(item.account_id, item.id)] = item.recorded_at
        elif isinstance(item, OperatorToken | AuditEntry):
            self._restore_operator(item)
        elif isinstance(item, WebhookEndpoint | AlertEvent | Delivery):
            self._restore_alert(item)
        elif isinstance(item, Grant | Reservation):
            self._restore_credit(item)
        else:
            assert_never(item)  # a kind added to DumpItem needs its branch here

    def _restore_operator(self, item: OperatorToken | AuditEntry) -> None:
        if isinstance(item, OperatorToken):
            if item.id in self._tokens:
                raise Conflict(f"the dump holds operator token {item.id!r} twice")
            self._tokens[item.id] = item
        elif self._audit and self._audit[-1].id >= item.id:
            raise Conflict(f"the dump holds audit entry {item.id!r} twice or out of order")
        else:
            self._audit.append(item)

    def _restore_alert(self, item: WebhookEndpoint | AlertEvent | Delivery) -> None:
        if isinstance(item, WebhookEndpoint):
            if item.id in self._webhooks:
                raise Conflict(f"the dump holds webhook endpoint {item.id!r} twice")
            self._webhooks[item.id] = item
        elif isinstance(item, AlertEvent):
            if item.id in self._alert_events or item.dedupe in self._dedupes:
                raise Conflict(f"the dump holds alert event {item.id!r} twice")
            self._alert_events[item.id] = item
            self._dedupes.add(item.dedupe)  # so the same crossing is never written again
        else:
            if item.id in self._deliveries:
                raise Conflict(f"the dump holds delivery {item.id!r} twice")
            if item.endpoint_id not in self._webhooks:
                raise NotFound(f"webhook endpoint {item.endpoint_id!r} not found")
            if item.event_id not in self._alert_events:
                raise NotFound(f"alert event {item.event_id!r} not found")
            self._deliveries[item.id] = item

    def _restore_credit(self, item: Grant | Reservation) -> None:
        if item.account_id not in self._accounts:
            raise NotFound(f"account {item.account_id!r} not found")
        if isinstance(item, Grant):
            grants = self._grants.setdefault(item.account_id, {})
            if item.id in grants:
                raise Conflict(f"the dump holds grant {item.id!r} twice")
            grants[item.id] = item
        else:
            if self._known(item.id):
                raise Conflict(f"the dump holds reservation {item.id!r} twice")
            self._keep(item)  # unclaimed: any node settles it


def _note(history: list[TotalChange], change: TotalChange) -> None:
    """Add ``change`` to a history kept in time order, unless it changes nothing."""
    before = [c for c in history if c.effective_from <= change.effective_from]
    if before and before[-1].total == change.total:
        return
    if before and before[-1].effective_from == change.effective_from:
        history.remove(before[-1])  # a second change at the same instant replaces the first
    bisect.insort(history, change, key=lambda c: c.effective_from)
