"""Sampling and spans, seen from outside: what the upstream got, what the client got, what the collector holds."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import (
    HEX_SPAN_ID,
    HEX_TRACE_ID,
    SERVICE_NAME,
    Collector,
    Echo,
    GatewayFactory,
    Upstream,
    by_kind,
    padded,
    spans_by_trace,
    traceresponse,
)

pytestmark = pytest.mark.e2e

QUIET_PERIOD = 0.6  # six flush intervals of the test gateways: long enough for a span that was coming to arrive
RANDOM_BITS = 2**56 - 1


@pytest.mark.parametrize("trace_id_128bit", [True, False], ids=["128bit", "64bit"])
def test_rate_one_reports_a_complete_two_span_trace_per_request(
    start_gateway: GatewayFactory,
    collector: Collector,
    upstream: Upstream,
    client: httpx.Client,
    trace_id_128bit: bool,
) -> None:
    gateway = start_gateway(sample_rate=1.0, trace_id_128bit=trace_id_128bit)
    sent = []
    for index in range(8):
        method = ("GET", "POST", "PUT", "DELETE")[index % 4]
        path = f"/shop/items/{index}"
        response = client.request(method, f"{gateway.url}{path}?page=2", content=b"x" * index)
        echo = Echo.of(response)
        assert (echo.method, echo.path, echo.query, echo.body_length) == (method, path, "page=2", index)
        sent.append((method, path, echo, traceresponse(response)))

    spans = collector.wait_for_spans(2 * len(sent))
    time.sleep(QUIET_PERIOD)
    spans = collector.spans()
    traces = spans_by_trace(spans)
    assert len(spans) == 2 * len(sent) and len(traces) == len(sent), spans

    for method, path, echo, (response_trace_id, response_span_id, response_sampled) in sent:
        trace_id = echo.one("x-b3-traceid")
        assert len(trace_id) == (32 if trace_id_128bit else 16) and HEX_TRACE_ID.fullmatch(trace_id)
        client_span_id, server_span_id = echo.one("x-b3-spanid"), echo.one("x-b3-parentspanid")
        assert HEX_SPAN_ID.fullmatch(client_span_id) and HEX_SPAN_ID.fullmatch(server_span_id)
        assert echo.one("x-b3-sampled") == "1"
        assert not echo.has("x-b3-flags")
        assert (response_trace_id, response_span_id, response_sampled) == (padded(trace_id), server_span_id, True)

        spans_of_trace = collector.trace(trace_id)
        assert sorted(s["id"] for s in spans_of_trace) == sorted(s["id"] for s in traces[trace_id])
        kinds = by_kind(spans_of_trace)
        server, client_span = kinds["SERVER"], kinds["CLIENT"]
        assert server["id"] == server_span_id and "parentId" not in server
        assert client_span["id"] == client_span_id and client_span["parentId"] == server_span_id
        for span in (server, client_span):
            assert span["traceId"] == trace_id
            assert span["name"] == f"{method} {path}".lower()
            assert span["localEndpoint"]["serviceName"] == SERVICE_NAME
            assert span["timestamp"] > 0 and span["duration"] >= 1
            tags = span["tags"]
            assert (tags["http.method"], tags["http.path"], tags["http.status_code"]) == (method, path, "200")
            assert tags["http.host"].startswith("127.0.0.1")
            assert "error" not in tags
            assert not span.get("debug", False)
        assert server["remoteEndpoint"]["ipv4"] == "127.0.0.1"
        assert client_span["remoteEndpoint"]["ipv4"] == "127.0.0.1"
        assert client_span["remoteEndpoint"]["port"] == upstream.port
        # The call to the upstream happens inside the request the gateway served.
        assert server["timestamp"] <= client_span["timestamp"]
        assert client_span["timestamp"] + client_span["duration"] <= server["timestamp"] + server["duration"]

    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="sampled") == len(sent)
    assert metrics.value("gateway_requests_total", decision="not_sampled") == 0
    assert metrics.value("gateway_request_duration_seconds_count") == len(sent)


def test_rate_zero_reports_nothing_but_still_propagates_the_decision(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=0.0)
    trace_ids = set()
    for index in range(20):
        response = client.get(f"{gateway.url}/unsampled/{index}")
        echo = Echo.of(response)
        trace_id = echo.one("x-b3-traceid")
        assert HEX_TRACE_ID.fullmatch(trace_id)
        assert HEX_SPAN_ID.fullmatch(echo.one("x-b3-spanid"))
        assert HEX_SPAN_ID.fullmatch(echo.one("x-b3-parentspanid"))
        assert echo.one("x-b3-sampled") == "0"
        assert traceresponse(response) == (padded(trace_id), echo.one("x-b3-parentspanid"), False)
        trace_ids.add(trace_id)
    assert len(trace_ids) == 20, "every request starts its own trace"

    time.sleep(QUIET_PERIOD)
    assert collector.spans() == []
    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="not_sampled") == 20
    assert metrics.value("gateway_requests_total", decision="sampled") == 0
    assert metrics.value("gateway_spans_reported_total") == 0
    assert metrics.value("gateway_span_queue_depth") == 0


def test_rate_0_3_samples_within_four_standard_deviations_and_reports_every_sampled_trace(
    start_gateway: GatewayFactory, collector: Collector
) -> None:
    rate, requests = 0.3, 2000
    gateway = start_gateway(sample_rate=rate)

    def one(index: int) -> tuple[str, bool]:
        response = http.get(f"{gateway.url}/fraction/{index}")
        echo = Echo.of(response)
        trace_id, upstream_sampled = echo.one("x-b3-traceid"), echo.one("x-b3-sampled")
        response_trace_id, _, response_sampled = traceresponse(response)
        assert upstream_sampled in ("0", "1") and response_trace_id == padded(trace_id)
        assert response_sampled == (upstream_sampled == "1"), "client and upstream were told different decisions"
        return trace_id, response_sampled

    with httpx.Client(timeout=15, limits=httpx.Limits(max_connections=8)) as http, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(requests)))

    sampled = {trace_id for trace_id, is_sampled in results if is_sampled}
    assert len({trace_id for trace_id, _ in results}) == requests
    expected, deviation = requests * rate, math.sqrt(requests * rate * (1 - rate))
    assert abs(len(sampled) - expected) <= 4 * deviation, f"{len(sampled)} sampled of {requests} at rate {rate}"
    # Consistent probability sampling (OpenTelemetry's threshold rule): the decision is a function of the trace
    # id's rightmost 56 bits, so every worker and replica agrees on it.
    threshold = 2**56 - round(rate * 2**56)
    disagree = [t for t, is_sampled in results if (int(t, 16) & RANDOM_BITS >= threshold) != is_sampled]
    assert disagree == [], f"{len(disagree)} decisions differ from the threshold rule, e.g. {disagree[:3]}"

    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="sampled") == len(sampled)
    assert metrics.value("gateway_requests_total", decision="not_sampled") == requests - len(sampled)

    collector.wait_for_spans(2 * len(sampled), timeout=20)
    time.sleep(QUIET_PERIOD)
    traces = spans_by_trace(collector.spans())
    assert set(traces) == sampled, (
        f"missing {len(sampled - set(traces))} sampled traces, {len(set(traces) - sampled)} unsampled reported"
    )
    incomplete = {t: spans for t, spans in traces.items() if sorted(s["kind"] for s in spans) != ["CLIENT", "SERVER"]}
    assert incomplete == {}, f"{len(incomplete)} traces are not one SERVER + one CLIENT span"
