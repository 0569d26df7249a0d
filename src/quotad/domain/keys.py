"""API key format: ``<prefix>_<30 random base62><6 base62 of CRC32(random)>``.

The checksum lets a server refuse a mistyped or invented key without a
storage lookup; the SHA-256 digest is the only form a key is stored in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LEN = 30
CHECKSUM_LEN = 6
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}$")
_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]{0,15})_([0-9A-Za-z]{36})$")


def valid_prefix(prefix: str) -> bool:
    """Whether ``prefix`` may start a key (a letter, then up to 15 letters or digits)."""
    return bool(_PREFIX_RE.match(prefix))


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits))


def checksum(random_part: str) -> str:
    """Six base62 characters of the CRC32 of ``random_part`` (62**6 > 2**32, so no loss)."""
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LEN)


def generate(prefix: str) -> str:
    """A new key with ``prefix``, 178 bits of randomness and its checksum."""
    if not valid_prefix(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}")
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LEN))
    return f"{prefix}_{random_part}{checksum(random_part)}"


def is_well_formed(key: str) -> bool:
    """Whether ``key`` has the right shape and checksum; touches no storage."""
    match = _KEY_RE.match(key)
    if match is None:
        return False
    body = match.group(2)
    random_part, check = body[:RANDOM_LEN], body[RANDOM_LEN:]
    return hmac.compare_digest(checksum(random_part), check)


def digest(key: str) -> str:
    """The SHA-256 hex digest under which a key (or operator token) is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def same_digest(stored: str, key: str) -> bool:
    """Constant-time check that ``key`` hashes to ``stored``."""
    return hmac.compare_digest(stored, digest(key))


def display(key: str) -> str:
    """The only form of a key shown after creation: its prefix and last four characters."""
    prefix = key.split("_", 1)[0]
    return f"{prefix}_…{key[-4:]}"


def prefix_of(key: str) -> str:
    """The prefix part of a well-formed key."""
    return key.split("_", 1)[0]
