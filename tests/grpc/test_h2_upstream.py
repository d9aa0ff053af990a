"""gateway/h2_upstream.py against a real grpcio server: streams both ways, trailers, cancellation, pooling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.grpc import MessageCounter
from gateway.h2_upstream import H2Response, H2Upstream
from gateway.proxy import UpstreamRequest, UpstreamUnreachable
from tests.grpc.servers import SERVICE, EchoServer, frame
from tests.support import free_port

pytestmark = pytest.mark.anyio
GRPC_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]


async def _body(*messages: bytes) -> AsyncIterator[bytes]:
    for message in messages:
        yield frame(message)


def _request(
    port: int, method: str, body: AsyncIterator[bytes] | None, timeout: float | None = None
) -> UpstreamRequest:
    return UpstreamRequest("POST", f"http://127.0.0.1:{port}/{SERVICE}/{method}", list(GRPC_HEADERS), body, timeout)


async def _read(response: H2Response) -> bytes:
    return b"".join([chunk async for chunk in response.body()])


async def test_unary_call_gets_its_message_and_trailers(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 100)
    try:
        response = await upstream.forward(_request(echo_server.port, "Unary", _body(b"hello")))
        assert response.status_code == 200
        assert await _read(response) == frame(b"hello")
        trailers = dict(response.trailers)
        assert trailers[b"grpc-status"] == b"0"
        assert trailers[b"custom-trailer"] == b"kept"
        await response.aclose()
    finally:
        await upstream.aclose()


async def test_large_messages_stream_under_flow_control(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 100)
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    try:
        response = await upstream.forward(_request(echo_server.port, "Unary", _body(big)))
        assert await _read(response) == frame(big)
        response = await upstream.forward(_request(echo_server.port, "Repeat", _body(b"4:1048576")))
        counter = MessageCounter()
        async for chunk in response.body():
            counter.feed(chunk)
        assert counter.messages == 4 and counter.complete
    finally:
        await upstream.aclose()


async def test_bidirectional_stream_answers_before_the_request_ends(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 100)
    outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (message := await outgoing.get()) is not None:
            yield frame(message)

    try:
        await outgoing.put(b"one")
        response = await upstream.forward(_request(echo_server.port, "Chat", body()))
        chunks = response.body()
        assert await anext(chunks) == frame(b"echo:one")  # the request is still open
        await outgoing.put(b"two")
        assert await anext(chunks) == frame(b"echo:two")
        await outgoing.put(None)
        assert [chunk async for chunk in chunks] == []
        assert dict(response.trailers)[b"grpc-status"] == b"0"
    finally:
        await upstream.aclose()


async def test_error_status_is_a_trailers_only_response(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 100)
    try:
        response = await upstream.forward(_request(echo_server.port, "Unary", _body(b"fail:no such thing")))
        assert await _read(response) == b""
        everything = dict(response.headers + response.trailers)
        assert everything[b"grpc-status"] == b"5"
        assert everything[b"grpc-message"] == b"no such thing"
    finally:
        await upstream.aclose()


async def test_cancelling_a_call_cancels_the_upstream_call(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 100)
    try:
        # A unary grpcio handler sends its headers only with its answer: the call is cancelled while awaited.
        call = asyncio.create_task(upstream.forward(_request(echo_server.port, "Hang", _body(b"x"))))
        assert await asyncio.to_thread(echo_server.seen.started.wait, 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(echo_server.seen.cancelled.wait, 10)
    finally:
        await upstream.aclose()


async def test_many_concurrent_calls_share_few_connections(echo_server: EchoServer) -> None:
    upstream = H2Upstream(10.0, 2, 5)

    async def call(index: int) -> bytes:
        response = await upstream.forward(_request(echo_server.port, "Unary", _body(b"%d" % index)))
        return await _read(response)

    try:
        results = await asyncio.gather(*(call(index) for index in range(40)))
        assert results == [frame(b"%d" % index) for index in range(40)]
        assert sum(len(pool) for pool in upstream._pools.values()) <= 2
    finally:
        await upstream.aclose()


async def test_nobody_listening_is_unreachable() -> None:
    upstream = H2Upstream(10.0, 2, 5)
    try:
        with pytest.raises(UpstreamUnreachable):
            await upstream.forward(_request(free_port(), "Unary", _body(b"x")))
    finally:
        await upstream.aclose()
