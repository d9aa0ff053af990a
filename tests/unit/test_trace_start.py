"""TraceStarter: the start every flow gives a routed request, without sockets (the flows are tested end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.routes import Route, parse_upstream
from gateway.routing import ActiveRoute
from gateway.settings import Settings
from gateway.spans import W3C_TRACESTATE
from gateway.trace_start import TraceStarter
from tests.support import FixedIds
from tests.unit.test_routing import routing_of

TRACE_ID, SERVER_SPAN_ID, CLIENT_SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, 0x53995C3F42CD8AD8
PARENT_TRACE = "463ac35c9f6413ad48485a3953bb6124"
PARENT_SPAN = "a2fb4a1d1a96d312"
CLIENT = "203.0.113.7"


def starter(metrics: Metrics, room: bool = True, **settings: Any) -> TraceStarter:
    ids = FixedIds([TRACE_ID], [SERVER_SPAN_ID, CLIENT_SPAN_ID])
    return TraceStarter(Settings(upstream_url="http://web-svc:8080", **settings), metrics, ids, lambda: room, True)


def route(rate: float = 1.0) -> ActiveRoute:
    active = routing_of(Route(name="web", upstream=parse_upstream("http://web-svc:8080"), sample_rate=rate)).match(
        "", "/"
    )
    assert active is not None
    return active


def ignored(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_trace_headers_ignored_total", {"reason": reason})


def test_a_new_trace_goes_upstream_in_b3_with_the_gateways_ids_and_room_reserved():
    metrics = Metrics()
    begun = starter(metrics).start(route(), [(b"host", b"shop.example")], CLIENT, "https")
    assert (begun.trace_id, begun.server_span_id, begun.client_span_id, begun.parent_id) == (
        TRACE_ID,
        SERVER_SPAN_ID,
        CLIENT_SPAN_ID,
        None,
    )
    assert begun.decision.sampled and begun.decision.reserved
    outgoing = dict(begun.outgoing)
    assert begun.outgoing[0] == (b"host", b"web-svc:8080")
    assert outgoing[b"x-forwarded-proto"] == b"https"
    assert outgoing[b"x-b3-traceid"] == f"{TRACE_ID:032x}".encode()
    assert outgoing[b"x-b3-spanid"] == f"{CLIENT_SPAN_ID:016x}".encode()
    assert outgoing[b"x-b3-parentspanid"] == f"{SERVER_SPAN_ID:016x}".encode()
    assert outgoing[b"x-b3-sampled"] == b"1"
    assert begun.host == "shop.example"
    assert begun.trace_response == [(b"traceresponse", f"00-{TRACE_ID:032x}-{SERVER_SPAN_ID:016x}-01".encode())]


def test_an_untrusted_clients_trace_headers_are_dropped_and_counted():
    metrics = Metrics()
    forged = [(b"x-b3-traceid", PARENT_TRACE.encode()), (b"x-b3-spanid", PARENT_SPAN.encode())]
    begun = starter(metrics).start(route(), forged, CLIENT, "http")
    assert (begun.trace_id, begun.parent_id) == (TRACE_ID, None)
    assert dict(begun.outgoing)[b"x-b3-traceid"] == f"{TRACE_ID:032x}".encode()
    assert ignored(metrics, "untrusted") == 1.0


def test_a_trusted_clients_decision_is_honoured_without_reserving_room():
    metrics = Metrics()
    sent = [(b"x-b3-traceid", PARENT_TRACE.encode()), (b"x-b3-spanid", PARENT_SPAN.encode()), (b"x-b3-sampled", b"1")]
    begun = starter(metrics, trust_incoming_trace=True).start(route(rate=0.0), sent, CLIENT, "http")
    assert (begun.trace_id, begun.parent_id) == (int(PARENT_TRACE, 16), int(PARENT_SPAN, 16))
    assert (begun.decision.sampled, begun.decision.reason, begun.decision.reserved) == (True, "trusted_parent", False)
    assert ignored(metrics, "untrusted") == 0.0


@pytest.mark.parametrize(
    ("propagation", "expected"),
    [("b3multi", set()), ("b3multi,b3", {b"b3"}), ("b3multi,tracecontext", {b"traceparent", b"tracestate"})],
)
def test_the_configured_formats_are_added(propagation, expected):
    begun = starter(Metrics(), propagation=propagation).start(route(), [], CLIENT, "http")
    assert {name for name, _ in begun.outgoing} & {b"b3", b"traceparent", b"tracestate"} == expected


def test_no_room_in_the_reporter_leaves_the_trace_unsampled():
    begun = starter(Metrics(), room=False).start(route(), [], CLIENT, "http")
    assert (begun.decision.sampled, begun.decision.reason, begun.decision.reserved) == (False, "queue_full", False)
    assert dict(begun.outgoing)[b"x-b3-sampled"] == b"0"


def test_the_spans_carry_the_traces_tracestate_after_the_given_tags():
    begun = starter(Metrics(), propagation="b3multi,tracecontext").start(route(), [], CLIENT, "http")
    exchange = begun.exchange(
        "GET /", "GET", "/", 200, 200, None, CLIENT, 4000, route().upstream, 1.0, 0.5, 1.1, 0.3, (("team", "web"),)
    )
    assert begun.tracestate is not None
    assert exchange.tags == (("team", "web"), (W3C_TRACESTATE, begun.tracestate))
    assert (exchange.trace_id, exchange.server_span_id, exchange.client_span_id) == (
        TRACE_ID,
        SERVER_SPAN_ID,
        CLIENT_SPAN_ID,
    )


def test_an_unrouted_request_still_gets_a_traceresponse_unless_turned_off():
    assert starter(Metrics()).unrouted_trace_response()[0][1].endswith(b"-00")
    assert starter(Metrics(), trace_response_header=False).unrouted_trace_response() == []
