"""The sans-I/O core of the SDK: requests, answers, errors and retries, without any I/O.

An endpoint method builds a ``Call`` (what to send and how to read the answer). A shell
(``Client`` or ``AsyncClient``) asks an ``Exchange`` for the request, performs it, and
hands back the status, headers and body or the transport failure; the exchange answers
with the result, a ``Retry`` to wait before trying again, or an exception. All the
decisions live here, written once for both shells.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import (
    Any,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    overload,
)

import httpx2
import orjson

from quotad import __version__
from quotad.sdk.errors import (
    CODE_BY_STATUS,
    FieldProblem,
    QuotadAPIError,
    QuotadConnectionError,
    QuotadTimeoutError,
    UnexpectedResponseError,
    error_class,
)

T = TypeVar("T")
P = ParamSpec("P")
Credential = Literal["operator", "customer", "none"]
USER_AGENT = f"quotad-sdk/{__version__}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: status, headers (case-insensitive) and the whole body."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ``UnexpectedResponseError`` when it is not JSON."""
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError as exc:
            msg = f"expected a JSON body, got {self.content[:200]!r}"
            raise UnexpectedResponseError(msg) from exc


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One endpoint call: the request to make and how to read a 2xx answer.

    ``idempotent`` calls (GET, PUT, DELETE, and verify with an Idempotency-Key) may be
    sent again after a 5xx or a connection failure; others are sent at most once.
    """

    method: str
    path: str
    read: Callable[[Answer], T]
    params: Mapping[str, str] | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    credential: Credential = "operator"
    key: str | None = None
    idempotent: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request for the shell to send (the URL is relative to the base URL)."""

    method: str
    url: str
    params: Mapping[str, str] | None
    headers: dict[str, str]
    content: bytes | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before sending an idempotent call again.

    Attributes:
        retries: attempts after the first (0 disables retrying).
        backoff: the first wait, in seconds; each next wait is ``multiplier`` times longer.
        multiplier: growth of the wait between attempts.
        max_backoff: the longest wait, also the cap on a server's ``Retry-After``.
        jitter: each wait is spread by up to this fraction, so clients do not retry in step.
        statuses: the answers worth retrying.
    """

    retries: int = 2
    backoff: float = 0.2
    multiplier: float = 2.0
    max_backoff: float = 5.0
    jitter: float = 0.1
    statuses: frozenset[int] = frozenset({500, 502, 503, 504})

    def delay(self, attempt: int, retry_after: int | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        wait = min(self.backoff * self.multiplier**attempt, self.max_backoff)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_backoff))
        if self.jitter:
            wait *= 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not security
        return max(wait, 0.0)

    def allows(self, call: Call[Any], attempt: int) -> bool:
        """Whether ``call`` may be sent again after failed attempt ``attempt``."""
        return call.idempotent and attempt < self.retries


def check_credential(name: str, value: str | None) -> None:
    """Refuse a credential that could only fail on the wire, saying which one and why.

    ``None`` means "not given" and is fine; an empty or blank string, or one with
    whitespace or control characters (a trailing newline read from a file, say), would
    be sent as a broken ``Authorization`` header.

    Raises:
        ValueError: ``value`` is empty, blank, or not a single printable ASCII word.
    """
    if value is None:
        return
    if not isinstance(value, str):
        msg = f"{name} must be a string, not {type(value).__name__}"
        raise TypeError(msg)
    if not value.strip():
        what = "empty" if not value else "blank (only whitespace)"
        msg = f"{name} is {what}; pass the {_CREDENTIALS.get(name, name)}, or None to send none"
        raise ValueError(msg)
    if not all("!" <= char <= "~" for char in value):
        msg = (
            f"{name} contains whitespace, control or non-ASCII characters "
            "(a trailing newline read from a file?); pass the bare token"
        )
        raise ValueError(msg)


_CREDENTIALS = {
    "operator_token": "operator token (QUOTAD_ADMIN_TOKEN)",
    "api_key": "customer's API key",
    "key": "customer's API key",
}


@dataclass(frozen=True, slots=True)
class Config:
    """What every request of one client shares.

    Raises:
        ValueError: a credential is empty, blank or has characters no header may carry.
    """

    operator_token: str | None = None
    api_key: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        check_credential("operator_token", self.operator_token)
        check_credential("api_key", self.api_key)


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """The call is over; ``value`` is its result."""

    value: T


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait ``delay`` seconds, then send the request again."""

    delay: float


class Exchange(Generic[T]):
    """The state of one call across its attempts."""

    def __init__(self, call: Call[T], config: Config) -> None:
        self.call = call
        self.config = config
        self.attempt = 0
        self.request = build_request(call, config)

    def answered(self, status: int, headers: Mapping[str, str], content: bytes) -> Done[T] | Retry:
        """What an answer means: the result, a retry, or (raised) the API error."""
        answer = Answer(status, headers, content)
        if 200 <= status < 300:
            return Done(self.call.read(answer))
        error = api_error(answer)
        if status in self.config.retry.statuses and self.config.retry.allows(
            self.call, self.attempt
        ):
            return self._again(error.retry_after)
        raise error

    def failed(self, exc: httpx2.TransportError) -> Retry:
        """What a transport failure means: a retry, or (raised) a connection error."""
        if self.config.retry.allows(self.call, self.attempt):
            return self._again(None)
        where = f"{self.call.method} {self.call.path}"
        if isinstance(exc, httpx2.TimeoutException):
            raise QuotadTimeoutError(f"{where}: no answer in time ({exc})") from exc
        raise QuotadConnectionError(f"{where}: {exc or type(exc).__name__}") from exc

    def _again(self, retry_after: int | None) -> Retry:
        wait = self.config.retry.delay(self.attempt, retry_after)
        self.attempt += 1
        return Retry(wait)


def build_request(call: Call[Any], config: Config) -> Outgoing:
    """The HTTP request of ``call``: credentials, JSON body, extra headers.

    Raises:
        ValueError: the call's own customer key is empty, blank or malformed.
    """
    check_credential("key", call.key)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **call.headers}
    secret = {
        "operator": config.operator_token,
        "customer": call.key or config.api_key,
        "none": None,
    }[call.credential]
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    content = None
    if call.body is not None:
        content = orjson.dumps(call.body)
        headers["Content-Type"] = "application/json"
    return Outgoing(call.method, call.path, call.params, headers, content)


def _retry_after(headers: Mapping[str, str]) -> int | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def api_error(answer: Answer) -> QuotadAPIError:
    """The typed exception for a non-2xx answer, from the contract's error body.

    An answer without that body (from a load balancer, say) still becomes the exception
    its status implies, with the start of the body as the note.
    """
    try:
        body = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        error = body["error"]
        error_id = str(body.get("id") or "")
        note = str(body.get("note") or "")
        problems = tuple(_problem(item) for item in body.get("validationErrors") or ())
    else:
        fallback = "INTERNAL_SERVER_ERROR" if answer.status >= 500 else "BAD_REQUEST"
        error = CODE_BY_STATUS.get(answer.status, fallback)
        error_id, problems = "", ()
        note = answer.content[:200].decode("utf-8", "replace") or f"HTTP {answer.status}"
    cls = error_class(answer.status, error)
    return cls(
        answer.status,
        error,
        error_id,
        note,
        problems,
        _retry_after(answer.headers),
        answer.headers,
    )


def _problem(item: Any) -> FieldProblem:
    if not isinstance(item, dict):
        return FieldProblem("", str(item), "invalid")
    context = item.get("context")
    error_type = context.get("errorType") if isinstance(context, dict) else None
    suggestion = item.get("suggestion")
    return FieldProblem(
        str(item.get("path", "")),
        str(item.get("message", "")),
        str(error_type or "invalid"),
        None if suggestion is None else str(suggestion),
    )


# Reading answers -------------------------------------------------------------------
def json_with(parse: Callable[[Any], T]) -> Callable[[Answer], T]:
    """A reader that parses the JSON body with ``parse``."""
    return lambda answer: parse(answer.json())


def nothing(_answer: Answer) -> None:
    """A reader for answers without a body (204)."""


def jsonl_with(parse: Callable[[Any], T]) -> Callable[[Answer], list[T]]:
    """A reader of a JSON Lines body, one item per non-empty line."""

    def read(answer: Answer) -> list[T]:
        rows = []
        for line in answer.content.splitlines():
            if line.strip():
                try:
                    rows.append(parse(orjson.loads(line)))
                except orjson.JSONDecodeError as exc:
                    msg = f"an export line is not JSON: {line[:200]!r}"
                    raise UnexpectedResponseError(msg) from exc
        return rows

    return read


# One tree of endpoints for two shells ----------------------------------------------
class SyncShell(Protocol):
    """A client whose endpoint methods return their result."""

    @property
    def is_async(self) -> Literal[False]:
        """Always false."""
        ...

    def _perform(self, call: Call[T]) -> T: ...


class AsyncShell(Protocol):
    """A client whose endpoint methods return an awaitable of their result."""

    @property
    def is_async(self) -> Literal[True]:
        """Always true."""
        ...

    def _perform(self, call: Call[T]) -> Awaitable[T]: ...


class endpoint(Generic[P, T]):
    """Turns a method that builds a ``Call`` into one that performs it.

    On a ``Client`` the method returns the result; on an ``AsyncClient`` it returns an
    awaitable of it. Type checkers see both signatures, with the method's own parameters.
    """

    def __init__(self, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__
        self.__qualname__ = build.__qualname__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, obj: SyncShell, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: AsyncShell, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        """The method bound to a client: build the call, then let the client perform it."""
        if obj is None:
            return self
        build = self.build

        @functools.wraps(build)
        def perform(*args: Any, **kwargs: Any) -> Any:
            return obj._perform(build(obj, *args, **kwargs))

        return perform
