"""Requests sent straight into an ASGI app, with header bytes no HTTP client would send."""

from __future__ import annotations

from typing import Any


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The scope a server builds for ``method path`` with ``headers`` (after ``host``)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"quotad"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("quotad", 80),
        "state": {},
    }
