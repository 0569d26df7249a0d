"""Logs: JSON lines off a terminal, a request id on every request's line, no secret ever."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
import structlog.testing

from quotad.domain import keys
from quotad.lazy_logger import LazyLogger
from quotad.logs import REDACTED, redact_secrets, redact_text
from tests.processes import BIN, running

TOKEN = "logs-test-operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


# The redacting processor ------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {'qd_' + 'A' * 36} used", f"key qd_{REDACTED} used"),
        (f"x_{'acme2_' + 'b' * 36}.", f"x_acme2_{REDACTED}."),
        ("Authorization: Bearer abc.def-123", f"Authorization: Bearer {REDACTED}"),
        ("header='bearer   xyz'", f"header='bearer   {REDACTED}'"),
        ("the token is logs-test-operator-token!", f"the token is {REDACTED}!"),
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    """Keys of any prefix, bearer credentials and the configured token become [REDACTED]."""
    assert redact_text(text, [TOKEN]) == expected


def test_real_keys_are_redacted() -> None:
    """A key as quotad generates it is caught, whatever its prefix."""
    for prefix in ("qd", "qdop", "Acme7"):
        key = keys.generate(prefix)
        assert key not in redact_text(f"saw {key} here")


@pytest.mark.parametrize(
    "text",
    [
        "request_id=3f2a0c9e8d7b4a6f9e8d7c6b5a4f3e2d",
        "error_id=082f9513-901c-4308-8081-902a8fe22d7e",
        "account acct_3fK9aB2cD4eF6gH8 key key_0123456789abcdef",
        "path=/admin/v1/accounts/acme/usage/insights",
        "bearer",
    ],
)
def test_ordinary_values_are_kept(text: str) -> None:
    """Request ids, error ids, record ids and paths are not mistaken for secrets."""
    assert redact_text(text, [TOKEN]) == text


def test_processor_redacts_nested_values() -> None:
    """The processor reaches into dicts, lists and tuples of an event."""
    key = keys.generate("qd")
    event: dict[str, Any] = {
        "event": f"got {key}",
        "headers": {"authorization": f"Bearer {key}", "n": 3},
        "items": [key, (key, 1)],
    }
    redacted = redact_secrets([TOKEN])(None, "info", event)
    assert key not in json.dumps(redacted)
    assert redacted["headers"]["n"] == 3


# Loggers made on first use ------------------------------------------------------------
def test_a_lazy_logger_logs_as_structlog_does() -> None:
    """A line through ``LazyLogger`` reaches structlog's configuration of the moment, with
    its level, event and values."""
    log = LazyLogger("quotad.test")
    with structlog.testing.capture_logs() as captured:
        log.error("alert events lost", dropped=3)
        log.warning("retrying")
    assert captured == [
        {"event": "alert events lost", "dropped": 3, "log_level": "error"},
        {"event": "retrying", "log_level": "warning"},
    ]


# A real server's log ----------------------------------------------------------------
def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a server's output (the start-up banner is plain text)."""
    lines = [line for line in text.splitlines() if line.strip()]
    banner = [line for line in lines if not line.startswith("{")]
    assert all(line.startswith(("quotad ", "API docs")) for line in banner), banner
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.slow
def test_a_runs_log_has_request_ids_error_ids_and_no_secrets(tmp_path: Path) -> None:
    """Every request's line has its x-request-id; each error id is logged with it; no secret."""
    url = f"sqlite:///{tmp_path / 'quotad.db'}"
    argv = [str(BIN / "quotad"), "serve", "--store", url]
    env = {"QUOTAD_ADMIN_TOKEN": TOKEN, "QUOTAD_LOG_LEVEL": "info", "QUOTAD_LOG_FORMAT": "auto"}
    unknown = keys.generate("qd")
    with (
        running(argv, tmp_path, "quotad", **env) as server,
        httpx2.Client(base_url=server.base) as http,
    ):
        service = {"name": "insights"}
        assert http.post("/admin/v1/services", json=service, headers=OPERATOR).status_code == 201
        plan = {"id": "p", "quotas": {"insights": {"total": 5}}}
        assert http.post("/admin/v1/plans", json=plan, headers=OPERATOR).status_code == 201
        account = {"id": "acme", "name": "Acme", "plan": "p"}
        assert http.post("/admin/v1/accounts", json=account, headers=OPERATOR).status_code == 201
        created = http.post("/admin/v1/accounts/acme/keys", json={}, headers=OPERATOR)
        key = created.json()["key"]
        customer = {"Authorization": f"Bearer {key}"}
        verify = {"key": key, "service": "insights", "cost": 1}
        answers = [
            http.get("/v1/usages", headers=customer),
            http.post("/v1/verify", json=verify, headers=OPERATOR),
            http.get("/no/such/path"),
            http.get("/v1/usages", headers={"Authorization": f"Bearer {unknown}"}),
            http.get("/usage/insights", headers={"x-api-key": key[:-1]}),
            http.get("/usage/insights?end_date=2024-01-01", headers=customer),
            http.post(
                "/v1/verify",
                content=b"{not json",
                headers={**OPERATOR, "content-type": "application/json"},
            ),
            http.get("/admin/v1/accounts", headers={"Authorization": "Bearer wrong"}),
            http.post(
                "/admin/v1/services",
                content=f"name=x&token={TOKEN}",
                headers={**OPERATOR, "content-type": "application/x-www-form-urlencoded"},
            ),
            http.get("/v1/usages", headers={**customer, "api-version": "v9"}),
        ]
    output = server.log.read_text()
    lines = log_lines(output)
    errors = [a for a in answers if a.status_code >= 400]
    assert [a.status_code for a in errors] == [404, 401, 403, 400, 400, 401, 400, 400]

    requests = [line for line in lines if line.get("event") == "request"]
    assert all(line.get("request_id") for line in requests)
    assert all("level" in line and "timestamp" in line for line in lines)
    by_id = {line["request_id"]: line for line in requests}
    for answer in answers:
        logged = by_id[answer.headers["x-request-id"]]
        assert logged["status"] == answer.status_code
    for answer in errors:
        error_id = answer.json()["id"]
        [refusal] = [line for line in lines if line.get("error_id") == error_id]
        assert refusal["request_id"] == answer.headers["x-request-id"]
        assert refusal["error"] == answer.json()["error"]

    for secret in (key, key[:-1], unknown, TOKEN):
        assert secret not in output
