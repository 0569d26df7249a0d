"""Request ids, and the headers every answer echoes: the ``api-version`` served and the id."""

from __future__ import annotations

import os

API_VERSIONS = ("v1",)
LATEST_VERSION = API_VERSIONS[-1]

# A request id is a random UUID4's 32 hex digits. Every request makes one, so they are
# built from the bits directly (uuid.uuid4() costs twice as much), and the random bits
# are drawn from the OS 256 ids at a time (one system call each is most of the cost).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_IDS_PER_DRAW = 256
_random_ids: list[int] = []
os.register_at_fork(after_in_child=_random_ids.clear)  # a child must not reuse its parent's
_SERVED_VERSION = (b"api-version", LATEST_VERSION.encode())


def new_request_id() -> str:
    """A fresh request id, the ``x-request-id`` of the answer (a UUID4 in hex)."""
    try:
        bits = _random_ids.pop()  # atomic: threads never share an id
    except IndexError:
        drawn = os.urandom(16 * _IDS_PER_DRAW)
        _random_ids.extend(int.from_bytes(drawn[i : i + 16]) for i in range(16, len(drawn), 16))
        bits = int.from_bytes(drawn[:16])
    return f"{bits & _UUID4_CLEAR | _UUID4_SET:032x}"


def echoed_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries: the ``api-version`` served and the request id."""
    return [_SERVED_VERSION, (b"x-request-id", request_id.encode())]
