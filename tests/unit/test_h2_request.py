"""gateway/h2_request.py: an HTTP/2 header block as an ASGI request, the gateway's refusals, and the budgets."""

from __future__ import annotations

import http

from hypothesis import given
from hypothesis import strategies as st

from gateway.h2_request import (
    FIELD_OVERHEAD,
    Budget,
    Refusal,
    Request,
    http_scope,
    parse_request,
    response_headers,
    trailer_fields,
)

LIMIT = 4096


def block(path: bytes = b"/", method: bytes = b"GET", *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"shop.test"), (b":path", path), *extra]


def test_a_request_gets_host_from_authority_when_it_has_none() -> None:
    request = parse_request(block(b"/a?b=1", b"GET", (b"accept", b"*/*")), LIMIT)
    assert request == Request("GET", "https", b"shop.test", b"/a?b=1", [(b"host", b"shop.test"), (b"accept", b"*/*")])


def test_a_host_field_sent_by_the_client_is_kept() -> None:
    request = parse_request(block(b"/", b"GET", (b"host", b"other.test")), LIMIT)
    assert isinstance(request, Request)
    assert request.headers == [(b"host", b"other.test")]


def test_connect_is_refused() -> None:
    refusal = parse_request([(b":method", b"CONNECT"), (b":authority", b"x.test:443")], LIMIT)
    assert refusal == Refusal(http.HTTPStatus.METHOD_NOT_ALLOWED, "bad_target", "CONNECT is not proxied")


def test_dot_segments_and_asterisk_are_bad_targets() -> None:
    for target in (b"/a/../b", b"/%2e%2e/b", b"*", b"/a/./b"):
        refusal = parse_request(block(target, b"OPTIONS"), LIMIT)
        assert isinstance(refusal, Refusal) and refusal.kind == "bad_target", target


def test_the_header_list_is_measured_as_hpack_does() -> None:
    base = block()
    size = sum(len(name) + len(value) + FIELD_OVERHEAD for name, value in base)
    filler_overhead = len(b"x-fill") + FIELD_OVERHEAD
    at_limit = [*base, (b"x-fill", b"v" * (LIMIT - size - filler_overhead))]
    assert isinstance(parse_request(at_limit, LIMIT), Request)
    over = [*base, (b"x-fill", b"v" * (LIMIT - size - filler_overhead + 1))]
    refusal = parse_request(over, LIMIT)
    assert isinstance(refusal, Refusal) and refusal.status == http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_the_scope_has_a_decoded_path_the_raw_path_and_the_trailers_extension() -> None:
    request = parse_request(block(b"/a%20b?q=%20"), LIMIT)
    assert isinstance(request, Request)
    scope = http_scope(
        request, scheme="http", server=("127.0.0.1", 80), client=("10.0.0.1", 5), root_path="/gw", state={}
    )
    assert scope["http_version"] == "2"
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/gw/a b", b"/gw/a%20b", b"q=%20")
    assert scope["scheme"] == "http"  # the connection's, whatever :scheme claimed
    assert scope["extensions"] == {"http.response.trailers": {}}
    assert (scope["server"], scope["client"]) == (("127.0.0.1", 80), ("10.0.0.1", 5))


def test_a_response_head_loses_connection_specific_fields() -> None:
    fields = response_headers(
        200, [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive"), (b"Transfer-Encoding", b"chunked")]
    )
    assert fields == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert trailer_fields([(b"Grpc-Status", b"0"), (b"te", b"trailers")]) == [(b"grpc-status", b"0")]


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=20), st.integers(64, 8192))
def test_parse_request_never_raises(fields: list[tuple[bytes, bytes]], limit: int) -> None:
    result = parse_request(fields, limit)
    assert isinstance(result, Request | Refusal)


def test_a_budget_allows_its_capacity_at_once_then_its_rate() -> None:
    budget = Budget(3, 2.0, now=100.0)
    assert [budget.spend(100.0) for _ in range(4)] == [True, True, True, False]
    assert budget.spend(100.5)  # half a second refills one
    assert not budget.spend(100.5)
    assert [budget.spend(110.0) for _ in range(4)] == [True, True, True, False]  # never beyond its capacity
