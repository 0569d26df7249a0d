"""The store contracts: what quotad keeps, behind two small async interfaces.

``RecordStore`` keeps what operators write and every call reads: settings, services,
plans, accounts, keys, the history of daily totals, dashboard sessions, operator tokens
and the audit log.
``CounterStore`` keeps what calls change: each day's counters, Idempotency-Key answers,
event ids and gauges. SQL and memory keep both in one store (one object is both); Redis
keeps counters only, over the SQL store that holds the records and the durable copy of
its counters.

Each method is one atomic step in the backend. In particular ``consume`` is one atomic
decision per call, whatever path the backend takes to it (SQL groups concurrent calls
into one transaction, Redis into one script call, memory decides in one critical
section), so no caller ever reads a counter and then writes it back.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from datetime import date, datetime
from typing import Protocol

from quotad.domain.credits import Grant, Hold, Reservation
from quotad.domain.dump import DumpItem
from quotad.domain.limits import HARD, Limits, Slot
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
)
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.domain.webhooks import AlertEvent, Attempt, Claimed, Delivery, WebhookEndpoint

# The wall-clock instant (seconds since the epoch) at which the caller of a store method
# stops waiting and answers without it (verify's store timeout). A store that can, makes
# the work it sent late do nothing once past it (Redis checks it inside its script).
CALL_DEADLINE: ContextVar[float | None] = ContextVar("quotad_call_deadline", default=None)

# Why ``restore`` refuses a store already in use (``Conflict``).
NOT_EMPTY = (
    "the target store is not empty (it has services, plans or accounts): "
    "restore into a new, empty store; nothing was restored"
)


class Connected(Protocol):
    """A store's connection: the URL it was named by, and its life."""

    url: str

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise ``StorageError`` unless the store answers."""
        ...


class RecordStore(Protocol):
    """The records of one quotad deployment (opened with the counter store, see ``Stores``)."""

    def atomic(self) -> AbstractAsyncContextManager[None]:
        """One transaction for every record write the calling task makes inside it.

        They are kept or lost together, grants, reservations and webhook records
        included (they are kept with the records): a change and its audit entry, say.
        Reads inside it see its writes. A SQL store's counter writes other than consume
        (an adjustment, a gauge) join it too; consume must not be called inside it (it
        writes on a connection of its own, which would wait for this one). Memory holds
        no transaction: its writes are applied as made, and none outlives the process.
        """
        ...

    # Settings ---------------------------------------------------------------
    async def get_setting(self, name: str) -> str | None:
        """A stored deployment setting."""
        ...

    async def put_setting(self, name: str, value: str) -> None:
        """Store or replace a deployment setting."""
        ...

    async def records_version(self) -> int | None:
        """A number that moves whenever any writer changes a setting, service, plan,
        account, key, operator token or credit grant (None: not kept).

        The record cache reads it to tell whether what it holds is still current, so a
        store that keeps it must move it with every change, its own writes and others'.
        """
        ...

    # Services ---------------------------------------------------------------
    async def create_service(self, service: Service) -> None:
        """Register a service; ``Conflict`` if the name is taken."""
        ...

    async def get_service(self, name: str) -> Service | None:
        """The service called ``name``."""
        ...

    async def list_services(self) -> list[Service]:
        """Every service, by name."""
        ...

    async def update_service(self, service: Service) -> None:
        """Replace a service's description and credit price (its name and creation time
        kept); ``NotFound`` if absent."""
        ...

    # Plans ------------------------------------------------------------------
    async def create_plan(self, plan: Plan) -> None:
        """Add a plan; ``Conflict`` if the id is taken."""
        ...

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan with ``plan_id``."""
        ...

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """Up to ``limit`` plans with ids after ``after``, by id."""
        ...

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan's quotas and limits; ``NotFound`` if absent."""
        ...

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan; ``NotFound`` if absent, ``Conflict`` while an account uses it."""
        ...

    # Accounts ---------------------------------------------------------------
    async def create_account(self, account: Account) -> None:
        """Add an account; ``Conflict`` if the id is taken, ``NotFound`` if its plan is gone."""
        ...

    async def get_account(self, account_id: str) -> Account | None:
        """The account with ``account_id``."""
        ...

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None, plan_id: str | None = None
    ) -> list[Account]:
        """Up to ``limit`` accounts with ids after ``after``, by id, optionally filtered by
        ``search`` (in id or name) and by plan."""
        ...

    async def count_accounts_by_plan(self) -> dict[str, int]:
        """How many accounts each plan has (plans without one are left out)."""
        ...

    async def update_account(self, account: Account) -> None:
        """Replace an account's mutable fields; ``NotFound`` if it or its plan is gone."""
        ...

    async def delete_account(self, account_id: str) -> None:
        """Delete an account with its keys; ``NotFound`` if absent.

        A store that keeps the counters too deletes the account's usage and gauges with it;
        otherwise the counter store's ``forget_account`` does.
        """
        ...

    # Keys -------------------------------------------------------------------
    async def create_key(self, key: ApiKey) -> None:
        """Store a new key record."""
        ...

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key record with ``key_id``."""
        ...

    async def find_key(self, digest: str) -> ApiKey | None:
        """The key record whose SHA-256 digest is ``digest``."""
        ...

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """That key with its account and the account's plan, read together (for verify)."""
        ...

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """Every key of an account, oldest first."""
        ...

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Mark a key revoked from ``at`` (kept if already earlier); ``NotFound`` if absent."""
        ...

    async def set_key_limits(self, key_id: str, own: dict[str, Limits]) -> ApiKey:
        """Replace a key's own limits (by service); ``NotFound`` if there is no such key."""
        ...

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Store ``new_key`` and end the old key at ``old_valid_until``, in one step."""
        ...

    # Total history ----------------------------------------------------------
    async def record_totals(
        self, at: datetime, *, account_id: str | None = None, plan_id: str | None = None
    ) -> None:
        """Note, from ``at``, each daily total that differs from the last one noted.

        For one account, or for every account on a plan. A service an account no longer
        has a quota for is noted as 0. Noting what is already noted changes nothing.
        """
        ...

    async def total_changes(self, account_id: str, service: str) -> list[TotalChange]:
        """The noted totals of one account's service, oldest first."""
        ...

    # Dashboard sessions -----------------------------------------------------
    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a signed-in session until ``expires_at``; forget those expired at ``now``."""
        ...

    async def session_live(self, session_id: str, now: datetime) -> bool:
        """Whether the session is recorded and not expired at ``now``."""
        ...

    async def end_session(self, session_id: str) -> None:
        """Forget a session (a no-op when it is unknown)."""
        ...

    # Operator tokens --------------------------------------------------------
    async def create_operator_token(self, token: OperatorToken) -> None:
        """Store a new operator token; ``Conflict`` if its name is taken."""
        ...

    async def get_operator_token(self, token_id: str) -> OperatorToken | None:
        """The operator token with ``token_id``."""
        ...

    async def find_operator_token(self, digest: str) -> OperatorToken | None:
        """The operator token whose SHA-256 digest is ``digest``."""
        ...

    async def list_operator_tokens(self) -> list[OperatorToken]:
        """Every operator token, revoked ones included, oldest first."""
        ...

    async def revoke_operator_token(self, token_id: str, at: datetime) -> OperatorToken:
        """Mark a token revoked from ``at`` (kept if already earlier); ``NotFound`` if absent."""
        ...

    # Audit log --------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        """Add an entry to the audit log (never changed or removed afterwards)."""
        ...

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """The entries ``query`` matches, newest (greatest id) first, at most its limit."""
        ...


class CounterStore(Connected, Protocol):
    """The counters of one quotad deployment: usage, Idempotency-Key answers, gauges."""

    # Usage ------------------------------------------------------------------
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
        """Atomically add ``cost`` to the day's use if it stays within ``total``.

        The day's stored total becomes ``total``. A refusal changes no use and counts one
        rejection. With a ``claim`` already seen (and not expired at ``now``), the first
        outcome is returned with ``replayed=True`` and nothing changes; a claim seen with a
        different fingerprint raises ``Conflict``.

        Limits v2: the day row is the slot ``Slot(service, day, total, day_mode, cost)``
        (``TALLY``: counted, never checked), and ``extra`` are the call's other slots
        (``quotad.domain.limits``). All of them are decided in the same atomic step:
        ``limits.refusing`` over their stored values (0 when absent) at the store's
        clock; if no hard slot refuses, each takes ``limits.advanced``'s value, else none
        moves and every day row among them counts one rejection. The outcome then carries
        ``before`` (every slot's value before, in order), ``refused`` and ``at_us``.

        Reservations (SPEC 10): a store that keeps them with its counters (SQL, memory)
        stores ``hold.reservation_of`` a granted consume (not a replay) in the same atomic
        step, and sets ``hold.made`` once both are committed; a store that keeps them
        elsewhere (Redis: in the records' SQL) leaves ``hold.made`` None.
        """
        ...

    async def adjust(
        self,
        account_id: str,
        service: str,
        day: date,
        delta: int,
        total: int,
        extra: tuple[Slot, ...] = (),
    ) -> UsageDay:
        """Add ``delta`` to a day's use, flooring at zero; ``total`` is used for a new day.

        Each window slot of ``extra`` (rates are left alone) moves by ``delta`` too, in
        the same step, floored at zero (a refund of a multi-limit verify).
        """
        ...

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
        """``adjust`` under an Idempotency-Key ``claim``, in the same atomic step: the day
        after it, and whether it was a repeat. A claim seen before and unexpired at ``now``
        with the same fingerprint moves nothing (the day is answered as it stands); with
        another fingerprint it raises ``Conflict``. The claim is kept as an idempotency
        answer (granted, the day's use and total after the first adjustment).
        """
        ...

    async def read_counters(self, account_id: str, keys: list[tuple[str, str]]) -> list[int]:
        """The values of counters by ``(name, period)`` (a slot's), 0 where absent, in order.

        A name without a dot is a service's day row (its period an ISO date): its use.
        """
        ...

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add each event not seen before (by account and id) to its day's use, in one step.

        An event's ``windows`` (``(name, period)`` counters of its account's window
        limits) move by its amount too.
        """
        ...

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Store ``(service, day)`` rows' absolute values, replacing those days' values.

        For restoring an export (``quotad import``); ``Conflict`` if the account is gone.
        """
        ...

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """The stored days of one account and service between two dates, ascending."""
        ...

    def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every stored usage day as ``(account_id, service, day)``."""
        ...

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Forget idempotency answers expired at ``now`` and event ids recorded before a time."""
        ...

    # Gauges -----------------------------------------------------------------
    async def gauges(self, account_id: str) -> dict[str, int]:
        """Current usage of every gauge of an account that has been touched."""
        ...

    async def set_gauge(self, account_id: str, name: str, usage: int) -> int:
        """Set a gauge; returns the new usage."""
        ...

    async def acquire(self, account_id: str, name: str, amount: int, limit: int) -> int | None:
        """Add ``amount`` if it keeps usage within ``limit``: the new usage, or ``None``."""
        ...

    async def release(self, account_id: str, name: str, amount: int) -> int | None:
        """Take ``amount`` away if that much is in use: the new usage, or ``None``."""
        ...

    async def move_gauge_once(
        self,
        account_id: str,
        name: str,
        delta: int,
        limit: int,
        claim: IdempotencyClaim,
        now: datetime,
    ) -> tuple[int | None, bool]:
        """``acquire`` (``delta`` above zero, within ``limit``) or ``release`` (below zero,
        never past what is in use; never zero) under an Idempotency-Key ``claim``, in one
        atomic step: the new usage (``None``: refused, and the claim is not kept), and
        whether it was a repeat. A claim seen before and unexpired at ``now`` with the same
        fingerprint moves nothing and answers the usage as it stands; with another
        fingerprint it raises ``Conflict``.
        """
        ...

    # Account lifecycle ------------------------------------------------------
    async def open_account(self, account_id: str) -> None:
        """Start the counters of an account the records store has just created.

        They start empty: a store that checks its counters are whole before using them
        (Redis's marker) marks them so now, so the account's first call rebuilds nothing.
        """
        ...

    async def forget_account(self, account_id: str) -> None:
        """Drop whatever the account's counters left, after its records were deleted.

        A store that is also the records store dropped them with the account.
        """
        ...

    # The whole deployment (``quotad dump`` / ``quotad restore``) ---------------
    def dump(self) -> AsyncIterator[DumpItem]:
        """Every record and counter of the deployment, in ``DUMP_ORDER``.

        The records store this store is over included: this is the deployment's whole
        state but for dashboard sessions (signing in again makes new ones) and what a
        Redis node has not written yet (a dump waits for every node to write it first).
        One consistent snapshot where the backend has them (SQL).
        """
        ...

    async def restore(self, items: AsyncIterable[DumpItem]) -> None:
        """Write a dump (in ``DUMP_ORDER``) into this empty deployment, all or nothing.

        An error raised while ``items`` is read (a bad line) ends the restore with
        nothing written; so does any failure of the store where it has transactions.

        Raises:
            Conflict: the deployment already has a service, plan or account, or the
                dump holds one record twice; nothing was written.
        """
        ...


class AlertStore(Protocol):
    """Webhook endpoints, the alert events written for them and their deliveries (SPEC 11).

    Kept with the records (SQL, memory; a Redis deployment's SQL store), never cached:
    an event is written once per its ``dedupe`` key in one step with a delivery for each
    endpoint it is for, so it is durable before any node sends it.
    """

    async def create_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Register an endpoint."""
        ...

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint with ``endpoint_id``."""
        ...

    async def list_webhooks(self, account_id: str | None = None) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first; with ``account_id``, only that account's own."""
        ...

    async def update_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Replace an endpoint's fields; ``NotFound`` if it is gone."""
        ...

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries; ``NotFound`` if absent."""
        ...

    async def record_alert(self, event: AlertEvent, endpoint_ids: list[str]) -> bool:
        """Write ``event`` unless one with its ``dedupe`` key exists, with a pending delivery
        (due at once) for each of ``endpoint_ids`` still registered, in one step.

        Returns whether it was written (False: another call or node wrote it first).
        """
        ...

    async def alert_events(
        self, limit: int, before_id: str | None = None, account_id: str | None = None
    ) -> list[AlertEvent]:
        """Events, newest first (ids sort by when they were written), of one account or all."""
        ...

    async def claim_deliveries(
        self, now: datetime, until: datetime, claim: str, limit: int
    ) -> list[Claimed]:
        """Claim up to ``limit`` pending deliveries due at ``now`` to enabled endpoints, and
        not claimed by anyone else past ``now``: until ``until``, under ``claim``.

        At most one per endpoint, its oldest due, and none of an endpoint that has one
        claimed already: so an endpoint's deliveries go one at a time, in order, and a
        claim need only outlive one send. Two nodes never hold the same delivery at once.
        """
        ...

    async def set_webhook_failing(self, endpoint_id: str, since: datetime | None) -> None:
        """Note when an endpoint began failing (None: it answers again); nothing else of it
        changes, and an endpoint deleted meanwhile is left gone."""
        ...

    async def disable_webhook(
        self, endpoint_id: str, at: datetime, reason: str
    ) -> WebhookEndpoint | None:
        """Disable an enabled endpoint: the endpoint, if this call disabled it (None if it
        was disabled already, by anyone, or is gone)."""
        ...

    async def finish_delivery(
        self,
        delivery_id: str,
        claim: str,
        attempt: Attempt,
        next_at: datetime | None,
        *,
        delivered: bool,
    ) -> bool:
        """Record an attempt of a delivery held under ``claim`` and release it: delivered;
        else due again at ``next_at``, or failed for good when that is None.

        Returns False (recording nothing) if the claim was lost meanwhile.
        """
        ...

    async def list_deliveries(
        self, endpoint_id: str, limit: int, before_id: str | None = None
    ) -> list[Delivery]:
        """An endpoint's deliveries with their attempts, newest first."""
        ...

    async def resend_delivery(self, endpoint_id: str, delivery_id: str, at: datetime) -> Delivery:
        """Make a delivery pending and due at ``at`` again (same id, attempts kept);
        ``NotFound`` if the endpoint has no such delivery."""
        ...


class CreditStore(Protocol):
    """Credit grants and reservations (SPEC 10), kept with the records (SQL, memory; a
    Redis deployment's SQL store), never cached by the store. What is left of a grant is
    the counter store's: its ``credits.<id>`` counters, moved by consumes."""

    async def create_grant(self, grant: Grant) -> bool:
        """Store a grant; False (storing nothing) if the account already has one of its id
        (a refill some other node made first). ``NotFound`` if the account is gone."""
        ...

    async def list_grants(self, account_id: str) -> list[Grant]:
        """Every grant of an account, voided and expired ones included, oldest first."""
        ...

    async def void_grant(self, account_id: str, grant_id: str, at: datetime) -> Grant:
        """Mark a grant voided from ``at`` (kept if already voided); ``NotFound`` if absent."""
        ...

    async def create_reservation(self, reservation: Reservation) -> None:
        """Store a pending reservation."""
        ...

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        """The reservation with ``reservation_id``."""
        ...

    async def claim_reservation(
        self, reservation_id: str, claim: str, now: datetime, until: datetime
    ) -> Reservation | None:
        """Hold a pending reservation under ``claim`` until ``until`` (to settle it), unless
        someone else holds it past ``now``: the reservation, or None (not pending, gone, or
        held by another)."""
        ...

    async def due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        """Up to ``limit`` pending reservations whose ``expires_at`` is past at ``now`` and
        that nobody holds past ``now``, oldest deadline first."""
        ...

    async def settle_reservation(self, reservation: Reservation, claim: str) -> bool:
        """Store a settled reservation (its status, committed, overage, settled_at) if it is
        still held under ``claim``; False (storing nothing) otherwise."""
        ...

    async def finish_reservation(self, reservation: Reservation, now: datetime) -> bool:
        """Store a settlement that moves no counter (a commit of the reserved cost) in one
        step, if the reservation is pending, was never claimed, and is not past its
        deadline at ``now``; False (storing nothing) otherwise (settle it under a claim)."""
        ...

    async def purge_reservations(self, before: datetime) -> int:
        """Delete the settled reservations whose deadline was before ``before`` (a pending
        one stays until it is settled): how many."""
        ...


class TokenBuckets(Protocol):
    """Token buckets every node shares (the customer endpoints' throttle)."""

    async def take_token(self, bucket_id: str, rate: float, burst: int) -> float:
        """Take a token from ``bucket_id``: 0.0, or the seconds to wait for one."""
        ...


class RecordsAndCounters(RecordStore, CounterStore, AlertStore, CreditStore, Protocol):
    """One store that keeps records, counters, alerts and credits alike (SQL, memory)."""
