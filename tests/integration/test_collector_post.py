"""gateway/collector_post.py, and the span senders on it, against real loopback collectors that misbehave on purpose.

What httpx did for the reporter must still be done: credentials, TLS with the system's trust store, timeouts, bounded
answers, keep-alive. Every scenario runs on asyncio's own event loop and on uvloop (the gateway's, under uvicorn);
the collectors are tests/http1_server.py's, on 127.0.0.1 with a port of the kernel's choosing.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from gateway.collector_post import MAX_ANSWER_BYTES, USER_AGENT, CollectorPost, PostFailed
from gateway.otlp_sender import OtlpHttpSender
from gateway.span_payload import gzipped
from gateway.span_sender import HttpSpanSender, RejectedError, RetryableError
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

pytestmark = pytest.mark.anyio

BOUND = 5.0  # seconds: the most any scenario may take; every wait in this module is inside it
TIMEOUT = 3.0  # the client's own timeout unless a scenario sets one: below BOUND, so that it shows first
SHORT = 0.3  # a timeout that a scenario means to run out
PAYLOAD = gzipped(b"[]")


@pytest.fixture(scope="module")
def certificates() -> CertificateFactory:
    return CertificateFactory()


@asynccontextmanager
async def collector(handler: Handler) -> AsyncIterator[Server]:
    """A collector answering with ``handler``, the scenario's bound on time, and the collector stopped."""
    server = Server(handler)
    await server.start()
    try:
        async with asyncio.timeout(BOUND):
            yield server
    finally:
        await server.stop()


@asynccontextmanager
async def poster(
    url: str, headers: list[tuple[str, str]] | None = None, timeout: float = TIMEOUT
) -> AsyncIterator[CollectorPost]:
    post = CollectorPost(url, headers or [], timeout)
    try:
        yield post
    finally:
        await post.aclose()


def header(peer: Peer, name: bytes, request: int = 0) -> list[bytes]:
    """Every value of ``name`` in the request the peer received (names as the client wrote them, compared lowercase)."""
    return [value for key, value in peer.requests[request].headers if key.lower() == name]


# Credentials.


async def test_url_credentials_become_basic_authentication_as_httpx_makes_it_and_never_go_out_in_the_url() -> None:
    async with collector(answering(OK)) as server:
        url = f"http://us%40er:p%3Ass%C3%A9@{LOOPBACK}:{server.port}/api/v2/spans?tenant=blue#fragment"
        async with poster(url) as post:
            answer = await post.post(PAYLOAD)
        assert (answer.status, answer.body) == (200, b"ok")

        # httpx's own Authorization for the same URL: the user and password percent-decoded, then UTF-8.
        expected = httpx.Request("POST", url)
        next(httpx.BasicAuth(expected.url.username, expected.url.password).sync_auth_flow(expected))
        assert expected.headers["authorization"] == "Basic " + base64.b64encode("us@er:p:ssé".encode()).decode()

        peer = server.peers[0]
        received = peer.requests[0]
        assert received.target == b"/api/v2/spans?tenant=blue", "no userinfo, no fragment"
        assert header(peer, b"authorization") == [expected.headers["authorization"].encode()]
        assert header(peer, b"host") == [f"{LOOPBACK}:{server.port}".encode()]
        assert header(peer, b"content-length") == [str(len(PAYLOAD)).encode()]
        assert bytes(received.body) == PAYLOAD
        for secret in (b"us%40er", b"p%3Ass", b"us@er", "p:ssé".encode()):
            assert secret not in peer.raw


async def test_an_authorization_header_of_the_callers_wins_over_the_urls_credentials() -> None:
    async with collector(answering(OK)) as server:
        url = f"http://user:secret@{LOOPBACK}:{server.port}/v1/traces"
        async with poster(url, [("Authorization", "Bearer token")]) as post:
            await post.post(PAYLOAD)
        assert header(server.peers[0], b"authorization") == [b"Bearer token"]
        assert b"secret" not in server.peers[0].raw


async def test_a_url_with_an_empty_userinfo_sends_no_authorization() -> None:
    async with collector(answering(OK)) as server:
        async with poster(f"http://@{LOOPBACK}:{server.port}/") as post:
            await post.post(PAYLOAD)
        assert header(server.peers[0], b"authorization") == []


async def test_no_error_message_repeats_the_urls_credentials() -> None:
    async with poster(f"http://user:s3cret@{LOOPBACK}:notaport/api/v2/spans") as post:
        with pytest.raises(PostFailed) as raised:
            await post.post(PAYLOAD)
    assert "s3cret" not in str(raised.value) and "user" not in str(raised.value)
    assert "bad authority" in str(raised.value)


# The headers the senders send.


async def test_the_zipkin_sender_sends_its_headers_and_a_user_agent_and_no_framing_of_its_own() -> None:
    async with collector(answering(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")) as server:
        sender = HttpSpanSender(server.url("/api/v2/spans"), timeout=TIMEOUT)
        try:
            await sender.send(PAYLOAD)
        finally:
            await sender.aclose()
        received = server.peers[0].requests[0]
        assert (received.method, received.target) == (b"POST", b"/api/v2/spans")
        assert received.headers == [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"b3", b"0"),
            (b"user-agent", USER_AGENT.encode()),
            (b"content-length", str(len(PAYLOAD)).encode()),
            (b"host", f"{LOOPBACK}:{server.port}".encode()),
        ]


async def test_otlp_user_headers_go_first_and_cannot_replace_the_bodys_type_encoding_or_length() -> None:
    user_headers = [
        ("authorization", "Bearer s3cr3t"),
        ("x-tenant", "blue"),
        ("x-tenant", "green"),
        ("Content-Type", "text/plain"),
        ("content-encoding", "identity"),
        ("B3", "1"),
        ("content-length", "1"),
        ("transfer-encoding", "chunked"),
        ("user-agent", "my-agent"),
    ]
    async with collector(answering(OK)) as server:
        sender = OtlpHttpSender(server.url("/v1/traces"), user_headers, timeout=TIMEOUT)
        try:
            assert await sender.send(PAYLOAD) == 0
        finally:
            await sender.aclose()
        received = server.peers[0].requests[0]
        assert received.headers == [
            (b"authorization", b"Bearer s3cr3t"),
            (b"x-tenant", b"blue"),
            (b"x-tenant", b"green"),
            (b"user-agent", b"my-agent"),
            (b"content-type", b"application/x-protobuf"),
            (b"content-encoding", b"gzip"),
            (b"b3", b"0"),
            (b"content-length", str(len(PAYLOAD)).encode()),
            (b"host", f"{LOOPBACK}:{server.port}".encode()),
        ]
        assert bytes(received.body) == PAYLOAD


# TLS.


async def test_an_https_collector_signed_by_a_ca_named_in_ssl_cert_file_is_trusted(
    certificates: CertificateFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(answering(OK))
    await server.start(server_tls(certificates, tmp_path))
    try:
        async with asyncio.timeout(BOUND):
            # Without it, the system's trust store does not know the test's CA.
            async with poster(server.url("/api/v2/spans", "https")) as post:
                with pytest.raises(PostFailed) as raised:
                    await post.post(PAYLOAD)
            assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
            assert all(not peer.requests for peer in server.peers)

            # What an operator does for a private CA (OpenSSL reads it when the client makes its context).
            monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file(tmp_path)))
            async with poster(server.url("/api/v2/spans", "https")) as post:
                for _ in range(2):
                    assert (await post.post(PAYLOAD)).body == b"ok"
            # The refused handshake never reached the collector's handler; then one connection for both POSTs.
            assert server.connections == 1
            assert bytes(server.peers[0].requests[1].body) == PAYLOAD

            # The name is checked too: the certificate is for 127.0.0.1, not for localhost.
            async with poster(f"https://localhost:{server.port}/api/v2/spans") as post:
                with pytest.raises(PostFailed) as raised:
                    await post.post(PAYLOAD)
            assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    finally:
        await server.stop()


# Timeouts, failures, bounds.


async def test_a_collector_that_never_answers_is_a_retryable_error_after_about_the_timeout() -> None:
    async def silent(peer: Peer) -> None:
        await peer.request()
        await peer.until_eof()

    async with collector(silent) as server:
        sender = HttpSpanSender(server.url("/api/v2/spans"), timeout=SHORT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(RetryableError) as raised:
                await sender.send(PAYLOAD)
            elapsed = loop.time() - started
        finally:
            await sender.aclose()
        assert 0.9 * SHORT <= elapsed < BOUND  # the loop's clock and its timers differ by a millisecond or so
        assert "did not answer within the timeout (0.3 s)" in str(raised.value)
        await server.peers[0].eof.wait()  # the connection is closed, not left to the collector


async def test_an_answer_whose_body_trickles_on_past_the_timeout_is_given_up() -> None:
    async def trickling(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while True:  # each byte well within the timeout, the whole never
            await peer.write(b"x")
            await asyncio.sleep(SHORT / 4)

    async with collector(trickling) as server, poster(server.url(), timeout=SHORT) as post:
        started = asyncio.get_running_loop().time()
        with pytest.raises(PostFailed, match="did not answer within the timeout"):
            await post.post(PAYLOAD)
        assert asyncio.get_running_loop().time() - started < BOUND
        await server.peers[0].finished.wait()  # closed by the client: the collector's next write failed


async def test_a_closed_port_is_a_retryable_error_that_says_why() -> None:
    # Bound and not listening: connections to it are refused, and no other test can take the port meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sender = HttpSpanSender(f"http://{LOOPBACK}:{sock.getsockname()[1]}/api/v2/spans", timeout=TIMEOUT)
        try:
            async with asyncio.timeout(BOUND):
                with pytest.raises(RetryableError, match="cannot connect to the collector: ConnectionRefusedError"):
                    await sender.send(PAYLOAD)
        finally:
            await sender.aclose()


async def test_an_answer_that_is_not_http_is_a_retryable_error() -> None:
    async with collector(answering(b"SMTP ready\r\n\r\n")) as server:
        sender = HttpSpanSender(server.url("/api/v2/spans"), timeout=TIMEOUT)
        try:
            with pytest.raises(RetryableError, match="collector failed: malformed response"):
                await sender.send(PAYLOAD)
        finally:
            await sender.aclose()


async def test_an_endless_answer_is_read_only_up_to_the_bound_and_its_connection_dropped() -> None:
    async def endless(peer: Peer) -> None:
        await peer.request()
        await peer.write(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"refused " * 1024
        while True:
            await peer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    async with collector(first_connection(endless)) as server, poster(server.url()) as post:
        answer = await post.post(PAYLOAD)
        assert answer.status == 400
        assert answer.body == (b"refused " * (MAX_ANSWER_BYTES // 8 + 1))[:MAX_ANSWER_BYTES]
        await server.peers[0].finished.wait()  # dropped: the collector's next write failed
        assert (await post.post(PAYLOAD)).body == b"ok"
        assert server.connections == 2


async def test_a_huge_rejection_is_reported_by_its_start() -> None:
    body = b"too many spans. " + b"x" * (8 * 1024 * 1024)
    answer = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with collector(answering(answer)) as server:
        sender = HttpSpanSender(server.url("/api/v2/spans"), timeout=TIMEOUT)
        try:
            with pytest.raises(RejectedError) as raised:
                await sender.send(PAYLOAD)
        finally:
            await sender.aclose()
        assert str(raised.value) == f"collector answered 413: {body[:200].decode()}"


async def test_an_answer_of_exactly_the_bound_is_read_whole_and_its_connection_kept() -> None:
    async with collector(answering(ok(b"y" * MAX_ANSWER_BYTES))) as server, poster(server.url()) as post:
        for _ in range(2):
            assert (await post.post(PAYLOAD)).body == b"y" * MAX_ANSWER_BYTES
        assert server.connections == 1


# Keep-alive.


async def test_posts_reuse_one_keep_alive_connection() -> None:
    async with collector(answering(OK)) as server, poster(server.url("/api/v2/spans")) as post:
        for _ in range(3):
            assert (await post.post(PAYLOAD)).status == 200
        assert server.connections == 1
        assert [bytes(request.body) for request in server.peers[0].requests] == [PAYLOAD] * 3


@pytest.mark.parametrize("says_so", [False, True], ids=["silently", "connection-close"])
async def test_a_collector_that_closes_the_connection_after_each_answer_gets_every_post(says_so: bool) -> None:
    answer = ok(b"ok", b"Connection: close") if says_so else OK

    async def once(peer: Peer) -> None:
        await peer.request()
        await peer.write(answer)  # then the handler returns, and the server closes the connection

    async with collector(once) as server, poster(server.url("/api/v2/spans")) as post:
        for _ in range(3):
            assert (await post.post(PAYLOAD)).body == b"ok"
        answered = [sum(request.complete for request in peer.requests) for peer in server.peers]
        assert answered[-3:] == [1, 1, 1] and sum(answered) == 3


async def test_a_post_that_meets_its_pooled_connection_closed_is_sent_again_on_a_new_one() -> None:
    async def closes_at_the_second(peer: Peer) -> None:
        await peer.request()
        await peer.write(OK)
        await peer.head()  # the keep-alive race, every time: closed as the next POST arrives

    async with collector(first_connection(closes_at_the_second)) as server, poster(server.url("/s")) as post:
        for _ in range(2):
            assert (await post.post(PAYLOAD)).body == b"ok"
        assert server.connections == 2
        assert [bytes(request.body) for request in server.peers[1].requests] == [PAYLOAD]


async def test_no_redirect_is_followed() -> None:
    moved = b"HTTP/1.1 308 Permanent Redirect\r\nLocation: http://elsewhere/api/v2/spans\r\nContent-Length: 0\r\n\r\n"
    async with collector(answering(moved)) as server, poster(server.url("/api/v2/spans")) as post:
        answer = await post.post(PAYLOAD)
        assert (answer.status, answer.header("Location")) == (308, "http://elsewhere/api/v2/spans")
        assert len(server.requests()) == 1


async def test_aclose_closes_the_pooled_connection_and_refuses_further_posts() -> None:
    async with collector(answering(OK)) as server:
        post = CollectorPost(server.url(), [], TIMEOUT)
        await post.post(PAYLOAD)
        await post.aclose()
        await server.peers[0].eof.wait()
        with pytest.raises(PostFailed):
            await post.post(PAYLOAD)
        assert server.connections == 1
