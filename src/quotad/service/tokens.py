"""Named operator tokens with roles (SPEC 12): create (shown once), list, revoke.

The bootstrap token (``QUOTAD_ADMIN_TOKEN``, or the one generated at first start) stays
and is an admin; these are the others. A token is stored as its SHA-256 digest only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quotad.domain import keys
from quotad.domain.operators import OperatorToken, Role
from quotad.errors import NotFound, ValidationFailed
from quotad.service import audit
from quotad.service.admin import new_id
from quotad.service.context import Context

TOKEN_PREFIX = "qdtok"  # noqa: S105 - a prefix, not a secret
BOOTSTRAP_NAME = "bootstrap"
# Names the audit log uses for actors that are not named tokens.
RESERVED_NAMES = frozenset({BOOTSTRAP_NAME, audit.CLI_ACTOR, audit.LOCAL_ACTOR})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token record together with the token, which exists only in this answer."""

    record: OperatorToken
    secret: str


def check_name(name: str) -> None:
    """Refuse a name the log could not tell from another actor's."""
    if not NAME_PATTERN.match(name):
        raise ValidationFailed.at(
            "/body/name",
            "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            "pattern",
        )
    if name in RESERVED_NAMES:
        raise ValidationFailed.at(
            "/body/name", f"{name!r} is reserved for the audit log", "reserved", "pick another"
        )


async def create_token(ctx: Context, name: str, role: Role) -> IssuedToken:
    """Create a named token; the token is returned once and stored only hashed."""
    check_name(name)
    secret = keys.generate(TOKEN_PREFIX)
    record = OperatorToken(
        id=new_id("tok"),
        name=name,
        role=role,
        digest=keys.digest(secret),
        prefix=TOKEN_PREFIX,
        last4=secret[-4:],
        created_at=ctx.clock.now(),
    )
    async with ctx.records.atomic():
        await ctx.records.create_operator_token(record)
        await audit.record(
            ctx, "token.create", audit.target("token", record.id), None, audit.token_state(record)
        )
    return IssuedToken(record, secret)


async def list_tokens(ctx: Context) -> list[OperatorToken]:
    """Every named token, revoked ones included, oldest first."""
    return await ctx.records.list_operator_tokens()


async def revoke_token(ctx: Context, token_id: str) -> OperatorToken:
    """Revoke a token now: from this call on it is refused (401)."""
    before = await ctx.records.get_operator_token(token_id)
    if before is None:
        raise NotFound(f"operator token {token_id!r} not found")
    async with ctx.records.atomic():
        after = await ctx.records.revoke_operator_token(token_id, ctx.clock.now())
        if after != before:
            await audit.record(
                ctx,
                "token.revoke",
                audit.target("token", token_id),
                audit.token_state(before),
                audit.token_state(after),
            )
    return after
