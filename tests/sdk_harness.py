"""The SDK tests' harness: one `quotad serve` per module and the operator's client to it,
sync or async behind one face (``Api``)."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from quotad.sdk import AsyncClient, Client
from tests.processes import ADMIN_TOKEN, Running, quotad_serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One ``quotad serve`` on a fresh SQLite file for the whole module."""
    workdir = tmp_path_factory.mktemp("sdk")
    with quotad_serve(f"sqlite:///{workdir / 'quotad.db'}", workdir) as process:
        yield process


class Api:
    """Either client behind one face: ``await api.method(...)`` works for both."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest, server: Running) -> AsyncIterator[Api]:
    """The operator's client to the module's server: ``Client``, then ``AsyncClient``."""
    if request.param == "sync":
        with Client(server.base, operator_token=ADMIN_TOKEN) as client:
            yield Api(client)
    else:
        async with AsyncClient(server.base, operator_token=ADMIN_TOKEN) as aclient:
            yield Api(aclient)


def uid(prefix: str) -> str:
    """A fresh id, so tests sharing the module's server never collide."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
