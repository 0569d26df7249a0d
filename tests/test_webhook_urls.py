"""Which URLs webhooks may be sent to (SPEC 11): http(s) without credentials, and only public
addresses unless QUOTAD_WEBHOOK_ALLOW_PRIVATE=1."""

from __future__ import annotations

import pytest

from quotad.errors import ErrorCode, ValidationFailed
from quotad.service.webhook_urls import MAX_URL_LENGTH, check_url, public_address_or_error

PUBLIC = "https://93.184.215.14/hooks/quotad"  # a global address: no DNS needed to judge it


async def refusal(url: str, *, allow_private: bool = False) -> ValidationFailed:
    """The validation error check_url raises for ``url``."""
    with pytest.raises(ValidationFailed) as raised:
        await check_url(url, allow_private=allow_private)
    error = raised.value
    assert error.code is ErrorCode.VALIDATION_FAILED
    assert [problem.path for problem in error.validation_errors] == ["/body/url"]
    return error


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "http://localhost:9/x"]
)
async def test_http_and_https_are_accepted_with_allow_private(url: str) -> None:
    """http:// and https:// URLs pass, private hosts too when private addresses are allowed."""
    assert await check_url(url, allow_private=True) == url


async def test_a_public_address_is_accepted_by_default() -> None:
    """A globally routable address needs no opt-in."""
    assert await check_url(PUBLIC, allow_private=False) == PUBLIC
    assert await public_address_or_error(PUBLIC, False) is None


async def test_the_url_comes_back_normalised() -> None:
    """Scheme and host lower-cased, the default port dropped, an empty path made "/"."""
    assert (
        await check_url("HTTPS://Hooks.Example.COM:443?x=1", allow_private=True)
        == "https://hooks.example.com/?x=1"
    )
    assert await check_url("http://[::1]:8080/a", allow_private=True) == "http://[::1]:8080/a"


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "example.com/x"])
async def test_other_schemes_are_refused(url: str) -> None:
    """Only http and https are webhook URLs, private addresses allowed or not."""
    error = await refusal(url, allow_private=True)
    assert "http:// or https://" in error.note


async def test_credentials_are_refused_and_never_echoed() -> None:
    """A URL with user:password@ is refused, and the note does not repeat the password."""
    error = await refusal("https://alice:s3cret-pass@example.com/hook", allow_private=True)
    assert "credentials" in error.note
    assert "s3cret-pass" not in error.note
    assert "s3cret-pass" not in str(error.validation_errors[0].as_dict())


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("https://example.com/hook#part", "fragment"),
        ("https:///hook", "host"),
        ("https://example.com:99999/", "port"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, str(MAX_URL_LENGTH)),
        ("https://example.com/a b", "whitespace"),
    ],
)
async def test_malformed_urls_are_refused(url: str, word: str) -> None:
    """A fragment, no host, a bad port, more than 2048 characters or a space is refused."""
    error = await refusal(url, allow_private=True)
    assert word in error.note


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://localhost:8080/hook", "loopback"),
    ],
)
async def test_non_public_hosts_are_refused_by_default(url: str, reason: str) -> None:
    """Loopback, private, link-local, mapped and resolving-to-private hosts are refused,
    with a note naming the reason and the setting that allows them."""
    error = await refusal(url)
    assert reason in error.note
    assert "QUOTAD_WEBHOOK_ALLOW_PRIVATE" in error.note
    assert await public_address_or_error(url, False) == error.note
    assert await check_url(url, allow_private=True)
    assert await public_address_or_error(url, True) is None


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    """A name with no address (the reserved .invalid domain) is refused, saying so."""
    error = await refusal("https://nowhere.invalid/hook")
    assert "does not resolve" in error.note
    assert "nowhere.invalid" in error.note
