"""Dependencies shared by the routers: the context and the two kinds of caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from quotad.api.errors import AUTH_FAILURE_STATUS
from quotad.domain.operators import Access
from quotad.errors import AuthError
from quotad.http.headers import client_host
from quotad.service import audit, auth
from quotad.service.auth import Caller
from quotad.service.context import Context

bearer_header = APIKeyHeader(
    name="Authorization",
    scheme_name="BearerKey",
    description="Authorization: Bearer <API key>",
    auto_error=False,
)
x_api_key_header = APIKeyHeader(
    name="x-api-key", scheme_name="ApiKeyHeader", description="The API key", auto_error=False
)
operator_header = APIKeyHeader(
    name="Authorization",
    scheme_name="OperatorToken",
    description="Authorization: Bearer <operator token>",
    auto_error=False,
)


# The dependencies are coroutines even when they do not await: FastAPI runs a plain
# function in a worker thread, a hop that costs more than the function on every request.
async def get_ctx(request: Request) -> Context:
    """The process's service context."""
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


def _client(request: Request) -> str:
    return client_host(request.scope)


_READS = frozenset({"GET", "HEAD"})


async def operator(
    request: Request, ctx: Ctx, authorization: Annotated[str | None, Security(operator_header)]
) -> None:
    """Admit an operator token whose role allows the call (a GET: admin or read; anything
    else: admin), named as the actor of the changes it makes; clients that keep failing
    get 429 for their failures."""
    access = Access.READ if request.method in _READS else Access.WRITE
    admitted = await auth.admit_operator(ctx, authorization, _client(request), access)
    audit.acting_as(admitted.name)


async def meter(
    request: Request, ctx: Ctx, authorization: Annotated[str | None, Security(operator_header)]
) -> None:
    """Admit an operator token whose role may meter (admin or verify)."""
    await auth.admit_operator(ctx, authorization, _client(request), Access.METER)


async def customer(
    request: Request,
    ctx: Ctx,
    authorization: Annotated[str | None, Security(bearer_header)],
    x_api_key: Annotated[str | None, Security(x_api_key_header)],
) -> Caller:
    """The customer whose key the request carries, throttled per key."""
    try:
        caller = await auth.authenticate(ctx, auth.key_from_headers(authorization, x_api_key))
    except AuthError:
        ctx.failures.record_failure("customer", _client(request))
        raise
    auth.require_scope(caller, "usage:read")
    await ctx.throttle.check(caller.key.id)
    return caller


async def key_problems_are_403(request: Request) -> None:
    """Seed 003's clients expect 403 "Invalid API Key" for every key problem."""
    setattr(request.state, AUTH_FAILURE_STATUS, 403)


Customer = Annotated[Caller, Depends(customer)]
