"""Three quotad nodes in one test process: three apps over one deployment's stores."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx2

from quotad.api.app import create_app
from quotad.errors import StorageError
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.conftest import make_settings


async def three_nodes(
    stores: Stores, clock: FakeClock, stack: AsyncExitStack
) -> list[tuple[httpx2.AsyncClient, Context]]:
    """Three apps over ``stores``' deployment, each (but memory's, which is one process's)
    with connections and a context of its own: a client to each, and its context."""
    nodes = []
    for n in range(3):
        node_stores = stores
        if n and not stores.url.startswith("memory"):
            node_stores = await _opened(stores.url)
            stack.push_async_callback(node_stores.close)
        ctx = Context(node_stores, make_settings(stores.url), clock)
        app = create_app(ctx, manage_store=False)
        client = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url=f"http://node-{n}"
        )
        nodes.append((await stack.enter_async_context(client), ctx))
    return nodes


async def _opened(url: str, attempts: int = 3) -> Stores:
    """The stores at ``url``, opened; a connection that times out is tried again.

    The nodes' tests race calls, they do not time them: on a machine busy with the other
    test workers, connecting to a Redis Cluster's three servers has taken longer than the
    store's one-second timeout (the store's own tests of timeouts run alone).
    """
    for attempt in range(attempts):
        opened = stores_from_url(url)
        try:
            await opened.open()
        except StorageError:
            await opened.close()
            if attempt == attempts - 1:
                raise
            continue
        return opened
    raise AssertionError("unreachable")
