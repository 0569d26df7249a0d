"""HTTP over raw sockets, for requests a client library would refuse to send or would fix."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

import orjson

ERROR_KEYS = {"error", "id", "note", "validationErrors"}


@dataclass
class Answer:
    """One parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, object]:
        """The body, checked to be the contract's error body (JSON, the four keys, a UUID id)."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        body = orjson.loads(self.body)
        assert set(body) == ERROR_KEYS, body
        uuid.UUID(body["id"])
        assert isinstance(body["note"], str)
        assert body["note"]
        return dict(body)


def parse(data: bytes) -> Answer:
    """The first response in ``data`` (a whole response: head and ``content-length`` body)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def exchange(port: int, data: bytes, timeout: float = 10) -> Answer:
    """Send ``data`` on a fresh connection and parse what comes back before the server closes.

    The request should ask for ``Connection: close`` (or be one the server answers by
    closing), so that the server's close ends the read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return parse(read_all(sock))
