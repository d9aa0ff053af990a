"""The C span encoder against build_spans + encode_batch, the Python writer it must match value for value, and its
fallback."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import span_json
from gateway.context import MAX_64BIT, MAX_128BIT
from gateway.routes import RESERVED_TAGS, parse_upstream
from gateway.span_json import MAX_CACHED_HOSTS, NATIVE, SliceEncoder
from gateway.spans import Exchange, build_spans, encode_batch
from tests.unit.test_spans import LOCAL, make_exchange

UPSTREAMS = [
    parse_upstream("http://web-svc.emojivoto:80"),  # make_exchange's
    parse_upstream("http://127.0.0.1:8081"),
    parse_upstream("https://[2001:db8::1]:8443/base"),
]
CLIENT_HOSTS = ["203.0.113.7", "2001:db8::7", "::ffff:192.0.2.1", "0.0.0.0", "testclient", "", None]


def exchange(**overrides: Any) -> Exchange:
    """make_exchange's, with one upstream object throughout: the encoder caches an upstream by identity."""
    return make_exchange(**{"upstream": UPSTREAMS[0], **overrides})


native_only = pytest.mark.skipif(not NATIVE, reason="gateway._spanjson is not built")


def python_json(exchanges: list[Exchange]) -> list[Any]:
    return [span for item in exchanges for span in json.loads(encode_batch(build_spans(item, LOCAL)))]


def encoded(encoder: SliceEncoder, exchanges: list[Exchange]) -> list[Any]:
    return json.loads(b"[" + encoder.items(exchanges) + b"]")  # type: ignore[no-any-return]


class CountingEncoder(SliceEncoder):
    """Counts the exchanges left to the Python encoder."""

    __slots__ = ("fallbacks",)

    def __init__(self) -> None:
        super().__init__(LOCAL)
        self.fallbacks = 0

    def _fallback(self, exchange: Exchange) -> bytes:
        self.fallbacks += 1
        return super()._fallback(exchange)


def test_the_c_encoder_is_built():
    # `make test` installs with a C compiler: a missing extension there means the build broke, not an odd platform.
    assert NATIVE, "gateway._spanjson did not build: see the pip install output (a C compiler and Python.h)"


_TEXT = st.text(max_size=12) | st.sampled_from(['a"b', "a\\b", "\x00\x1f\x7f", "\u2028", "caf\u00e9 \U0001f600"])
_STATUS = st.none() | st.integers(min_value=0, max_value=999) | st.sampled_from([-1, 10**7, 2**70])
_SECONDS = st.floats(min_value=-5.0, max_value=2e9, allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-7, 0.9999999])
_TAG_NAMES = st.sampled_from(["team", "tier", 'a"q', *sorted(RESERVED_TAGS)])

exchanges = st.builds(
    exchange,
    trace_id=st.integers(min_value=0, max_value=MAX_128BIT) | st.sampled_from([MAX_64BIT, MAX_64BIT + 1, -1, 2**130]),
    server_span_id=st.integers(min_value=0, max_value=MAX_64BIT),
    client_span_id=st.integers(min_value=0, max_value=MAX_64BIT) | st.just(2**64),
    parent_id=st.none() | st.integers(min_value=0, max_value=MAX_64BIT),
    debug=st.booleans(),
    name=_TEXT,
    method=st.sampled_from(["GET", "POST", "M\u00e9"]),
    path=_TEXT,
    host=_TEXT,
    status_code=_STATUS,
    upstream_status_code=_STATUS,
    error=st.none() | _TEXT,
    client_host=st.sampled_from(CLIENT_HOSTS),
    client_port=st.none() | st.integers(min_value=0, max_value=65535),
    upstream=st.sampled_from(UPSTREAMS),
    server_start=_SECONDS,
    server_duration=_SECONDS,
    client_start=_SECONDS,
    client_duration=_SECONDS,
    tags=st.lists(st.tuples(_TAG_NAMES, _TEXT), max_size=3).map(tuple),
)


@given(st.lists(exchanges, min_size=1, max_size=4))
@example([exchange()])
@example([exchange(trace_id=MAX_64BIT + 1, parent_id=0, client_host=None, client_port=None, host="", name="")])
def test_the_c_encoder_writes_what_the_python_writer_does(batch):
    expected = python_json(batch)
    encoder = SliceEncoder(LOCAL)
    assert encoded(encoder, batch) == expected  # first with empty caches: the fallback fills them
    assert encoded(encoder, batch) == expected  # then from the caches, in C where it can


@native_only
def test_a_usual_exchange_is_encoded_in_c_once_its_endpoints_are_cached():
    encoder = CountingEncoder()
    first = [exchange(client_port=port) for port in range(4000, 4010)]
    assert encoded(encoder, first) == python_json(first)
    assert encoder.fallbacks == 1  # the client's address and the upstream, cached by the first exchange
    more = [exchange(client_port=5000, trace_id=n, tags=(("team", "web"),)) for n in range(1, 1 + 10)]
    assert encoded(encoder, more) == python_json(more)
    assert encoder.fallbacks == 2  # the route's tags, once


@native_only
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"trace_id": 2**128}, id="trace-id-over-128-bits"),
        pytest.param({"trace_id": -1}, id="negative-trace-id"),
        pytest.param({"client_span_id": 2**64}, id="span-id-over-64-bits"),
        pytest.param({"status_code": True}, id="bool-status"),
        pytest.param({"status_code": 2**70}, id="huge-status"),
        pytest.param({"server_start": 0}, id="int-timestamp"),
        pytest.param({"client_duration": float("inf")}, id="infinite-duration"),
        pytest.param({"tags": (("error", "route's"),)}, id="reserved-tag"),
        pytest.param({"client_port": 2**70}, id="huge-port"),
        pytest.param({"name": 7}, id="name-not-str"),
    ],
)
def test_what_the_c_encoder_does_not_handle_goes_to_python(overrides):
    encoder = CountingEncoder()
    encoder.items([exchange()])  # the caches, filled
    encoder.fallbacks = 0
    odd = dataclasses.replace(exchange(), **overrides)
    try:
        expected: Any = python_json([odd])
    except (TypeError, ValueError, OverflowError) as exc:
        expected = type(exc)
    try:
        got: Any = encoded(encoder, [odd])
    except (TypeError, ValueError, OverflowError) as exc:
        got = type(exc)
    assert got == expected
    assert encoder.fallbacks == 1


def test_a_lone_surrogate_fails_the_slice_as_orjson_does():
    encoder = SliceEncoder(LOCAL)
    encoder.items([exchange()])
    with pytest.raises(UnicodeEncodeError if NATIVE else orjson.JSONEncodeError):
        encoder.items([exchange(path="/\ud800")])


@native_only
def test_an_upstream_cached_under_a_reused_id_is_not_taken_for_another():
    encoder = SliceEncoder(LOCAL)
    stale, fresh = UPSTREAMS[0], UPSTREAMS[1]
    encoder.items([exchange(upstream=stale)])
    # As if `stale` had been freed and `fresh` allocated where it was: its id, another object.
    encoder._upstreams[id(fresh)] = encoder._upstreams[id(stale)]
    assert encoded(encoder, [exchange(upstream=fresh)]) == python_json([exchange(upstream=fresh)])


def test_the_client_address_cache_stays_bounded():
    encoder = SliceEncoder(LOCAL)
    for start in range(0, MAX_CACHED_HOSTS + 100, 50):
        encoder.items([exchange(client_host=f"198.51.{n // 256 % 256}.{n % 256}") for n in range(start, start + 50)])
    assert len(encoder._hosts) <= MAX_CACHED_HOSTS


def test_without_the_extension_every_exchange_is_encoded_in_python(monkeypatch):
    monkeypatch.setattr(span_json, "_spanjson", None)
    batch = [exchange(), exchange(trace_id=5, client_host="2001:db8::7", status_code=503)]
    assert encoded(SliceEncoder(LOCAL), batch) == python_json(batch)


def test_an_empty_slice_is_no_items():
    assert SliceEncoder(LOCAL).items([]) == b""


@native_only
def test_the_encoder_must_be_bound_to_a_slots_class():
    from gateway import _spanjson

    @dataclasses.dataclass
    class NoSlots:
        trace_id: int

    with pytest.raises((TypeError, AttributeError)):
        _spanjson.bind(NoSlots)
    _spanjson.bind(Exchange)  # as span_json left it
