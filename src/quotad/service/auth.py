"""Who is calling: API keys for customers, operator tokens (with roles) for administration.

Order of checks: shape and checksum first (no storage touched for a malformed key),
then one lookup by SHA-256 digest, then a constant-time comparison, then revocation,
expiry and the account's status. The key itself is never logged or echoed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from quotad.domain import keys
from quotad.domain.models import Account, AccountStatus, ApiKey
from quotad.domain.operators import ALLOWED, Access, Role
from quotad.errors import AuthError, ErrorCode, Forbidden, ValidationFailed
from quotad.service import audit, tokens
from quotad.service.context import Context

ADMIN_TOKEN_SETTING = "admin_token_digest"  # noqa: S105 - a setting name, not a secret
OPERATOR_TOKEN_PREFIX = "qdop"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated customer: the key used and its account."""

    key: ApiKey
    account: Account


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    """The API key a request carries in ``Authorization: Bearer`` or ``x-api-key``.

    Either header may carry it; when both do, they must carry the same key. An
    ``Authorization`` header that is not ``Bearer <key>`` (a gateway's ``Basic``
    credentials, say) is ignored when ``x-api-key`` carries a key, and refused otherwise.

    Raises:
        AuthError: no key, or only an ``Authorization`` header that is not a bearer key.
        ValidationFailed: the two headers carry different keys.
    """
    header_key = x_api_key.strip() if x_api_key is not None else ""
    if authorization is None:
        if header_key:
            return header_key
        raise AuthError(
            "no API key: send Authorization: Bearer <key> or x-api-key: <key>",
            ErrorCode.MISSING_API_KEY,
        )
    try:
        bearer_key = bearer_token(authorization)
    except AuthError:
        if header_key:
            return header_key
        raise
    if header_key and header_key != bearer_key:
        raise ValidationFailed.at(
            "/header/x-api-key",
            "x-api-key and Authorization: Bearer carry different keys",
            "conflict",
            "send the key in one header, or the same key in both",
        )
    return bearer_key


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(
            "the Authorization header must be 'Bearer <key>'", ErrorCode.INVALID_AUTHORIZATION
        )
    return token


async def authenticate(ctx: Context, raw_key: str, now: datetime | None = None) -> Caller:
    """The caller a key belongs to, at ``now`` (by default the clock's current time).

    Raises:
        AuthError: the key is malformed, unknown, revoked or expired.
        Forbidden: the account is suspended.
    """
    key_digest = well_formed_digest(raw_key)
    record = check_key(await ctx.records.find_key(key_digest), key_digest, now or ctx.clock.now())
    account = await ctx.records.get_account(record.account_id)
    return Caller(record, check_account(account))


def well_formed_digest(raw_key: str) -> str:
    """The digest a key is looked up by, once its shape and checksum are right."""
    if not keys.is_well_formed(raw_key):
        raise AuthError("the API key is malformed", ErrorCode.MALFORMED_API_KEY)
    return keys.digest(raw_key)


def unknown_key() -> AuthError:
    """The refusal of a key no record (or no account) stands behind."""
    return AuthError("the API key is not valid", ErrorCode.INVALID_AUTHORIZATION)


def check_key(record: ApiKey | None, key_digest: str, now: datetime) -> ApiKey:
    """The key record, unless it is missing, not this digest's, revoked or expired."""
    if record is None or not hmac.compare_digest(record.digest, key_digest) or record.revoked(now):
        raise unknown_key()
    if record.expired(now):
        raise AuthError("the API key has expired", ErrorCode.EXPIRED_API_KEY)
    return record


def check_account(account: Account | None) -> Account:
    """The key's account, unless it is gone or suspended."""
    if account is None:
        raise unknown_key()
    if account.status is AccountStatus.SUSPENDED:
        raise Forbidden("the account is suspended")
    return account


def require_scope(caller: Caller, scope: str) -> None:
    """Refuse a key whose scopes (when it has any) do not include ``scope``."""
    scopes = caller.key.scopes
    if scopes is None:
        return
    family = scope.split(":", 1)[0] + ":*"
    if scope not in scopes and family not in scopes:
        raise Forbidden(f"the API key lacks the scope {scope!r}")


async def ensure_operator_token(ctx: Context) -> str | None:
    """Make sure an operator token exists; return it if it was generated just now.

    A token from ``QUOTAD_ADMIN_TOKEN`` wins. Otherwise the first start generates one,
    stores only its digest, and hands it back so the caller can print it once.
    """
    if ctx.settings.admin_token is not None:
        return None
    if await ctx.records.get_setting(ADMIN_TOKEN_SETTING) is not None:
        return None
    return await _new_bootstrap_token(ctx, "token.create")


async def reset_operator_token(ctx: Context) -> str:
    """Generate a new operator token, store its digest and return it."""
    return await _new_bootstrap_token(ctx, "token.reset")


async def _new_bootstrap_token(ctx: Context, action: str) -> str:
    """A new bootstrap token, stored as its digest and logged (by its hint) as ``action``."""
    token = keys.generate(OPERATOR_TOKEN_PREFIX)
    after = {"name": tokens.BOOTSTRAP_NAME, "role": Role.ADMIN.value, "hint": keys.display(token)}
    async with ctx.records.atomic():
        await ctx.records.put_setting(ADMIN_TOKEN_SETTING, keys.digest(token))
        await audit.record(ctx, action, audit.target("token", tokens.BOOTSTRAP_NAME), None, after)
    return token


@lru_cache(maxsize=4)
def _configured_digest(token: str) -> str:
    # The configured token hashes the same on every call (verify checks it on each one).
    return keys.digest(token)


# Authorization headers seen to carry an operator token, with who it is: verify checks the
# operator on every call, and a header accepted once is accepted again without parsing
# and hashing. Only accepted headers are kept (they hold nothing but the token). For a
# configured bootstrap token they are kept here, keyed by the token, so never for another
# one; for a stored bootstrap token (which another process may reset) and for named
# tokens (which may be revoked) they are kept in the record cache, which forgets them at
# any record write through this node and within its ttl otherwise. A dictionary lookup
# compares keys only once their hashes match: it reveals nothing about how close a wrong
# header came.
_ACCEPTED: dict[tuple[str, str], Operator] = {}
_MAX_ACCEPTED = 16
_OPERATOR = "operator"  # the record cache's key for accepted headers


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator: the token's name (the audit log's actor) and role.

    ``token_id`` is the named token's id, ``None`` for the bootstrap token.
    """

    name: str
    role: Role
    token_id: str | None = None

    def may(self, access: Access) -> bool:
        """Whether the role allows this kind of route."""
        return access in ALLOWED[self.role]


BOOTSTRAP = Operator(tokens.BOOTSTRAP_NAME, Role.ADMIN)
_NEEDS = {
    Access.READ: "the admin or read role",
    Access.WRITE: "the admin role",
    Access.METER: "the admin or verify role",
}


def operator_accepted(ctx: Context, authorization: str) -> Operator | None:
    """The operator ``authorization`` was accepted as before, if it still is."""
    configured = ctx.settings.admin_token
    if configured is not None:
        known = _ACCEPTED.get((configured.get_secret_value(), authorization))
        if known is not None:
            return known
    if ctx.cache is None:
        return None
    remembered: Operator | None = ctx.cache.recall((_OPERATOR, authorization))
    return remembered


async def authenticate_operator(ctx: Context, authorization: str | None) -> Operator:
    """The operator an ``Authorization: Bearer <token>`` header names: the bootstrap token
    (an admin) or a named token that is not revoked.

    Raises:
        AuthError: no header, or not a live operator token.
    """
    if authorization is None:
        raise AuthError("the operator token is required", ErrorCode.MISSING_API_KEY)
    known = operator_accepted(ctx, authorization)
    if known is not None:
        return known
    token = bearer_token(authorization)
    configured = ctx.settings.admin_token
    generation = ctx.cache.generation if ctx.cache is not None else 0
    if configured is not None:
        expected: str | None = _configured_digest(configured.get_secret_value())
    else:
        expected = await ctx.records.get_setting(ADMIN_TOKEN_SETTING)
    if expected is not None and keys.same_digest(expected, token):
        if configured is None:
            _remember(ctx, authorization, BOOTSTRAP, generation)
        elif len(_ACCEPTED) < _MAX_ACCEPTED:
            _ACCEPTED[(configured.get_secret_value(), authorization)] = BOOTSTRAP
        return BOOTSTRAP
    named = await _named_operator(ctx, token)
    _remember(ctx, authorization, named, generation)
    return named


async def _named_operator(ctx: Context, token: str) -> Operator:
    """The named token's operator; its shape and checksum are checked before any lookup."""
    refusal = AuthError("the operator token is not valid", ErrorCode.INVALID_AUTHORIZATION)
    if not keys.is_well_formed(token) or keys.prefix_of(token) != tokens.TOKEN_PREFIX:
        raise refusal
    token_digest = keys.digest(token)
    record = await ctx.records.find_operator_token(token_digest)
    if (
        record is None
        or not hmac.compare_digest(record.digest, token_digest)
        or record.revoked(ctx.clock.now())
    ):
        raise refusal
    return Operator(record.name, record.role, record.id)


def _remember(ctx: Context, authorization: str, operator: Operator, generation: int) -> None:
    if ctx.cache is not None:
        ctx.cache.remember((_OPERATOR, authorization), operator, generation)


def require_access(operator: Operator, access: Access) -> Operator:
    """``operator``, unless its role does not allow ``access`` (403 FORBIDDEN)."""
    if operator.role is not Role.ADMIN and not operator.may(access):  # admins: no lookup
        raise Forbidden(f"the operator token {operator.name!r} lacks {_NEEDS[access]}")
    return operator


async def admit_operator(
    ctx: Context, authorization: str | None, client: str, access: Access = Access.WRITE
) -> Operator:
    """Admit an operator token whose role allows ``access``; each refusal of the token
    itself counts against ``client``'s budget.

    The one operator check of every entry point. Past its budget a client's refusals are
    ``RateLimited`` (429 with ``Retry-After``); a valid token is admitted whatever the
    budget holds. A valid token whose role does not allow the route is ``Forbidden`` and
    counts nothing (the token is right; the route is not its).

    Raises:
        AuthError: no token, or not a live operator token.
        RateLimited: that, and the client has failed too often of late.
        Forbidden: the token's role does not allow ``access``.
    """
    try:
        operator = await authenticate_operator(ctx, authorization)
    except AuthError:
        ctx.failures.record_failure("operator", client)
        raise
    return require_access(operator, access)
