"""Standard Webhooks signatures (SPEC 11): how a delivery is signed, and how it is checked.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (whole seconds since the epoch) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, keyed with the
endpoint's secret (``whsec_`` + base64), one per secret, space-separated, so a receiver
keeps verifying while a rotated secret is in its grace period. A receiver verifies them with
the ``standardwebhooks`` library unchanged, or with ``verify`` below.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not one)
SECRET_BYTES = 24
VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300  # the library's: a replayed delivery is refused after 5 min


class WebhookVerificationError(ValueError):
    """A delivery that does not carry a valid, fresh signature of its body."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # The library pads too: a secret given without its "=" padding still decodes.
        key = base64.b64decode(encoded + "==")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def _digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(_key(secret), signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery with one secret."""
    return f"{VERSION},{base64.b64encode(_digest(secret, msg_id, timestamp, body)).decode()}"


def signature_header(secrets: tuple[str, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if not secrets:
        raise ValueError("a delivery is signed with at least one secret")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def headers(secrets: tuple[str, ...], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a delivery is sent with."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def _timestamp(value: str, tolerance_seconds: float, now: float) -> int:
    if not value.isascii() or not value.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds")
    timestamp = int(value)
    if timestamp < now - tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > now + tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too new")
    return timestamp


def _signatures(value: str) -> list[bytes]:
    """The v1 signatures a header carries; other versions and malformed items are skipped."""
    found: list[bytes] = []
    for item in value.split(" "):
        version, _, encoded = item.partition(",")
        if version != VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check that ``body`` was signed with ``secret`` less than ``tolerance_seconds`` ago.

    Raises:
        WebhookVerificationError: a header is missing, the timestamp is malformed, too old
            or too new, or no signature matches.
    """
    named = {name.lower(): value for name, value in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not named.get(name):
            raise WebhookVerificationError(f"the {name} header is missing")
    msg_id = named["webhook-id"]
    timestamp = _timestamp(
        named["webhook-timestamp"], tolerance_seconds, time.time() if now is None else now
    )
    expected = _digest(secret, msg_id, timestamp, body)
    # Every candidate is compared (in constant time each), so timing tells nothing.
    matched = False
    for candidate in _signatures(named["webhook-signature"]):
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no signature matches the body and the secret")
