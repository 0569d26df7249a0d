"""The ``receiver`` fixture: a real webhook receiver process (tests/webhook_receiver.py).

A test module takes it with ``pytest_plugins = ("tests.webhook_fixtures",)``. The receiver
listens on a free port with a fresh secret; ``set_mode`` changes how it answers the next
delivery, ``received`` lists what it verified, and ``stop``/``start`` take it down and up
again on the same port (an endpoint that goes away and comes back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.domain.signatures import new_secret
from tests.processes import free_port

SCRIPT = Path(__file__).with_name("webhook_receiver.py")
READY_WITHIN = 30.0


class WebhookReceiver:
    """A receiver process, with its port, secret, mode file and log."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.secret = new_secret()
        self.log = workdir / "received.jsonl"
        self.mode = workdir / "mode.json"
        self.output = workdir / "receiver.out"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL to register as a webhook endpoint."""
        return f"{self.base}/hook"

    def start(self) -> None:
        """Start the process (again, on the same port) and wait until it answers."""
        assert self.process is None, "the receiver is already running"
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    "--port",
                    str(self.port),
                    "--secret",
                    self.secret,
                    "--log",
                    str(self.log),
                    "--mode",
                    str(self.mode),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"the webhook receiver exited with {code}: {self.tail()}")
            try:
                if httpx2.get(f"{self.base}/ready", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the webhook receiver did not answer /ready: {self.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the process (a receiver that vanishes does not say goodbye) and reap it."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def tail(self) -> str:
        """The end of what the process printed (to explain a failure)."""
        if not self.output.exists():
            return ""
        return self.output.read_text(errors="replace")[-2000:]

    def set_mode(self, **mode: Any) -> None:
        """Answer the next deliveries this way: status, delay, close, redirect, body."""
        unknown = set(mode) - {"status", "delay", "close", "redirect", "body"}
        assert not unknown, f"the receiver has no mode {sorted(unknown)}"
        written = self.mode.with_suffix(".tmp")
        written.write_text(json.dumps(mode))
        os.replace(written, self.mode)  # whole: a delivery never reads half a mode

    def received(self) -> list[dict[str, Any]]:
        """Every delivery answered so far (not those closed or redirected), oldest first."""
        if not self.log.exists():
            return []
        text = self.log.read_text()
        # A line still being written has no newline yet: it is read next time.
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The deliveries received, once there are at least ``count``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received()
            if len(received) >= count:
                return received
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the webhook receiver got {len(received)} deliveries, not {count},"
                    f" within {timeout}s"
                )
            time.sleep(0.02)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    """A running webhook receiver process, killed after the test."""
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    handle = WebhookReceiver(workdir)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
