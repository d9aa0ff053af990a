"""W3C trace context with real processes: `tracecontext` emitted beside B3 with the same ids and decision, and a
trusted client's `traceparent` (and `tracestate`) read and continued."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import HEX_SPAN_ID, Collector, Echo, GatewayFactory, by_kind, padded, traceresponse

pytestmark = pytest.mark.e2e

ALL_FORMATS = "b3multi,b3,tracecontext"
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
QUIET_PERIOD = 0.6


def assert_formats_agree(echo: Echo, sampled: bool, random: bool = True) -> tuple[str, str, str]:
    """Every format the upstream got carries the same trace id, span id, parent and decision; returns them.

    ``random``: the gateway made the trace id, so traceparent has Level 2's Random flag (02).
    """
    trace_id, span_id = echo.one("x-b3-traceid"), echo.one("x-b3-spanid")
    parent_id = echo.one("x-b3-parentspanid")
    flag = "1" if sampled else "0"
    assert echo.one("x-b3-sampled") == flag
    assert echo.one("b3") == f"{trace_id}-{span_id}-{flag}-{parent_id}"
    assert echo.one("traceparent") == f"00-{padded(trace_id)}-{span_id}-0{int(flag) | (2 if random else 0)}"
    return trace_id, span_id, parent_id


def test_tracecontext_is_emitted_with_the_ids_and_decision_of_b3(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    for rate, sampled in ((1.0, True), (0.0, False)):
        gateway = start_gateway(sample_rate=rate, propagation=ALL_FORMATS)
        response = client.get(f"{gateway.url}/fresh")
        echo = Echo.of(response)
        trace_id, _, server_span_id = assert_formats_agree(echo, sampled)
        if sampled:
            assert echo.all("tracestate") == ["ot=th:0"], "a sampled new trace says its sampling threshold"
        else:
            assert not echo.has("tracestate"), "an unsampled new trace has no state to pass on"
        assert traceresponse(response) == (padded(trace_id), server_span_id, sampled)


def test_a_trusted_clients_traceparent_is_read_and_continued_in_every_format(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=0.0, propagation=ALL_FORMATS, trusted_cidrs="127.0.0.0/8")

    response = client.get(
        f"{gateway.url}/joined", headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": TRACESTATE}
    )
    echo = Echo.of(response)
    trace_id, client_span_id, server_span_id = assert_formats_agree(echo, sampled=True, random=False)
    assert trace_id == TRACE
    assert HEX_SPAN_ID.fullmatch(client_span_id) and len({client_span_id, server_span_id, PARENT}) == 3
    assert echo.one("tracestate") == TRACESTATE
    assert traceresponse(response) == (TRACE, server_span_id, True)

    collector.wait_for_spans(2)
    time.sleep(QUIET_PERIOD)
    spans = by_kind(collector.trace(TRACE))
    assert (spans["SERVER"]["id"], spans["SERVER"]["parentId"]) == (server_span_id, PARENT)
    assert (spans["CLIENT"]["id"], spans["CLIENT"]["parentId"]) == (client_span_id, server_span_id)
    assert spans["SERVER"]["tags"]["w3c.tracestate"] == TRACESTATE, "the parent's tracestate, as it came"

    # The client's unsampled decision holds too, in every format, and reports nothing.
    unsampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    echo = Echo.of(client.get(f"{gateway.url}/unsampled", headers={"traceparent": f"00-{unsampled_trace}-{PARENT}-00"}))
    assert assert_formats_agree(echo, sampled=False, random=False)[0] == unsampled_trace
    time.sleep(QUIET_PERIOD)
    assert collector.trace(unsampled_trace) == []
    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", reason="trusted_parent") == 2
    assert metrics.value("gateway_trace_headers_ignored_total") == 0


def test_an_untrusted_clients_traceparent_and_tracestate_go_no_further(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=1.0, propagation=ALL_FORMATS)
    echo = Echo.of(
        client.get(f"{gateway.url}/forged", headers={"traceparent": f"00-{TRACE}-{PARENT}-00", "tracestate": "a=b"})
    )
    trace_id, _, _ = assert_formats_agree(echo, sampled=True)
    assert padded(trace_id) != TRACE
    assert echo.all("tracestate") == ["ot=th:0"], "the gateway's own state only, none of the client's"
    assert gateway.metrics().value("gateway_trace_headers_ignored_total", reason="untrusted") == 1


def test_a_bad_tracestate_from_a_trusted_client_is_dropped_and_counted_not_the_trace(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(sample_rate=0.0, propagation=ALL_FORMATS, trust_incoming_trace=True)
    echo = Echo.of(
        client.get(f"{gateway.url}/bad", headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "a=1,a=2"})
    )
    assert assert_formats_agree(echo, sampled=True, random=False)[0] == TRACE
    assert not echo.has("tracestate")
    assert gateway.metrics().value("gateway_trace_headers_ignored_total", reason="malformed_tracestate") == 1
