"""gateway/h2_upstream.py against an HTTP/2 server that misbehaves on purpose (the h2 library, server side)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from gateway.h2_upstream import H2Upstream, UpstreamReset
from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamUnreachable

pytestmark = pytest.mark.anyio
_HANDLERS: dict[asyncio.Server, list[asyncio.Task[None]]] = {}
Behaviour = Callable[[h2.connection.H2Connection, int, asyncio.StreamWriter], Awaitable[None]]


async def _serve(behaviour: Behaviour, max_streams: int = 100) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        connection.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams}
        )
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        while data := await reader.read(65536):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    await behaviour(connection, event.stream_id, writer)
            writer.write(connection.data_to_send())
        writer.close()

    handlers: list[asyncio.Task[None]] = []

    async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await handle(reader, writer)

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    _HANDLERS[server] = handlers
    return server, server.sockets[0].getsockname()[1]


async def _forward(port: int) -> list[bytes]:
    upstream = H2Upstream(10.0, 2, 10)
    try:
        response = await upstream.forward(UpstreamRequest("GET", f"http://127.0.0.1:{port}/", [], None))
        return [chunk async for chunk in response.body()]
    finally:
        await upstream.aclose()


async def _goaway(connection: h2.connection.H2Connection, stream_id: int, writer: asyncio.StreamWriter) -> None:
    connection.close_connection(last_stream_id=0)
    writer.write(connection.data_to_send())
    writer.close()


async def _die_mid_body(connection: h2.connection.H2Connection, stream_id: int, writer: asyncio.StreamWriter) -> None:
    connection.send_headers(stream_id, [(":status", "200")])
    connection.send_data(stream_id, b"partial")
    writer.write(connection.data_to_send())
    await writer.drain()
    writer.transport.abort()


async def _reset(connection: h2.connection.H2Connection, stream_id: int, writer: asyncio.StreamWriter) -> None:
    connection.reset_stream(stream_id, error_code=7)  # REFUSED_STREAM


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [(_goaway, UpstreamUnreachable), (_die_mid_body, UpstreamError), (_reset, UpstreamReset)],
    ids=["goaway-before-the-call", "connection-lost-mid-body", "stream-refused"],
)
async def test_faults_map_to_upstream_errors(behaviour: Behaviour, error: type[UpstreamError]) -> None:
    server, port = await _serve(behaviour)
    async with server:
        with pytest.raises(error) as caught:
            await asyncio.wait_for(_forward(port), 30)
    if error is UpstreamReset:
        assert caught.value.error_code == 7  # type: ignore[attr-defined]


async def test_the_upstreams_stream_limit_is_respected_with_more_connections() -> None:
    connections: list[int] = []
    most_open: list[int] = []

    async def answer(connection: h2.connection.H2Connection, stream_id: int, writer: asyncio.StreamWriter) -> None:
        if id(connection) not in connections:
            connections.append(id(connection))
        most_open.append(connection.open_inbound_streams)
        connection.send_headers(stream_id, [(":status", "200")])
        connection.send_data(stream_id, b"ok", end_stream=True)

    server, port = await _serve(answer, max_streams=1)
    upstream = H2Upstream(10.0, 2, 100)
    handlers = _HANDLERS[server]

    async def call() -> bytes:
        response = await upstream.forward(UpstreamRequest("GET", f"http://127.0.0.1:{port}/", [], None))
        return b"".join([chunk async for chunk in response.body()])

    async with server:
        try:
            assert await asyncio.wait_for(asyncio.gather(*(call() for _ in range(10))), 30) == [b"ok"] * 10
        finally:
            await upstream.aclose()
            await asyncio.wait_for(asyncio.gather(*handlers), 10)  # each saw its connection close
    # Never a stream the upstream would refuse; a second connection (GATEWAY_UPSTREAM_MAX_CONNECTIONS=2) shares load.
    assert max(most_open) == 1 and len(connections) <= 2
