"""The collector app served by uvicorn on loopback, driven with httpx as a reporter and a query client would."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from py_zipkin.encoding.protobuf import zipkin_pb2

from gateway_devtools.collector.app import create_collector_app
from gateway_devtools.collector.store import SpanStore
from tests.support import ThreadedServer

TRACE_ID = "4e441824ec2b6a44ffdc9bb9a6453df3"
NOW_US = int(time.time() * 1_000_000)


def span(
    span_id: str,
    parent_id: str | None = None,
    service: str = "web",
    name: str = "get /api/list",
    kind: str = "SERVER",
    trace_id: str = TRACE_ID,
    **extra: Any,
) -> dict[str, Any]:
    fields = {
        "traceId": trace_id,
        "parentId": parent_id,
        "id": span_id,
        "kind": kind,
        "name": name,
        "timestamp": NOW_US,
        "duration": 1500,
        "localEndpoint": {"serviceName": service, "ipv4": "10.0.0.1", "port": 8080},
        **extra,
    }
    return {key: value for key, value in fields.items() if value is not None}


ROOT = span("000000000000000a", service="ingress-gateway", name="get /", remoteEndpoint={"serviceName": "web"})
CHILD = span("000000000000000b", parent_id="000000000000000a", service="web", kind="CLIENT", tags={"error": "boom"})


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(create_collector_app()) as running:
        yield running


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        http.delete("/api/v2/_reset").raise_for_status()
        yield http


def post_json(client: httpx.Client, spans: object) -> httpx.Response:
    return client.post("/api/v2/spans", content=json.dumps(spans), headers={"content-type": "application/json"})


# --- receiving -------------------------------------------------------------------------------------------------------


def test_json_spans_are_accepted_and_read_back(client):
    response = post_json(client, [ROOT, CHILD])

    assert response.status_code == 202
    assert client.get(f"/api/v2/trace/{TRACE_ID}").json() == [ROOT, CHILD]


def test_gzip_json_spans_are_accepted(client):
    body = gzip.compress(json.dumps([ROOT]).encode())

    response = client.post(
        "/api/v2/spans", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )

    assert response.status_code == 202
    assert client.get(f"/api/v2/trace/{TRACE_ID}").json() == [ROOT]


def test_protobuf_spans_are_accepted_and_read_back_as_json(client):
    message = zipkin_pb2.ListOfSpans(
        spans=[
            zipkin_pb2.Span(
                trace_id=bytes.fromhex(TRACE_ID),
                id=bytes.fromhex("000000000000000c"),
                parent_id=bytes.fromhex("000000000000000a"),
                kind=zipkin_pb2.Span.CLIENT,
                name="GET /emoji",
                timestamp=NOW_US,
                duration=700,
                local_endpoint=zipkin_pb2.Endpoint(service_name="web", ipv4=bytes([10, 0, 0, 1])),
                remote_endpoint=zipkin_pb2.Endpoint(service_name="emoji", port=8080),
                annotations=[zipkin_pb2.Annotation(timestamp=NOW_US + 5, value="ws")],
                tags={"http.method": "GET"},
            )
        ]
    )

    response = client.post(
        "/api/v2/spans", content=message.SerializeToString(), headers={"content-type": "application/x-protobuf"}
    )

    assert response.status_code == 202
    assert client.get(f"/api/v2/trace/{TRACE_ID}").json() == [
        {
            "traceId": TRACE_ID,
            "parentId": "000000000000000a",
            "id": "000000000000000c",
            "kind": "CLIENT",
            "name": "get /emoji",
            "timestamp": NOW_US,
            "duration": 700,
            "localEndpoint": {"serviceName": "web", "ipv4": "10.0.0.1"},
            "remoteEndpoint": {"serviceName": "emoji", "port": 8080},
            "annotations": [{"timestamp": NOW_US + 5, "value": "ws"}],
            "tags": {"http.method": "GET"},
        }
    ]


def test_ids_are_normalised_on_the_way_in(client):
    padded = "0000000000000000" + "1234567890abcdef"
    post_json(client, [span("000000000000000a", trace_id=padded)]).raise_for_status()

    [stored] = client.get("/api/v2/trace/1234567890abcdef").json()

    assert stored["traceId"] == "1234567890abcdef"
    assert client.get(f"/api/v2/trace/{padded}").status_code == 200


def test_stats_count_requests_and_spans(client):
    post_json(client, [ROOT, CHILD]).raise_for_status()
    post_json(client, [ROOT]).raise_for_status()
    post_json(client, {"not": "a list"})

    stats = client.get("/api/v2/_stats").json()

    assert stats["spans"] == 2
    assert stats["traces"] == 1
    assert stats["spansReceived"] == 3
    assert stats["spansDuplicate"] == 1
    assert stats["requestsAccepted"] == 2
    assert stats["requestsRejected"] == 1
    assert stats["requestsByContentType"] == {"application/json": 2}
    assert stats["lastRejection"] == "body is a JSON object, expected a list of spans"


@pytest.mark.parametrize("method", ["DELETE", "POST"])
def test_reset_empties_the_store(client, method):
    post_json(client, [ROOT]).raise_for_status()

    assert client.request(method, "/api/v2/_reset").status_code == 204

    assert client.get(f"/api/v2/trace/{TRACE_ID}").status_code == 404
    assert client.get("/api/v2/_stats").json()["requestsAccepted"] == 0


# --- refusing --------------------------------------------------------------------------------------------------------

BAD_POSTS = [
    (b"not json", {"content-type": "application/json"}, "body is not JSON: "),
    (b'{"traceId": "1"}', {"content-type": "application/json"}, "body is a JSON object"),
    (
        json.dumps([{"id": "000000000000000a"}]).encode(),
        {"content-type": "application/json"},
        "span 0: traceId is missing",
    ),
    (json.dumps([{"traceId": TRACE_ID}]).encode(), {"content-type": "application/json"}, "span 0: id is missing"),
    (
        json.dumps([{"traceId": TRACE_ID[:20], "id": "000000000000000a"}]).encode(),
        {"content-type": "application/json"},
        "span 0: traceId '4e441824ec2b6a44ffdc' is not 16 or 32 lower-hex characters",
    ),
    (b"[]", {"content-type": "application/json", "content-encoding": "gzip"}, "bad gzip body: "),
    (b"\x0a\xff", {"content-type": "application/x-protobuf"}, "body is not a protobuf ListOfSpans"),
    (b"[]", {"content-type": "text/plain"}, "unsupported content type 'text/plain'"),
    (b"", {"content-type": "application/json"}, "empty body"),
]


@pytest.mark.parametrize(("body", "headers", "reason"), BAD_POSTS)
def test_bad_payload_is_a_400_with_a_one_line_reason(client, body, headers, reason):
    response = client.post("/api/v2/spans", content=body, headers=headers)

    assert response.status_code == 400
    assert response.text.startswith(reason)
    assert "\n" not in response.text.strip()
    assert client.get("/api/v2/_stats").json()["spans"] == 0


def test_body_above_the_limit_is_a_400_whether_declared_or_streamed():
    with ThreadedServer(create_collector_app(max_body_bytes=1000)) as server, httpx.Client(base_url=server.url) as c:
        declared = c.post("/api/v2/spans", content=b"[" + b" " * 2000 + b"]")
        streamed = c.post("/api/v2/spans", content=iter([b"[", b" " * 600, b" " * 600, b"]"]))
        small = c.post("/api/v2/spans", content=b"[" + b" " * 900 + b"]")

    assert (declared.status_code, declared.text) == (400, "body exceeds 1000 bytes")
    assert (streamed.status_code, streamed.text) == (400, "body exceeds 1000 bytes")
    assert small.status_code == 202


# --- querying --------------------------------------------------------------------------------------------------------


def test_unknown_trace_is_404_and_a_bad_id_is_400(client):
    assert client.get("/api/v2/trace/00000000000000ff").status_code == 404
    response = client.get("/api/v2/trace/not-hex")
    assert response.status_code == 400
    assert "is not 16 or 32 hex characters" in response.text


def test_services_span_names_and_remote_services(client):
    post_json(
        client,
        [
            ROOT,
            CHILD,
            span(
                "000000000000000d",
                "000000000000000b",
                service="web",
                name="post /api/vote",
                remoteEndpoint={"serviceName": "voting"},
            ),
        ],
    ).raise_for_status()

    assert client.get("/api/v2/services").json() == ["ingress-gateway", "web"]
    assert client.get("/api/v2/spans", params={"serviceName": "web"}).json() == ["get /api/list", "post /api/vote"]
    assert client.get("/api/v2/remoteServices", params={"serviceName": "ingress-gateway"}).json() == ["web"]
    assert client.get("/api/v2/spans").status_code == 400
    assert client.get("/api/v2/remoteServices").text == "serviceName is required"


def test_traces_query_filters_and_orders_newest_first(client):
    older = [span("0000000000000001", trace_id="1" * 16, service="web", timestamp=NOW_US - 2_000_000, duration=90)]
    newer = [span("0000000000000002", trace_id="2" * 16, service="emoji", name="listall", timestamp=NOW_US - 1_000_000)]
    post_json(client, older + newer + [ROOT, CHILD]).raise_for_status()

    def trace_ids(**params: Any) -> list[str]:
        response = client.get("/api/v2/traces", params=params)
        assert response.status_code == 200, response.text
        return [trace[0]["traceId"] for trace in response.json()]

    assert trace_ids() == [TRACE_ID, "2" * 16, "1" * 16]
    assert trace_ids(limit=2) == [TRACE_ID, "2" * 16]
    assert trace_ids(serviceName="web") == [TRACE_ID, "1" * 16]
    assert trace_ids(serviceName="emoji", spanName="listall") == ["2" * 16]
    assert trace_ids(spanName="get /") == [TRACE_ID]
    assert trace_ids(remoteServiceName="web") == [TRACE_ID]
    assert trace_ids(minDuration=1000) == [TRACE_ID, "2" * 16]
    assert trace_ids(minDuration=50, maxDuration=100) == ["1" * 16]
    assert trace_ids(annotationQuery="error=boom") == [TRACE_ID]
    assert trace_ids(annotationQuery="error") == [TRACE_ID]
    assert trace_ids(endTs=(NOW_US - 1_500_000) // 1000, lookback=1000) == ["1" * 16]
    assert trace_ids(endTs=(NOW_US - 5_000_000) // 1000) == []


def test_traces_answer_lists_of_complete_traces(client):
    post_json(client, [ROOT, CHILD]).raise_for_status()

    assert client.get("/api/v2/traces", params={"serviceName": "web"}).json() == [[ROOT, CHILD]]


@pytest.mark.parametrize(
    "params",
    [{"limit": "x"}, {"limit": "0"}, {"minDuration": "-1"}, {"maxDuration": "10"}, {"endTs": "1e9"}],
)
def test_bad_traces_query_is_a_400(client, params):
    response = client.get("/api/v2/traces", params=params)

    assert response.status_code == 400
    assert response.text


def test_trace_many_returns_the_traces_it_knows(client):
    other = span("0000000000000009", trace_id="9" * 16)
    post_json(client, [ROOT, other]).raise_for_status()

    response = client.get("/api/v2/traceMany", params={"traceIds": f"{TRACE_ID},{'9' * 16},{'8' * 16}"})

    assert {trace[0]["traceId"]: trace for trace in response.json()} == {TRACE_ID: [ROOT], "9" * 16: [other]}
    assert client.get("/api/v2/traceMany", params={"traceIds": TRACE_ID}).status_code == 400


# --- failure injection -----------------------------------------------------------------------------------------------


def test_fail_first_answers_503_then_accepts():
    store = SpanStore()
    with ThreadedServer(create_collector_app(store, fail_first=2)) as server, httpx.Client(base_url=server.url) as c:
        statuses = [post_json(c, [ROOT]).status_code for _ in range(3)]
        stats = c.get("/api/v2/_stats").json()

    assert statuses == [503, 503, 202]
    assert stats["requestsFailedOnPurpose"] == 2
    assert stats["spansReceived"] == 1
    assert store.stats().spans == 1


def test_response_delay_makes_the_answer_late_but_keeps_the_spans():
    store = SpanStore()
    delay = 0.5
    with ThreadedServer(create_collector_app(store, response_delay=delay)) as server:
        with httpx.Client(base_url=server.url, timeout=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
            post_json(impatient, [ROOT])
        with httpx.Client(base_url=server.url, timeout=10) as patient:
            started = time.monotonic()
            response = post_json(patient, [CHILD])
            elapsed = time.monotonic() - started

    assert response.status_code == 202
    assert elapsed >= delay
    # A reporter that gave up waiting still delivered: the spans are stored on arrival, only the answer is late.
    assert store.stats().spans == 2


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="must not be negative"):
        create_collector_app(fail_first=-1)


# --- the page --------------------------------------------------------------------------------------------------------


def test_trace_page_and_its_assets_are_served(client):
    page = client.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for asset in ("/static/trace.js", "/static/trace.css"):
        assert f'"{asset}"' in page.text
        assert client.get(asset).status_code == 200


def test_health_is_up(client):
    assert client.get("/health").json() == {"status": "UP"}
