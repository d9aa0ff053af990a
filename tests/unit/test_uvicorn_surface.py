"""What gateway/http1_protocol.py relies on in uvicorn's httptools protocol, which it subclasses: if an upgrade of
uvicorn renames or reshapes any of it, this fails before the guard silently stops guarding.

uvicorn is pinned to the minor release tested (pyproject.toml); this test is what makes raising the pin safe.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.http1_protocol import GuardedHttpToolsProtocol

# Methods the guard overrides or calls, with the parameters it passes.
METHODS = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "data_received": ["self", "data"],
    "on_headers_complete": ["self"],
    "send_400_response": ["self", "msg"],
    "pause_writing": ["self"],
    "resume_writing": ["self"],
}
# Attributes of a protocol the guard reads.
PROTOCOL_ATTRIBUTES = ("cycle", "headers", "transport", "loop", "connections", "flow")
# Attributes of a request's cycle the guard reads or sets.
CYCLE_ATTRIBUTES = ("more_body", "response_complete", "response_started", "disconnected", "message_event")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


@pytest.mark.parametrize(("name", "parameters"), sorted(METHODS.items()))
def test_the_methods_the_guard_overrides_keep_their_names_and_parameters(name: str, parameters: list[str]) -> None:
    method = getattr(HttpToolsProtocol, name)
    assert list(inspect.signature(method).parameters) == parameters


def test_the_guard_overrides_only_methods_uvicorn_still_has() -> None:
    overridden = {name for name in vars(GuardedHttpToolsProtocol) if callable(vars(GuardedHttpToolsProtocol)[name])}
    own = {"enforce", "_refuse", "_abort", "_disconnect_cycle"}
    for name in overridden - own:
        assert hasattr(HttpToolsProtocol, name), f"uvicorn's HttpToolsProtocol has no {name} any more"


def test_a_protocol_and_its_cycle_have_the_attributes_the_guard_reads() -> None:
    loop = asyncio.new_event_loop()
    try:
        config = Config(_app, http="httptools", lifespan="off")
        config.load()
        protocol = HttpToolsProtocol(config, ServerState(), {}, loop)
        for name in PROTOCOL_ATTRIBUTES:
            assert hasattr(protocol, name), f"HttpToolsProtocol has no {name}"
        # The request-target as read so far: set per request, when the parser starts a message.
        assert "self.url = " in inspect.getsource(HttpToolsProtocol.on_message_begin)
        cycle_parameters = set(inspect.signature(RequestResponseCycle.__init__).parameters)
        assert {"scope", "transport", "flow", "message_event", "on_response"} <= cycle_parameters
        cycle_source = inspect.getsource(RequestResponseCycle.__init__)
        for name in CYCLE_ATTRIBUTES:
            assert f"self.{name} =" in cycle_source, f"RequestResponseCycle sets no {name}"
        flow_source = inspect.getsource(FlowControl.__init__)
        assert "self.read_paused =" in flow_source
        assert callable(FlowControl.resume_reading)
    finally:
        loop.close()
