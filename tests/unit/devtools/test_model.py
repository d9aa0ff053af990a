from __future__ import annotations

import pytest

from gateway_devtools.collector.model import Annotation, Endpoint, Span, format_trace_id, span_to_json


@pytest.mark.parametrize(
    ("trace_id", "text"),
    [
        (1, "0000000000000001"),
        (0xFFFFFFFFFFFFFFFF, "ffffffffffffffff"),
        (1 << 64, "00000000000000010000000000000000"),
        (0x4E441824EC2B6A44FFDC9BB9A6453DF3, "4e441824ec2b6a44ffdc9bb9a6453df3"),
    ],
)
def test_format_trace_id_is_16_hex_for_64_bits_and_32_above(trace_id, text):
    assert format_trace_id(trace_id) == text


def test_span_to_json_writes_every_field_in_zipkin_order():
    span = Span(
        trace_id=0x5AF7183FB1D4CF5F,
        id=0x352BFF9A74CA9AD2,
        parent_id=0x6B221D5BC9E6496C,
        name="get /api",
        kind="SERVER",
        timestamp=1556604172355737,
        duration=1431,
        local_endpoint=Endpoint("backend", "192.168.99.1", None, 3306),
        remote_endpoint=Endpoint(None, "172.19.0.2", "2001:db8::c001", 58648),
        annotations=(Annotation(1556604172355800, "wr"),),
        tags=(("http.method", "GET"), ("http.path", "/api")),
        debug=True,
        shared=True,
    )

    encoded = span_to_json(span)

    assert encoded == {
        "traceId": "5af7183fb1d4cf5f",
        "parentId": "6b221d5bc9e6496c",
        "id": "352bff9a74ca9ad2",
        "kind": "SERVER",
        "name": "get /api",
        "timestamp": 1556604172355737,
        "duration": 1431,
        "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
        "remoteEndpoint": {"ipv4": "172.19.0.2", "ipv6": "2001:db8::c001", "port": 58648},
        "annotations": [{"timestamp": 1556604172355800, "value": "wr"}],
        "tags": {"http.method": "GET", "http.path": "/api"},
        "debug": True,
        "shared": True,
    }
    # Dict equality ignores order; Zipkin's encoder writes the keys in this order.
    assert list(encoded) == [
        "traceId",
        "parentId",
        "id",
        "kind",
        "name",
        "timestamp",
        "duration",
        "localEndpoint",
        "remoteEndpoint",
        "annotations",
        "tags",
        "debug",
        "shared",
    ]


def test_span_to_json_leaves_absent_fields_out():
    assert span_to_json(Span(trace_id=1 << 70, id=2)) == {
        "traceId": "00000000000000400000000000000000",
        "id": "0000000000000002",
    }
