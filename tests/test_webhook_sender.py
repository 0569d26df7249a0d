"""One webhook attempt against a real receiver process (SPEC 11): what is delivered, and how
each way of failing is recorded."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx2
import pytest

from quotad.domain import signatures
from quotad.domain.webhooks import RESPONSE_KEPT, Attempt
from quotad.service.webhook_sender import USER_AGENT, new_client, send

if TYPE_CHECKING:  # the fixture comes from conftest's pytest_plugins
    from tests.webhook_fixtures import WebhookReceiver


AT = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
BODY = json.dumps(
    {"type": "quota.threshold", "id": "evt_sender", "timestamp": AT.isoformat(), "data": {}}
).encode()


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    """The client deliveries are sent with."""
    async with new_client() as opened:
        yield opened


async def deliver(
    client: httpx2.AsyncClient, receiver: WebhookReceiver, budget: float = 5.0
) -> Attempt:
    """Send BODY, signed with the receiver's secret, within ``budget`` seconds."""
    headers = signatures.headers((receiver.secret,), "evt_sender", int(time.time()), BODY)
    return await send(client, receiver.url, BODY, headers, budget, lambda: AT)


def assert_no_secret(attempt: Attempt, receiver: WebhookReceiver) -> None:
    """Nothing of the secret or the signature leaks into the attempt's error."""
    secret_body = receiver.secret.removeprefix("whsec_")
    assert secret_body not in (attempt.error or "")
    assert "v1," not in (attempt.error or "")


async def test_a_2xx_is_delivered_and_verified_by_the_receiver(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """A 200 answer makes a delivered attempt, and the receiver verified the signature."""
    attempt = await deliver(client, receiver)
    assert attempt.delivered
    assert (attempt.status_code, attempt.error, attempt.response, attempt.at) == (
        200,
        None,
        "ok",
        AT,
    )
    assert 0 <= attempt.latency_ms < 5000
    [received] = receiver.wait_for(1)
    assert received["verified"] is True, received
    assert (received["webhook_id"], received["type"]) == ("evt_sender", "quota.threshold")


async def test_a_delivery_says_who_sends_it(client: httpx2.AsyncClient) -> None:
    """The client's User-Agent is quotad-webhooks/<version>, and it follows no redirect."""
    assert client.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("quotad-webhooks/")
    assert client.follow_redirects is False


async def test_a_500_is_recorded_with_its_status_and_the_head_of_its_body(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """A 500 is a failed attempt keeping the status and the first RESPONSE_KEPT characters."""
    answer = "database down; " + "é" * 1000
    receiver.set_mode(status=500, body=answer)
    attempt = await deliver(client, receiver)
    assert not attempt.delivered
    assert attempt.status_code == 500
    assert attempt.response == answer[:RESPONSE_KEPT]
    assert receiver.wait_for(1)[0]["status"] == 500


async def test_an_answer_slower_than_the_timeout_times_out(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """A receiver answering after the timeout makes an attempt with no status, timed out."""
    receiver.set_mode(delay=2.0)
    started = time.perf_counter()
    attempt = await deliver(client, receiver, budget=0.5)
    assert time.perf_counter() - started < 1.5
    assert (attempt.status_code, attempt.error) == (None, "timed out after 0.5s")
    assert 400 <= attempt.latency_ms < 1500
    assert not attempt.delivered


async def test_a_connection_closed_without_an_answer_is_an_error(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """A receiver closing the connection unanswered makes an attempt with no status."""
    receiver.set_mode(close=True)
    attempt = await deliver(client, receiver)
    assert attempt.status_code is None
    assert attempt.error == "the connection closed without a valid answer"
    assert_no_secret(attempt, receiver)


async def test_a_receiver_that_is_down_then_up_again(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """With the receiver down the attempt is refused; once it is up on the same port, delivered."""
    receiver.stop()
    attempt = await deliver(client, receiver)
    assert (attempt.status_code, attempt.error) == (
        None,
        "could not connect (refused or unreachable)",
    )
    assert_no_secret(attempt, receiver)
    receiver.start()
    assert (await deliver(client, receiver)).delivered
    assert receiver.wait_for(1)[0]["verified"] is True


async def test_a_redirect_is_recorded_not_followed(receiver: WebhookReceiver) -> None:
    """A 307 is a failed attempt with its status, even from a client that follows redirects."""
    receiver.set_mode(redirect=f"{receiver.base}/elsewhere")
    async with httpx2.AsyncClient(follow_redirects=True) as following:
        attempt = await deliver(following, receiver)
    assert (attempt.status_code, attempt.error, attempt.response) == (
        307,
        "redirect not followed",
        "moved",
    )
    assert not attempt.delivered
    assert receiver.received() == []


async def test_a_410_says_the_endpoint_is_gone(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """410 Gone is recorded as such, so the caller can disable the endpoint."""
    receiver.set_mode(status=410, body="gone")
    attempt = await deliver(client, receiver)
    assert attempt.gone
    assert not attempt.delivered
    assert attempt.status_code == 410


async def test_a_tampered_delivery_is_not_verified_by_the_receiver(
    client: httpx2.AsyncClient, receiver: WebhookReceiver
) -> None:
    """The receiver really checks: a delivery signed with another secret is logged unverified."""
    headers = signatures.headers((signatures.new_secret(),), "evt_forged", int(time.time()), BODY)
    attempt = await send(client, receiver.url, BODY, headers, 5.0, lambda: AT)
    assert attempt.status_code == 200  # the receiver answers its mode's status either way
    [received] = receiver.wait_for(1)
    assert received["verified"] is False
    assert "signature" in received["error"].lower()
