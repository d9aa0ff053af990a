from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from py_zipkin.encoding.protobuf import zipkin_pb2

from gateway_devtools.collector.codec import decode_spans
from gateway_devtools.collector.model import Annotation, Endpoint, Span, span_to_json
from gateway_devtools.collector.normalise import PayloadError

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
TRACE_ID = "4e441824ec2b6a44ffdc9bb9a6453df3"
SPAN_ID = "352bff9a74ca9ad2"
PARENT_ID = "6b221d5bc9e6496c"
DROP = object()

FULL_SPAN: dict[str, Any] = {
    "traceId": TRACE_ID,
    "parentId": PARENT_ID,
    "id": SPAN_ID,
    "kind": "SERVER",
    "name": "get /api",
    "timestamp": 1556604172355737,
    "duration": 1431,
    "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
    "remoteEndpoint": {"serviceName": "frontend", "ipv6": "2001:db8::c001", "port": 58648},
    "annotations": [{"timestamp": 1556604172355800, "value": "wr"}, {"timestamp": 1556604172356000, "value": "ws"}],
    "tags": {"http.method": "GET", "http.path": "/api"},
    "debug": True,
    "shared": True,
}


def span_json(**overrides: Any) -> dict[str, Any]:
    fields = {"traceId": TRACE_ID, "id": SPAN_ID, **overrides}
    return {key: value for key, value in fields.items() if value is not DROP}


def json_body(*spans: Any) -> bytes:
    return json.dumps(list(spans)).encode()


def decode_one(span: dict[str, Any]) -> dict[str, Any]:
    [decoded] = decode_spans(json_body(span), JSON)
    return span_to_json(decoded)


def proto_body(*spans: zipkin_pb2.Span, extra: bytes = b"") -> bytes:
    message = zipkin_pb2.ListOfSpans()
    message.spans.extend(spans)
    return message.SerializeToString() + extra


def proto_span(**fields: Any) -> zipkin_pb2.Span:
    defaults: dict[str, Any] = {"trace_id": bytes.fromhex(TRACE_ID), "id": bytes.fromhex(SPAN_ID)}
    return zipkin_pb2.Span(**{**defaults, **fields})


# --- JSON ----------------------------------------------------------------------------------------------------------


def test_json_span_in_normal_form_reads_back_unchanged():
    assert decode_one(FULL_SPAN) == FULL_SPAN


def test_json_list_keeps_every_span_in_order():
    body = json_body(
        span_json(id="0000000000000001"), span_json(id="0000000000000002"), span_json(id="0000000000000003")
    )

    assert [span.id for span in decode_spans(body, JSON)] == [1, 2, 3]


def test_empty_json_list_is_accepted():
    assert decode_spans(b"[]", JSON) == []


@pytest.mark.parametrize(
    ("given_fields", "expected_fields"),
    [
        ({"traceId": "0000000000000000" + SPAN_ID}, {"traceId": SPAN_ID}),
        ({"parentId": "0000000000000000"}, {}),
        ({"parentId": SPAN_ID}, {}),
        ({"parentId": None, "kind": None, "name": None, "timestamp": None, "tags": None}, {}),
        ({"name": "GET /Api"}, {"name": "get /api"}),
        ({"name": ""}, {}),
        ({"timestamp": 0, "duration": -5}, {}),
        ({"kind": "CLIENT", "shared": True}, {"kind": "CLIENT"}),
        ({"shared": False, "debug": False}, {}),
        ({"localEndpoint": {"serviceName": "Web-Svc"}}, {"localEndpoint": {"serviceName": "web-svc"}}),
        ({"localEndpoint": {"serviceName": "", "port": 0}}, {}),
        ({"remoteEndpoint": {"ipv6": "::ffff:10.0.0.7"}}, {"remoteEndpoint": {"ipv4": "10.0.0.7"}}),
        ({"remoteEndpoint": {"serviceName": "db", "ipv4": "not-an-ip"}}, {"remoteEndpoint": {"serviceName": "db"}}),
        ({"remoteEndpoint": {"ipv4": "10.0.0.1", "port": -1}}, {"remoteEndpoint": {"ipv4": "10.0.0.1"}}),
        ({"tags": {"n": 5, "ok": True, "ratio": 0.5}}, {"tags": {"n": "5", "ok": "true", "ratio": "0.5"}}),
        ({"tags": {"b": "2", "a": "1"}}, {"tags": {"a": "1", "b": "2"}}),
        (
            {
                "annotations": [
                    {"timestamp": 2, "value": "b"},
                    {"timestamp": 1, "value": "a"},
                    {"timestamp": 2, "value": "b"},
                ]
            },
            {"annotations": [{"timestamp": 1, "value": "a"}, {"timestamp": 2, "value": "b"}]},
        ),
        ({"unknownField": {"anything": [1, 2]}}, {}),
    ],
)
def test_json_span_is_normalised_as_zipkin_does(given_fields, expected_fields):
    assert decode_one(span_json(**given_fields)) == span_json(**expected_fields)


def test_json_accepts_charset_parameter_and_missing_content_type():
    body = json_body(span_json())

    assert decode_spans(body, "application/json; charset=utf-8") == decode_spans(body, None)


def test_gzip_json_decodes_like_plain_json():
    body = json_body(FULL_SPAN)

    assert decode_spans(gzip.compress(body), JSON, "gzip") == decode_spans(body, JSON)


# --- protobuf ------------------------------------------------------------------------------------------------------


def full_proto_span() -> zipkin_pb2.Span:
    """The protobuf twin of FULL_SPAN, annotations and tags out of order: decoding must sort them."""
    return proto_span(
        parent_id=bytes.fromhex(PARENT_ID),
        kind=zipkin_pb2.Span.SERVER,
        name="get /api",
        timestamp=1556604172355737,
        duration=1431,
        local_endpoint=zipkin_pb2.Endpoint(service_name="backend", ipv4=bytes([192, 168, 99, 1]), port=3306),
        remote_endpoint=zipkin_pb2.Endpoint(
            service_name="frontend", ipv6=bytes.fromhex("20010db800000000000000000000c001"), port=58648
        ),
        annotations=[
            zipkin_pb2.Annotation(timestamp=1556604172356000, value="ws"),
            zipkin_pb2.Annotation(timestamp=1556604172355800, value="wr"),
        ],
        tags={"http.path": "/api", "http.method": "GET"},
        debug=True,
        shared=True,
    )


def test_protobuf_span_with_every_field_decodes_to_the_expected_span():
    message = full_proto_span()

    assert decode_spans(proto_body(message), PROTOBUF) == [
        Span(
            trace_id=0x4E441824EC2B6A44FFDC9BB9A6453DF3,
            id=0x352BFF9A74CA9AD2,
            parent_id=0x6B221D5BC9E6496C,
            name="get /api",
            kind="SERVER",
            timestamp=1556604172355737,
            duration=1431,
            local_endpoint=Endpoint("backend", "192.168.99.1", None, 3306),
            remote_endpoint=Endpoint("frontend", None, "2001:db8::c001", 58648),
            annotations=(Annotation(1556604172355800, "wr"), Annotation(1556604172356000, "ws")),
            tags=(("http.method", "GET"), ("http.path", "/api")),
            debug=True,
            shared=True,
        )
    ]


def test_protobuf_and_json_of_the_same_spans_decode_equal():
    pb = proto_body(
        full_proto_span(),
        proto_span(id=bytes.fromhex("0000000000000009"), kind=zipkin_pb2.Span.CLIENT),
    )
    js = json_body(FULL_SPAN, span_json(id="0000000000000009", kind="CLIENT"))

    assert decode_spans(pb, PROTOBUF) == decode_spans(js, JSON)
    assert decode_spans(pb, "application/protobuf") == decode_spans(js, JSON)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"trace_id": bytes(8) + bytes.fromhex(SPAN_ID)}, {"traceId": SPAN_ID}),
        ({"parent_id": bytes(8)}, {}),
        ({"name": "GET"}, {"name": "get"}),
        ({"kind": zipkin_pb2.Span.CLIENT, "shared": True}, {"kind": "CLIENT"}),
        (
            {"local_endpoint": zipkin_pb2.Endpoint(ipv6=bytes.fromhex("00000000000000000000ffff0a000007"))},
            {"localEndpoint": {"ipv4": "10.0.0.7"}},
        ),
        ({"local_endpoint": zipkin_pb2.Endpoint(ipv4=b"\x01\x02")}, {}),
        (
            {"remote_endpoint": zipkin_pb2.Endpoint(service_name="DB", port=-3)},
            {"remoteEndpoint": {"serviceName": "db"}},
        ),
    ],
)
def test_protobuf_span_is_normalised_as_zipkin_does(fields, expected):
    [span] = decode_spans(proto_body(proto_span(**fields)), PROTOBUF)

    assert span_to_json(span) == span_json(**expected)


def test_gzip_protobuf_decodes_like_plain_protobuf():
    body = proto_body(proto_span(name="x"))

    assert decode_spans(gzip.compress(body), PROTOBUF, "GZIP") == decode_spans(body, PROTOBUF)


# --- refusals ------------------------------------------------------------------------------------------------------

BAD_JSON_SPANS = [
    (span_json(traceId=DROP), "span 0: traceId is missing"),
    (span_json(id=DROP), "span 0: id is missing"),
    (span_json(traceId=TRACE_ID.upper()), "traceId '4E44"),
    (span_json(traceId="abc"), "traceId 'abc' is not 16 or 32 lower-hex characters"),
    (span_json(traceId="0" * 17), "is not 16 or 32 lower-hex"),
    (span_json(traceId="1" * 33), "is not 16 or 32 lower-hex"),
    (span_json(traceId="0x" + "1" * 14), "is not 16 or 32 lower-hex"),
    (span_json(traceId="0" * 32), "traceId is all zeros"),
    (span_json(traceId=12345), "traceId 12345 is not"),
    (span_json(id="0" * 16), "id is all zeros"),
    (span_json(id=TRACE_ID), "id '4e441824ec2b6a44ffdc9bb9a6453df3' is not 16 lower-hex characters"),
    (span_json(id="1234"), "id '1234' is not 16 lower-hex"),
    (span_json(parentId="123"), "parentId '123' is not 16 lower-hex"),
    (span_json(parentId=""), "parentId '' is not 16"),
    (span_json(kind="SERVERLESS"), "kind 'SERVERLESS' is not one of CLIENT, SERVER, PRODUCER, CONSUMER"),
    (span_json(kind=2), "kind must be a string, got integer"),
    (span_json(name=["x"]), "name must be a string, got list"),
    (span_json(timestamp="1556604172355737"), "timestamp must be an integer, got string"),
    (span_json(timestamp=1.5), "timestamp must be an integer, got number"),
    (span_json(duration=True), "duration must be an integer, got boolean"),
    (span_json(duration=1 << 64), "duration 18446744073709551616 does not fit in 64 bits"),
    (span_json(debug="yes"), "debug must be a boolean, got string"),
    (span_json(localEndpoint="web"), "localEndpoint must be an object, got string"),
    (span_json(localEndpoint={"serviceName": 7}), "localEndpoint.serviceName must be a string, got integer"),
    (span_json(remoteEndpoint={"port": 70000}), "remoteEndpoint.port 70000 is above 65535"),
    (span_json(remoteEndpoint={"port": "80"}), "remoteEndpoint.port must be an integer, got string"),
    (span_json(annotations={"value": "x"}), "annotations must be a list, got object"),
    (span_json(annotations=[{"timestamp": 1}]), "annotations[0] needs a timestamp and a value"),
    (span_json(annotations=[{"timestamp": 1, "value": 2}]), "annotations[0].value must be a string, got integer"),
    (span_json(annotations=[{"timestamp": "1", "value": "a"}]), "annotations[0].timestamp must be an integer"),
    (span_json(tags=["a"]), "tags must be an object, got list"),
    (span_json(tags={"a": None}), "tags.a must be a string, got null"),
    (span_json(tags={"a": {"b": "c"}}), "tags.a must be a string, got object"),
    ("not a span", "span 0: expected a span object, got string"),
]


@pytest.mark.parametrize(("span", "reason"), BAD_JSON_SPANS)
def test_bad_json_span_is_refused_with_its_reason(span, reason):
    body = json_body(span_json(id="0000000000000001"), span)
    fixed_reason = reason.replace("span 0:", "span 1:")

    with pytest.raises(PayloadError) as caught:
        decode_spans(body, JSON)

    assert fixed_reason in str(caught.value)
    assert "span 1: " in str(caught.value)
    assert "\n" not in str(caught.value)


def _deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


BAD_BODIES = [
    (b"", JSON, None, "empty body: expected a list of spans"),
    (b"{not json", JSON, None, "body is not JSON: "),
    (b"\xff\xfe\x00garbage", JSON, None, "body is not JSON: "),
    (b'[{"traceId": NaN}]', JSON, None, "body is not JSON: NaN is not JSON"),
    (_deeply_nested(100_000), JSON, None, "body is not JSON: "),
    (b'{"traceId": "' + TRACE_ID.encode() + b'"}', JSON, None, "body is a JSON object, expected a list of spans"),
    (b"null", JSON, None, "body is a JSON null, expected a list of spans"),
    (json_body(span_json()), "text/plain", None, "unsupported content type 'text/plain': use application/json"),
    (json_body(span_json()), "application/x-thrift", None, "unsupported content type 'application/x-thrift'"),
    (json_body(span_json()), JSON, "br", "unsupported content encoding 'br': use gzip or none"),
    (json_body(span_json()), JSON, "gzip", "bad gzip body: "),
    (gzip.compress(json_body(span_json()))[:-12], JSON, "gzip", "bad gzip body: the stream is truncated"),
    (gzip.compress(b"[]") + b"extra", JSON, "gzip", "bad gzip body: data follows the end of the gzip stream"),
    (gzip.compress(b""), JSON, "gzip", "empty body"),
    (b"hello", PROTOBUF, None, "body is not a protobuf ListOfSpans: "),
    (json_body(span_json()), PROTOBUF, None, "body is not a protobuf ListOfSpans: "),
    (b"\x10\x01", PROTOBUF, None, "body is not a protobuf ListOfSpans: it has fields other than spans (1)"),
    (proto_body(proto_span(trace_id=b"\x01" * 5)), PROTOBUF, None, "span 0: trace_id is 5 bytes, expected 8 or 16"),
    (proto_body(proto_span(trace_id=b"")), PROTOBUF, None, "span 0: trace_id is missing"),
    (proto_body(proto_span(trace_id=bytes(16))), PROTOBUF, None, "span 0: trace_id is all zeros"),
    (proto_body(proto_span(id=b"")), PROTOBUF, None, "span 0: id is missing"),
    (proto_body(proto_span(id=b"\x01" * 16)), PROTOBUF, None, "span 0: id is 16 bytes, expected 8"),
    (proto_body(proto_span(parent_id=b"\x01" * 4)), PROTOBUF, None, "span 0: parent_id is 4 bytes, expected 8"),
    (proto_body(proto_span(kind=9)), PROTOBUF, None, "span 0: kind 9 is not a zipkin.proto3.Span.Kind"),
    (
        proto_body(proto_span(local_endpoint=zipkin_pb2.Endpoint(port=70000))),
        PROTOBUF,
        None,
        "span 0: port 70000 is above 65535",
    ),
    # field 1 (spans), length 3: field 5 (name), length 1, an invalid UTF-8 byte
    (b"\x0a\x03\x2a\x01\xff", PROTOBUF, None, "body is not a protobuf ListOfSpans: "),
]


@pytest.mark.parametrize(("body", "content_type", "encoding", "reason"), BAD_BODIES)
def test_bad_body_is_refused_with_its_reason(body, content_type, encoding, reason):
    with pytest.raises(PayloadError) as caught:
        decode_spans(body, content_type, encoding)

    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)


def test_body_above_the_limit_is_refused():
    body = json_body(span_json())

    assert decode_spans(body, JSON, max_bytes=len(body))
    with pytest.raises(PayloadError, match=f"body exceeds {len(body) - 1} bytes$"):
        decode_spans(body, JSON, max_bytes=len(body) - 1)


def test_gzip_body_that_inflates_above_the_limit_is_refused():
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")

    assert len(bomb) < 10_000
    with pytest.raises(PayloadError, match="body exceeds 100000 bytes once decompressed"):
        decode_spans(bomb, JSON, "gzip", max_bytes=100_000)


def test_long_values_are_shortened_in_reasons():
    with pytest.raises(PayloadError) as caught:
        decode_spans(json_body(span_json(traceId="z" * 5000)), JSON)

    assert len(str(caught.value)) < 120


# --- nothing but PayloadError, whatever arrives ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
span_like = st.fixed_dictionaries(
    {},
    optional={
        "traceId": st.sampled_from([TRACE_ID, SPAN_ID, "", "ABC"]) | json_values,
        "id": st.sampled_from([SPAN_ID, "0" * 16]) | json_values,
        "parentId": json_values,
        "kind": st.sampled_from(["CLIENT", "SERVER", "x"]) | json_values,
        "timestamp": json_values,
        "duration": json_values,
        "localEndpoint": st.fixed_dictionaries({}, optional={"serviceName": json_values, "port": json_values})
        | json_values,
        "annotations": st.lists(st.fixed_dictionaries({"timestamp": json_values, "value": json_values})) | json_values,
        "tags": json_values,
    },
)


@given(st.lists(span_like | json_values, max_size=4))
def test_any_json_document_decodes_or_raises_payload_error(document):
    try:
        spans = decode_spans(json.dumps(document).encode(), JSON)
    except PayloadError as exc:
        assert str(exc)
    else:
        assert all(isinstance(span, Span) for span in spans)


@given(st.binary(max_size=200), st.sampled_from([JSON, PROTOBUF]), st.sampled_from([None, "gzip"]))
def test_any_bytes_decode_or_raise_payload_error(body, content_type, encoding):
    try:
        decode_spans(body, content_type, encoding)
    except PayloadError as exc:
        assert str(exc)
