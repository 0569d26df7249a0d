"""The API key format of SPEC 2: prefix, 30 random base62, 6 base62 of CRC32; hashed at rest."""

from __future__ import annotations

import hashlib
import zlib

from hypothesis import given
from hypothesis import strategies as st

from quotad.domain import keys


def test_generated_keys_have_the_documented_shape() -> None:
    """A new key is prefix_, 30 random base62 characters, then the base62 CRC32 of them."""
    key = keys.generate("qd")
    prefix, body = key.split("_")
    assert prefix == "qd"
    assert len(body) == 36
    assert all(c in keys.BASE62 for c in body)
    crc = zlib.crc32(body[:30].encode())
    digits = [keys.BASE62.index(c) for c in body[30:]]
    value = 0
    for digit in digits:
        value = value * 62 + digit
    assert value == crc
    assert keys.is_well_formed(key)


@given(st.integers(min_value=0, max_value=35), st.sampled_from(keys.BASE62))
def test_any_single_character_change_breaks_the_checksum(position: int, replacement: str) -> None:
    """Changing one character of the body is detected without any storage lookup."""
    key = keys.generate("qd")
    body = list(key[3:])
    if body[position] == replacement:
        return
    body[position] = replacement
    assert not keys.is_well_formed("qd_" + "".join(body))


def test_wrong_shapes_are_malformed() -> None:
    """Wrong lengths, alphabets, prefixes or separators are malformed."""
    good = keys.generate("qd")
    for bad in (
        "",
        "qd_",
        good[:-1],
        good + "A",
        good.replace("_", "-"),
        "_" + good[3:],
        good.replace("qd", "q d"),
    ):
        assert not keys.is_well_formed(bad), bad


def test_custom_prefix() -> None:
    """A configured prefix starts new keys, and prefixes must be alphanumeric."""
    assert keys.generate("acme2").startswith("acme2_")
    assert not keys.valid_prefix("2acme")
    assert not keys.valid_prefix("has_underscore")


def test_digest_is_sha256_and_comparison_matches() -> None:
    """Keys are stored as SHA-256 hex and compared against it."""
    key = keys.generate("qd")
    assert keys.digest(key) == hashlib.sha256(key.encode()).hexdigest()
    assert keys.same_digest(keys.digest(key), key)
    assert not keys.same_digest(keys.digest(key), keys.generate("qd"))
    assert keys.display(key) == f"qd_…{key[-4:]}"
