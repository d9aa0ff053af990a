"""gateway/http1_upstream.py against real loopback servers that answer with scripted raw bytes.

Every scenario runs on asyncio's own event loop and on uvloop, whose transports are not asyncio.Transport
subclasses. The servers are tests/http1_server.py's: each accepted connection is a `Peer` that parses what the client
sent (httptools' request parser, so chunked bodies come out de-chunked) and keeps the raw bytes besides.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.http1_upstream import HIGH_WATER, MAX_HEAD_BYTES, Http1Response, Http1Upstream, PooledConnectionClosed
from gateway.proxy import UpstreamError, UpstreamRequest, UpstreamTimeout, UpstreamUnreachable
from tests.http1_server import (
    OK,
    Handler,
    Peer,
    Server,
    answering,
    asyncio_logs_nothing,  # noqa: F401 (a fixture: nothing logged by asyncio)
    first_connection,
    ok,
    on_both_event_loops,  # noqa: F401 (a fixture: every scenario on asyncio and on uvloop)
    server_tls,
)
from tests.support import LOOPBACK
from tests.tls_support import CertificateFactory
from tests.waiting import until

pytestmark = pytest.mark.anyio

BOUND = 5.0  # seconds: the most any scenario may take; every wait in this module is inside it
CLIENT_TIMEOUT = 3.0  # the client's own timeout unless a scenario sets one: below BOUND, so that it shows first
SHORT = 0.2  # a timeout that a scenario means to run out


# The client side.


@asynccontextmanager
async def scenario(
    handler: Handler, *, timeout: float = CLIENT_TIMEOUT, max_connections: int = 10, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[Server, Http1Upstream]]:
    """A server answering with `handler`, a client, and the scenario's bound on time."""
    server = Server(handler)
    await server.start(tls)
    upstream = Http1Upstream(timeout, max_connections)
    try:
        async with asyncio.timeout(BOUND):
            yield server, upstream
    finally:
        await upstream.aclose()
        await server.stop()


def request(
    url: str,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: AsyncIterator[bytes] | None = None,
    timeout: float | None = None,
) -> UpstreamRequest:
    return UpstreamRequest(method, url, headers or [], body, timeout)


async def read_all(response: Http1Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.body()])
    finally:
        await response.aclose()


async def fetch(upstream: Http1Upstream, outgoing: UpstreamRequest) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    response = await upstream.forward(outgoing)
    return response.status_code, response.headers, await read_all(response)


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def turns(count: int) -> None:
    """Lets the event loop run `count` times round, without waiting for time to pass."""
    for _ in range(count):
        await asyncio.sleep(0)


# The scenarios.


async def test_each_run_is_on_the_event_loop_it_names(anyio_backend: object) -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith("uvloop") == isinstance(anyio_backend, tuple)


async def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        for _ in range(3):
            assert await fetch(upstream, request(server.url())) == (200, [(b"content-length", b"2")], b"ok")
        assert server.connections == 1
        assert len(server.peers[0].requests) == 3


async def test_a_response_with_connection_close_makes_the_next_request_open_a_new_connection() -> None:
    async with scenario(answering(ok(b"bye", b"Connection: close"))) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"bye"
        await server.peers[0].eof.wait()  # the client closed it, though the server did not
        assert (await fetch(upstream, request(server.url())))[2] == b"bye"
        assert server.connections == 2


async def test_a_chunked_response_is_de_chunked_and_its_connection_reused() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    async with scenario(answering(chunked, OK)) as (server, upstream):
        status, headers, body = await fetch(upstream, request(server.url()))
        assert (status, headers, body) == (200, [(b"transfer-encoding", b"chunked")], b"hello world")
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 1


async def test_a_body_delimited_by_the_connection_closing_is_returned_whole() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await turns(3)
        await peer.write(b"second part")
        # The handler returns: the server closes the connection, which ends the body.

    async with scenario(handle) as (server, upstream):
        status, headers, body = await fetch(upstream, request(server.url()))
        assert (status, headers, body) == (200, [(b"content-type", b"text/plain")], b"first part, second part")
        assert (await fetch(upstream, request(server.url())))[2] == b"first part, second part"
        assert server.connections == 2


async def test_a_head_response_has_no_body_whatever_its_content_length_and_its_connection_is_not_reused() -> None:
    async def first(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await peer.until_eof()

    async with scenario(first_connection(first)) as (server, upstream):
        # The request's own timeout is long: a body() waiting for the 1000 bytes would run into the bound below.
        response = await upstream.forward(request(server.url(), "HEAD", timeout=30.0))
        assert (response.status_code, response.headers) == (200, [(b"content-length", b"1000")])
        async with asyncio.timeout(1.0):
            assert await read_all(response) == b""
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 2
        assert server.peers[0].eof.is_set()


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 204 No Content\r\n\r\n", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n'],
    ids=["204", "304"],
)
async def test_204_and_304_have_no_body_and_their_connection_is_reused(answer: bytes) -> None:
    async with scenario(answering(answer, OK)) as (server, upstream):
        response = await upstream.forward(request(server.url(), timeout=30.0))
        assert response.status_code == int(answer[9:12])
        async with asyncio.timeout(1.0):
            assert await read_all(response) == b""
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 1


async def test_interim_responses_are_skipped_and_only_the_final_head_returned() -> None:
    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await turns(2)
            await peer.write(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal"
            )

    async with scenario(handle) as (server, upstream):
        for _ in range(2):
            status, headers, body = await fetch(upstream, request(server.url()))
            assert (status, headers, body) == (200, [(b"content-length", b"5"), (b"x-final", b"yes")], b"final")
        assert server.connections == 1


async def body_until_its_upstream_error(response: Http1Response, within: float) -> bytes:
    """What body() gave before it raised an UpstreamError that is not a timeout, well within the client's timeout (a
    body() that waited for its timeout would run into ``within`` instead)."""
    received = bytearray()
    with pytest.raises(UpstreamError) as raised:
        async with asyncio.timeout(within):
            async for chunk in response.body():
                received += chunk
    await response.aclose()
    assert not isinstance(raised.value, UpstreamTimeout)
    return bytes(received)


async def test_a_body_cut_short_by_the_connection_closing_is_an_upstream_error_not_a_timeout() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    async with scenario(handle, timeout=30.0) as (server, upstream):
        response = await upstream.forward(request(server.url()))
        assert await body_until_its_upstream_error(response, within=2.0) == b"x" * 10


async def test_a_body_cut_short_before_body_is_read_is_an_upstream_error_not_a_wait_for_the_timeout() -> None:
    # As the gateway meets it: the head and part of the body come, then the upstream closes, while the gateway is
    # still busy sending the head on to a slow client; only then does it read the body.
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    async with scenario(handle, timeout=30.0) as (server, upstream):
        response = await upstream.forward(request(server.url()))
        await server.peers[0].finished.wait()
        await until(lambda: response._connection.transport is None, timeout=2.0)  # the client saw the close
        assert await body_until_its_upstream_error(response, within=1.0) == b"x" * 10


async def test_no_response_head_within_the_timeout_is_an_upstream_timeout_and_the_connection_is_closed() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.until_eof()

    async with scenario(handle) as (server, upstream):
        with pytest.raises(UpstreamTimeout):
            await upstream.forward(request(server.url(), timeout=SHORT))
        await server.peers[0].eof.wait()


async def test_a_body_stalling_past_the_timeout_is_an_upstream_timeout_from_body() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await peer.until_eof()

    async with scenario(handle, timeout=SHORT) as (server, upstream):
        response = await upstream.forward(request(server.url()))
        received = bytearray()
        with pytest.raises(UpstreamTimeout):
            async for chunk in response.body():
                received += chunk
        await response.aclose()
        assert received == b"x" * 10
        await server.peers[0].eof.wait()


async def test_a_port_nobody_listens_on_is_unreachable() -> None:
    upstream = Http1Upstream(CLIENT_TIMEOUT, 10)
    # Bound and not listening: connections to it are refused, and no other test can take the port meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        try:
            async with asyncio.timeout(BOUND):
                with pytest.raises(UpstreamUnreachable):
                    await upstream.forward(request(f"http://{LOOPBACK}:{port}/"))
        finally:
            await upstream.aclose()


async def test_a_host_name_no_resolver_can_encode_is_unreachable() -> None:
    # A label over 63 characters: getaddrinfo's IDNA encoding raises UnicodeError, not an OSError.
    upstream = Http1Upstream(CLIENT_TIMEOUT, 10)
    try:
        async with asyncio.timeout(BOUND):
            with pytest.raises(UpstreamUnreachable) as raised:
                await upstream.forward(request(f"http://{'a' * 64}.example/"))
        assert isinstance(raised.value.__cause__, UnicodeError)
    finally:
        await upstream.aclose()


def dropping_the_second_request() -> Handler:
    """The first connection answers one request and closes when the next comes: the keep-alive race, every time."""

    async def first(peer: Peer) -> None:
        await peer.request()
        await peer.write(OK)
        await peer.head()

    return first_connection(first)


async def test_a_bodiless_request_on_a_pooled_connection_the_upstream_closed_is_sent_again_on_a_new_one() -> None:
    async with scenario(dropping_the_second_request()) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert (await fetch(upstream, request(server.url("/again"))))[2] == b"ok"
        assert server.connections == 2
        assert [r.target for r in server.peers[0].requests] == [b"/", b"/again"]
        assert [r.target for r in server.peers[1].requests] == [b"/again"]


async def test_a_request_with_a_body_on_a_pooled_connection_the_upstream_closed_is_not_sent_again() -> None:
    async with scenario(dropping_the_second_request()) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        with pytest.raises(PooledConnectionClosed):  # for a caller that holds the body whole, and may send it again
            await upstream.forward(request(server.url(), "POST", body=stream(b"data")))
        assert server.connections == 1


async def test_a_new_connection_closed_before_any_answer_is_not_taken_for_the_keep_alive_race() -> None:
    async def handle(peer: Peer) -> None:
        await peer.head()

    async with scenario(handle) as (server, upstream):
        with pytest.raises(UpstreamError) as raised:
            await upstream.forward(request(server.url(), "POST", body=stream(b"data")))
        assert type(raised.value) is UpstreamError
        assert server.connections == 1


async def test_the_pooled_connection_closed_by_the_upstream_while_idle_is_not_used() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(OK)
        if peer.index > 0:
            await answering(OK)(peer)

    async with scenario(handle) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        await server.peers[0].finished.wait()
        await until(lambda: not upstream._open, timeout=BOUND)  # the client saw the close, and forgot the connection
        assert (await fetch(upstream, request(server.url("/after", "http"), "POST", body=stream(b"x"))))[2] == b"ok"
        assert server.connections == 2


async def test_host_is_added_from_the_urls_authority_when_the_request_has_none() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url("/p?q=1"), headers=[(b"accept", b"*/*")]))
        (received,) = server.requests()
        assert (received.method, received.target) == (b"GET", b"/p?q=1")
        assert received.headers == [(b"accept", b"*/*"), (b"host", f"{LOOPBACK}:{server.port}".encode())]


async def test_the_requests_own_host_is_kept_and_not_duplicated() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), headers=[(b"host", b"emojivoto.example"), (b"x-a", b"1")]))
        (received,) = server.requests()
        assert received.headers == [(b"host", b"emojivoto.example"), (b"x-a", b"1")]


async def test_a_host_header_of_any_case_is_kept_and_not_duplicated() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), headers=[(b"Host", b"emojivoto.example")]))
        (received,) = server.requests()
        assert received.headers == [(b"Host", b"emojivoto.example")]


async def test_a_bodiless_post_says_content_length_0_and_a_bodiless_get_says_nothing() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), "POST"))
        await fetch(upstream, request(server.url(), "GET"))
        post, get = server.requests()
        assert (post.method, post.headers[1:], bytes(post.body)) == (b"POST", [(b"content-length", b"0")], b"")
        assert (get.method, [name for name, _ in get.headers]) == (b"GET", [b"host"])


async def test_a_body_of_no_declared_length_goes_chunked_and_arrives_whole() -> None:
    parts = [b"first ", b"x" * 70000, b" last"]
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), "PUT", body=stream(*parts)))
        await fetch(upstream, request(server.url()))  # the connection is still in step
        put, get = server.requests()
        assert put.headers[1:] == [(b"transfer-encoding", b"chunked")]
        assert put.body == b"".join(parts)
        assert get.method == b"GET"
        assert server.connections == 1


async def test_an_empty_chunk_of_a_chunked_body_does_not_end_it() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), "POST", body=stream(b"ab", b"", b"cd")))
        (received,) = server.requests()
        assert received.body == b"abcd"


async def test_a_body_of_declared_length_goes_as_it_is() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        headers = [(b"content-length", b"11"), (b"content-type", b"text/plain")]
        await fetch(upstream, request(server.url(), "POST", headers=headers, body=stream(b"hello ", b"world")))
        (received,) = server.requests()
        assert received.headers == [*headers, (b"host", f"{LOOPBACK}:{server.port}".encode())]
        assert received.body == b"hello world"
        assert bytes(server.peers[0].raw).endswith(b"\r\n\r\nhello world")


async def test_header_names_and_values_go_out_byte_for_byte() -> None:
    headers = [
        (b"X-MiXeD-Case", b"Value With  Spaces"),
        (b"x-raw", b"\xff\xfe latin-1 \xe9"),
        (b"x-tab", b"a\tb"),
        (b"x-empty", b""),
        (b"x-raw", b"second"),
    ]
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url(), headers=headers))
        (received,) = server.requests()
        assert received.headers[:-1] == headers
        raw = bytes(server.peers[0].raw)
        assert raw.startswith(b"GET / HTTP/1.1\r\n")
        assert b"".join(name + b": " + value + b"\r\n" for name, value in headers) in raw


@pytest.mark.parametrize(
    "header",
    [
        (b"x-evil", b"a\r\nx-injected: 1"),
        (b"x-evil", b"a\nx-injected: 1"),
        (b"x-evil", b"a\rb"),
        (b"x-evil", b"a\x00b"),
        (b"x-evil\r\nx-injected", b"1"),
    ],
    ids=["crlf-in-value", "lf-in-value", "cr-in-value", "nul-in-value", "crlf-in-name"],
)
async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(header: tuple[bytes, bytes]) -> None:
    async with scenario(answering(OK)) as (server, upstream):
        await fetch(upstream, request(server.url()))  # a pooled connection, which must stay in step
        with pytest.raises(UpstreamError):
            await upstream.forward(request(server.url("/evil"), headers=[header]))
        await fetch(upstream, request(server.url("/next")))
        assert [r.target for r in server.requests()] == [b"/", b"/next"]
        assert b"injected" not in server.peers[0].raw and b"evil" not in server.peers[0].raw
        assert server.connections == 1


async def test_with_the_pool_full_a_request_waits_for_a_connection_to_be_released_and_reuses_it() -> None:
    async with scenario(answering(OK), max_connections=1) as (server, upstream):
        first = await upstream.forward(request(server.url("/first")))
        second = asyncio.create_task(fetch(upstream, request(server.url("/second"))))
        await turns(20)
        assert not second.done()
        assert server.connections == 1 and len(server.requests()) == 1
        assert await read_all(first) == b"ok"
        assert (await second)[2] == b"ok"
        assert server.connections == 1
        assert [r.target for r in server.requests()] == [b"/first", b"/second"]


async def test_with_the_pool_full_past_a_requests_timeout_it_is_an_upstream_timeout() -> None:
    async with scenario(answering(OK), max_connections=1) as (server, upstream):
        first = await upstream.forward(request(server.url("/first")))
        with pytest.raises(UpstreamTimeout):
            await upstream.forward(request(server.url("/second"), timeout=SHORT))
        assert await read_all(first) == b"ok"
        assert (await fetch(upstream, request(server.url("/third"))))[2] == b"ok"
        assert [r.target for r in server.requests()] == [b"/first", b"/third"]
        assert server.connections == 1


def filler_headers(total: int) -> bytes:
    line = b"X-Filler-%04d: " + b"a" * 1000 + b"\r\n"
    return b"".join(line % index for index in range(total // len(line % 0) + 1))


async def test_a_response_head_of_more_than_64_kib_is_an_upstream_error() -> None:
    assert MAX_HEAD_BYTES == 64 * 1024
    head = b"HTTP/1.1 200 OK\r\n" + filler_headers(MAX_HEAD_BYTES) + b"Content-Length: 2\r\n\r\nok"
    async with scenario(answering(head, OK)) as (server, upstream):
        with pytest.raises(UpstreamError) as raised:
            await upstream.forward(request(server.url()))
        assert not isinstance(raised.value, UpstreamTimeout)
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 2


async def test_a_head_just_under_64_kib_is_accepted() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + filler_headers(60 * 1024) + b"Content-Length: 2\r\n\r\nok"
    async with scenario(answering(head)) as (server, upstream):
        status, headers, body = await fetch(upstream, request(server.url()))
        assert (status, body) == (200, b"ok")
        assert len(headers) > 50


async def test_a_response_head_line_growing_past_64_kib_is_refused_without_waiting_for_its_end() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nX-Endless: " + b"a" * (2 * MAX_HEAD_BYTES))
        await peer.until_eof()

    async with scenario(handle, timeout=30.0) as (server, upstream):
        with pytest.raises(UpstreamError) as raised:
            async with asyncio.timeout(1.0):
                await upstream.forward(request(server.url()))
        assert not isinstance(raised.value, UpstreamTimeout)


async def test_cancelling_a_request_waiting_for_its_head_closes_the_connection() -> None:
    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.until_eof()

    async with scenario(handle) as (server, upstream):
        task = asyncio.create_task(upstream.forward(request(server.url())))
        await until(lambda: server.requests() != [], timeout=BOUND)
        await turns(3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.peers[0].eof.wait()


async def test_an_early_answer_during_a_slow_upload_is_returned_and_its_connection_not_reused() -> None:
    more = asyncio.Event()  # never set: the client is still uploading

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await more.wait()
        yield b"rest"

    async def first(peer: Peer) -> None:
        await peer.head()
        await peer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        await peer.until_eof()

    async with scenario(first_connection(first)) as (server, upstream):
        response = await upstream.forward(request(server.url(), "POST", body=slow_body()))
        assert response.status_code == 413
        assert await read_all(response) == b"too big!"
        await server.peers[0].eof.wait()
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 2


async def test_a_101_switching_protocols_answer_is_an_upstream_error() -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
    async with scenario(answering(switch, OK)) as (server, upstream):
        with pytest.raises(UpstreamError) as raised:
            await upstream.forward(request(server.url()))
        assert not isinstance(raised.value, UpstreamTimeout)
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 2


async def test_bytes_arriving_on_an_idle_pooled_connection_make_the_next_request_use_a_fresh_one() -> None:
    released = asyncio.Event()

    async def first(peer: Peer) -> None:
        await peer.request()
        await peer.write(OK)
        await released.wait()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        await peer.until_eof()

    async with scenario(first_connection(first, then=ok(b"fresh"))) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        released.set()
        await server.peers[0].eof.wait()  # the client closed it on reading what nothing asked for
        assert (await fetch(upstream, request(server.url())))[2] == b"fresh"
        assert server.connections == 2


class ClientWentAway(Exception):
    """Stands for the gateway's own error when its client disconnects mid-upload."""


async def test_the_request_bodys_own_error_is_raised_as_it_is_by_forward() -> None:
    gone = ClientWentAway()

    async def failing_body() -> AsyncIterator[bytes]:
        yield b"part"
        await turns(2)
        raise gone

    async def handle(peer: Peer) -> None:
        await peer.head()
        await peer.until_eof()

    async with scenario(handle) as (server, upstream):
        with pytest.raises(ClientWentAway) as raised:
            await upstream.forward(request(server.url(), "POST", body=failing_body()))
        assert raised.value is gone
        await server.peers[0].eof.wait()


async def test_the_request_bodys_own_error_after_the_head_is_raised_as_it_is_by_body() -> None:
    failed = asyncio.Event()
    gone = ClientWentAway()

    async def failing_body() -> AsyncIterator[bytes]:
        yield b"part"
        await failed.wait()
        raise gone

    async def handle(peer: Peer) -> None:
        await peer.head()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nbegun")
        await peer.until_eof()

    async with scenario(handle) as (server, upstream):
        response = await upstream.forward(request(server.url(), "POST", body=failing_body()))
        assert response.status_code == 200
        received = bytearray()
        with pytest.raises(ClientWentAway) as raised:
            async for chunk in response.body():
                received += chunk
                failed.set()
        await response.aclose()
        assert raised.value is gone
        assert received == b"begun"
        await server.peers[0].eof.wait()


async def test_a_large_response_read_slowly_arrives_whole_and_in_order_with_reading_paused_meanwhile() -> None:
    payload = random.Random(7).randbytes(8 * 1024 * 1024)

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        view = memoryview(payload)
        for start in range(0, len(payload), 64 * 1024):
            await peer.write(view[start : start + 64 * 1024])
        await answering(OK)(peer)

    async with scenario(handle) as (server, upstream):
        response = await upstream.forward(request(server.url()))
        received = bytearray()
        largest = 0
        async for chunk in response.body():
            received += chunk
            largest = max(largest, len(chunk))
            await turns(10)  # a slow consumer: the upstream gets ahead
        await response.aclose()
        assert received == payload
        # Reading pauses at HIGH_WATER unread: never more than that and one read of the transport's come at once.
        assert largest <= HIGH_WATER + 256 * 1024
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 1


async def test_a_response_left_unread_past_the_pause_leaves_its_connection_reading_for_the_next() -> None:
    payload = b"x" * HIGH_WATER  # its last byte both completes the response and reaches the pause

    async def handle(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await answering(OK)(peer)

    async with scenario(handle) as (server, upstream):
        response = await upstream.forward(request(server.url()))
        # Complete, and so pooled, once its bytes are in, but never read: reading paused at HIGH_WATER.
        await until(lambda: response._connection.finished)
        await response.aclose()
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        assert server.connections == 1


@pytest.fixture(scope="module")
def certificates() -> CertificateFactory:
    return CertificateFactory()


async def test_an_https_upstream_whose_certificate_is_not_trusted_is_unreachable(
    certificates: CertificateFactory, tmp_path: Path
) -> None:
    async with scenario(answering(OK), tls=server_tls(certificates, tmp_path)) as (server, upstream):
        with pytest.raises(UpstreamUnreachable) as raised:
            await upstream.forward(request(server.url(scheme="https")))
        assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
        assert all(not peer.requests for peer in server.peers)


async def test_an_https_upstream_whose_certificate_is_trusted_is_reached_and_its_connection_reused(
    certificates: CertificateFactory, tmp_path: Path
) -> None:
    async with scenario(answering(OK), tls=server_tls(certificates, tmp_path)) as (server, upstream):
        upstream._tls = certificates.client_context()  # the test's CA, instead of the system's trust store
        for _ in range(2):
            assert await fetch(upstream, request(server.url(scheme="https"))) == (
                200,
                [(b"content-length", b"2")],
                b"ok",
            )
        assert server.connections == 1
        assert server.requests()[0].headers == [(b"host", f"{LOOPBACK}:{server.port}".encode())]


async def test_closing_the_client_closes_its_pooled_connections_and_refuses_further_requests() -> None:
    async with scenario(answering(OK)) as (server, upstream):
        assert (await fetch(upstream, request(server.url())))[2] == b"ok"
        await upstream.aclose()
        await server.peers[0].eof.wait()
        with pytest.raises(UpstreamUnreachable):
            await upstream.forward(request(server.url()))
        assert server.connections == 1
