"""Opening and closing a context's store, for callers that run use cases outside a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from quotad.service.context import Context


@asynccontextmanager
async def opened(ctx: Context) -> AsyncIterator[Context]:
    """``ctx`` with its store open (and its schema brought up to date), closed on the way out."""
    await ctx.stores.open()
    try:
        yield ctx
    finally:
        await ctx.stores.close()
