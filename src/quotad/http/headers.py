"""Reading a request's headers, and the checks the API's requests pass before any route.

Each check returns the refusal to send, or None: the middleware that applies them and
the routes that read their own headers share these, so a header means the same
everywhere. As everywhere in quotad, the first of a repeated header counts.
"""

from __future__ import annotations

from quotad.errors import ErrorCode, FieldError
from quotad.http.errors import ErrorAnswer, error_answer
from quotad.http.ids import API_VERSIONS, LATEST_VERSION
from quotad.http.types import Scope

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PLAIN_JSON = b"application/json"
_LONGEST_PLAIN_LENGTH = 19  # fewer ASCII digits than this always make an int quickly
_VERSIONS = ", ".join(API_VERSIONS)


def api_version_refusal(version: str | None) -> ErrorAnswer | None:
    """The refusal of an ``api-version`` this server does not speak (none when omitted)."""
    if version is None or version.strip() in API_VERSIONS:
        return None
    return error_answer(
        ErrorCode.VALIDATION_FAILED,
        f"unknown api-version; supported: {_VERSIONS}",
        [
            FieldError(
                "/header/api-version",
                f"api-version must be one of: {_VERSIONS}",
                "enum",
                f"send api-version: {LATEST_VERSION} or omit the header",
            )
        ],
    )


def is_json_type(content_type: str) -> bool:
    """Whether a ``content-type`` names JSON (``application/json`` or ``application/*+json``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def body_refusal(
    content_length: bytes | None,
    transfer_encoding: bytes | None,
    content_type: bytes | None,
    max_body_bytes: int,
) -> ErrorAnswer | None:
    """The refusal of a body that is not JSON, or declared larger than ``max_body_bytes``.

    Takes the headers' raw values. A request without a body (no length and not chunked,
    or a length of 0) passes. A chunked body without a length passes too: only reading
    it tells its size (see ``size_unknown``).
    """
    chunked = transfer_encoding is not None and b"chunked" in transfer_encoding.lower()
    if content_length is None:
        length = None
    elif content_length.isdigit() and len(content_length) < _LONGEST_PLAIN_LENGTH:
        length = int(content_length)  # the usual case, read as int() reads its text
    else:
        try:
            length = int(content_length.decode("latin-1"))
        except ValueError:  # not a number, or more digits than int() reads
            return error_answer(ErrorCode.BAD_REQUEST, "invalid Content-Length")
    if not length and not chunked:
        return None
    if content_type != _PLAIN_JSON and (
        content_type is None or not is_json_type(content_type.decode("latin-1"))
    ):
        return error_answer(
            ErrorCode.BAD_REQUEST, "the body must be JSON (Content-Type: application/json)"
        )
    if length is not None and length > max_body_bytes:
        return too_large(max_body_bytes)
    return None


def size_unknown(content_length: bytes | None, transfer_encoding: bytes | None) -> bool:
    """Whether a body's size is known only once read (chunked, without a length)."""
    return (
        content_length is None
        and transfer_encoding is not None
        and b"chunked" in transfer_encoding.lower()
    )


def too_large(max_body_bytes: int) -> ErrorAnswer:
    """The refusal of a body larger than ``max_body_bytes``."""
    return error_answer(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the body is larger than the limit of {max_body_bytes} bytes",
    )


def client_host(scope: Scope) -> str:
    """The address the failure budget counts a request against (as ``request.client``).

    The connection's peer, unless it is one of ``QUOTAD_TRUSTED_PROXIES``: then the
    server (``quotad.api.server.proxy_options``) has put the forwarded client here.
    """
    client = scope.get("client")
    if client is None:
        return "unknown"
    host: str = client[0]
    return host
