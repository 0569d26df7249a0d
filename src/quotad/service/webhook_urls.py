"""Which URLs quotad will send webhooks to (SPEC 11).

A webhook URL is http(s), has a host, carries no credentials and no fragment. Unless the
operator sets ``QUOTAD_WEBHOOK_ALLOW_PRIVATE=1``, its host must be, and resolve only to,
globally routable addresses: otherwise anyone allowed to register an endpoint could make
quotad POST to its own loopback, the private network or a cloud metadata service
(169.254.169.254). DNS can change after registration, so the sender asks again right
before each delivery (``public_address_or_error``).

Notes name the host, never the whole URL: its query may hold the receiver's token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

from quotad.errors import ValidationFailed

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0
ALLOW_PRIVATE_VARIABLE = "QUOTAD_WEBHOOK_ALLOW_PRIVATE"
_PATH = "/body/url"
_SCHEMES = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refused(message: str, error_type: str = "format") -> ValidationFailed:
    return ValidationFailed.at(_PATH, message, error_type)


def _not_public(host: str, reason: str) -> ValidationFailed:
    return ValidationFailed.at(
        _PATH,
        f"webhook host {host} {reason}: quotad sends webhooks only to public addresses"
        f" unless {ALLOW_PRIVATE_VARIABLE}=1",
        "forbidden",
        suggestion=f"use a public address, or set {ALLOW_PRIVATE_VARIABLE}=1 on every node",
    )


def _why_not_global(address: Address) -> str | None:
    """What kind of non-public address this is, or None for a globally routable one."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 reaches the IPv4 host: judge that one.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return _why_not_global(embedded)
    for reason, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"a {reason} address"
    if not address.is_global:
        return "a non-public address"
    return None


def _parse(url: str) -> tuple[SplitResult, str, int | None]:
    """The parts of a well-formed URL, its lower-case host and its explicit port."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"a webhook URL is at most {MAX_URL_LENGTH} characters", "maxLength")
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise _refused("a webhook URL may not contain whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _refused("a webhook URL is http:// or https://", "enum")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _refused("a webhook URL may not carry credentials (user:password@)")
    if parts.fragment or url.endswith("#"):
        raise _refused("a webhook URL may not have a #fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refused("a webhook URL needs a host", "required")
    try:
        port = parts.port
    except ValueError:
        raise _refused("the webhook URL's port is not valid") from None
    if port == 0:
        raise _refused("the webhook URL's port is not valid")
    return parts, host, port


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _normalised(parts: SplitResult, host: str, port: int | None) -> str:
    scheme = parts.scheme.lower()
    literal = _literal(host)
    if isinstance(literal, ipaddress.IPv6Address):
        netloc = f"[{literal.compressed}]"
    elif literal is not None:
        netloc = str(literal)
    else:
        try:
            netloc = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _refused("the webhook URL's host is not a valid name") from None
    if port is not None and port != _SCHEMES[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


async def _resolve(host: str, port: int) -> set[Address]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError):
        raise _refused(
            f"webhook host {host} does not resolve to any address", "unresolvable"
        ) from None
    addresses: set[Address] = set()
    for _family, _type, _proto, _name, sockaddr in found:
        # An IPv6 sockaddr may name its zone ("fe80::1%eth0"): the address is before the %.
        literal = _literal(str(sockaddr[0]).split("%", 1)[0])
        if literal is not None:
            addresses.add(literal)
    if not addresses:
        raise _refused(f"webhook host {host} does not resolve to any address", "unresolvable")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, normalised, if quotad may send webhooks to it.

    Raises:
        ValidationFailed: at ``/body/url``, with a note saying what is wrong: not http(s),
            no host, credentials, a fragment, too long; or, unless ``allow_private``, a host
            that is or resolves to a non-public address, or that does not resolve.
    """
    parts, host, port = _parse(url)
    normalised = _normalised(parts, host, port)
    if allow_private:
        return normalised
    literal = _literal(host)
    if literal is not None:
        reason = _why_not_global(literal)
        if reason is not None:
            raise _not_public(host, f"is {reason}")
        return normalised
    for address in sorted(await _resolve(host, port or _SCHEMES[parts.scheme.lower()]), key=str):
        reason = _why_not_global(address)
        if reason is not None:
            raise _not_public(host, f"resolves to {address}, {reason}")
    return normalised


async def public_address_or_error(url: str, allow_private: bool) -> str | None:
    """Why a delivery to ``url`` may not be sent now (DNS may have changed), or None."""
    try:
        await check_url(url, allow_private=allow_private)
    except ValidationFailed as refused:
        return refused.note
    return None
