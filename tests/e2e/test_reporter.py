"""Span export never in the request's way: a dead or slow collector, retries, and the flush on SIGTERM."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import (
    Collector,
    Echo,
    Gateway,
    GatewayFactory,
    Metrics,
    Upstream,
    by_kind,
    spans_by_trace,
    traceresponse,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e

REQUESTS = 200
SLOW_COLLECTOR_DELAY = 8.0
# The one time bound here, because the promise is about time: the collector never slows a request. It is generous
# (a request takes milliseconds) and still well below what a request waiting on the collector would take: the slow
# collector's SLOW_COLLECTOR_DELAY, or a dead one's retries (the default 10 attempts pause over 10 s in all).
REQUEST_BOUND = 5.0


def test_collector_down_does_not_slow_requests_and_drops_are_counted(
    start_gateway: GatewayFactory, client: httpx.Client
) -> None:
    gateway = start_gateway(
        zipkin_url=f"http://127.0.0.1:{free_port()}/api/v2/spans",
        reporter_queue_size=20,
        reporter_batch_size=10,
        shutdown_timeout=2,
    )
    slowest = send_timed(client, gateway, REQUESTS)
    assert slowest < REQUEST_BOUND, f"a request took {slowest:.2f}s while the collector was down"

    metrics = metrics_once(gateway, lambda m: losses(m) > 0, timeout=15)
    assert losses(metrics) > 0, f"nothing counted the spans that could not be delivered:\n{metrics.text}"
    assert metrics.value("gateway_spans_reported_total") == 0
    assert metrics.value("gateway_span_queue_depth") <= 20
    assert metrics.value("gateway_requests_total") == REQUESTS


def test_slow_collector_does_not_slow_requests_and_sampled_traces_arrive_whole(
    start_gateway: GatewayFactory, collector_factory: Callable[..., Collector], client: httpx.Client
) -> None:
    slow = collector_factory("--response-delay", str(SLOW_COLLECTOR_DELAY))
    gateway = start_gateway(
        zipkin_url=slow.spans_url,
        reporter_queue_size=20,
        reporter_batch_size=100,
        reporter_timeout=2 * SLOW_COLLECTOR_DELAY,
    )
    sampled = set()
    slowest = 0.0
    for index in range(REQUESTS):
        started = time.monotonic()
        response = client.get(f"{gateway.url}/slow-collector/{index}")
        slowest = max(slowest, time.monotonic() - started)
        trace_id = Echo.of(response).one("x-b3-traceid")
        if traceresponse(response)[2]:
            sampled.add(trace_id)
    assert slowest < REQUEST_BOUND, f"a request took {slowest:.2f}s behind a slow collector"

    metrics = gateway.metrics()
    assert losses(metrics) > 0, f"a full span queue was not counted:\n{metrics.text}"
    # Never partial: what was sampled is delivered whole, once the slow collector catches up.
    slow.wait_for_spans(2 * len(sampled), timeout=4 * SLOW_COLLECTOR_DELAY)
    traces = spans_by_trace(slow.spans())
    assert set(traces) == sampled
    assert all(sorted(s["kind"] for s in spans) == ["CLIENT", "SERVER"] for spans in traces.values())


def test_failed_exports_are_retried_without_duplicates(
    start_gateway: GatewayFactory, collector_factory: Callable[..., Collector], client: httpx.Client
) -> None:
    failing = collector_factory("--fail-first", "2")
    gateway = start_gateway(zipkin_url=failing.spans_url)
    trace_ids = {Echo.of(client.get(f"{gateway.url}/retried/{i}")).one("x-b3-traceid") for i in range(3)}

    spans = failing.wait_for_spans(6, timeout=15)
    assert set(spans_by_trace(spans)) == trace_ids
    stats = failing.stats()
    assert stats["requestsFailedOnPurpose"] == 2
    assert (stats["spans"], stats["spansDuplicate"]) == (6, 0)
    metrics = metrics_once(gateway, lambda m: m.value("gateway_spans_reported_total") == 6, timeout=5)
    assert metrics.value("gateway_spans_reported_total") == 6
    assert metrics.value("gateway_spans_dropped_total") == 0


def test_sigterm_flushes_every_queued_span_before_exit(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway(reporter_flush_interval=30, reporter_batch_size=1000)
    trace_ids = {Echo.of(client.get(f"{gateway.url}/flush/{i}")).one("x-b3-traceid") for i in range(10)}
    time.sleep(0.5)
    assert collector.spans() == [], "spans left before SIGTERM, so this test cannot show the flush"
    queued = gateway.metrics().value("gateway_span_queue_depth")

    code = gateway.sigterm_and_wait()

    traces = spans_by_trace(collector.spans())
    assert set(traces) == trace_ids
    for spans in traces.values():
        by_kind(spans)
    assert code == 0, f"exit code {code} after SIGTERM:\n{gateway.output()}"
    assert queued == 20, "gateway_span_queue_depth did not show the 20 spans waiting for the flush"


def test_sigterm_lets_the_in_flight_request_finish(
    start_gateway: GatewayFactory, collector: Collector, upstream: Upstream
) -> None:
    gateway = start_gateway(shutdown_timeout=10)
    token = uuid.uuid4().hex
    with httpx.Client(timeout=15) as http, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(http.get, f"{gateway.url}/sleep", params={"seconds": 2, "token": token})
        assert upstream.wait_for_event(token, "started") == ["started"]
        gateway.process.terminate()
        refused = wait_until_refused(gateway, timeout=1.5)
        response = in_flight.result(timeout=15)

    assert refused, "the gateway still accepted new connections after SIGTERM"
    assert response.status_code == 200 and response.json() == {"slept": 2, "token": token}
    assert upstream.events(token) == ["started", "completed"]
    code = gateway.process.popen.wait(15)
    # The probes of wait_until_refused may have been served (and traced) before the listener closed.
    trace_id = traceresponse(response)[0]
    by_kind([span for span in collector.spans() if span["traceId"].rjust(32, "0") == trace_id])
    assert code == 0, f"exit code {code} after SIGTERM:\n{gateway.output()}"


def send_timed(client: httpx.Client, gateway: Gateway, count: int) -> float:
    """Send `count` requests one by one, each must succeed; the slowest one's seconds."""
    slowest = 0.0
    for index in range(count):
        started = time.monotonic()
        response = client.get(f"{gateway.url}/timed/{index}")
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 200
    return slowest


def losses(metrics: Metrics) -> float:
    """Spans dropped, plus requests left unsampled at rate 1.0 (the gateway stops sampling when its queue is full)."""
    return metrics.value("gateway_spans_dropped_total") + metrics.value(
        "gateway_requests_total", decision="not_sampled"
    )


def metrics_once(gateway: Gateway, condition: Callable[[Metrics], bool], timeout: float) -> Metrics:
    """The gateway's metrics once `condition` holds on them, or when `timeout` passed."""
    deadline = time.monotonic() + timeout
    metrics = gateway.metrics()
    while not condition(metrics) and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = gateway.metrics()
    return metrics


def wait_until_refused(gateway: Gateway, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{gateway.url}/after-sigterm", timeout=0.5)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False
