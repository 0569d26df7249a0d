"""Who is calling: API keys for customers, the operator token for administration.

Order of checks: shape and checksum first (no storage touched for a malformed key),
then one lookup by SHA-256 digest, then a constant-time comparison, then revocation,
expiry and the account's status. The key itself is never logged or echoed.
"""

from __future__ import annotations

from dataclasses import dataclass

from quotad.domain import keys
from quotad.domain.models import Account, AccountStatus, ApiKey
from quotad.errors import AuthError, ErrorCode, Forbidden
from quotad.service.context import Context

ADMIN_TOKEN_SETTING = "admin_token_digest"  # noqa: S105 - a setting name, not a secret
OPERATOR_TOKEN_PREFIX = "qdop"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated customer: the key used and its account."""

    key: ApiKey
    account: Account


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    """The API key a request carries in ``Authorization: Bearer`` or ``x-api-key``."""
    if authorization is not None:
        return bearer_token(authorization)
    if x_api_key is not None and x_api_key.strip():
        return x_api_key.strip()
    raise AuthError(
        "no API key: send Authorization: Bearer <key> or x-api-key: <key>",
        ErrorCode.MISSING_API_KEY,
    )


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(
            "the Authorization header must be 'Bearer <key>'", ErrorCode.INVALID_AUTHORIZATION
        )
    return token


async def authenticate(ctx: Context, raw_key: str) -> Caller:
    """The caller a key belongs to.

    Raises:
        AuthError: the key is malformed, unknown, revoked or expired.
        Forbidden: the account is suspended.
    """
    if not keys.is_well_formed(raw_key):
        raise AuthError("the API key is malformed", ErrorCode.MALFORMED_API_KEY)
    record = await ctx.store.find_key(keys.digest(raw_key))
    now = ctx.clock.now()
    if record is None or not keys.same_digest(record.digest, raw_key) or record.revoked(now):
        raise AuthError("the API key is not valid", ErrorCode.INVALID_AUTHORIZATION)
    if record.expired(now):
        raise AuthError("the API key has expired", ErrorCode.EXPIRED_API_KEY)
    account = await ctx.store.get_account(record.account_id)
    if account is None:
        raise AuthError("the API key is not valid", ErrorCode.INVALID_AUTHORIZATION)
    if account.status is AccountStatus.SUSPENDED:
        raise Forbidden("the account is suspended")
    return Caller(record, account)


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
    if await ctx.store.get_setting(ADMIN_TOKEN_SETTING) is not None:
        return None
    return await reset_operator_token(ctx)


async def reset_operator_token(ctx: Context) -> str:
    """Generate a new operator token, store its digest and return it."""
    token = keys.generate(OPERATOR_TOKEN_PREFIX)
    await ctx.store.put_setting(ADMIN_TOKEN_SETTING, keys.digest(token))
    return token


async def authenticate_operator(ctx: Context, authorization: str | None) -> None:
    """Accept only the operator token, as ``Authorization: Bearer <token>``."""
    if authorization is None:
        raise AuthError("the operator token is required", ErrorCode.MISSING_API_KEY)
    token = bearer_token(authorization)
    configured = ctx.settings.admin_token
    if configured is not None:
        expected = keys.digest(configured.get_secret_value())
    else:
        stored = await ctx.store.get_setting(ADMIN_TOKEN_SETTING)
        if stored is None:
            raise AuthError("no operator token is configured", ErrorCode.INVALID_AUTHORIZATION)
        expected = stored
    if not keys.same_digest(expected, token):
        raise AuthError("the operator token is not valid", ErrorCode.INVALID_AUTHORIZATION)
