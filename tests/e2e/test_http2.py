"""HTTP/2 from clients through a real gateway process to the e2e upstream: each stream is one request with its own
sampling decision, trace and spans, exactly as an HTTP/1.1 request; the trust rules hold over h2 too."""

from __future__ import annotations

import asyncio
import json
import subprocess

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, GatewayFactory, by_kind, spans_by_trace, traceresponse
from tests.e2e.test_trust import FORGED_TRACE_ID, forged_headers

pytestmark = pytest.mark.e2e

STREAMS = 40


def test_curl_with_prior_knowledge_is_proxied_and_traced(start_gateway: GatewayFactory, collector: Collector) -> None:
    gateway = start_gateway(sample_rate=1.0)
    result = subprocess.run(
        ["curl", "-s", "-i", "--http2-prior-knowledge", f"{gateway.url}/h2c?x=1"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    echo = json.loads(body)
    assert (echo["path"], echo["query"]) == ("/h2c", "x=1")
    upstream_saw = dict((name, value) for name, value in echo["headers"])
    trace_id = upstream_saw["x-b3-traceid"]
    assert upstream_saw["x-b3-sampled"] == "1"
    assert f"traceresponse: 00-{trace_id}-".encode() in head
    spans = collector.wait_for_spans(2)
    assert set(by_kind(spans_by_trace(spans)[trace_id])) == {"SERVER", "CLIENT"}


def test_concurrent_streams_on_one_connection_each_get_their_own_trace_and_decision(
    start_gateway: GatewayFactory, collector: Collector
) -> None:
    gateway = start_gateway(sample_rate=0.5)

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as h2c:
            responses = await asyncio.gather(*(h2c.get(f"{gateway.url}/stream-{n}") for n in range(STREAMS)))
            # One connection carried them all.
            assert all(response.http_version == "HTTP/2" for response in responses)
            return list(responses)

    responses = asyncio.run(many())
    trace_ids, decisions = set(), []
    for response in responses:
        echo = Echo.of(response)
        trace_id, span_id, sampled = traceresponse(response)
        # The upstream saw the trace the client was told about, with the edge's decision.
        assert echo.one("x-b3-traceid") == trace_id
        assert echo.one("x-b3-parentspanid") == span_id
        assert echo.one("x-b3-sampled") == ("1" if sampled else "0")
        trace_ids.add(trace_id)
        decisions.append(sampled)
    assert len(trace_ids) == STREAMS
    # At 0.5, forty independent decisions all alike would be a one-in-a-trillion event.
    assert True in decisions and False in decisions
    spans = collector.wait_for_spans(2 * decisions.count(True))
    traces = spans_by_trace(spans)
    for response in responses:
        trace_id, _, sampled = traceresponse(response)
        if sampled:
            assert set(by_kind(traces[trace_id])) == {"SERVER", "CLIENT"}
        else:
            assert trace_id not in traces
    metrics = gateway.metrics()
    assert metrics.value("gateway_http2_streams_total") == STREAMS
    assert metrics.value("gateway_client_protocol_connections_total", protocol="h2") == 1


def test_forged_trace_headers_over_h2_from_an_untrusted_client_are_stripped(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(sample_rate=0.0, propagation="b3multi,b3,tracecontext")
    with httpx.Client(http1=False, http2=True, timeout=15) as h2c:
        response = h2c.get(f"{gateway.url}/forged", headers={**forged_headers("1"), "X-B3-Flags": "1"})
    assert response.http_version == "HTTP/2"
    echo = Echo.of(response)
    assert echo.one("x-b3-traceid") != FORGED_TRACE_ID
    assert echo.one("x-b3-sampled") == "0"
    assert not echo.has("x-b3-flags")
    assert FORGED_TRACE_ID not in json.dumps(echo.headers)
    assert traceresponse(response)[2] is False


@pytest.mark.parametrize(("path", "status"), [("/public/../admin", 400), ("/%2E%2E/admin", 400)])
def test_bad_targets_over_h2_are_refused_and_counted(start_gateway: GatewayFactory, path: str, status: int) -> None:
    gateway = start_gateway()
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", "--http2-prior-knowledge"]
        + [f"{gateway.url}{path}"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert int(result.stdout) == status
    assert gateway.metrics().value("gateway_client_errors_total", kind="bad_target") == 1
