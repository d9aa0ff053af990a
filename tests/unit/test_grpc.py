"""gateway/grpc.py: the pure gRPC rules, with property tests where the input comes from clients."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.grpc import (
    MessageCounter,
    MethodName,
    Status,
    encode_message,
    error_headers,
    format_timeout,
    is_call,
    parse_method,
    parse_status,
    parse_timeout,
    rpc_tags,
    status_for_http,
    status_for_reset,
)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"application/grpc+json", True),
        (b"Application/GRPC+Proto", True),
        (b"application/grpc; charset=utf-8", True),
        (b"application/grpc-web", False),
        (b"application/grpc-web+proto", False),
        (b"application/json", False),
        (b"application/grpcx", False),
        (b"", False),
        (None, False),
    ],
)
def test_is_call(content_type, expected):
    assert is_call(content_type) is expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"1500u", 0.0015),
        (b"99999999n", 0.099999999),
        (b"0S", 0.0),
    ],
)
def test_parse_timeout(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", [b"", b"S", b"1", b"123456789S", b"1s", b"1 S", b" 1S", b"1.5S", b"-1S", b"1SS", b"\xff1S", b"\xd9\xa1S"]
)
def test_parse_timeout_refuses_what_the_spec_does_not_allow(value):
    assert parse_timeout(value) is None


@given(st.binary(max_size=20))
def test_parse_timeout_never_raises(value):
    seconds = parse_timeout(value)
    assert seconds is None or 0 <= seconds <= 99999999 * 3600


@given(st.integers(min_value=0, max_value=99999999), st.sampled_from("HMSmun"))
def test_every_valid_timeout_parses(amount, unit):
    assert parse_timeout(f"{amount}{unit}".encode()) is not None


@given(st.floats(min_value=1e-9, max_value=10**9, allow_nan=False))
def test_format_timeout_never_gives_less_time_and_parses_back(seconds):
    encoded = format_timeout(seconds)
    parsed = parse_timeout(encoded)
    assert parsed is not None
    assert parsed >= seconds * (1 - 1e-12)


def test_format_timeout_picks_the_finest_unit():
    assert format_timeout(0.025) == b"25000000n"
    assert format_timeout(0.25) == b"250000u"  # 250000000n would be 9 digits
    assert format_timeout(30.0) == b"30000000u"
    assert format_timeout(3600.0) == b"3600000m"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/demo.Echo/Unary", MethodName("demo.Echo", "Unary")),
        ("/Echo/Unary", MethodName("Echo", "Unary")),
        ("/demo.Echo/", None),
        ("//Unary", None),
        ("/demo.Echo", None),
        ("demo.Echo/Unary", None),
        ("/a/b/c", None),
        ("", None),
        ("/", None),
    ],
)
def test_parse_method(path, expected):
    assert parse_method(path) == expected


def test_span_name_is_service_slash_method():
    assert MethodName("emojivoto.v1.EmojiService", "ListAll").span_name == "emojivoto.v1.EmojiService/ListAll"


@given(st.text(max_size=50))
def test_parse_method_never_raises(path):
    method = parse_method(path)
    assert method is None or path == f"/{method.service}/{method.method}"


@pytest.mark.parametrize(
    ("value", "expected"), [(b"0", 0), (b"14", 14), (b"99", 99), (None, None), (b"", None), (b"-1", None), (b"x", None)]
)
def test_parse_status(value, expected):
    assert parse_status(value) == expected


@pytest.mark.parametrize(
    ("http", "grpc"),
    [
        (400, Status.INTERNAL),
        (401, Status.UNAUTHENTICATED),
        (403, Status.PERMISSION_DENIED),
        (404, 12),
        (429, 14),
        (502, 14),
        (503, 14),
        (504, 14),
        (500, Status.UNKNOWN),
        (418, Status.UNKNOWN),
    ],
)
def test_status_for_http_follows_the_grpc_mapping(http, grpc):
    assert status_for_http(http) == grpc


@pytest.mark.parametrize(("code", "grpc"), [(0x0, 13), (0x2, 13), (0x7, 14), (0x8, 1), (0xB, 8), (0xC, 7), (0x99, 13)])
def test_status_for_reset(code, grpc):
    assert status_for_reset(code) == grpc


def test_encode_message_percent_encodes_outside_printable_ascii_and_percent():
    assert encode_message("no route") == b"no route"
    assert encode_message("50% ünicode\n") == b"50%25 %C3%BCnicode%0A"


def test_error_headers_make_a_trailers_only_response():
    assert error_headers(Status.UNAVAILABLE, "upstream unreachable") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
        (b"grpc-message", b"upstream unreachable"),
    ]


def test_rpc_tags():
    assert rpc_tags(MethodName("demo.Echo", "Unary"), 0) == (
        ("rpc.system", "grpc"),
        ("rpc.service", "demo.Echo"),
        ("rpc.method", "Unary"),
        ("rpc.grpc.status_code", "0"),
    )
    assert rpc_tags(None, None) == (("rpc.system", "grpc"),)


def _framed(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack(">BI", 0, len(message)) + message for message in messages)


@given(st.lists(st.binary(max_size=40), max_size=10), st.lists(st.integers(min_value=1, max_value=17), max_size=30))
def test_message_counter_counts_however_the_stream_is_split(messages, cuts):
    stream = _framed(messages)
    counter = MessageCounter()
    position = 0
    for cut in cuts:
        counter.feed(stream[position : position + cut])
        position += cut
    counter.feed(stream[position:])
    assert counter.messages == len(messages)
    assert counter.complete


def test_message_counter_counts_a_message_once_its_header_is_whole():
    counter = MessageCounter()
    counter.feed(b"\x00\x00\x00")
    assert counter.messages == 0 and not counter.complete
    counter.feed(b"\x00\x03ab")
    assert counter.messages == 1 and not counter.complete
    counter.feed(b"c")
    assert counter.complete
