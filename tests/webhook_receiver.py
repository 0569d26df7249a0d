"""A real webhook receiver, run as its own process by the tests (tests/webhook_fixtures.py).

    python tests/webhook_receiver.py --port P --secret S --log FILE --mode FILE

Every POST re-reads the mode file (``{"status": 200, "delay": 0.0, "close": false,
"redirect": null, "body": "ok"}``; a missing file or key takes these defaults), so a test
changes how it answers without restarting it. After sleeping ``delay`` it either closes the
connection without answering (``close``), answers 307 to ``redirect``, or verifies the
delivery with the reference ``standardwebhooks`` library, appends one JSON line
``{"webhook_id", "type", "verified", "error"?, "at", "status"}`` to the log and answers
``status``. ``GET /ready`` answers 200 once it listens.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import standardwebhooks

DEFAULT_MODE: dict[str, Any] = {
    "status": 200,
    "delay": 0.0,
    "close": False,
    "redirect": None,
    "body": "ok",
}


def read_mode(path: Path) -> dict[str, Any]:
    """The answer to give now: the mode file over the defaults."""
    try:
        written = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        # Missing, or caught half-written: the fixture replaces it atomically, so rare.
        written = {}
    return {**DEFAULT_MODE, **written}


class Receiver(ThreadingHTTPServer):
    """The server, with what every handler thread needs."""

    daemon_threads = True
    allow_reuse_address = True  # restarted on the same port while old sockets linger

    def __init__(self, port: int, secret: str, log: Path, mode: Path) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.webhook = standardwebhooks.Webhook(secret)
        self.log = log
        self.mode = mode
        self.log_lock = threading.Lock()

    def record(self, line: dict[str, Any]) -> None:
        """Append one line to the log, whole (handlers run in parallel)."""
        with self.log_lock, self.log.open("a") as log:
            log.write(json.dumps(line) + "\n")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a sender that timed out and left is expected here, not a failure."""


class Handler(BaseHTTPRequestHandler):
    """One request: ``GET /ready`` or a delivery."""

    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the log file is for deliveries only."""

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Send a complete answer."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """``/ready`` answers 200: the fixture waits for it."""
        self.answer(200 if self.path == "/ready" else 404, b"ready")

    def do_POST(self) -> None:
        """A delivery: answered as the mode file says now."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        mode = read_mode(self.server.mode)
        time.sleep(float(mode["delay"]))
        if mode["close"]:
            # Read before closing: a close with unread input would reset, not close.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode["redirect"]:
            self.answer(307, b"moved", {"Location": str(mode["redirect"])})
            return
        status = int(mode["status"])
        line: dict[str, Any] = {
            "webhook_id": self.headers.get("webhook-id"),
            "type": None,
            "verified": False,
            "at": datetime.now(UTC).isoformat(),
            "status": status,
        }
        try:
            payload = self.server.webhook.verify(body, dict(self.headers.items()))
        except Exception as exc:  # every way verification fails is recorded, not raised
            line["error"] = f"{type(exc).__name__}: {exc}"
        else:
            line["verified"] = True
            line["type"] = payload.get("type") if isinstance(payload, dict) else None
        self.server.record(line)
        self.answer(status, str(mode["body"]).encode())


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--mode", type=Path, required=True)
    arguments = parser.parse_args()
    server = Receiver(arguments.port, arguments.secret, arguments.log, arguments.mode)
    server.serve_forever()


if __name__ == "__main__":
    main()
