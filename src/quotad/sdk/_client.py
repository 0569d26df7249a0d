"""The two shells over the sans-I/O core: they only send requests and wait.

Every endpoint method comes from ``Endpoints``; each shell implements ``_perform``,
the loop that sends the exchange's request, reports the outcome, and sleeps when told
to retry.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Literal, Self, TypeVar

import httpx2

from quotad.sdk import _tracing
from quotad.sdk._core import Call, Config, Done, Exchange, Retry, RetryPolicy
from quotad.sdk._endpoints import Endpoints

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0


class Client(Endpoints):
    """A blocking quotad client.

    Args:
        base_url: where quotad answers, e.g. ``http://127.0.0.1:8080``.
        operator_token: for the operator API (``/admin/v1``, verify, events).
        api_key: a customer's key, for ``usages`` and ``usage`` (each call may pass its own).
        timeout: seconds (or an ``httpx2.Timeout``) to wait for connecting and for each read.
        retry: when to send idempotent calls again after a 5xx or a connection failure.
        transport: an ``httpx2`` transport (``MockTransport`` in tests, say).

    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        operator_token: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self._config = Config(operator_token, api_key, retry or RetryPolicy())
        self._http = httpx2.Client(base_url=base_url, timeout=timeout, transport=transport)

    @property
    def is_async(self) -> Literal[False]:
        """Always false: methods return their results."""
        return False

    def _perform(self, call: Call[T]) -> T:
        exchange = Exchange(call, self._config)
        out = exchange.request
        while True:
            with _tracing.sending(out, self._http.base_url) as sending:
                try:
                    response = self._http.request(
                        out.method,
                        out.url,
                        params=out.params,
                        headers=sending.headers,
                        content=out.content,
                    )
                except httpx2.TransportError as exc:
                    step: Done[T] | Retry = exchange.failed(exc)
                else:
                    sending.answered(response.status_code)
                    step = exchange.answered(
                        response.status_code, response.headers, response.content
                    )
            if isinstance(step, Done):
                return step.value
            time.sleep(step.delay)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(Endpoints):
    """An asyncio quotad client; the same methods as ``Client``, each to be awaited.

    Args:
        base_url: where quotad answers, e.g. ``http://127.0.0.1:8080``.
        operator_token: for the operator API (``/admin/v1``, verify, events).
        api_key: a customer's key, for ``usages`` and ``usage`` (each call may pass its own).
        timeout: seconds (or an ``httpx2.Timeout``) to wait for connecting and for each read.
        retry: when to send idempotent calls again after a 5xx or a connection failure.
        transport: an ``httpx2`` async transport (``ASGITransport`` to talk to an
            in-process quotad app, ``MockTransport`` in tests).

    Use it as an async context manager, or await ``aclose()``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        operator_token: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = Config(operator_token, api_key, retry or RetryPolicy())
        self._http = httpx2.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    @property
    def is_async(self) -> Literal[True]:
        """Always true: methods return awaitables."""
        return True

    async def _perform(self, call: Call[T]) -> T:
        exchange = Exchange(call, self._config)
        out = exchange.request
        while True:
            with _tracing.sending(out, self._http.base_url) as sending:
                try:
                    response = await self._http.request(
                        out.method,
                        out.url,
                        params=out.params,
                        headers=sending.headers,
                        content=out.content,
                    )
                except httpx2.TransportError as exc:
                    step: Done[T] | Retry = exchange.failed(exc)
                else:
                    sending.answered(response.status_code)
                    step = exchange.answered(
                        response.status_code, response.headers, response.content
                    )
            if isinstance(step, Done):
                return step.value
            await asyncio.sleep(step.delay)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
