"""The dev collector's POST /v1/traces: the gateway's OTLP (protobuf, and the same as OTLP/JSON) lands in the store
as the same trace its Zipkin JSON makes."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.otlp import OtlpEncoder
from gateway.routes import Upstream
from gateway.spans import W3C_TRACESTATE, Exchange, local_endpoint
from gateway.zipkin_json import ZipkinJsonEncoder
from gateway_devtools.collector.app import create_collector_app
from tests.support import ThreadedServer

TRACE_ID = 0x4E441824EC2B6A44FFDC9BB9A6453DF3
EXCHANGE = Exchange(
    TRACE_ID,
    0xA,
    0xB,
    None,
    False,
    "GET /api",
    "GET",
    "/api/list",
    "example.com",
    502,
    None,
    "upstream unreachable",
    "10.0.0.9",
    40000,
    Upstream("http", "web-svc", 8080),
    1_700_000_000.5,
    0.003,
    1_700_000_000.501,
    0.002,
    (("team", "web"), (W3C_TRACESTATE, "ot=th:8")),
)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with ThreadedServer(create_collector_app()) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def stored(client: httpx.Client) -> list[dict[str, Any]]:
    return sorted(client.get(f"/api/v2/trace/{TRACE_ID:032x}").json(), key=lambda span: span["kind"])


def comparable(span: dict[str, Any]) -> dict[str, Any]:
    """What both formats say of a span (Zipkin's own http.* tags and OTLP's attribute names differ by design)."""
    tags = span.get("tags", {})
    return {
        "ids": (span["traceId"], span["id"], span.get("parentId")),
        "name": span["name"],
        "kind": span["kind"],
        "time": (span["timestamp"], span["duration"]),
        "service": span["localEndpoint"]["serviceName"],
        "error": tags.get("error"),
        "team": tags.get("team"),
        "tracestate": tags.get(W3C_TRACESTATE),
    }


def test_protobuf_otlp_is_the_same_trace_as_zipkin_json(client: httpx.Client) -> None:
    body = ZipkinJsonEncoder(local_endpoint("gw", "", 0)).encode([EXCHANGE])
    client.post("/api/v2/spans", content=body, headers={"content-type": "application/json"}).raise_for_status()
    from_zipkin = [comparable(span) for span in stored(client)]
    client.delete("/api/v2/_reset").raise_for_status()

    otlp = OtlpEncoder({"service.name": "gw"}).encode([EXCHANGE])
    response = client.post(
        "/v1/traces",
        content=gzip.compress(otlp),
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-protobuf"
    from_otlp = stored(client)
    assert [comparable(span) for span in from_otlp] == from_zipkin
    assert from_zipkin[1]["error"] == "upstream unreachable" and from_zipkin[0]["tracestate"] == "ot=th:8"
    client_span = from_otlp[0]
    assert client_span["remoteEndpoint"] == {"serviceName": "web-svc", "port": 8080}


def test_otlp_json_with_hex_ids_is_accepted(client: httpx.Client) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(OtlpEncoder({"service.name": "gw"}).encode([EXCHANGE]))
    document = json_format.MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    response = client.post("/v1/traces", content=json.dumps(document), headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json() == {}
    assert [(span["id"], span["kind"]) for span in stored(client)] == [
        ("000000000000000b", "CLIENT"),
        ("000000000000000a", "SERVER"),
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\xff\xff", "application/x-protobuf", "not an OTLP"),
        (b"{", "application/json", "not OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", "not hex"),
        (b"x", "text/plain", "unsupported content type"),
    ],
)
def test_bad_otlp_is_refused_with_a_reason(client: httpx.Client, body: bytes, content_type: str, message: str) -> None:
    response = client.post("/v1/traces", content=body, headers={"content-type": content_type})
    assert response.status_code == 400 and message in response.text
