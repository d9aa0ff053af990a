"""Trace headers sent by clients: ignored unless the client is trusted, and never passed upstream as they came."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import (
    HEX_SPAN_ID,
    Collector,
    Echo,
    GatewayFactory,
    by_kind,
    padded,
    traceresponse,
)

pytestmark = pytest.mark.e2e

FORGED_TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"
FORGED_SPAN_ID = "a2fb4a1d1a96d312"
FORGED_PARENT_ID = "0020000000000001"
FORGED_TRACESTATE = "forged=yes"
CLIENT_TRACE_HEADERS = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
QUIET_PERIOD = 0.6


def forged_headers(sampled: str) -> dict[str, str]:
    flag = "01" if sampled == "1" else "00"
    return {
        "X-B3-TraceId": FORGED_TRACE_ID,
        "X-B3-SpanId": FORGED_SPAN_ID,
        "X-B3-ParentSpanId": FORGED_PARENT_ID,
        "X-B3-Sampled": sampled,
        "b3": f"{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-{sampled}-{FORGED_PARENT_ID}",
        "traceparent": f"00-{FORGED_TRACE_ID}-{FORGED_SPAN_ID}-{flag}",
        "tracestate": FORGED_TRACESTATE,
    }


@pytest.mark.parametrize(
    "untrusted",
    [{}, {"trust_incoming_trace": False, "trusted_cidrs": "10.0.0.0/8,192.168.0.0/16"}],
    ids=["default", "client-outside-trusted-cidrs"],
)
def test_forged_headers_are_ignored_and_not_passed_upstream(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client, untrusted: dict[str, object]
) -> None:
    unsampled = start_gateway(sample_rate=0.0, **untrusted)
    sampled = start_gateway(sample_rate=1.0, propagation="b3multi,b3,tracecontext", **untrusted)

    # At rate 0.0 the client's sampled=1 and debug flag must not buy it a trace.
    response = client.get(f"{unsampled.url}/forged", headers={**forged_headers("1"), "X-B3-Flags": "1"})
    echo = Echo.of(response)
    assert_fresh_context(echo, response, sampled="0")
    assert not echo.has("x-b3-flags")
    for name in ("b3", "traceparent", "tracestate"):
        assert not echo.has(name), f"the client's {name} reached the upstream: {echo.all(name)}"

    # At rate 1.0 the client's sampled=0 does not stop the trace, and the trace is the gateway's own.
    response = client.get(f"{sampled.url}/forged", headers=forged_headers("0"))
    echo = Echo.of(response)
    trace_id, client_span_id, server_span_id = assert_fresh_context(echo, response, sampled="1")
    # With every format on, the upstream gets the gateway's context in each of them, not the client's.
    assert echo.one("b3") in (
        f"{trace_id}-{client_span_id}-1-{server_span_id}",
        f"{trace_id}-{client_span_id}-1",
    )
    # 03: sampled, and the Random flag, since the gateway made the id (W3C Trace Context Level 2).
    assert echo.one("traceparent") == f"00-{padded(trace_id)}-{client_span_id}-03"
    assert FORGED_TRACESTATE not in echo.all("tracestate")

    spans = collector.wait_for_spans(2)
    time.sleep(QUIET_PERIOD)
    spans = collector.spans()
    assert {span["traceId"] for span in spans} == {trace_id}
    server = by_kind(spans)["SERVER"]
    assert "parentId" not in server, "an untrusted client's span became the parent"

    for gateway in (unsampled, sampled):
        metrics = gateway.metrics()
        assert metrics.value("gateway_trace_headers_ignored_total", reason="untrusted") == 1, metrics.text


@pytest.mark.parametrize(
    "trust",
    [
        {"trust_incoming_trace": True},
        {"trusted_cidrs": "127.0.0.0/8"},
        {"trusted_cidrs": "10.0.0.0/8, ::1/128, 127.0.0.1/32"},
    ],
    ids=["trust-incoming-trace", "trusted-cidr", "trusted-cidr-list"],
)
def test_trusted_clients_context_and_decision_are_honoured(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client, trust: dict[str, object]
) -> None:
    gateway = start_gateway(sample_rate=0.0, **trust)

    # B3 multi, sampled=1: the trace continues under the client's span, although the rate is 0.0.
    response = client.get(
        f"{gateway.url}/trusted",
        headers={"X-B3-TraceId": FORGED_TRACE_ID, "X-B3-SpanId": FORGED_SPAN_ID, "X-B3-Sampled": "1"},
    )
    echo = Echo.of(response)
    server_span_id = assert_continued(echo, response, FORGED_TRACE_ID, FORGED_SPAN_ID)
    assert not echo.has("x-b3-flags")

    # Debug (X-B3-Flags: 1, no X-B3-Sampled): sampled, and the mesh sees both X-B3-Sampled: 1 and the flag.
    debug_trace_id, debug_span_id = "5af7183fb1d4cf5f5af7183fb1d4cf5f", "6b221d5bc9e6496c"
    response = client.get(
        f"{gateway.url}/debug",
        headers={"X-B3-TraceId": debug_trace_id, "X-B3-SpanId": debug_span_id, "X-B3-Flags": "1"},
    )
    debug_echo = Echo.of(response)
    debug_server_span_id = assert_continued(debug_echo, response, debug_trace_id, debug_span_id)
    assert debug_echo.one("x-b3-flags") == "1"

    # The single b3 header carries the same context.
    single_trace_id, single_span_id = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
    response = client.get(f"{gateway.url}/single", headers={"b3": f"{single_trace_id}-{single_span_id}-1"})
    single_echo = Echo.of(response)
    single_server_span_id = assert_continued(single_echo, response, single_trace_id, single_span_id)

    collector.wait_for_spans(6)
    time.sleep(QUIET_PERIOD)
    assert len(collector.spans()) == 6
    for trace_id, parent_id, server_id, upstream_echo in (
        (FORGED_TRACE_ID, FORGED_SPAN_ID, server_span_id, echo),
        (debug_trace_id, debug_span_id, debug_server_span_id, debug_echo),
        (single_trace_id, single_span_id, single_server_span_id, single_echo),
    ):
        kinds = by_kind(collector.trace(trace_id))
        server, client_span = kinds["SERVER"], kinds["CLIENT"]
        assert (server["id"], server.get("parentId")) == (server_id, parent_id)
        assert (client_span["id"], client_span["parentId"]) == (upstream_echo.one("x-b3-spanid"), server_id)
    debug_spans = by_kind(collector.trace(debug_trace_id))
    assert all(span.get("debug") is True for span in debug_spans.values()), debug_spans
    assert gateway.metrics().value("gateway_trace_headers_ignored_total", reason="untrusted") == 0


def test_a_trusted_clients_unsampled_decision_is_honoured(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=1.0, trust_incoming_trace=True)
    response = client.get(
        f"{gateway.url}/not-sampled",
        headers={"X-B3-TraceId": FORGED_TRACE_ID, "X-B3-SpanId": FORGED_SPAN_ID, "X-B3-Sampled": "0"},
    )
    echo = Echo.of(response)
    assert echo.one("x-b3-traceid") == FORGED_TRACE_ID
    assert echo.one("x-b3-sampled") == "0"
    assert traceresponse(response)[2] is False
    time.sleep(QUIET_PERIOD)
    assert collector.spans() == []


def assert_fresh_context(echo: Echo, response: httpx.Response, sampled: str) -> tuple[str, str, str]:
    """The upstream got one new context (no client header came through) and the client was told the same."""
    for name in CLIENT_TRACE_HEADERS[:4]:
        echo.one(name)
    trace_id, client_span_id, server_span_id = (
        echo.one("x-b3-traceid"),
        echo.one("x-b3-spanid"),
        echo.one("x-b3-parentspanid"),
    )
    assert FORGED_TRACE_ID[16:] not in trace_id, f"the client's trace id was kept: {trace_id}"
    assert FORGED_SPAN_ID not in (client_span_id, server_span_id)
    assert FORGED_PARENT_ID not in (client_span_id, server_span_id)
    assert echo.one("x-b3-sampled") == sampled
    assert traceresponse(response) == (padded(trace_id), server_span_id, sampled == "1")
    return trace_id, client_span_id, server_span_id


def assert_continued(echo: Echo, response: httpx.Response, trace_id: str, parent_span_id: str) -> str:
    """The upstream's context continues the client's trace, sampled; returns the gateway's SERVER span id."""
    assert echo.one("x-b3-traceid") == trace_id
    client_span_id, server_span_id = echo.one("x-b3-spanid"), echo.one("x-b3-parentspanid")
    assert HEX_SPAN_ID.fullmatch(client_span_id) and HEX_SPAN_ID.fullmatch(server_span_id)
    assert len({client_span_id, server_span_id, parent_span_id}) == 3, "the gateway's spans need ids of their own"
    assert echo.one("x-b3-sampled") == "1"
    assert traceresponse(response) == (padded(trace_id), server_span_id, True)
    # A client's b3 or traceparent may only go upstream re-emitted with the gateway's own span.
    for b3 in echo.all("b3"):
        assert b3.startswith(f"{trace_id}-{client_span_id}-"), f"stale b3 header upstream: {b3}"
    for traceparent in echo.all("traceparent"):
        assert traceparent.startswith(f"00-{padded(trace_id)}-{client_span_id}-"), traceparent
    return server_span_id
