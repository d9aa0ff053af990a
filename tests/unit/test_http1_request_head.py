"""The request head gateway/http1_upstream.py writes, and how it splits an upstream URL: pure logic, no sockets.

Heads are parsed back with httptools' request parser (llhttp), an independent reader of what goes on the wire.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator

import httptools
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.http1_upstream import _request_head, _split_url
from gateway.proxy import UpstreamError, UpstreamRequest

AUTHORITY = b"web-svc.emojivoto:8080"
BODILESS_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
# The methods llhttp parses (it refuses any other token); CONNECT would switch it to a tunnel.
LLHTTP_METHODS = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY",
    "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "QUERY",
]  # fmt: skip
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# Header names llhttp gives a meaning to (framing, upgrades): the rules below add or test those explicitly.
_INTERPRETED = {b"host", b"content-length", b"transfer-encoding", b"connection", b"proxy-connection", b"upgrade"}


async def _body() -> AsyncIterator[bytes]:
    yield b"payload"


def head_of(
    method: str,
    headers: list[tuple[bytes, bytes]],
    has_body: bool = False,
    target: bytes = b"/",
) -> tuple[bytes, bool]:
    body = _body() if has_body else None
    return _request_head(UpstreamRequest(method, "http://unused/", headers, body), AUTHORITY, target)


class Parsed:
    """What llhttp reads from a request head."""

    def __init__(self, head: bytes) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete_head = False
        parser = httptools.HttpRequestParser(self)
        parser.feed_data(head)
        assert self.complete_head, "the head did not end where the gateway's ends"
        self.method = parser.get_method()

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete_head = True


def added_headers(method: str, headers: list[tuple[bytes, bytes]], has_body: bool) -> list[tuple[bytes, bytes]]:
    """The rules: Host from the URL unless the request has one; a body of no declared length goes chunked; a bodiless
    request whose method may carry a body says Content-Length: 0."""
    names = {name for name, _ in headers}
    added = [] if b"host" in names else [(b"host", AUTHORITY)]
    if has_body and b"content-length" not in names:
        added.append((b"transfer-encoding", b"chunked"))
    elif not has_body and b"content-length" not in names and method not in BODILESS_METHODS:
        added.append((b"content-length", b"0"))
    return added


# Examples.


def test_a_get_without_host_gets_the_urls_authority():
    head, chunked = head_of("GET", [(b"accept", b"*/*")])
    assert head == b"GET / HTTP/1.1\r\naccept: */*\r\nhost: " + AUTHORITY + b"\r\n\r\n"
    assert not chunked


def test_the_requests_own_host_is_kept_in_place_and_not_repeated():
    head, _ = head_of("GET", [(b"x-a", b"1"), (b"host", b"emojivoto.example"), (b"x-b", b"2")])
    assert head == b"GET / HTTP/1.1\r\nx-a: 1\r\nhost: emojivoto.example\r\nx-b: 2\r\n\r\n"


@pytest.mark.parametrize("method", sorted(BODILESS_METHODS))
def test_a_bodiless_get_head_options_or_trace_says_nothing_of_length(method):
    head, chunked = head_of(method, [])
    assert (head, chunked) == (method.encode() + b" / HTTP/1.1\r\nhost: " + AUTHORITY + b"\r\n\r\n", False)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"])
def test_a_bodiless_request_of_another_method_says_content_length_0(method):
    head, chunked = head_of(method, [])
    assert head.endswith(b"\r\nhost: " + AUTHORITY + b"\r\ncontent-length: 0\r\n\r\n")
    assert not chunked


def test_a_bodiless_request_with_its_own_content_length_gets_no_second_one():
    head, chunked = head_of("POST", [(b"content-length", b"0")])
    assert head == b"POST / HTTP/1.1\r\ncontent-length: 0\r\nhost: " + AUTHORITY + b"\r\n\r\n"
    assert not chunked


def test_a_body_of_no_declared_length_goes_chunked():
    head, chunked = head_of("POST", [(b"content-type", b"text/plain")], has_body=True)
    assert head == (
        b"POST / HTTP/1.1\r\ncontent-type: text/plain\r\nhost: " + AUTHORITY + b"\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert chunked


def test_a_body_of_declared_length_goes_as_it_is():
    head, chunked = head_of("PUT", [(b"content-length", b"7")], has_body=True)
    assert head == b"PUT / HTTP/1.1\r\ncontent-length: 7\r\nhost: " + AUTHORITY + b"\r\n\r\n"
    assert not chunked


def test_names_and_values_are_written_byte_for_byte():
    headers = [(b"X-MiXeD", b"\xff\xfe obs-text \xe9"), (b"x-tab", b"a\tb"), (b"x-empty", b""), (b"X-MiXeD", b"2")]
    head, _ = head_of("GET", headers, target=b"/caf%C3%A9?q=a%20b&r=/x#frag")
    assert head == (
        b"GET /caf%C3%A9?q=a%20b&r=/x#frag HTTP/1.1\r\n"
        b"X-MiXeD: \xff\xfe obs-text \xe9\r\nx-tab: a\tb\r\nx-empty: \r\nX-MiXeD: 2\r\nhost: " + AUTHORITY + b"\r\n\r\n"
    )


def test_host_and_content_length_count_in_any_case():
    head, chunked = head_of("POST", [(b"Host", b"emojivoto.example"), (b"Content-Length", b"7")], has_body=True)
    assert head == b"POST / HTTP/1.1\r\nHost: emojivoto.example\r\nContent-Length: 7\r\n\r\n"
    assert not chunked


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nx-injected: 1")],
        [(b"x-evil", b"a\nb")],
        [(b"x-evil", b"a\rb")],
        [(b"x-evil", b"a\x00b")],
        [(b"x-evil\r\nx-injected", b"1")],
        [(b"x-evil\x00", b"1")],
        [(b"host", b"a\r\n\r\nGET /smuggled HTTP/1.1")],
        [(b"x-trailing", b"a\r\n")],
    ],
)
def test_a_line_break_or_nul_in_a_header_is_refused(headers):
    with pytest.raises(UpstreamError):
        head_of("GET", headers)


@pytest.mark.parametrize("target", [b"/a\r\nx-injected: 1", b"/a\nb", b"/a\x00"])
def test_a_line_break_or_nul_in_the_target_is_refused(target):
    with pytest.raises(UpstreamError):
        head_of("GET", [], target=target)


# Properties.

TOKENS = st.text(alphabet=TCHAR, min_size=1, max_size=20)
NAMES = TOKENS.map(str.encode).filter(lambda name: name.lower() not in _INTERPRETED)
ANY_VALUES = st.binary(max_size=40).map(lambda value: value.translate(None, b"\r\n\x00"))
# What llhttp takes in a value (it refuses other control characters) and gives back as sent, less leading blanks.
PARSEABLE_VALUES = st.lists(st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=40).map(
    lambda octets: bytes(octets).lstrip(b" \t")
)
TARGETS = st.text(alphabet=[chr(octet) for octet in range(0x21, 0x7F)], max_size=60).map(
    lambda text: b"/" + text.encode()
)
LENGTHS = st.integers(min_value=0, max_value=10**12).map(lambda length: str(length).encode())


@st.composite
def header_lists(draw: st.DrawFn, values: st.SearchStrategy[bytes]) -> list[tuple[bytes, bytes]]:
    """Any token names and values, with a Host and a Content-Length (once each, anywhere) or not."""
    headers = draw(st.lists(st.tuples(NAMES, values), max_size=8))
    for name, value in ((b"host", st.just(b"emojivoto.example:80")), (b"content-length", LENGTHS)):
        if draw(st.booleans()):
            headers.insert(draw(st.integers(0, len(headers))), (name, draw(value)))
    return headers


@given(
    method=st.sampled_from(LLHTTP_METHODS),
    target=TARGETS,
    headers=header_lists(PARSEABLE_VALUES),
    has_body=st.booleans(),
)
@example(method="POST", target=b"/", headers=[(b"x", b"\xff")], has_body=False)
def test_the_head_parses_back_to_the_same_request_plus_the_headers_the_rules_add(method, target, headers, has_body):
    head, chunked = head_of(method, headers, has_body, target)
    parsed = Parsed(head)
    assert (parsed.method, parsed.target) == (method.encode(), target)
    assert parsed.headers == headers + added_headers(method, headers, has_body)
    assert chunked == (has_body and all(name != b"content-length" for name, _ in headers))


@given(method=TOKENS, target=TARGETS, headers=header_lists(ANY_VALUES), has_body=st.booleans())
def test_the_head_is_exactly_the_request_line_and_the_header_lines(method, target, headers, has_body):
    # Any token as the method (llhttp knows only its list), any value without CR, LF or NUL (llhttp refuses others).
    head, _ = head_of(method, headers, has_body, target)
    lines = [b"%s: %s" % header for header in headers + added_headers(method, headers, has_body)]
    assert head == b"\r\n".join([method.encode() + b" " + target + b" HTTP/1.1", *lines, b"", b""])


@given(
    headers=st.lists(st.tuples(NAMES, ANY_VALUES), min_size=1, max_size=5),
    data=st.data(),
    forbidden=st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n", b"\n\r"]),
)
def test_any_cr_lf_or_nul_in_a_name_or_value_is_refused(headers, data, forbidden):
    index = data.draw(st.integers(0, len(headers) - 1), label="header")
    part = data.draw(st.sampled_from([0, 1]), label="name or value")
    field = headers[index][part]
    at = data.draw(st.integers(0, len(field)), label="at")
    spoiled = field[:at] + forbidden + field[at:]
    headers[index] = (spoiled, headers[index][1]) if part == 0 else (headers[index][0], spoiled)
    with pytest.raises(UpstreamError):
        head_of("POST", headers, has_body=data.draw(st.booleans(), label="has body"))


# Splitting the URL.


@pytest.mark.parametrize(
    ("url", "key", "host", "target"),
    [
        ("http://example.test/", ("http", "example.test", 80), b"example.test", b"/"),
        ("http://example.test", ("http", "example.test", 80), b"example.test", b"/"),
        ("https://example.test", ("https", "example.test", 443), b"example.test", b"/"),
        ("http://example.test:8080/a", ("http", "example.test", 8080), b"example.test:8080", b"/a"),
        ("https://example.test:8443/a", ("https", "example.test", 8443), b"example.test:8443", b"/a"),
        ("http://example.test:80/a", ("http", "example.test", 80), b"example.test:80", b"/a"),
        ("https://10.0.0.7/x?y", ("https", "10.0.0.7", 443), b"10.0.0.7", b"/x?y"),
        ("http://[::1]:8080/p", ("http", "::1", 8080), b"[::1]:8080", b"/p"),
        ("http://[::1]/p", ("http", "::1", 80), b"[::1]", b"/p"),
        ("https://[::1]/p", ("https", "::1", 443), b"[::1]", b"/p"),
        ("https://[2001:db8::7]:9443", ("https", "2001:db8::7", 9443), b"[2001:db8::7]:9443", b"/"),
        (
            "http://web-svc.emojivoto:8080/api/v1/%2F/list?q=a%20b&r=%E2%82%AC&s=/x#frag",
            ("http", "web-svc.emojivoto", 8080),
            b"web-svc.emojivoto:8080",
            b"/api/v1/%2F/list?q=a%20b&r=%E2%82%AC&s=/x#frag",
        ),
        ("http://h/caf\xe9?\xff", ("http", "h", 80), b"h", b"/caf\xe9?\xff"),  # raw bytes, decoded latin-1
        ("http://example.test?q=1", ("http", "example.test", 80), b"example.test", b"/?q=1"),  # no path: "/"
        ("HTTP://Example.test/a", ("http", "Example.test", 80), b"Example.test", b"/a"),  # schemes are caseless
    ],
)
def test_split_url(url, key, host, target):
    assert _split_url(url) == (key, host, target)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.test/",
        "ws://example.test/",
        "wss://example.test/",
        "unix:///run/app.sock",
        "file:///etc/passwd",
        "example.test/path",
        "//example.test/path",
        "",
    ],
)
def test_split_url_refuses_anything_but_http_and_https(url):
    with pytest.raises(UpstreamError):
        _split_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http:///path",
        "http://:8080/",
        "http://example.test:http/",
        "http://example.test:-1/",
        "http://[]:80/",
        "http://[::1]8080/",
        "http://[::1/",
        "http://example.test:0/",
        "http://example.test:99999/",
    ],
)
def test_split_url_refuses_an_authority_without_a_host_or_with_a_bad_port(url):
    with pytest.raises(UpstreamError):
        _split_url(url)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(["example.test", "10.1.2.3", "[::1]", "[fd00::a:1]"]),
    port=st.none() | st.integers(1, 65535),
    target=st.binary(max_size=80).map(lambda raw: b"/" + raw),
)
def test_split_url_keeps_the_target_byte_for_byte(scheme, host, port, target):
    # The gateway builds the URL from the request's raw bytes decoded as latin-1 (gateway/http_flow.py).
    authority = host if port is None else f"{host}:{port}"
    key, host_header, split_target = _split_url(f"{scheme}://{authority}" + target.decode("latin-1"))
    default = 443 if scheme == "https" else 80
    assert key == (scheme, host.strip("[]"), default if port is None else port)
    assert host_header == authority.encode()
    assert split_target == target
