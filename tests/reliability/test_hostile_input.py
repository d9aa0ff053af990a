"""Hostile input: what a client sends can neither steer tracing, nor smuggle a request, nor inject a header, nor
reach a path no route exposes; an oversized head is refused; odd bytes pass through untouched; never a 5xx."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Collector, Gateway, gateway_env, run_gateway
from tests.reliability.conftest import metric, read_until_closed
from tests.reliability.faults import FaultyUpstream, UpstreamCall
from tests.support import LOOPBACK

pytestmark = pytest.mark.e2e

MAX_HEADER_BYTES = 16 * 1024
FORGED_TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"
FORGED_SPAN_ID = "a2fb4a1d1a96d312"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, faulty_upstream: FaultyUpstream, session_collector: Collector
) -> Iterator[Gateway]:
    # Clients from 10.0.0.0/8 would be trusted; the tests' client, on loopback, is not.
    env = gateway_env(
        None,
        session_collector,
        upstream_url=faulty_upstream.url,
        sample_rate=0.0,
        trusted_cidrs="10.0.0.0/8",
        propagation="b3multi,b3,tracecontext",
        client_max_header_bytes=MAX_HEADER_BYTES,
    )
    with run_gateway(tmp_path_factory.mktemp("hostile"), env) as running:
        yield running


def exchange(gateway: Gateway, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends raw bytes on a new connection; everything the gateway answers until it closes the connection."""
    with socket.create_connection((LOOPBACK, gateway.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the gateway may refuse a head before it has all of it
        return read_until_closed(sock, timeout)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


def upstream_call(upstream: FaultyUpstream, token: str) -> UpstreamCall:
    call = upstream.call(token)
    assert call is not None, f"request {token} never reached the upstream"
    return call


def upstream_headers(call: UpstreamCall) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in call.request.headers]


# --- smuggling and injection ---------------------------------------------------------------------------

SMUGGLED = "GET /smuggled?token={smuggled} HTTP/1.1\r\nHost: a\r\n\r\n"
SMUGGLING = {
    "content-length-and-chunked": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n" + SMUGGLED
    ),
    "chunked-and-content-length": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n"
        "0\r\n\r\n" + SMUGGLED
    ),
    "two-content-lengths": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 50\r\n\r\n" + SMUGGLED
    ),
    "two-equal-content-lengths": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED
    ),
    "transfer-encoding-twice": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n" + SMUGGLED
    ),
    "unknown-transfer-coding": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    ),
    "signed-content-length": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" + SMUGGLED
    ),
    "space-before-colon": ("POST /s?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello" + SMUGGLED),
    "obs-fold": "GET /s?token={token} HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n" + SMUGGLED,
    "bare-lf": "GET /s?token={token} HTTP/1.1\nHost: a\n\n" + SMUGGLED,
    "chunk-size-overflow": (
        "POST /s?token={token} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"
        + SMUGGLED
    ),
}


@pytest.mark.parametrize("template", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_request_smuggling_shapes_are_refused_and_nothing_reaches_the_upstream(
    gateway: Gateway, faulty_upstream: FaultyUpstream, template: str
) -> None:
    token, smuggled = uuid.uuid4().hex, uuid.uuid4().hex
    before = metric(gateway, "gateway_client_errors_total", kind="invalid_request")

    answer = exchange(gateway, template.format(token=token, smuggled=smuggled).encode())

    assert status_of(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1, "a second response: the smuggled request was served"
    assert faulty_upstream.call(token) is None and faulty_upstream.call(smuggled) is None
    assert metric(gateway, "gateway_client_errors_total", kind="invalid_request") == before + 1


@pytest.mark.parametrize(
    "value",
    [b"a\rX-Injected: yes", b"a\nX-Injected: yes", b"a\r\n X-Injected: yes", b"a\x00b", b"a\x01b", b"a\x7fb"],
    ids=["cr", "lf", "crlf-fold", "nul", "soh", "del"],
)
def test_control_characters_in_a_header_value_are_refused(
    gateway: Gateway, faulty_upstream: FaultyUpstream, value: bytes
) -> None:
    token = uuid.uuid4().hex
    answer = exchange(gateway, b"GET /i?token=%s HTTP/1.1\r\nHost: a\r\nX-Value: %s\r\n\r\n" % (token.encode(), value))
    assert status_of(answer) == 400
    assert faulty_upstream.call(token) is None


def test_encoded_line_breaks_reach_the_upstream_still_encoded(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    token = uuid.uuid4().hex
    target = f"/a%0d%0aX-Injected:%20yes?token={token}&q=%0d%0aX-Also:%20yes"
    answer = exchange(gateway, f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())

    assert status_of(answer) == 200
    call = upstream_call(faulty_upstream, token)
    assert call.request.target == target
    assert b"X-Injected" not in call.request.head.split(b"\r\n", 1)[1]
    assert not any(name.lower() in ("x-injected", "x-also") for name, _ in call.request.headers)


def test_non_ascii_bytes_never_fail_a_request_and_pass_byte_for_byte(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    token = uuid.uuid4().hex
    utf8 = "caf\u00e9 \u2713 \U0001f369".encode()
    latin1 = b"caf\xe9 \xff\xfe\xc3\x28"  # not UTF-8
    answer = exchange(
        gateway,
        b"GET /%%ff%%fe/caf%%c3?token=%s HTTP/1.1\r\nHost: \xc3\x28.example\r\nX-Utf8: %s\r\nX-Latin1: %s\r\n"
        b"Connection: close\r\n\r\n" % (token.encode(), utf8, latin1),
    )
    assert status_of(answer) == 200
    call = upstream_call(faulty_upstream, token)
    assert call.request.target.startswith("/%ff%fe/caf%c3?")
    assert b"\r\nx-utf8: " + utf8 + b"\r\n" in call.request.head.lower()
    # Bytes that are not UTF-8 (obs-text, RFC 9110 5.5) pass as they came too: the default client writes bytes.
    assert b"\r\nx-latin1: " + latin1 + b"\r\n" in call.request.head.lower()
    # Raw non-ASCII in the request line is not HTTP: refused, not a 5xx.
    assert status_of(exchange(gateway, b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n")) == 400


# --- sizes and duplicates ------------------------------------------------------------------------------


def test_an_oversized_request_head_is_refused_whether_sent_at_once_or_trickled(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    before = metric(gateway, "gateway_client_errors_total", kind="header_too_large")
    token = uuid.uuid4().hex
    big = b"X-Big: " + b"b" * (MAX_HEADER_BYTES + 1024) + b"\r\n"

    at_once = exchange(gateway, b"GET /big?token=%s HTTP/1.1\r\nHost: a\r\n%s\r\n" % (token.encode(), big))
    assert status_of(at_once) == 431

    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /big?token=%s HTTP/1.1\r\nHost: a\r\n" % token.encode())
        answer = b""
        try:
            for _ in range(MAX_HEADER_BYTES // 1000 + 10):
                sock.sendall(b"X-Part: " + b"p" * 990 + b"\r\n")
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert status_of(answer) == 431
    assert faulty_upstream.call(token) is None
    assert metric(gateway, "gateway_client_errors_total", kind="header_too_large") == before + 2

    # Just under the limit, and many small fields: served, every field passed on.
    fields = b"".join(b"X-Field-%d: %d\r\n" % (index, index) for index in range(300))
    fitting = exchange(
        gateway, b"GET /fits?token=%s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n%s\r\n" % (token.encode(), fields)
    )
    assert status_of(fitting) == 200
    fields_passed = [name for name, _ in upstream_headers(upstream_call(faulty_upstream, token)) if "x-field" in name]
    assert len(fields_passed) == 300


def test_duplicated_host_and_forwarding_headers_cannot_confuse_the_upstream(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    token = uuid.uuid4().hex
    answer = exchange(
        gateway,
        (
            f"GET /dup?token={token} HTTP/1.1\r\nHost: first.example\r\nHost: second.example\r\n"
            "X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-For: 10.8.8.8\r\nX-Forwarded-Host: forged.example\r\n"
            "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert status_of(answer) == 200
    headers = upstream_headers(upstream_call(faulty_upstream, token))
    assert [value for name, value in headers if name == "host"] == [f"127.0.0.1:{faulty_upstream.port}"]
    assert [value for name, value in headers if name == "x-forwarded-host"] == ["first.example"]
    assert [value for name, value in headers if name == "x-forwarded-for"] == ["10.9.9.9, 10.8.8.8, 127.0.0.1"]
    assert [value for name, value in headers if name == "x-forwarded-proto"] == ["http"]
    assert "second.example" not in str(headers) and "forged.example" not in str(headers)


# --- request targets -----------------------------------------------------------------------------------

TRAVERSALS = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2e%2Fadmin",
    "/public/..%5cadmin",
    "/public/..\\admin",
    "/./admin",
    "/public/.",
    "http://a.example/public/../admin",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_with_dot_segments_are_refused(gateway: Gateway, faulty_upstream: FaultyUpstream, path: str) -> None:
    token = uuid.uuid4().hex
    before = metric(gateway, "gateway_client_errors_total", kind="bad_target")
    answer = exchange(gateway, f"GET {path}?token={token} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert status_of(answer) == 400
    assert b"dot-segments" in answer
    assert faulty_upstream.call(token) is None
    assert metric(gateway, "gateway_client_errors_total", kind="bad_target") == before + 1


def test_dots_that_are_not_segments_are_served(gateway: Gateway, faulty_upstream: FaultyUpstream) -> None:
    token = uuid.uuid4().hex
    target = f"/.well-known/a..b/.../v1.2/file.tar.gz?token={token}&next=../x"
    answer = exchange(gateway, f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) == 200
    assert upstream_call(faulty_upstream, token).request.target == target


def test_an_absolute_form_target_goes_upstream_in_origin_form_and_its_host_nowhere(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    token = uuid.uuid4().hex
    answer = exchange(
        gateway,
        f"GET http://evil.example:666/steal?token={token} HTTP/1.1\r\n"
        "Host: good.example\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status_of(answer) == 200
    call = upstream_call(faulty_upstream, token)
    assert call.request.target == f"/steal?token={token}"
    assert b"evil.example" not in call.request.head
    assert ("x-forwarded-host", "good.example") in upstream_headers(call)


@pytest.mark.parametrize(
    "request_line",
    ["OPTIONS * HTTP/1.1", "CONNECT evil.example:443 HTTP/1.1", "GET ftp://evil.example/x HTTP/1.1"],
    ids=["asterisk", "connect", "other-scheme"],
)
def test_targets_that_are_not_proxied_are_refused(gateway: Gateway, request_line: str) -> None:
    answer = exchange(gateway, f"{request_line}\r\nHost: evil.example:443\r\n\r\n".encode())
    assert status_of(answer) == 400


# --- forged trace context --------------------------------------------------------------------------------

TRACE_HEADER_VALUES = {
    "X-B3-TraceId": st.sampled_from([FORGED_TRACE_ID, FORGED_TRACE_ID[16:], "0" * 32, "zz"]),
    "X-B3-SpanId": st.sampled_from([FORGED_SPAN_ID, "0" * 16]),
    "X-B3-ParentSpanId": st.just(FORGED_SPAN_ID),
    "X-B3-Sampled": st.sampled_from(["1", "true", "d"]),
    "X-B3-Flags": st.just("1"),
    "b3": st.sampled_from([f"{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-1", f"{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-d", "1", "d"]),
    "traceparent": st.sampled_from(
        [f"00-{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-01", f"01-{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-03"]
    ),
    "tracestate": st.just("forged=1"),
    # A client claiming to come from a trusted network through a proxy is still the peer it is.
    "X-Forwarded-For": st.just("10.1.2.3"),
    "Forwarded": st.just("for=10.1.2.3"),
    "X-Real-IP": st.just("10.1.2.3"),
    "l5d-dst-override": st.just("admin.internal.svc.cluster.local:80"),
}
FORGERIES = st.dictionaries(st.sampled_from(sorted(TRACE_HEADER_VALUES)), st.none(), min_size=1).flatmap(
    lambda names: st.fixed_dictionaries({name: TRACE_HEADER_VALUES[name] for name in names})
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forged=FORGERIES)
def test_forged_trace_context_from_an_untrusted_client_is_never_honoured(
    gateway: Gateway, faulty_upstream: FaultyUpstream, forged: dict[str, str]
) -> None:
    token = uuid.uuid4().hex
    lines = "".join(f"{name}: {value}\r\n" for name, value in forged.items())
    answer = exchange(gateway, f"GET /t?token={token} HTTP/1.1\r\nHost: a\r\n{lines}Connection: close\r\n\r\n".encode())

    assert status_of(answer) == 200
    headers = upstream_headers(upstream_call(faulty_upstream, token))
    sent = dict(headers)
    # Sampled at rate 0.0 whatever the client claims, with a context of the gateway's own.
    assert sent["x-b3-sampled"] == "0" and "x-b3-flags" not in sent
    # 02: not sampled, and the Random flag, as the id is the gateway's own (W3C Trace Context Level 2).
    assert sent["traceparent"].endswith("-02") and sent["b3"].split("-")[2] == "0"
    assert FORGED_TRACE_ID[16:] not in str(headers) and FORGED_SPAN_ID not in str(headers)
    assert "tracestate" not in sent and "l5d-dst-override" not in sent
    assert b"traceresponse: 00-" in answer and b"-00\r\n" in answer.split(b"traceresponse: ", 1)[1][:60]
