"""A mixed mesh behind the gateway, with `GATEWAY_PROPAGATION=b3multi,tracecontext`: a B3-only service (reads the
X-B3-* headers only, as an older Zipkin/Brave app or linkerd2-proxy before W3C) and a W3C-only one (reads
`traceparent` only, as an OpenTelemetry SDK with its default propagator or today's linkerd2-proxy) each report their
SERVER span to the real collector, parented by what they read; every trace is one tree under the gateway's root."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, GatewayFactory, padded, traceresponse

pytestmark = pytest.mark.e2e

SERVICES = ("b3-only", "w3c-only")


def service_span(service: str, echo: Echo) -> dict[str, object]:
    """The SERVER span a service that understands only its own format reports for the request it got."""
    if service == "b3-only":
        trace_id, parent_id = echo.one("x-b3-traceid"), echo.one("x-b3-spanid")
        sampled = echo.one("x-b3-sampled") == "1"
    else:
        _, trace_id, parent_id, flags = echo.one("traceparent").split("-")
        sampled = bool(int(flags, 16) & 0x01)
    assert sampled
    return {
        "traceId": trace_id,
        "parentId": parent_id,
        "id": f"{random.getrandbits(64) | 1:016x}",
        "kind": "SERVER",
        "name": "get",
        "timestamp": int(time.time() * 1_000_000),
        "duration": 100,
        "localEndpoint": {"serviceName": service},
    }


def test_a_b3_only_and_a_w3c_only_service_join_the_gateways_trace(
    start_gateway: GatewayFactory, collector: Collector
) -> None:
    gateway = start_gateway(sample_rate=1.0, propagation="b3multi,tracecontext")
    roots: dict[str, str] = {}
    with httpx.Client(timeout=10) as client:
        for service in SERVICES:
            response = client.get(f"{gateway.url}/{service}/vote")
            trace_id, server_span_id, sampled = traceresponse(response)
            assert sampled
            roots[trace_id] = service
            span = service_span(service, Echo.of(response))
            client.post(collector.spans_url, json=[span]).raise_for_status()

    spans = collector.wait_for_spans(3 * len(SERVICES))
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(padded(str(span["traceId"])), []).append(span)
    assert set(by_trace) == set(roots), "each request is one trace, whichever format its service read"
    for trace_id, trace in by_trace.items():
        ids = {span["id"] for span in trace}
        orphans = [span for span in trace if span.get("parentId") is not None and span["parentId"] not in ids]
        roots_found = [span for span in trace if span.get("parentId") is None]
        assert orphans == [] and len(roots_found) == 1, f"{roots[trace_id]}: not one tree: {trace}"
        reported = next(span for span in trace if span["localEndpoint"]["serviceName"] == roots[trace_id])
        client_span = next(span for span in trace if span["kind"] == "CLIENT")
        assert reported["parentId"] == client_span["id"], "the service is the child of the gateway's CLIENT span"
