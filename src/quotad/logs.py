"""Structured logging: JSON lines when not on a terminal, readable lines when on one.

Secrets never reach a log call: keys and tokens are not bound to the context, and
error logs carry the error's id and code, not the request's headers or body. As defence
in depth, every line (quotad's own and the standard library's, uvicorn's included) goes
through ``redact_secrets`` before it is written: anything shaped like an API key or an
operator token (``<prefix>_`` and 36 base62 characters, whatever the prefix), any
``Bearer <token>``, and the configured operator token itself become ``[REDACTED]``.

Lines logged while a request is handled carry its ``request_id`` (the ``x-request-id``
of the response), bound by ``RequestGuard``; a refused request's line also carries the
``error_id`` of its error body.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from quotad.settings import Settings

REDACTED = "[REDACTED]"
# A key's shape (quotad.domain.keys): a prefix of a letter and up to 15 letters or
# digits, "_", then 30 random and 6 checksum base62 characters. Not anchored on word
# boundaries: "_" is a word character, so "x_qd_…" must still be caught.
_KEY = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{0,15})_[0-9A-Za-z]{36}(?![0-9A-Za-z])")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;]+")
MIN_LITERAL = 4


def redact_text(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with keys, tokens, bearer credentials and each of ``literals`` redacted."""
    for literal in literals:
        if len(literal) >= MIN_LITERAL and literal in text:
            text = text.replace(literal, REDACTED)
    text = _BEARER.sub(rf"\1\2{REDACTED}", text)
    return _KEY.sub(rf"\1_{REDACTED}", text)


def _redact(value: Any, literals: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, literals)
    if isinstance(value, dict):
        return {key: _redact(item, literals) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item, literals) for item in value)
    return value


class RedactSecrets:
    """A structlog processor redacting secrets in every value of an event, nested ones too."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self.literals = tuple(item for item in literals if len(item) >= MIN_LITERAL)

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Redact ``event_dict`` in place."""
        for key, value in event_dict.items():
            event_dict[key] = _redact(value, self.literals)
        return event_dict


def redact_secrets(literals: Iterable[str] = ()) -> RedactSecrets:
    """The redacting processor, also hiding each of ``literals`` (e.g. the operator token)."""
    return RedactSecrets(literals)


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Set up structlog and the standard library's logging once per process.

    Args:
        level: the lowest level written (the standard library's loggers: warning at least).
        fmt: ``json``, ``console``, or ``auto`` (JSON unless stderr is a terminal).
        secrets: literal values never to write (such as a configured operator token).
    """
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        # Plain tracebacks: rich's pretty ones print local variables, which can hold
        # secrets, and take seconds to render large objects.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    redact = redact_secrets(secrets)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
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
    # Its access lines (info) stay out: RequestGuard logs each request with its id.
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
