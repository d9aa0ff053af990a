from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.forwarding import (
    HOP_BY_HOP,
    ForwardedHeaders,
    downstream_response_headers,
    upstream_request_headers,
)

UPSTREAM = b"web-svc.emojivoto"
GATEWAY_SET = {b"host", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"}


def forward(
    headers: list[tuple[bytes, bytes]],
    *,
    client_host: str | None = "203.0.113.7",
    scheme: str = "http",
    preserve_host: bool = False,
) -> ForwardedHeaders:
    return upstream_request_headers(
        headers, client_host=client_host, scheme=scheme, upstream_authority=UPSTREAM, preserve_host=preserve_host
    )


def values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for header, value in headers if header == name]


def passed_through(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers that are neither Host nor X-Forwarded-*, i.e. the ones the client's request carried over."""
    return [(name, value) for name, value in headers if name not in GATEWAY_SET]


def test_hop_by_hop_names_rfc_9110_and_proxy_headers():
    assert HOP_BY_HOP == {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }


def test_a_typical_browser_request_becomes_the_upstream_request():
    request = [
        (b"host", b"Emojivoto.Example.com:8080"),
        (b"user-agent", b"curl/8.5"),
        (b"accept", b"*/*"),
        (b"connection", b"keep-alive"),
        (b"cookie", b"a=1"),
        (b"content-length", b"12"),
        (b"cookie", b"b=2"),
    ]
    forwarded = forward(request, client_host="203.0.113.7", scheme="https")
    assert forwarded == ForwardedHeaders(
        headers=[
            (b"host", UPSTREAM),
            (b"user-agent", b"curl/8.5"),
            (b"accept", b"*/*"),
            (b"cookie", b"a=1"),
            (b"content-length", b"12"),
            (b"cookie", b"b=2"),
            (b"x-forwarded-host", b"Emojivoto.Example.com:8080"),
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-forwarded-proto", b"https"),
        ],
        host="emojivoto.example.com:8080",
        had_trace_headers=False,
    )


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_each_hop_by_hop_header_is_dropped_from_the_request(name):
    forwarded = forward([(b"host", b"a.com"), (name, b"x"), (b"accept", b"*/*")])
    assert passed_through(forwarded.headers) == [(b"accept", b"*/*")]


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_each_hop_by_hop_header_is_dropped_from_the_response(name):
    assert downstream_response_headers([(name, b"x"), (b"content-type", b"text/plain")]) == [
        (b"content-type", b"text/plain")
    ]


@pytest.mark.parametrize(
    ("connection", "dropped"),
    [
        pytest.param([b"x-foo"], {b"x-foo"}, id="one-option"),
        pytest.param([b"keep-alive, X-Foo"], {b"x-foo"}, id="case-insensitive"),
        pytest.param([b"x-foo,x-bar"], {b"x-foo", b"x-bar"}, id="no-spaces"),
        pytest.param([b" x-foo ,\tX-BAR\t, "], {b"x-foo", b"x-bar"}, id="whitespace-and-empty-options"),
        pytest.param([b"x-foo", b"x-bar"], {b"x-foo", b"x-bar"}, id="several-connection-lines"),
        pytest.param([b"close"], set(), id="close-names-no-header"),
        pytest.param([b""], set(), id="empty-value"),
        pytest.param([b"x-unsent"], set(), id="option-without-header"),
    ],
)
def test_connection_nominated_headers_are_dropped_both_ways(connection, dropped):
    end_to_end = [(b"x-foo", b"1"), (b"accept", b"*/*"), (b"x-bar", b"2"), (b"x-foo", b"3")]
    expected = [(name, value) for name, value in end_to_end if name not in dropped]
    headers = [(b"connection", value) for value in connection]

    request = forward([(b"host", b"a.com"), *headers, *end_to_end])
    response = downstream_response_headers([*headers, *end_to_end])

    assert passed_through(request.headers) == expected
    assert response == expected


def test_a_connection_header_nominates_headers_that_came_before_it():
    request = [(b"x-foo", b"1"), (b"accept", b"*/*"), (b"connection", b"x-foo")]
    assert passed_through(forward(request).headers) == [(b"accept", b"*/*")]
    assert downstream_response_headers(request) == [(b"accept", b"*/*")]


def test_connection_cannot_nominate_content_length():
    # It frames the body; RFC 9110 7.6.1 forbids nominating end-to-end fields.
    headers = [(b"connection", b"content-length"), (b"content-length", b"5")]
    assert passed_through(forward(headers).headers) == [(b"content-length", b"5")]
    assert downstream_response_headers(headers) == [(b"content-length", b"5")]


@pytest.mark.parametrize("nominated", [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"host"])
def test_connection_cannot_strip_what_the_gateway_adds(nominated):
    forwarded = forward([(b"host", b"a.com"), (b"connection", nominated)], client_host="203.0.113.7")
    assert dict(forwarded.headers) == {
        b"host": UPSTREAM,
        b"x-forwarded-host": b"a.com",
        b"x-forwarded-for": b"203.0.113.7",
        b"x-forwarded-proto": b"http",
    }


def test_repeated_headers_keep_their_order_and_their_interleaving():
    request = [
        (b"host", b"a.com"),
        (b"cookie", b"a=1"),
        (b"accept", b"text/html"),
        (b"cookie", b"b=2"),
        (b"accept", b"*/*"),
        (b"cookie", b"c=3"),
    ]
    assert passed_through(forward(request).headers) == request[1:]


def test_response_keeps_repeated_set_cookie_and_content_length_in_order():
    response = [
        (b"content-type", b"text/html"),
        (b"set-cookie", b"a=1"),
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"42"),
    ]
    assert downstream_response_headers(response) == [
        (b"content-type", b"text/html"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"42"),
    ]


def test_response_headers_come_back_as_a_new_list():
    response = [(b"connection", b"close"), (b"content-type", b"text/plain")]
    downstream_response_headers(response).append((b"x-extra", b"1"))
    assert response == [(b"connection", b"close"), (b"content-type", b"text/plain")]


@pytest.mark.parametrize(
    ("client_headers", "client_host", "expected"),
    [
        pytest.param([], "203.0.113.7", [b"203.0.113.7"], id="set"),
        pytest.param([b"198.51.100.1"], "203.0.113.7", [b"198.51.100.1, 203.0.113.7"], id="appended"),
        pytest.param([b"198.51.100.1, 10.0.0.2"], "203.0.113.7", [b"198.51.100.1, 10.0.0.2, 203.0.113.7"], id="list"),
        pytest.param(
            [b"198.51.100.1", b"10.0.0.2"], "203.0.113.7", [b"198.51.100.1, 10.0.0.2, 203.0.113.7"], id="several-lines"
        ),
        pytest.param([b"  ", b"198.51.100.1 "], "203.0.113.7", [b"198.51.100.1, 203.0.113.7"], id="blank-ignored"),
        pytest.param([], "2001:db8::7", [b"2001:db8::7"], id="ipv6-unbracketed"),
        pytest.param([b"198.51.100.1"], None, [b"198.51.100.1"], id="no-client-left-as-is"),
        pytest.param([b"198.51.100.1"], "", [b"198.51.100.1"], id="empty-client-left-as-is"),
        pytest.param([], None, [], id="no-client-none-set"),
    ],
)
def test_x_forwarded_for(client_headers, client_host, expected):
    request = [(b"host", b"a.com"), *((b"x-forwarded-for", value) for value in client_headers)]
    assert values(forward(request, client_host=client_host).headers, b"x-forwarded-for") == expected


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_x_forwarded_proto_replaces_the_clients(scheme):
    request = [(b"host", b"a.com"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-proto", b"ftp")]
    assert values(forward(request, scheme=scheme).headers, b"x-forwarded-proto") == [scheme.encode()]


def test_x_forwarded_host_replaces_the_clients_with_the_original_host():
    request = [(b"x-forwarded-host", b"evil.example"), (b"host", b"A.com:8443")]
    assert values(forward(request).headers, b"x-forwarded-host") == [b"A.com:8443"]


@pytest.mark.parametrize(
    ("preserve_host", "request_host", "sent_host"),
    [
        pytest.param(False, b"A.com:8443", UPSTREAM, id="upstream-authority"),
        pytest.param(True, b"A.com:8443", b"A.com:8443", id="preserved-as-sent"),
        pytest.param(False, None, UPSTREAM, id="absent-upstream-authority"),
        pytest.param(True, None, UPSTREAM, id="absent-nothing-to-preserve"),
    ],
)
def test_host_sent_upstream(preserve_host, request_host, sent_host):
    request = [(b"accept", b"*/*")] + ([(b"host", request_host)] if request_host else [])
    headers = forward(request, preserve_host=preserve_host).headers
    assert headers[0] == (b"host", sent_host)
    assert values(headers, b"host") == [sent_host]


@pytest.mark.parametrize(
    ("request_host", "host"),
    [
        (b"example.com", "example.com"),
        (b"EXAMPLE.com:8080", "example.com:8080"),
        (b"[2001:DB8::1]:8080", "[2001:db8::1]:8080"),
        (b"10.0.0.1", "10.0.0.1"),
    ],
)
def test_host_is_the_clients_lowercased_with_its_port(request_host, host):
    assert forward([(b"host", request_host)]).host == host


def test_http_1_0_request_without_host():
    forwarded = forward([(b"accept", b"*/*"), (b"x-forwarded-host", b"spoofed.example")])
    assert forwarded.host == ""
    assert forwarded.headers[0] == (b"host", UPSTREAM)
    assert values(forwarded.headers, b"x-forwarded-host") == []


@pytest.mark.parametrize("preserve_host", [False, True])
def test_the_first_of_several_host_headers_wins_and_only_one_is_sent(preserve_host):
    forwarded = forward([(b"host", b"a.com"), (b"host", b"evil.example")], preserve_host=preserve_host)
    assert forwarded.host == "a.com"
    assert values(forwarded.headers, b"host") == [b"a.com" if preserve_host else UPSTREAM]
    assert values(forwarded.headers, b"x-forwarded-host") == [b"a.com"]


@pytest.mark.parametrize(
    "name",
    [
        b"b3",
        b"traceparent",
        b"tracestate",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
        b"x-b3-unknown",
    ],
)
def test_client_trace_headers_are_dropped_and_reported(name):
    forwarded = forward([(b"host", b"a.com"), (name, b"1"), (b"accept", b"*/*")])
    assert passed_through(forwarded.headers) == [(b"accept", b"*/*")]
    assert forwarded.had_trace_headers is True


@pytest.mark.parametrize("name", [b"b3x", b"x-b3", b"traceparent-x", b"x-trace-id", b"baggage"])
def test_headers_that_only_look_like_trace_headers_pass(name):
    forwarded = forward([(b"host", b"a.com"), (name, b"1")])
    assert passed_through(forwarded.headers) == [(name, b"1")]
    assert forwarded.had_trace_headers is False


@pytest.mark.parametrize("name", [b"l5d-dst-override", b"l5d-require-id", b"l5d-sample", b"l5d-anything"])
def test_linkerd_control_headers_from_the_client_never_reach_the_mesh(name):
    forwarded = forward([(b"host", b"a.com"), (name, b"admin-svc.kube-system.svc.cluster.local:80"), (b"x", b"1")])
    assert passed_through(forwarded.headers) == [(b"x", b"1")]
    assert forwarded.had_trace_headers is False


@pytest.mark.parametrize("name", [b"l5d", b"x-l5d-dst-override", b"l5dx-header"])
def test_headers_that_only_look_like_linkerd_ones_pass(name):
    forwarded = forward([(b"host", b"a.com"), (name, b"1")])
    assert passed_through(forwarded.headers) == [(name, b"1")]


def test_end_to_end_headers_pass_untouched_including_authorization_and_forwarded():
    request = [
        (b"authorization", b"Bearer t"),
        (b"forwarded", b"for=198.51.100.1"),
        (b"expect", b"100-continue"),
        (b"content-type", b"application/json"),
        (b"content-length", b"0"),
    ]
    assert passed_through(forward(request).headers) == request


# Untrusted input: header lists of any shape, with names drawn to hit every rule.
_NAMES = st.sampled_from(
    sorted(
        HOP_BY_HOP
        | GATEWAY_SET
        | {b"b3", b"traceparent", b"x-b3-spanid", b"l5d-dst-override", b"content-length", b"cookie", b"x-foo"}
    )
)
_TOKENS = st.binary(min_size=1, max_size=12).map(lambda raw: raw.lower())
_VALUES = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(_NAMES, _TOKENS, st.just(b" ")), max_size=5).map(b",".join),
)
_HEADERS = st.lists(st.tuples(st.one_of(_NAMES, _TOKENS), _VALUES), max_size=25)


def _nominated(headers: list[tuple[bytes, bytes]], *, response: bool = False) -> set[bytes]:
    options = {
        option.strip(b" \t").lower() for name, value in headers if name == b"connection" for option in value.split(b",")
    }
    # Host and Content-Length cannot be nominated. In a request the X-Forwarded-* the gateway writes itself are its
    # own; a response's are the upstream's, and go when its Connection header names them.
    own = {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"} if not response else set()
    return options - {b"host", b"content-length"} - own


@given(headers=_HEADERS, client_host=st.one_of(st.none(), st.just("203.0.113.7")), preserve_host=st.booleans())
def test_no_hop_by_hop_or_nominated_header_ever_reaches_the_upstream(headers, client_host, preserve_host):
    forwarded = forward(headers, client_host=client_host, preserve_host=preserve_host)
    names = [name for name, _ in forwarded.headers]
    assert not (set(names) & (HOP_BY_HOP | _nominated(headers)))
    assert names.count(b"host") == 1
    assert names.count(b"x-forwarded-proto") == 1
    assert not any(name in {b"b3", b"traceparent"} or name.startswith((b"x-b3-", b"l5d-")) for name in names)
    kept = [
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP | GATEWAY_SET | _nominated(headers)
        and name not in {b"b3", b"traceparent", b"tracestate"}
        and not name.startswith((b"x-b3-", b"l5d-"))
    ]
    assert passed_through(forwarded.headers) == kept


@given(headers=_HEADERS)
@example(headers=[(b"connection", b"x-forwarded-for"), (b"x-forwarded-for", b"")])
def test_no_hop_by_hop_or_nominated_header_ever_reaches_the_client(headers):
    excluded = HOP_BY_HOP | _nominated(headers, response=True)
    assert downstream_response_headers(headers) == [(name, value) for name, value in headers if name not in excluded]
