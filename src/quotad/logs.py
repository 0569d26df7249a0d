"""Structured logging: JSON lines when not on a terminal, readable lines when on one.

Secrets never reach a log call: keys and tokens are not bound to the context, and
error logs carry the error's id and code, not the request's headers or body. As defence
in depth, every line (quotad's own and the standard library's, uvicorn's included) goes
through ``redact_secrets`` before it is written: anything shaped like an API key or an
operator token (``<prefix>_`` and 36 base62 characters, whatever the prefix), any
``Bearer <token>``, and the configured operator token itself become ``[REDACTED]``.

Lines logged while a request is handled carry its ``request_id`` (the ``x-request-id``
of the response), bound by ``RequestContext``; a refused request's line also carries the
``error_id`` of its error body.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from quotad.settings import Settings

REDACTED = "[REDACTED]"
# A key's shape (quotad.domain.keys): a prefix of a letter and up to 15 letters or
# digits, "_", then 30 random and 6 checksum base62 characters. Not anchored on word
# boundaries: "_" is a word character, so "x_qd_…" must still be caught.
_KEY = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{0,15})_[0-9A-Za-z]{36}(?![0-9A-Za-z])")
_KEY_MIN_LEN = 38  # a letter, "_" and 36 characters
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;]+")
MIN_LITERAL = 4


def redact_text(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with keys, tokens, bearer credentials and each of ``literals`` redacted."""
    for literal in literals:
        if len(literal) >= MIN_LITERAL and literal in text:
            text = text.replace(literal, REDACTED)
    # Every value of every log line passes through here: cheap tests first, as ``sub``
    # parses its template on every call. The regex's "bearer" matches only letters that
    # lower-case to those of "bearer", so the first test never skips a match.
    if "bearer" in text.lower() and _BEARER.search(text) is not None:
        text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    if len(text) >= _KEY_MIN_LEN and _KEY.search(text) is not None:
        text = _KEY.sub(rf"\1_{REDACTED}", text)
    return text


def _redact(value: Any, literals: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, literals)
    if isinstance(value, dict):
        return {key: _redact(item, literals) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item, literals) for item in value)
    return value


_PLAIN = (int, float, bool, type(None))  # values that cannot hold a secret


class RedactSecrets:
    """A structlog processor redacting secrets in every value of an event, nested ones too."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self.literals = tuple(item for item in literals if len(item) >= MIN_LITERAL)
        # One search finds any of them.
        self._any_literal = (
            re.compile("|".join(re.escape(item) for item in self.literals))
            if self.literals
            else None
        )

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Redact ``event_dict`` in place."""
        any_literal = self._any_literal
        for key, value in event_dict.items():
            if type(value) is str:
                # Most values are short and plain: test here what redact_text could change
                # (a literal, "bearer", a run as long as a key) before calling it.
                if (
                    len(value) >= _KEY_MIN_LEN
                    or "bearer" in value.lower()
                    or (any_literal is not None and any_literal.search(value) is not None)
                ):
                    event_dict[key] = redact_text(value, self.literals)
            elif not isinstance(value, _PLAIN):
                event_dict[key] = _redact(value, self.literals)
        return event_dict


def redact_secrets(literals: Iterable[str] = ()) -> RedactSecrets:
    """The redacting processor, also hiding each of ``literals`` (e.g. the operator token)."""
    return RedactSecrets(literals)


class UtcTimestamper:
    """Adds ``timestamp`` as ``TimeStamper(fmt="iso", utc=True)`` does, in half the time.

    Every request logs a line, and the text up to the second changes once a second.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Add ``timestamp`` to ``event_dict``."""
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        event_dict["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event_dict


def _format_exc_info(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # structlog's ``format_exc_info``, skipped (it would change nothing) for the lines,
    # nearly all of them, that carry no exception.
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.format_exc_info(logger, method, event_dict)


_ENCODERS: dict[Any, json.JSONEncoder] = {}


def json_line(event_dict: Any, **dumps_kw: Any) -> str:
    """``json.dumps(event_dict, **dumps_kw)``, as ``JSONRenderer`` calls it, byte for byte.

    ``json.dumps`` builds an encoder on every call when given ``default``, as the renderer
    always does; one encoder per ``default`` serves every line instead (encoders keep no
    state between calls).
    """
    if dumps_kw.keys() != {"default"}:
        return json.dumps(event_dict, **dumps_kw)
    default = dumps_kw["default"]
    encoder = _ENCODERS.get(default)
    if encoder is None:
        encoder = _ENCODERS[default] = json.JSONEncoder(default=default)
    return encoder.encode(event_dict)


# The lowest level ``configure`` writes, for hot paths to skip building lines nobody
# writes (asking structlog costs more than the comparison).
configured_level = logging.INFO


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Set up structlog and the standard library's logging once per process.

    Args:
        level: the lowest level written (the standard library's loggers: warning at least).
        fmt: ``json``, ``console``, or ``auto`` (JSON unless stderr is a terminal).
        secrets: literal values never to write (such as a configured operator token).
    """
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=json_line)
        if json_lines
        # Plain tracebacks: rich's pretty ones print local variables, which can hold
        # secrets, and take seconds to render large objects.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    redact = redact_secrets(secrets)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamper(),
        _format_exc_info,
        redact,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    global configured_level  # noqa: PLW0603 - one logging set-up per process
    configured_level = numeric
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # WriteLogger: the same line as PrintLogger (write and flush), at less cost.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records (uvicorn's, the drivers') take the same path.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    stdlib_level = max(numeric, logging.WARNING)
    handler.setLevel(stdlib_level)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(stdlib_level)
    # An ASGI server started from its own command line (several workers, see
    # quotad.factory) has given its loggers handlers of their own: send them here too.
    # Its access lines (info) stay out: RequestContext logs each request with its id.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True


def configure_for(settings: Settings) -> None:
    """``configure`` with the settings' level and format, hiding the operator token."""
    token = settings.admin_token
    configure(
        settings.log_level,
        settings.log_format,
        secrets=() if token is None else (token.get_secret_value(),),
    )
