"""OTLP/HTTP export from a real gateway process to a real receiver on 127.0.0.1, beside the Zipkin collector:
what is sent (decoded with opentelemetry-proto), the retries the OTLP spec asks for, partial success."""

from __future__ import annotations

import gzip
import time
from collections import defaultdict
from pathlib import Path

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from gateway import __version__
from tests.e2e.conftest import (
    SERVICE_NAME,
    Collector,
    Echo,
    Gateway,
    Metrics,
    Upstream,
    gateway_env,
    run_gateway,
    traceresponse,
)
from tests.otlp_receiver import Answer, running_receiver

SECRET = "s3cr3t token"


def attributes(span_or_resource: object) -> dict[str, object]:
    found: dict[str, object] = {}
    for pair in span_or_resource.attributes:  # type: ignore[attr-defined]
        value = pair.value
        found[pair.key] = value.int_value if value.WhichOneof("value") == "int_value" else value.string_value
    return found


def settled_metrics(gateway: Gateway, name: str, want: float, timeout: float = 10.0) -> Metrics:
    """/metrics once ``name`` reaches ``want`` (the reporter counts a batch once its POST is answered)."""
    deadline = time.monotonic() + timeout
    metrics = gateway.metrics()
    while metrics.value(name) < want and time.monotonic() < deadline:
        time.sleep(0.05)
        metrics = gateway.metrics()
    return metrics


def test_with_both_urls_every_sampled_trace_goes_whole_to_both_collectors(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    with running_receiver() as receiver:
        env = gateway_env(
            upstream,
            collector,
            sample_rate=0.5,
            propagation="b3multi,tracecontext",
            otlp_url=receiver.url,
            otlp_headers="authorization=Bearer%20s3cr3t%20token, x-tenant = blue",
        )
        env.update(POD_NAME="gw-7f9c", POD_NAMESPACE="edge", NODE_NAME="node-3", OTEL_RESOURCE_ATTRIBUTES="team=sre")
        with run_gateway(tmp_path, env) as gateway, httpx.Client(timeout=10) as client:
            sampled: dict[str, str] = {}
            for index in range(60):
                response = client.get(f"{gateway.url}/otlp/{index}?q=1")
                trace_id, server_span_id, is_sampled = traceresponse(response)
                traceparent = Echo.of(response).one("traceparent")
                assert traceparent.endswith("-03" if is_sampled else "-02"), "the gateway's ids are random"
                if is_sampled:
                    sampled[trace_id] = server_span_id
                    assert Echo.of(response).all("tracestate") == ["ot=th:8"]
            assert 0 < len(sampled) < 60

            otlp_spans = receiver.wait_for_spans(2 * len(sampled))
            zipkin_spans = collector.wait_for_spans(2 * len(sampled))
            metrics = settled_metrics(gateway, "gateway_spans_reported_total", 4 * len(sampled))
            output = gateway.output()

    by_trace: dict[str, list[Span]] = defaultdict(list)
    for _, span in otlp_spans:
        by_trace[span.trace_id.hex()].append(span)
    assert set(by_trace) == set(sampled), "OTLP got exactly the sampled traces"
    assert {span["traceId"].rjust(32, "0") for span in zipkin_spans} == set(sampled), "and so did Zipkin"
    assert all(span["tags"]["w3c.tracestate"] == "ot=th:8" for span in zipkin_spans)

    for trace_id, spans in by_trace.items():
        kinds = {span.kind: span for span in spans}
        assert set(kinds) == {Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT}
        server, client_span = kinds[Span.SpanKind.SPAN_KIND_SERVER], kinds[Span.SpanKind.SPAN_KIND_CLIENT]
        assert server.span_id.hex() == sampled[trace_id] and server.parent_span_id == b""
        assert client_span.parent_span_id == server.span_id
        assert server.trace_state == client_span.trace_state == "ot=th:8"
        assert server.end_time_unix_nano > server.start_time_unix_nano > 0
        server_attributes = attributes(server)
        assert server_attributes["http.request.method"] == "GET"
        assert str(server_attributes["url.path"]).startswith("/otlp/")
        assert (server_attributes["server.address"], server_attributes["server.port"]) == ("127.0.0.1", gateway.port)
        assert server_attributes["http.response.status_code"] == 200
        assert server_attributes["client.address"] == "127.0.0.1"
        client_attributes = attributes(client_span)
        assert client_attributes["server.port"] == upstream.port
        assert client_attributes["http.response.status_code"] == 200
        assert server.status.code == client_span.status.code == Status.StatusCode.STATUS_CODE_UNSET

    resources = [attributes(resource_spans.resource) for resource_spans, _ in otlp_spans]
    assert resources[0] == {
        "team": "sre",
        "host.name": resources[0]["host.name"],
        "k8s.pod.name": "gw-7f9c",
        "k8s.namespace.name": "edge",
        "k8s.node.name": "node-3",
        "service.name": SERVICE_NAME,
        "service.version": __version__,
    }
    assert resources[0]["host.name"]

    request = receiver.requests()[0]
    assert request.headers["authorization"] == "Bearer s3cr3t token", "values are percent-decoded"
    assert request.headers["x-tenant"] == "blue"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.body), "a gzip body"
    assert SECRET not in output, "the headers' values are never logged"
    for exporter in ("otlp", "zipkin"):
        assert metrics.value("gateway_spans_reported_total", exporter=exporter) == 2 * len(sampled)
        assert metrics.value("gateway_spans_dropped_total", exporter=exporter) == 0


def test_otlp_retries_429_after_its_retry_after_then_503_and_counts_a_partial_success(
    tmp_path: Path, upstream: Upstream
) -> None:
    script = (Answer(429, (("retry-after", "1"),)), Answer(503), Answer(200, rejected_spans=1))
    with running_receiver(*script) as receiver:
        env = gateway_env(upstream, None, otlp_url=receiver.url, reporter_flush_interval=0.05)
        with run_gateway(tmp_path, env) as gateway:
            trace_id, _, sampled = traceresponse(httpx.get(f"{gateway.url}/retried", timeout=10))
            assert sampled
            received = receiver.wait_for_requests(3)
            metrics = settled_metrics(gateway, "gateway_spans_reported_total", 1)
            output = gateway.output()

    assert len(received) == 3
    assert received[0].body == received[1].body == received[2].body, "the same batch, sent again"
    assert received[1].at - received[0].at >= 0.9, "Retry-After: 1 was honoured"
    assert {span.trace_id.hex() for _, span in receiver.spans()} == {trace_id}
    assert metrics.value("gateway_span_batches_total", exporter="otlp", outcome="retried") == 2
    assert metrics.value("gateway_spans_dropped_total", exporter="otlp", reason="partially_rejected") == 1
    assert metrics.value("gateway_spans_reported_total", exporter="otlp") == 1
    assert "refused 1 of 2 spans" in output


def test_otlp_other_statuses_are_not_retried(tmp_path: Path, upstream: Upstream) -> None:
    with running_receiver(Answer(400), Answer(500)) as receiver:
        env = gateway_env(upstream, None, otlp_url=receiver.url, reporter_flush_interval=0.05)
        with run_gateway(tmp_path, env) as gateway, httpx.Client(timeout=10) as client:
            client.get(f"{gateway.url}/refused")
            receiver.wait_for_requests(1)
            client.get(f"{gateway.url}/refused-again")
            receiver.wait_for_requests(3, timeout=3)  # a third would be a retry of one of the two
            metrics = gateway.metrics()

    assert len(receiver.requests()) == 2
    assert metrics.value("gateway_spans_dropped_total", exporter="otlp", reason="rejected") == 4
    assert metrics.value("gateway_span_batches_total", exporter="otlp", outcome="retried") == 0
