from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.grpc.servers import EchoServer


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop(0)
