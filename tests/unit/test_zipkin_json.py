"""The Zipkin v2 JSON writer (gateway/zipkin_json.py): its span mapping held to py_zipkin's own public encoder, its
endpoint caches, and exchanges of any shape. What an exchange's spans contain is in test_spans.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from py_zipkin import Kind
from py_zipkin.encoding import Encoding, Endpoint, Span, get_encoder

from gateway.context import MAX_64BIT, MAX_128BIT
from gateway.routes import RESERVED_TAGS, parse_upstream
from gateway.spans import client_endpoint, upstream_endpoint
from gateway.zipkin_json import (
    MAX_CACHED_CLIENTS,
    MAX_CACHED_NAMES,
    MAX_CACHED_OUTCOMES,
    MAX_CACHED_TAG_HEADS,
    MAX_CACHED_UPSTREAMS,
    ZipkinJsonEncoder,
    encode_spans,
    endpoint_value,
    span_value,
)
from tests.unit.test_spans import LOCAL, make_exchange, validator

UPSTREAMS = [
    parse_upstream("http://web-svc.emojivoto:80"),
    parse_upstream("http://127.0.0.1:8081"),
    parse_upstream("https://[2001:db8::1]:8443/base"),
]
CLIENT_HOSTS = ["203.0.113.7", "2001:db8::7", "::ffff:192.0.2.1", "0.0.0.0", "testclient", "", None]


def decoded(payload: bytes) -> list[dict[str, Any]]:
    return json.loads(payload)  # type: ignore[no-any-return]


# --- the span mapping, against py_zipkin's encoder -------------------------------------------------------------


def py_zipkin_json(span: Span) -> dict[str, Any]:
    """What py_zipkin's public V2 JSON encoder writes for a span, with the documented corrections applied."""
    expected: dict[str, Any] = json.loads(get_encoder(Encoding.V2_JSON).encode_span(span))
    for endpoint in ("localEndpoint", "remoteEndpoint"):
        if expected.get(endpoint) == {}:
            del expected[endpoint]
    if span.debug:
        expected["debug"] = True
    if span.duration is not None:
        expected["duration"] = max(1, int(span.duration * 1000000))
    return expected


_HEX16 = st.integers(min_value=1, max_value=MAX_64BIT).map(lambda n: f"{n:016x}")
_HEX_TRACE = _HEX16 | st.integers(min_value=MAX_64BIT + 1, max_value=MAX_128BIT).map(lambda n: f"{n:032x}")
_ENDPOINTS = st.none() | st.builds(
    Endpoint,
    service_name=st.none() | st.sampled_from(["web-svc", "voting"]),
    ipv4=st.none() | st.just("10.0.0.5"),
    ipv6=st.none() | st.just("2001:db8::7"),
    port=st.none() | st.integers(min_value=0, max_value=65535),
)
_SECONDS = st.floats(min_value=0.0, max_value=2e9, allow_nan=False)

spans = st.builds(
    Span,
    trace_id=_HEX_TRACE,
    name=st.none() | st.text(max_size=12),
    parent_id=st.none() | _HEX16,
    span_id=_HEX16,
    kind=st.sampled_from([Kind.SERVER, Kind.CLIENT, Kind.LOCAL]),
    timestamp=st.none() | _SECONDS,
    duration=st.none() | st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
    local_endpoint=_ENDPOINTS,
    remote_endpoint=_ENDPOINTS,
    debug=st.booleans(),
    shared=st.booleans(),
    annotations=st.none() | st.dictionaries(st.sampled_from(["ws", "wr"]), _SECONDS, max_size=2),
    tags=st.none() | st.dictionaries(st.sampled_from(["team", "http.path"]), st.text(max_size=8), max_size=2),
)


@given(st.lists(spans, max_size=4))
def test_spans_are_written_as_py_zipkins_encoder_writes_them(batch):
    assert decoded(encode_spans(batch)) == [py_zipkin_json(span) for span in batch]


def test_the_writer_uses_no_private_py_zipkin_class():
    # The guide forbids reaching into a dependency's private classes; the writer is plain dicts and orjson.
    import gateway.zipkin_json as module

    source = Path(module.__file__).read_text(encoding="utf-8")
    assert "py_zipkin.encoding._" not in source and "_V2JSONEncoder" not in source


# --- exchanges of any shape ------------------------------------------------------------------------------------


def exchange(**overrides: Any) -> Any:
    return make_exchange(**{"upstream": UPSTREAMS[0], **overrides})


_TEXT = st.text(max_size=12) | st.sampled_from(['a"b', "a\\b", "\x00\x1f\x7f", "\u2028", "caf\u00e9 \U0001f600"])
_STATUS = st.none() | st.integers(min_value=100, max_value=599)
_TIMES = st.floats(min_value=0.0, max_value=2e9, allow_nan=False) | st.sampled_from([0.0, 1e-7, 0.9999999])

exchanges = st.builds(
    exchange,
    trace_id=st.integers(min_value=1, max_value=MAX_128BIT) | st.sampled_from([MAX_64BIT, MAX_64BIT + 1]),
    server_span_id=st.integers(min_value=1, max_value=MAX_64BIT),
    client_span_id=st.integers(min_value=1, max_value=MAX_64BIT),
    parent_id=st.none() | st.integers(min_value=1, max_value=MAX_64BIT),
    debug=st.booleans(),
    name=_TEXT,
    method=st.sampled_from(["GET", "POST", "M\u00e9"]),
    path=_TEXT,
    host=_TEXT,
    status_code=_STATUS,
    upstream_status_code=_STATUS,
    error=st.none() | _TEXT,
    client_host=st.sampled_from(CLIENT_HOSTS),
    client_port=st.none() | st.integers(min_value=1, max_value=65535),
    upstream=st.sampled_from(UPSTREAMS),
    server_start=_TIMES,
    server_duration=_TIMES,
    client_start=_TIMES,
    client_duration=_TIMES,
    tags=st.lists(st.tuples(st.sampled_from(["team", "tier", 'a"q', *sorted(RESERVED_TAGS)]), _TEXT), max_size=3).map(
        tuple
    ),
)


@given(st.lists(exchanges, min_size=1, max_size=4))
@example([exchange(trace_id=MAX_64BIT + 1, parent_id=None, client_host=None, client_port=None, host="", name="")])
def test_every_exchange_is_two_spans_the_spec_accepts_and_the_caches_change_nothing(batch):
    encoder = ZipkinJsonEncoder(LOCAL)
    first = decoded(encoder.encode(batch))  # with empty caches
    validator("ListOfSpans").validate(first)
    assert len(first) == 2 * len(batch)
    assert decoded(encoder.encode(batch)) == first  # then from the caches
    assert decoded(ZipkinJsonEncoder(LOCAL).encode(batch)) == first


def test_encoding_leaves_the_exchange_as_it_was():
    record = exchange(tags=(("team", "web"),), server_duration=1e-9)
    before = dataclasses.astuple(record)
    ZipkinJsonEncoder(LOCAL).encode([record])
    assert dataclasses.astuple(record) == before


def reference_spans(record: Any) -> list[dict[str, Any]]:
    """An exchange's two spans through ``span_value``, the mapping every span written is held to, with the tags as
    the docstring of ``ZipkinJsonEncoder._spans`` states them: route tags, then the HTTP tags, which win a clash."""
    local = endpoint_value(LOCAL)
    client = client_endpoint(record.client_host, record.client_port)
    trace_id = f"{record.trace_id:032x}" if record.trace_id > MAX_64BIT else f"{record.trace_id:016x}"
    server_id = f"{record.server_span_id:016x}"

    def tags(status: int | None) -> dict[str, str]:
        values = dict(record.tags)
        values.update({"http.method": record.method, "http.path": record.path})
        if record.host:
            values["http.host"] = record.host
        if status is not None:
            values["http.status_code"] = str(status)
        if record.error:
            values["error"] = record.error
        elif status is not None and not 100 <= status <= 399:
            values["error"] = str(status)
        return values

    server = span_value(
        trace_id,
        server_id,
        None if record.parent_id is None else f"{record.parent_id:016x}",
        record.name,
        "SERVER",
        record.server_start,
        record.server_duration,
        local,
        None if client is None else endpoint_value(client),
        tags(record.status_code),
        record.debug,
    )
    client_span = span_value(
        trace_id,
        f"{record.client_span_id:016x}",
        server_id,
        record.name,
        "CLIENT",
        record.client_start,
        record.client_duration,
        local,
        endpoint_value(upstream_endpoint(record.upstream)),
        tags(record.upstream_status_code),
        record.debug,
    )
    return [orjson.loads(orjson.dumps(span)) for span in (server, client_span)]


@given(st.lists(exchanges, min_size=1, max_size=4))
def test_the_exchange_writer_writes_what_span_value_maps(batch):
    encoder = ZipkinJsonEncoder(LOCAL)
    expected = [span for record in batch for span in reference_spans(record)]
    assert decoded(encoder.encode(batch)) == expected
    assert decoded(encoder.encode(batch)) == expected  # from the caches


def test_each_span_has_its_own_status():
    server, client = decoded(ZipkinJsonEncoder(LOCAL).encode([exchange(status_code=502, upstream_status_code=None)]))
    assert server["tags"]["http.status_code"] == "502"
    assert "http.status_code" not in client["tags"]


def test_an_empty_slice_is_an_empty_list():
    assert ZipkinJsonEncoder(LOCAL).encode([]) == b"[]"


def test_a_lone_surrogate_fails_the_slice():
    # The request path never makes one (it decodes latin-1 or utf-8); the reporter counts a slice that fails.
    with pytest.raises(UnicodeEncodeError):
        ZipkinJsonEncoder(LOCAL).encode([exchange(path="/\ud800")])


def test_the_client_address_cache_stays_bounded():
    encoder = ZipkinJsonEncoder(LOCAL)
    for start in range(0, MAX_CACHED_CLIENTS + 100, 50):
        encoder.encode([exchange(client_host=f"198.51.{n // 256 % 256}.{n % 256}") for n in range(start, start + 50)])
    assert len(encoder._clients) <= MAX_CACHED_CLIENTS


@pytest.mark.parametrize(
    ("cache", "limit", "vary"),
    [
        ("_names", MAX_CACHED_NAMES, lambda n: {"name": f"GET /{n}"}),
        ("_tag_heads", MAX_CACHED_TAG_HEADS, lambda n: {"host": f"h{n}.example"}),
        ("_outcomes", MAX_CACHED_OUTCOMES, lambda n: {"error": f"upstream failed: {n}"}),
    ],
)
def test_the_text_caches_stay_bounded(cache, limit, vary):
    encoder = ZipkinJsonEncoder(LOCAL)
    for start in range(0, limit + 100, 50):
        encoder.encode([exchange(**vary(n)) for n in range(start, start + 50)])
    assert len(getattr(encoder, cache)) <= limit


def test_the_upstream_cache_stays_bounded():
    encoder = ZipkinJsonEncoder(LOCAL)
    for port in range(1, MAX_CACHED_UPSTREAMS + 20):
        encoder.encode([exchange(upstream=parse_upstream(f"http://web-svc:{port}"))])
    assert len(encoder._upstreams) <= MAX_CACHED_UPSTREAMS
