"""gateway/edge.py and gateway/h2_server.py frame by frame: the ASGI scope, trailers, flow control, resets, limits,
TLS with ALPN; on loopback with a raw client (tests/h2_client.py), real curl and httpx.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

import h2.errors
import httpx
import pytest
import trustme

from gateway import edge
from tests.e2e.http2_server import BIG, ShapesServer, shapes_server
from tests.h2_client import MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, RawH2, StreamSeen
from tests.support import LOOPBACK


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


pytestmark = pytest.mark.e2e

ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
CANCEL = h2.errors.ErrorCodes.CANCEL


@pytest.fixture(scope="module")
def server() -> Iterator[ShapesServer]:
    with shapes_server() as running:
        yield running


@pytest.fixture
def client(server: ShapesServer) -> Iterator[RawH2]:
    server.controls.log.clear()
    server.controls.release.clear()
    raw = RawH2(server.port)
    yield raw
    raw.close()


def echo(seen: Any) -> dict[str, Any]:
    assert seen.status == 200, bytes(seen.body)
    payload: dict[str, Any] = json.loads(bytes(seen.body))
    return payload


def test_each_stream_is_an_asgi_request_with_a_decoded_path_and_host_from_authority(client: RawH2) -> None:
    stream = client.request("/a%20b/echo?q=1", method="POST", body=b"12345", headers=[("x-thing", "1")])
    scope = echo(client.response(stream))
    assert scope["http_version"] == "2"
    assert (scope["method"], scope["scheme"]) == ("POST", "http")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/a b/echo", "/a%20b/echo", "q=1")
    assert scope["headers"][:2] == [["host", "gateway.test"], ["x-thing", "1"]]
    assert scope["client"][0] == LOOPBACK
    assert scope["extensions"] == ["http.response.trailers"]
    assert scope["body_length"] == 5
    assert client.remote_settings[MAX_CONCURRENT_STREAMS] == 10
    assert client.remote_settings[MAX_HEADER_LIST_SIZE] == 4096


def test_trailers_extension_sends_http2_trailers(client: RawH2) -> None:
    seen = client.response(client.request("/trailers"))
    assert (seen.status, bytes(seen.body)) == (200, b"hello world")
    assert seen.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
    assert seen.header_frames == 2


def test_a_start_and_an_empty_final_body_is_one_headers_frame_with_end_stream(client: RawH2) -> None:
    seen = client.response(client.request("/trailers-only"))
    assert seen.headers == [(b":status", b"200"), (b"grpc-status", b"5")]
    assert (seen.header_frames, seen.data_frames, seen.ended) == (1, 0, True)


def test_request_trailers_from_the_client_are_accepted(client: RawH2) -> None:
    stream = client.request("/echo", method="POST", body=b"abc", end_stream=False)
    client.conn.send_headers(stream, [("x-checksum", "1")], end_stream=True)
    client.flush()
    assert echo(client.response(stream))["body_length"] == 3


def test_an_app_that_fails_answers_500_and_the_connection_serves_on(client: RawH2) -> None:
    assert client.response(client.request("/boom")).status == 500
    assert echo(client.response(client.request("/echo")))["http_version"] == "2"


def test_a_request_body_is_acknowledged_only_as_the_app_reads_it(server: ShapesServer, client: RawH2) -> None:
    stream = client.request("/hold", method="POST", end_stream=False)
    assert server.controls.saw("holding")
    body = b"y" * BIG
    # The app reads nothing yet: the client may send one stream window, no more.
    sent = client.send_body(stream, body, wait=1.0)
    assert 0 < sent <= 65_535
    server.controls.release.set()
    sent += client.send_body(stream, body[sent:])
    assert sent == BIG
    assert echo(client.response(stream)) == {"received": BIG}


def test_a_slow_reader_on_one_stream_holds_back_that_stream_only(server: ShapesServer, client: RawH2) -> None:
    slow = client.request("/big?q=slow")
    client.unread.add(slow)
    fast = client.request("/big?q=fast")
    assert bytes(client.response(fast).body) == b"x" * BIG
    assert server.controls.saw("big done q=fast")
    # The unread stream got its window's worth and waits.
    assert not client.streams[slow].done
    assert len(client.streams[slow].body) <= 65_535
    client.read_again(slow)
    assert len(client.response(slow).body) == BIG


def test_a_stream_whose_window_stays_closed_is_reset_after_the_send_timeout(
    server: ShapesServer, client: RawH2
) -> None:
    slow = client.request("/big?q=stalled")
    client.unread.add(slow)
    seen = client.response(slow, timeout=20)
    assert seen.reset == CANCEL
    # The connection serves on.
    assert echo(client.response(client.request("/echo")))["http_version"] == "2"


def test_rst_stream_from_the_client_disconnects_the_app_and_drops_its_sends(
    server: ShapesServer, client: RawH2
) -> None:
    stream = client.request("/wait-disconnect")
    assert server.controls.saw("waiting")
    client.reset(stream)
    assert server.controls.saw("http.disconnect")
    assert server.controls.saw("send after disconnect dropped")
    assert echo(client.response(client.request("/echo")))["http_version"] == "2"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/public/../admin", 400), ("GET", "/%2e%2e/admin", 400), ("CONNECT", "", 405)],
)
def test_bad_targets_and_connect_are_refused(client: RawH2, method: str, path: str, status: int) -> None:
    stream = client.conn.get_next_available_stream_id()
    fields = [(":method", method), (":authority", "gateway.test")]
    if method != "CONNECT":
        fields += [(":scheme", "http"), (":path", path)]
    client.conn.send_headers(stream, fields, end_stream=True)
    client.streams[stream] = StreamSeen()
    client.flush()
    assert client.response(stream).status == status


def test_a_header_list_over_the_limit_is_answered_431(client: RawH2) -> None:
    # The client is told the limit (SETTINGS_MAX_HEADER_LIST_SIZE); a hostile one ignores it.
    client.until(lambda: MAX_HEADER_LIST_SIZE in client.remote_settings)
    stream = client.request("/echo", headers=[("x-big", "z" * 5000)])
    assert client.response(stream).status == 431
    assert echo(client.response(client.request("/echo")))["http_version"] == "2"


def test_rapid_reset_is_answered_with_goaway_enhance_your_calm(server: ShapesServer) -> None:
    raw = RawH2(server.port)
    try:
        for _ in range(1000):
            if raw.closed:
                break
            stream = raw.request("/echo")
            raw.reset(stream)
        assert raw.until(lambda: raw.goaway is not None)
        assert raw.goaway is not None and raw.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        raw.close()


def test_a_ping_flood_is_answered_with_goaway_enhance_your_calm(server: ShapesServer) -> None:
    raw = RawH2(server.port)
    try:
        for number in range(1000):
            raw.conn.ping(number.to_bytes(8, "big"))
        raw.flush()
        assert raw.until(lambda: raw.goaway is not None)
        assert raw.goaway is not None and raw.goaway.error_code == ENHANCE_YOUR_CALM
    finally:
        raw.close()


def test_a_connection_specific_header_is_a_protocol_error(server: ShapesServer) -> None:
    raw = RawH2(server.port)
    try:
        raw.conn.config.validate_outbound_headers = False
        raw.conn.config.normalize_outbound_headers = False
        raw.request("/echo", headers=[("connection", "keep-alive")])
        assert raw.until(lambda: raw.goaway is not None)
        assert raw.goaway is not None and raw.goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        raw.close()


def test_sigterm_sends_goaway_and_the_stream_in_flight_completes() -> None:
    with shapes_server() as running:
        raw = RawH2(running.port)
        try:
            stream = raw.request("/hold", method="POST", body=b"in flight")
            assert running.controls.saw("holding")
            running.server.should_exit = True  # what uvicorn's SIGTERM handler does
            assert raw.until(lambda: raw.goaway is not None)
            assert raw.goaway is not None and (raw.goaway.last_stream_id, raw.goaway.error_code) == (stream, 0)
            # A stream opened after the GOAWAY is refused, safe to retry elsewhere.
            late = raw.request("/echo")
            assert raw.response(late).reset == h2.errors.ErrorCodes.REFUSED_STREAM
            running.controls.release.set()
            assert echo(raw.response(stream)) == {"received": len(b"in flight")}
            assert raw.until(lambda: raw.eof)
        finally:
            raw.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: ShapesServer) -> None:
    raw = RawH2(server.port)
    try:
        assert raw.until(lambda: raw.closed, timeout=15)
        assert raw.goaway is not None
    finally:
        raw.close()


def test_curl_with_prior_knowledge_and_httpx_h2c(server: ShapesServer) -> None:
    result = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", f"http://{LOOPBACK}:{server.port}/echo"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body, _, version = result.stdout.rpartition(b"\n")
    assert version == b"2"
    assert json.loads(body)["http_version"] == "2"
    with httpx.Client(http1=False, http2=True, timeout=10) as h2c:
        response = h2c.get(f"http://{LOOPBACK}:{server.port}/echo")
    assert response.http_version == "HTTP/2"
    # HTTP/1.1 on the same port goes on as before.
    assert httpx.get(f"http://{LOOPBACK}:{server.port}/echo", timeout=10).json()["http_version"] == "1.1"


class FakeHandshakes:
    """A test-only TlsHandshakes: a trustme certificate, ALPN h2 and http/1.1 (the real one is gateway/tls.py's)."""

    def __init__(self, ca: trustme.CA) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", LOOPBACK).configure_cert(self._context)
        self._context.set_alpn_protocols(["h2", "http/1.1"])
        self.negotiated: list[str | None] = []
        self.failures: list[BaseException] = []

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @property
    def handshake_timeout(self) -> float:
        return 5.0

    def succeeded(self, ssl_object: ssl.SSLObject | None) -> None:
        self.negotiated.append(ssl_object.selected_alpn_protocol() if ssl_object is not None else None)

    def failed(self, error: BaseException) -> None:
        self.failures.append(error)


def trusting(ca: trustme.CA, protocol: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols([protocol])
    return context


def test_http2_and_http1_over_tls_chosen_by_alpn() -> None:
    ca = trustme.CA()
    handshakes = FakeHandshakes(ca)
    client_context = trusting(ca, "h2")
    with shapes_server() as running:
        edge.use_tls(handshakes)
        try:
            raw = RawH2(running.port, tls=client_context)
            scope = echo(raw.response(raw.request("/echo")))
            raw.close()
            with httpx.Client(verify=trusting(ca, "http/1.1"), timeout=10) as http1:
                over_http1 = http1.get(f"https://{LOOPBACK}:{running.port}/echo").json()
            with httpx.Client(verify=trusting(ca, "h2"), http1=False, http2=True, timeout=10) as over_h2:
                assert over_h2.get(f"https://{LOOPBACK}:{running.port}/echo").http_version == "HTTP/2"
            # Cleartext to the TLS listener: a failed handshake, counted, and the connection closed.
            with socket.create_connection((LOOPBACK, running.port), timeout=10) as plain:
                plain.sendall(b"GET /echo HTTP/1.1\r\nhost: a\r\n\r\n")
                assert read_until_closed(plain) == b""
        finally:
            edge.use_tls(None)
    assert (scope["http_version"], scope["scheme"]) == ("2", "https")
    assert (over_http1["http_version"], over_http1["scheme"]) == ("1.1", "https")
    assert handshakes.negotiated == ["h2", "http/1.1", "h2"]
    assert len(handshakes.failures) == 1
