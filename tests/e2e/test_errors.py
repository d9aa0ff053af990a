"""Upstream failures: 502 when unreachable, 504 when slow, spans tagged `error`; a vanished client cancels the call."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, GatewayFactory, Upstream, by_kind, traceresponse
from tests.support import free_port

pytestmark = pytest.mark.e2e

MAX_ERROR_BODY = 512


def test_unreachable_upstream_is_a_502_with_error_tagged_spans(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    closed_port = free_port()
    gateway = start_gateway(upstream_url=f"http://127.0.0.1:{closed_port}")

    response = client.get(f"{gateway.url}/nowhere")

    assert response.status_code == 502
    assert_plain_and_short(response)
    trace_id, server_span_id, sampled = traceresponse(response)
    assert sampled
    spans = by_kind(collector.wait_for_spans(2))
    assert spans["SERVER"]["id"] == server_span_id and spans["SERVER"]["traceId"].rjust(32, "0") == trace_id
    assert spans["SERVER"]["tags"]["http.status_code"] == "502"
    for span in spans.values():
        assert span["tags"].get("error"), f"{span['kind']} span has no error tag: {span['tags']}"
    assert spans["CLIENT"]["remoteEndpoint"]["port"] == closed_port
    metrics = gateway.metrics()
    assert metrics.value("gateway_upstream_errors_total", kind="unreachable") == 1
    assert metrics.value("gateway_upstream_errors_total", kind="timeout") == 0


def test_upstream_slower_than_the_timeout_is_a_504_and_the_upstream_call_is_abandoned(
    start_gateway: GatewayFactory, collector: Collector, upstream: Upstream, client: httpx.Client
) -> None:
    gateway = start_gateway(upstream_timeout=0.5)
    token = uuid.uuid4().hex

    response = client.get(f"{gateway.url}/sleep", params={"seconds": 4, "token": token})

    # No stopwatch: a 504 (not the upstream's 200) and the upstream call abandoned before it completed (below) show
    # that the gateway gave up at its timeout rather than waiting the upstream's 4 s.
    assert response.status_code == 504
    assert_plain_and_short(response)
    assert traceresponse(response)[2]
    spans = by_kind(collector.wait_for_spans(2))
    assert spans["SERVER"]["tags"]["http.status_code"] == "504"
    for span in spans.values():
        assert span["tags"].get("error"), f"{span['kind']} span has no error tag: {span['tags']}"
    assert gateway.metrics().value("gateway_upstream_errors_total", kind="timeout") == 1
    events = upstream.wait_for_event(token, "disconnected", timeout=15)
    assert events == ["started", "disconnected"], "the gateway kept the upstream request open after its 504"


@pytest.mark.parametrize("status", [404, 503])
def test_upstream_error_statuses_pass_through(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client, status: int
) -> None:
    gateway = start_gateway()
    response = client.get(f"{gateway.url}/status/{status}")
    assert response.status_code == status
    assert traceresponse(response)[2]
    spans = by_kind(collector.wait_for_spans(2))
    assert spans["SERVER"]["tags"]["http.status_code"] == str(status)
    assert gateway.metrics().value("gateway_upstream_errors_total") == 0


def test_client_gone_mid_request_cancels_the_upstream_call(
    start_gateway: GatewayFactory, upstream: Upstream, client: httpx.Client
) -> None:
    gateway = start_gateway()
    token = uuid.uuid4().hex
    request = f"GET /sleep?seconds=5&token={token} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n"

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request.encode())
        assert upstream.wait_for_event(token, "started") == ["started"], "the request never reached the upstream"

    # Cancelled, not finished: "completed" would follow "started" had the gateway let the upstream's 5 s run out.
    events = upstream.wait_for_event(token, "disconnected", timeout=15)
    assert events == ["started", "disconnected"], f"upstream saw {events} after the client left"
    # The gateway still serves after abandoning the call.
    assert Echo.of(client.get(f"{gateway.url}/after")).path == "/after"


def assert_plain_and_short(response: httpx.Response) -> None:
    assert response.headers.get("content-type", "").startswith("text/plain"), response.headers
    assert 0 < len(response.content) <= MAX_ERROR_BODY, response.content
    assert b"Traceback" not in response.content
