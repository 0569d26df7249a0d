"""Standard Webhooks signatures (SPEC 11): ours verify with the reference library unchanged,
and the SDK's ``verify_webhook`` accepts them and refuses anything tampered with."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from quotad.domain import signatures
from quotad.sdk import QuotadSDKError, WebhookVerificationError, verify_webhook

BODY = json.dumps({"type": "quota.threshold", "id": "evt_1", "data": {"used": 80}}).encode()


def signed(secrets: tuple[str, ...], body: bytes = BODY, at: int | None = None) -> dict[str, str]:
    """The headers of a delivery of ``body`` signed now (or ``at``) with ``secrets``."""
    return signatures.headers(secrets, "evt_1", int(time.time()) if at is None else at, body)


def test_new_secrets_are_whsec_and_24_random_bytes() -> None:
    """A new secret is whsec_ + base64 of 24 bytes, and two are never the same."""
    first, second = signatures.new_secret(), signatures.new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24
    assert first != second


def test_our_headers_verify_with_the_reference_library() -> None:
    """standardwebhooks.Webhook(secret).verify accepts a delivery we signed, unchanged."""
    secret = signatures.new_secret()
    headers = signed((secret,))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_our_signature_is_the_reference_librarys() -> None:
    """sign() gives the very string the reference library computes for the same message."""
    secret = signatures.new_secret()
    reference = standardwebhooks.Webhook(secret)
    expected = reference.sign("msg_1", datetime.fromtimestamp(1_700_000_000, UTC), BODY.decode())
    assert signatures.sign(secret, "msg_1", 1_700_000_000, BODY) == expected


def test_during_a_rotation_both_secrets_verify() -> None:
    """Signed with the new and the previous secret, a delivery verifies with either."""
    new, previous = signatures.new_secret(), signatures.new_secret()
    headers = signed((new, previous))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, previous):
        standardwebhooks.Webhook(secret).verify(BODY, headers)
        assert verify_webhook(headers, BODY, secret) == json.loads(BODY)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signatures.new_secret()).verify(BODY, headers)


def test_the_sdk_accepts_ours_and_returns_the_payload() -> None:
    """verify_webhook returns the parsed payload of a delivery signed with its secret."""
    secret = signatures.new_secret()
    upper = {name.upper(): value for name, value in signed((secret,)).items()}
    assert verify_webhook(upper, BODY, secret)["data"] == {"used": 80}
    assert verify_webhook(upper, BODY.decode(), secret)["id"] == "evt_1"


def test_the_sdk_refuses_a_tampered_body() -> None:
    """One byte changed in the body and no signature matches."""
    secret = signatures.new_secret()
    headers = signed((secret,))
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(headers, BODY.replace(b"80", b"81"), secret)


def test_the_sdk_refuses_the_wrong_secret() -> None:
    """A delivery signed with another secret does not verify."""
    headers = signed((signatures.new_secret(),))
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(headers, BODY, signatures.new_secret())


@pytest.mark.parametrize(("offset", "word"), [(-301, "too old"), (301, "too new")])
def test_the_sdk_refuses_a_timestamp_out_of_tolerance(offset: int, word: str) -> None:
    """A delivery signed more than 5 minutes from now (a replay, or a skewed clock) is refused."""
    secret = signatures.new_secret()
    headers = signed((secret,), at=int(time.time()) + offset)
    with pytest.raises(WebhookVerificationError, match=word):
        verify_webhook(headers, BODY, secret)
    assert verify_webhook(headers, BODY, secret, tolerance_seconds=400)["id"] == "evt_1"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_the_sdk_refuses_missing_headers(missing: str) -> None:
    """Each of the three headers is required, and the error names the one missing."""
    secret = signatures.new_secret()
    headers = signed((secret,))
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook(headers, BODY, secret)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [("soon", None), ("1.5e9", None), (None, "v2,abc"), (None, "v1,not base64!"), (None, "v1")],
)
def test_malformed_headers_are_refused_not_crashed_on(
    timestamp: str | None, signature: str | None
) -> None:
    """A malformed timestamp or signature raises the verification error, nothing else."""
    secret = signatures.new_secret()
    headers = signed((secret,))
    headers["webhook-timestamp"] = timestamp or headers["webhook-timestamp"]
    headers["webhook-signature"] = signature or headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, secret)


def test_the_sdk_error_is_an_sdk_error_and_a_value_error() -> None:
    """Callers may catch it as QuotadSDKError or as ValueError."""
    assert issubclass(WebhookVerificationError, QuotadSDKError)
    assert issubclass(WebhookVerificationError, ValueError)


def test_a_signed_body_that_is_not_a_json_object_is_refused() -> None:
    """verify_webhook promises a dict: a validly signed list or non-JSON is refused."""
    secret = signatures.new_secret()
    for body in (b"[1, 2]", b"not json"):
        with pytest.raises(WebhookVerificationError, match="JSON"):
            verify_webhook(signed((secret,), body), body, secret)


def test_the_domain_verify_takes_its_clock() -> None:
    """verify(now=...) judges the timestamp against the clock it is given."""
    secret = signatures.new_secret()
    headers = signed((secret,), at=1_000_000)
    signatures.verify(headers, BODY, secret, now=1_000_100)
    with pytest.raises(signatures.WebhookVerificationError, match="too old"):
        signatures.verify(headers, BODY, secret, now=1_000_301)


@given(
    body=st.text(max_size=2000).map(str.encode),
    msg_id=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60
    ),
    secrets=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=2),
)
def test_any_body_we_sign_verifies_with_the_reference_library(
    body: bytes, msg_id: str, secrets: list[bytes]
) -> None:
    """For random bodies, ids and secrets, sign then standardwebhooks verify holds."""
    encoded = tuple("whsec_" + base64.b64encode(secret).decode() for secret in secrets)
    headers = signatures.headers(encoded, msg_id, int(time.time()), body)
    for secret in encoded:
        standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)
        signatures.verify(headers, body, secret)
