"""The README's first command starts quotad with a demo whose printed curl lines work."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    """The quick start's commands, in order, from the README's first bash block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    assert block, "README.md has no bash block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def curl_to_request(line: str) -> tuple[str, str, dict[str, str], str | None]:
    """The method, URL, headers and body of a printed ``curl`` line."""
    words = shlex.split(line)
    assert words[0] == "curl"
    method, url, headers, body = "GET", "", {}, None
    items = iter(words[1:])
    for word in items:
        if word == "-X":
            method = next(items)
        elif word == "-H":
            name, _, value = next(items).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(items)
        elif word.startswith("http"):
            url = word
    return method, url, headers, body


@pytest.mark.slow
def test_readme_first_command_serves_the_demo(tmp_path: Path) -> None:
    """`make demo` prints curl lines for both seed endpoints and verify, and each one works."""
    first = readme_commands()[0]
    port = free_port()
    env = {
        **os.environ,
        "QUOTAD_PORT": str(port),
        "QUOTAD_STORE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "QUOTAD_LOG_FORMAT": "json",
    }
    env.pop("QUOTAD_ADMIN_TOKEN", None)
    process = subprocess.Popen(
        first,
        shell=True,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if "API docs" in line:
                break
        curls = [line.strip() for line in printed if line.strip().startswith("curl ")]
        assert len(curls) >= 3, "".join(printed)
        for _ in range(100):
            try:
                httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        answers = {}
        for line in curls:
            method, url, headers, body = curl_to_request(line)
            assert f":{port}/" in url
            response = httpx2.request(method, url, headers=headers, content=body, timeout=5)
            assert response.status_code == 200, (line, response.text)
            answers[url.split("?")[0].rsplit(":", 1)[1] + method] = response.json()
        usages = answers[f"{port}/v1/usagesGET"]
        assert {item["name"] for item in usages} >= {"cohort.max_count", "insights.daily_queries"}
        verdict = answers[f"{port}/v1/verifyPOST"]
        assert (verdict["valid"], verdict["used"]) == (True, 1)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
