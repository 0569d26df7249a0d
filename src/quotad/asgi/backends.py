"""Where the middleware's decisions are made: in this process, or by a quotad server.

``EmbeddedBackend`` opens a store by URL and calls quotad's service layer directly (no
quotad server at all); ``RemoteBackend`` asks a quotad server through the SDK. Both
answer with quotad's own ``Verdict``, so the middleware renders one kind of answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx2
import structlog

from quotad import sdk
from quotad.domain import days
from quotad.domain.clock import Clock, SystemClock
from quotad.domain.credits import to_micros
from quotad.domain.limits import LimitSpec, LimitState, Mode, Per, Window
from quotad.errors import ErrorCode, QuotadError, StorageError
from quotad.http.types import ASGIApp, Receive, Scope, Send
from quotad.sdk import AsyncClient, QuotadAPIError, QuotadConnectionError, RetryPolicy, ServerError
from quotad.service import verify
from quotad.service.context import Context
from quotad.service.verify import Charge, Verdict, consumed_day
from quotad.settings import Settings
from quotad.storage import stores_from_url

log = structlog.get_logger("quotad.asgi")


@dataclass(eq=False)
class RelayedError(QuotadError):
    """A quotad server answered with an error: its status and contract body, to relay as
    they are (the body's ``id`` is the one in quotad's log)."""

    status: int = 500
    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: QuotadAPIError) -> RelayedError:
        """The relayable form of the SDK's error for an answer of quotad's."""
        try:
            code = ErrorCode(exc.error)
        except ValueError:
            code = ErrorCode.INTERNAL_SERVER_ERROR
        body = exc.body()
        body["id"] = body["id"] or str(uuid.uuid4())  # an answer without the contract's body
        return cls(exc.note, code, retry_after=exc.retry_after, status=exc.status, body=body)


@dataclass(frozen=True, slots=True)
class Reserved:
    """A reserving verify's verdict and, when granted, the reservation holding its cost."""

    verdict: Verdict
    reservation_id: str | None


class QuotaBackend(Protocol):
    """What the middleware needs: consume, refund, the customer usage endpoints, a clock.

    ``consume`` and ``refund`` raise ``StorageError`` when quotad cannot be reached,
    ``RelayedError`` when a quotad server answered with an error, and another
    ``QuotadError`` as quotad's service layer reports it (an unknown service, say).
    """

    async def open(self) -> None:
        """Get ready (open the store, connect); called again, does nothing."""
        ...

    async def close(self) -> None:
        """Release what ``open`` took."""
        ...

    async def consume(self, key: str, service: str, cost: int) -> Verdict:
        """Authenticate ``key`` and consume ``cost`` units of ``service``, all or nothing."""
        ...

    async def refund(self, verdict: Verdict, cost: int) -> None:
        """Give back ``cost`` units a granted ``verdict`` consumed."""
        ...

    async def reserve(self, key: str, service: str, cost: int, ttl_seconds: int) -> Reserved:
        """As ``consume``, holding the cost as a reservation to settle (SPEC 10)."""
        ...

    async def commit(self, reservation_id: str, cost: int) -> None:
        """Settle a reservation at the ``cost`` the work took."""
        ...

    async def cancel(self, reservation_id: str) -> None:
        """Give everything a reservation holds back."""
        ...

    def usage_app(self) -> ASGIApp:
        """An ASGI app serving ``GET /v1/usages`` and ``GET /usage/{service}``."""
        ...

    def now(self) -> datetime:
        """The current time, for the reset fields of the quota headers."""
        ...


class _OpenOnce:
    """Opens a resource once, on first need, however many requests arrive together."""

    def __init__(self) -> None:
        self._opened = False
        self._lock: asyncio.Lock | None = None

    async def ensure(self, opener: Callable[[], Awaitable[None]]) -> None:
        """Run ``opener`` unless it already ran (and has not been ``reset`` since)."""
        if self._opened:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._opened:
                await opener()
                self._opened = True

    def reset(self) -> bool:
        """Forget the opening; whether there was one to forget."""
        was_open, self._opened = self._opened, False
        return was_open


# Embedded -----------------------------------------------------------------------------
class EmbeddedBackend:
    """Decides in this process over a local store: no quotad server involved.

    Args:
        store_url: the store to open (``sqlite:///quotad.db``, ``redis://…``, ``memory://``);
            default ``QUOTAD_STORE_URL``.
        settings: quotad settings (default: from the environment, with ``store_url``).
        clock: the time source (``quotad.testing.FakeClock`` in tests).
        ctx: an existing service context to use instead (its store is then the caller's
            to open and close, unless ``manage_store`` is true).
    """

    def __init__(
        self,
        store_url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        ctx: Context | None = None,
        manage_store: bool | None = None,
    ) -> None:
        if ctx is None:
            if settings is None:
                settings = Settings() if store_url is None else Settings(store_url=store_url)
            elif store_url is not None:
                settings = settings.model_copy(update={"store_url": store_url})
            ctx = Context(stores_from_url(settings.store_url), settings, clock or SystemClock())
            manage_store = True if manage_store is None else manage_store
        self.ctx = ctx
        self.manage_store = bool(manage_store)
        self._once = _OpenOnce()
        self._usage_app: ASGIApp | None = None

    async def open(self) -> None:
        """Open the store (and bring its schema up to date), once."""
        if self.manage_store:
            await self._once.ensure(self.ctx.stores.open)

    async def close(self) -> None:
        """Close the store if this backend opened it."""
        if self.manage_store and self._once.reset():
            await self.ctx.stores.close()

    async def consume(self, key: str, service: str, cost: int) -> Verdict:
        """quotad's own verify-and-consume, in process."""
        await self.open()
        return await verify.verify(self.ctx, key, service, cost)

    async def refund(self, verdict: Verdict, cost: int) -> None:
        """Give ``cost`` back to the day the verdict consumed from."""
        await verify.refund(self.ctx, verdict, cost)

    async def reserve(self, key: str, service: str, cost: int, ttl_seconds: int) -> Reserved:
        """quotad's verify, then its reservation of what the verify moved, in process."""
        from quotad.service import reservations

        await self.open()
        verdict, reservation = await reservations.verify_and_reserve(
            self.ctx, key, ((service, cost),), ttl_seconds, None
        )
        return Reserved(verdict, None if reservation is None else reservation.id)

    async def commit(self, reservation_id: str, cost: int) -> None:
        """quotad's own commit, in process."""
        from quotad.service import reservations

        await reservations.commit(self.ctx, reservation_id, cost)

    async def cancel(self, reservation_id: str) -> None:
        """quotad's own cancel, in process."""
        from quotad.service import reservations

        await reservations.cancel(self.ctx, reservation_id)

    def usage_app(self) -> ASGIApp:
        """quotad's own customer router over this backend's context."""
        if self._usage_app is None:
            from quotad.api.app import create_usage_api

            self._usage_app = _Opening(create_usage_api(self.ctx), self.open)
        return self._usage_app

    def now(self) -> datetime:
        """The context's clock."""
        return self.ctx.clock.now()


# Remote -------------------------------------------------------------------------------
class RemoteBackend:
    """Asks a quotad server (``POST /v1/verify``) through the SDK's ``AsyncClient``.

    Each verify carries a fresh ``Idempotency-Key``, so the SDK may retry it after a 5xx
    or a broken connection without consuming twice.

    Args:
        base_url: the quotad server, e.g. ``http://127.0.0.1:8080``.
        operator_token: its operator token.
        timeout: seconds to wait for quotad.
        retry: the SDK's retry policy for verify, refunds and the usage endpoints.
        transport: an ``httpx2`` async transport (tests).
    """

    def __init__(
        self,
        base_url: str,
        operator_token: str,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._operator_token = operator_token
        self._retry = retry or RetryPolicy(retries=2, backoff=0.05)
        self._transport = transport
        self._timeout = timeout
        self._client: AsyncClient | None = None
        self._http: httpx2.AsyncClient | None = None
        self._zones: dict[str, str] = {}

    @property
    def client(self) -> AsyncClient:
        """The SDK client (created on first use)."""
        if self._client is None:
            self._client = AsyncClient(
                self.base_url,
                operator_token=self._operator_token,
                timeout=self._timeout,
                retry=self._retry,
                transport=self._transport,
            )
        return self._client

    async def open(self) -> None:
        """Nothing to open: connections are made on first use."""

    async def close(self) -> None:
        """Close the connections to quotad."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def consume(self, key: str, service: str, cost: int) -> Verdict:
        """``POST /v1/verify`` on the quotad server."""
        sent = self.now()  # the server consumed at or after this instant
        answer = await self._verify(key, service, cost)
        return await self._verdict(answer, service, sent)

    async def reserve(self, key: str, service: str, cost: int, ttl_seconds: int) -> Reserved:
        """``POST /v1/verify`` with ``"reserve": true`` on the quotad server."""
        sent = self.now()
        answer = await self._verify(key, service, cost, reserve=True, ttl_seconds=ttl_seconds)
        verdict = await self._verdict(answer, service, sent)
        return Reserved(verdict, answer.reservation_id if answer.valid else None)

    async def commit(self, reservation_id: str, cost: int) -> None:
        """``POST /v1/reservations/{id}/commit`` on the quotad server."""
        await self._settling(self.client.commit_reservation(reservation_id, cost))

    async def cancel(self, reservation_id: str) -> None:
        """``DELETE /v1/reservations/{id}`` on the quotad server."""
        await self._settling(self.client.cancel_reservation(reservation_id))

    async def _settling(self, settlement: Awaitable[sdk.Reservation]) -> None:
        try:
            await settlement
        except (QuotadConnectionError, ServerError) as exc:
            raise StorageError(f"quotad at {self.base_url} is unavailable: {exc}") from exc
        except QuotadAPIError as exc:
            raise RelayedError.of(exc) from exc

    async def _verify(self, key: str, service: str, cost: int, **reserving: Any) -> sdk.Verdict:
        try:
            return await self.client.verify(
                key, service, cost, idempotency_key=uuid.uuid4().hex, **reserving
            )
        except QuotadConnectionError as exc:
            raise StorageError(f"quotad at {self.base_url} is unavailable: {exc}") from exc
        except QuotadAPIError as exc:
            if isinstance(exc, ServerError) and not exc.id:  # a gateway's 5xx, not quotad's
                raise StorageError(f"quotad at {self.base_url} is unavailable: {exc}") from exc
            raise RelayedError.of(exc) from exc

    async def _verdict(self, answer: sdk.Verdict, service: str, sent: datetime) -> Verdict:
        """The server's ``Verdict`` read back from its answer."""
        fields: dict[str, Any] = {
            "valid": answer.valid,
            "code": answer.code,
            "service": answer.service,
            "account_id": answer.account_id,
            "used": answer.used,
            "total": answer.total,
            "reset": answer.reset,
            "window_seconds": answer.window_seconds,
            "note": answer.note,
        }
        if answer.credits is not None:  # a priced call: what it debited, in micro-credits
            fields["credits"] = (to_micros(answer.credits.debited, allow_zero=True), 0)
        # A version-1 plan's answer lists its one daily limit too; the server's own verdict
        # has none (and so writes version 1's headers): read it back the same way.
        v1 = len(answer.limits) == 1 and _is_v1(answer.limits[0], service)
        version2 = {
            "limits": () if v1 else tuple(_limit_state(x, service, answer) for x in answer.limits),
            "refused_by": None if v1 else answer.refused_by,
            "overage": answer.overage,
            "would_refuse": answer.would_refuse,
            # A credits refusal's Retry-After is the limits' reset, which brings no credits.
            "retry_after": None if answer.code == "CREDITS_EXHAUSTED" else answer.retry_after,
        }
        # Verdict's version-2 fields come with the verify branch of SPEC 9; only those
        # this build's Verdict has are passed (the middleware reads them by name).
        fields |= {name: value for name, value in version2.items() if name in Verdict._fields}
        verdict = Verdict(**fields)
        if verdict.valid and verdict.limits and verdict.account_id is not None:
            # A v2 verdict's reset is its least-room limit's, not always the day's: note the
            # day it consumed from (the day limit's window, else the day it was sent in).
            day_limit = next((s for s in verdict.limits if s.name == f"{service}.day"), None)
            zone = await self._zone(verdict.account_id)
            moment = sent if day_limit is None else day_limit.reset - timedelta(seconds=1)
            charged = Charge(days.local_day(moment, zone), verdict.total or 0, ())
            verdict = verdict._replace(charged=charged)
        return verdict

    async def _zone(self, account_id: str) -> str:
        """An account's timezone, asked once."""
        zone = self._zones.get(account_id)
        if zone is None:
            zone = (await self.client.get_account(account_id)).timezone
            self._zones[account_id] = zone
        return zone

    async def refund(self, verdict: Verdict, cost: int) -> None:
        """The adjust endpoint, with ``delta=-cost`` on the day the verdict consumed from
        (which gives back the account's windows holding that day too).

        The credits a priced call debited stay debited: no operator route gives them back
        but a reservation's cancel, so meter a priced service with ``reserve=True``.
        """
        account_id = verdict.account_id
        if verdict.credits is not None and verdict.credits[0]:
            log.warning(
                "a refund through quotad's API gives no credits back (use reserve=True)",
                account_id=account_id,
                service=verdict.service,
            )
        if account_id is None or verdict.reset is None:
            return
        if verdict.limits and verdict.charged is None:
            return  # refused: nothing to give back
        try:
            if verdict.charged is not None:
                day = verdict.charged.day
            else:
                day = consumed_day(verdict, await self._zone(account_id))
            await self.client.adjust_usage(account_id, verdict.service, day, -cost)
        except (QuotadConnectionError, ServerError) as exc:
            raise StorageError(f"quotad at {self.base_url} is unavailable: {exc}") from exc

    def usage_app(self) -> ASGIApp:
        """Relays the customer usage endpoints to the quotad server, streaming."""
        return _RemoteUsage(self)

    def http(self) -> httpx2.AsyncClient:
        """The plain HTTP client for relaying the usage endpoints."""
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=self._timeout, transport=self._transport)
        return self._http

    def now(self) -> datetime:
        """The system clock (quotad's answers carry absolute reset times)."""
        return datetime.now(UTC)


def _is_v1(entry: sdk.LimitState, service: str) -> bool:
    """Whether a verdict's entry is version 1's quota: a hard daily total the account shares."""
    return (entry.name, entry.window, entry.mode, entry.per) == (
        f"{service}.day",
        "day",
        "hard",
        "account",
    )


def _limit_state(entry: sdk.LimitState, service: str, answer: sdk.Verdict) -> LimitState:
    """A verdict's limit entry as the server's ``LimitState`` (its billing anchor is not
    in the entry: a window's reset says when it ends)."""
    spec = LimitSpec(
        entry.total,
        None if entry.window is None else Window(entry.window),
        entry.per_second or 0.0,
        False,
        Mode(entry.mode),
        Per(entry.per),
    )
    return LimitState(
        entry.name,
        service,
        spec,
        entry.used,
        entry.total,
        entry.reset or datetime.now(UTC),
        entry.overage,
        entry.name in answer.would_refuse,
        answer.retry_after if entry.name == answer.refused_by else None,
    )


class _RemoteUsage:
    """``GET /v1/usages`` and ``GET /usage/{service}``, answered by the quotad server."""

    def __init__(self, backend: RemoteBackend) -> None:
        self.backend = backend
        self.upstream = httpx2.URL(backend.base_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from quotad.asgi.forward import forward, target_url

        url = target_url(self.upstream, scope)
        await forward(self.backend.http(), url, scope, receive, send)


class _Opening:
    """Opens the backend before the first request reaches ``app``."""

    def __init__(self, app: ASGIApp, opener: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.opener = opener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.opener()
        await self.app(scope, receive, send)
