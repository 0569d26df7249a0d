"""``quotad.api.server`` subclasses uvicorn's private httptools protocol: what it relies on is
still there, in the uvicorn range that pyproject.toml pins.

A failure here means uvicorn changed under the subclass: read the new
``uvicorn/protocols/http/httptools_impl.py`` against ``QuotadHttpProtocol`` (and
``ContractCycle``), fix what moved, run tests/test_server.py, tests/test_http_contract.py and
tests/test_slow_clients.py, and only then widen the pin.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from quotad.api.server import RELIES_ON, RELIES_ON_ATTRIBUTES, CoalescingTransport, protocol_for
from quotad.api.server import Limits as ServerLimits
from tests.test_server import RecordingTransport, app, next_turn

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
CLASSES: dict[str, type] = {
    "HttpToolsProtocol": HttpToolsProtocol,
    "RequestResponseCycle": RequestResponseCycle,
    "ServerState": ServerState,
}
VERSION = uvicorn.__version__  # of the module imported, whatever the metadata says


def pinned() -> SpecifierSet:
    """The uvicorn range of pyproject.toml's dependencies."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [uvicorn] = [Requirement(item) for item in dependencies if Requirement(item).name == "uvicorn"]
    return uvicorn.specifier


def changed(what: str, detail: str) -> str:
    """The failure message: what changed, in which uvicorn, and the range quotad verified."""
    return (
        f"uvicorn {VERSION} changed {what} ({detail}), which quotad.api.server's subclass "
        f"QuotadHttpProtocol relies on; it is verified with uvicorn{pinned()} only"
    )


def test_the_pin_has_both_bounds_and_holds_the_installed_uvicorn() -> None:
    """pyproject.toml pins uvicorn to a range closed above, and the installed one is in it."""
    specifier = pinned()
    assert any(spec.operator == "<" for spec in specifier), (
        f"uvicorn{specifier} has no upper bound: a new minor version may change the private "
        "HttpToolsProtocol that quotad.api.server subclasses"
    )
    assert specifier.contains(VERSION), (
        f"uvicorn {VERSION} is installed, outside uvicorn{specifier}, the range that "
        "quotad.api.server's subclass of HttpToolsProtocol is verified with"
    )


@pytest.mark.parametrize("name", sorted(RELIES_ON))
def test_the_methods_the_subclass_overrides_or_calls_are_unchanged(name: str) -> None:
    """Each uvicorn method the subclass overrides or calls exists with the same parameters."""
    owner, method = name.split(".")
    function = getattr(CLASSES[owner], method, None)
    assert callable(function), changed(name, "it is gone")
    parameters = tuple(inspect.signature(function).parameters)
    assert parameters == tuple(RELIES_ON[name]), changed(
        name, f"parameters {parameters}, expected {tuple(RELIES_ON[name])}"
    )


async def test_the_attributes_the_subclass_uses_are_set() -> None:
    """A protocol that has started a request has every attribute the subclass reads or sets."""
    protocol_class = protocol_for(ServerLimits())
    config = Config(app=app, http=protocol_class, lifespan="off", log_config=None)
    config.load()
    server_state = ServerState()
    protocol = protocol_class(config, server_state, app_state={})
    protocol.connection_made(RecordingTransport())
    assert isinstance(protocol.transport, CoalescingTransport)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: quotad\r\n\r\n")
    instances = {
        "HttpToolsProtocol": protocol,
        "RequestResponseCycle": protocol.cycle,
        "ServerState": server_state,
    }
    for owner, attributes in RELIES_ON_ATTRIBUTES.items():
        for attribute in attributes:
            assert hasattr(instances[owner], attribute), changed(
                f"{owner}.{attribute}", "no such attribute once a request has started"
            )
    assert isinstance(protocol.cycle, RequestResponseCycle), changed(
        "HttpToolsProtocol.cycle", "not a RequestResponseCycle"
    )
    for _ in range(5):
        await next_turn()
    protocol.connection_lost(None)
