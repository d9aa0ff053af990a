"""What an operator sees: no sampling without an exporter, the startup lines, and exemplars on /metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, Gateway, GatewayFactory, traceresponse

pytestmark = pytest.mark.e2e

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# A bucket line of the OpenMetrics exposition with its exemplar: `name{labels} value # {trace_id="..."} value ts`.
EXEMPLAR_LINE = re.compile(r'^(gateway_http_request_duration_seconds_bucket\{[^}]*\}) \S+ # \{trace_id="([0-9a-f]+)"\}')


def log_lines(gateway: Gateway) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.output().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_without_an_exporter_no_new_trace_is_sampled_and_one_warning_says_how_to_turn_tracing_on(
    start_gateway: GatewayFactory, client: httpx.Client
) -> None:
    gateway = start_gateway(zipkin_url=None, sample_rate=1.0)
    for _ in range(3):
        response = client.get(f"{gateway.url}/no-exporter")
        assert Echo.of(response).one("x-b3-sampled") == "0"
        assert traceresponse(response)[2] is False

    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="not_sampled", reason="no_exporter") == 3
    assert metrics.value("gateway_requests_total", decision="sampled") == 0
    warnings = [line for line in log_lines(gateway) if "no span exporter" in line["msg"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "GATEWAY_ZIPKIN_URL" in warnings[0]["msg"]
    (in_force,) = [line for line in log_lines(gateway) if line["msg"] == "in force"]
    assert in_force["exporters"] == {}


def test_without_an_exporter_a_trusted_parents_decision_is_still_honoured(
    start_gateway: GatewayFactory, client: httpx.Client
) -> None:
    gateway = start_gateway(zipkin_url=None, sample_rate=1.0, trust_incoming_trace=True)
    parent = {"X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312"}
    assert Echo.of(client.get(f"{gateway.url}/p", headers={**parent, "X-B3-Sampled": "1"})).one("x-b3-sampled") == "1"
    assert Echo.of(client.get(f"{gateway.url}/p", headers={**parent, "X-B3-Sampled": "0"})).one("x-b3-sampled") == "0"
    assert gateway.metrics().value("gateway_requests_total", decision="sampled", reason="trusted_parent") == 1


def test_the_startup_lines_say_what_is_in_force_and_name_a_mistyped_variable(
    start_gateway: GatewayFactory, collector: Collector
) -> None:
    gateway = start_gateway(samplerate=0.1, trusted_cidrs="10.0.0.0/8")
    lines = log_lines(gateway)
    assert any(
        line["msg"] == "GATEWAY_SAMPLERATE: unknown setting; did you mean GATEWAY_SAMPLE_RATE?" for line in lines
    )
    (in_force,) = [line for line in lines if line["msg"] == "in force"]
    assert in_force["listeners"]["proxy"] == f"127.0.0.1:{gateway.port}"
    assert in_force["listeners"]["admin"] == f"127.0.0.1:{gateway.admin_port}"
    assert in_force["upstreams"] == {"default": gateway.env["GATEWAY_UPSTREAM_URL"]}
    assert in_force["sample_rate"] == 1.0
    assert in_force["exporters"] == {"zipkin": collector.spans_url}
    assert in_force["trust"] == {"all_clients": False, "trusted_cidrs": ["10.0.0.0/8"]}
    assert in_force["protocols"] == ["http/1.1", "h2c", "websocket"]
    assert in_force["upstream_protocols"] == {"default": "http1"}
    assert not any("no span exporter" in line["msg"] for line in lines)


def test_openmetrics_scrapes_carry_the_sampled_requests_trace_ids_as_exemplars(
    start_gateway: GatewayFactory, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=1.0)
    trace_id, _, sampled = traceresponse(client.get(f"{gateway.url}/exemplar"))
    assert sampled
    client.post(f"{gateway.url}/exemplar", content=b"x")

    scrape = httpx.get(f"{gateway.admin_url}/metrics", headers={"Accept": OPENMETRICS}, timeout=5)
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert scrape.text.rstrip().endswith("# EOF")
    exemplars = [match.groups() for line in scrape.text.splitlines() if (match := EXEMPLAR_LINE.match(line))]
    # Each bucket keeps its latest exemplar: the first request's id stays in at least the buckets the second
    # request's latency did not reach, and only sampled GETs and POSTs carry one.
    assert exemplars, scrape.text
    assert trace_id in {found for _, found in exemplars}
    assert all('decision="sampled"' in series for series, _ in exemplars)
    assert any('method="GET"' in series and 'status_class="2xx"' in series for series, _ in exemplars)

    classic = gateway.metrics()
    assert " # {" not in classic.text
    assert not [sample.name for sample in classic.samples if sample.name.endswith("_created")]
    labels = {"route": "default", "method": "POST", "status_class": "2xx", "grpc_status": "", "decision": "sampled"}
    assert classic.value("gateway_http_request_duration_seconds_count", **labels) == 1


def test_with_several_workers_the_histogram_is_summed_and_no_exemplar_is_claimed(
    start_gateway: GatewayFactory, client: httpx.Client
) -> None:
    # prometheus-client's multiprocess files keep no exemplars: the gateway does not pretend otherwise.
    gateway = start_gateway(sample_rate=1.0, workers=2)
    for _ in range(4):
        assert client.get(f"{gateway.url}/workers").status_code == 200
    scrape = httpx.get(f"{gateway.admin_url}/metrics", headers={"Accept": OPENMETRICS}, timeout=5)
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert not [line for line in scrape.text.splitlines() if EXEMPLAR_LINE.match(line)]
    labels = 'decision="sampled",grpc_status="",method="GET",route="default",status_class="2xx"'
    count = f"gateway_http_request_duration_seconds_count{{{labels}}}"
    assert f"{count} 4.0" in scrape.text, scrape.text
