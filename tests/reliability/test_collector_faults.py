"""Collector faults: requests keep flowing, sampled traces wait in a bounded queue and arrive whole once the collector
is back, sampling stops while the queue is full, and every span never delivered is counted by its reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, Gateway, Metrics, by_kind, spans_by_trace, traceresponse
from tests.reliability.conftest import GatewayStarter, metric, settle, settled_metric
from tests.reliability.faults import CollectorFault, CollectorProxy
from tests.support import LOOPBACK, free_port, python_module, running_process

pytestmark = pytest.mark.e2e

QUEUE_SPANS = 40  # room for 20 traces
BATCH_SPANS = 10
# A POST to a silent collector hangs this long: long enough that the requests of a test all fit in it on a busy
# machine, and that a request waiting on it could not pass REQUEST_BOUND.
REPORTER_TIMEOUT = 10.0
REQUESTS = 40
# The one time bound here, because the promise is about time: a failing collector never slows a request. It is
# generous (a request takes milliseconds) and still at most half of what a request waiting on the collector would
# take: REPORTER_TIMEOUT behind a silent collector, SLOW_COLLECTOR_DELAY behind a slow one.
REQUEST_BOUND = 4.0
# With backoff (0.1 s doubling), a few seconds of outage cost a handful of POSTs, not one per flush interval.
MAX_POSTS_IN_OUTAGE = 12
SLOW_COLLECTOR_DELAY = 8.0


@dataclass(frozen=True)
class Sent:
    trace_id: str
    sampled: bool  # what the client was told (traceresponse) and the mesh was told (X-B3-Sampled)


def send(gateway: Gateway, count: int, label: str) -> list[Sent]:
    """`count` requests, one at a time: each succeeds within REQUEST_BOUND, and the mesh gets the client's decision."""
    sent = []
    with httpx.Client(timeout=15) as http:
        for index in range(count):
            started = time.monotonic()
            response = http.get(f"{gateway.url}/{label}/{index}")
            elapsed = time.monotonic() - started
            assert elapsed < REQUEST_BOUND, f"a request took {elapsed:.1f}s while the collector was failing"
            echo = Echo.of(response)
            trace_id, _, sampled = traceresponse(response)
            assert echo.one("x-b3-sampled") == ("1" if sampled else "0")
            sent.append(Sent(trace_id, sampled))
    return sent


def reporting_gateway(start_gateway: GatewayStarter, proxy: CollectorProxy, **overrides: object) -> Gateway:
    settings: dict[str, object] = {
        "zipkin_url": proxy.spans_url,
        "reporter_queue_size": QUEUE_SPANS,
        "reporter_batch_size": BATCH_SPANS,
        "reporter_flush_interval": 0.05,
        "reporter_timeout": REPORTER_TIMEOUT,
        **overrides,
    }
    return start_gateway(**settings)


def assert_delivered_whole(collector: Collector, sent: list[Sent], timeout: float = 30.0) -> None:
    """Every sampled trace is in the collector with both its spans, and no unsampled one has any."""
    sampled = {item.trace_id for item in sent if item.sampled}
    collector.wait_for_spans(2 * len(sampled), timeout=timeout)
    traces = {trace_id.rjust(32, "0"): spans for trace_id, spans in spans_by_trace(collector.spans()).items()}
    assert set(traces) == sampled, (
        f"missing: {len(sampled - set(traces))}, not sampled yet reported: {len(set(traces) - sampled)}"
    )
    for spans in traces.values():
        by_kind(spans)
    assert collector.stats()["spansDuplicate"] == 0


OUTAGES = {
    "refusing": (CollectorFault.REFUSE, 0),
    "accepting-but-silent": (CollectorFault.BLACKHOLE, 0),
    "reset-mid-post": (CollectorFault.RESET, 0),
    "503": (CollectorFault.STATUS, 503),
}


@pytest.mark.parametrize(("fault", "status"), OUTAGES.values(), ids=OUTAGES.keys())
def test_an_outage_suspends_sampling_and_the_sampled_traces_arrive_whole_when_the_collector_is_back(
    collector_proxy: CollectorProxy,
    collector: Collector,
    start_gateway: GatewayStarter,
    fault: CollectorFault,
    status: int,
) -> None:
    gateway = reporting_gateway(start_gateway, collector_proxy)
    collector_proxy.fail(fault, status=status)
    outage_started = time.monotonic()

    sent = send(gateway, REQUESTS, "outage")

    sampled = [item for item in sent if item.sampled]
    assert 0 < len(sampled) <= QUEUE_SPANS // 2, f"{len(sampled)} sampled with room for {QUEUE_SPANS // 2} traces"
    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="not_sampled", reason="queue_full") == REQUESTS - len(
        sampled
    )
    assert metrics.value("gateway_sampling_suspended") == 1
    assert metrics.value("gateway_span_queue_depth") <= QUEUE_SPANS
    assert metrics.value("gateway_spans_reported_total") == 0
    assert metrics.value("gateway_spans_dropped_total") == 0, "spans dropped during a short outage"
    # Give the reporter a moment to show it backs off rather than retrying at once, again and again. A real wait,
    # as backoff is about time; a busy machine can only make fewer POSTs in it, never more than the bound below.
    time.sleep(max(0.0, 2.0 - (time.monotonic() - outage_started)))
    attempts = len(collector_proxy.posts) if fault is not CollectorFault.REFUSE else None
    collector_proxy.heal()

    assert_delivered_whole(collector, sent)
    if attempts is not None:
        assert 1 <= attempts <= MAX_POSTS_IN_OUTAGE, f"{attempts} POSTs in a 2 s outage: no backoff"
    assert settled_metric(gateway, "gateway_span_queue_depth", lambda depth: depth == 0) == 0
    assert metric(gateway, "gateway_spans_reported_total") == 2 * len(sampled)
    assert metric(gateway, "gateway_spans_dropped_total") == 0
    assert metric(gateway, "gateway_span_batches_total", outcome="retried") >= 1
    # Room again: new traces are sampled.
    assert all(item.sampled for item in send(gateway, 3, "after"))
    assert metric(gateway, "gateway_sampling_suspended") == 0


def test_a_batch_the_collector_rejects_is_dropped_whole_counted_and_not_retried(
    collector_proxy: CollectorProxy, collector: Collector, start_gateway: GatewayStarter
) -> None:
    gateway = reporting_gateway(start_gateway, collector_proxy, reporter_queue_size=1000)
    collector_proxy.fail(CollectorFault.STATUS, status=400, times=1)

    sent = send(gateway, 20, "rejected")

    assert all(item.sampled for item in sent)
    rejected = {trace_id for post in collector_proxy.posts_under(CollectorFault.STATUS) for trace_id in post.trace_ids}
    assert rejected, "no batch reached the proxy while it was rejecting"
    delivered = [item for item in sent if item.trace_id not in rejected]
    assert_delivered_whole(collector, delivered)
    assert settled_metric(gateway, "gateway_spans_dropped_total", lambda dropped: dropped > 0) == 2 * len(rejected)
    assert metric(gateway, "gateway_spans_dropped_total", reason="rejected") == 2 * len(rejected)
    assert metric(gateway, "gateway_span_batches_total", outcome="failed") == 1
    # Sent once: a 400 is the collector's final answer.
    posted = [trace_id for post in collector_proxy.posts for trace_id in post.trace_ids]
    assert all(posted.count(trace_id) == 1 for trace_id in rejected)


def test_a_slow_collector_does_not_slow_requests_and_its_traces_arrive_whole(
    collector_factory: Callable[..., Collector], start_gateway: GatewayStarter
) -> None:
    slow = collector_factory("--response-delay", str(SLOW_COLLECTOR_DELAY))
    gateway = start_gateway(
        zipkin_url=slow.spans_url,
        reporter_queue_size=QUEUE_SPANS,
        reporter_batch_size=100,
        reporter_flush_interval=0.05,
        reporter_timeout=3 * SLOW_COLLECTOR_DELAY,
    )
    first = send(gateway, 5, "slow-first")
    # Its spans are stored on arrival; the collector answers SLOW_COLLECTOR_DELAY later.
    slow.wait_for_spans(10)
    # Requests go on while that POST waits: they fill the queue, then go unsampled, and none of them waits.
    sent = first + send(gateway, 2 * REQUESTS, "slow-more")

    assert any(not item.sampled for item in sent), "the queue never filled behind a slow collector"
    assert_delivered_whole(slow, sent, timeout=6 * SLOW_COLLECTOR_DELAY)
    assert metric(gateway, "gateway_spans_dropped_total") == 0


def test_spans_wait_for_a_collector_that_starts_late(
    start_gateway: GatewayStarter, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    gateway = start_gateway(
        zipkin_url=f"http://127.0.0.1:{port}/api/v2/spans", reporter_flush_interval=0.05, reporter_batch_size=10
    )
    sent = send(gateway, 10, "early")
    time.sleep(0.5)
    assert metric(gateway, "gateway_span_batches_total", outcome="retried") >= 1

    args = python_module("gateway_devtools.collector", "--host", LOOPBACK, "--port", str(port))
    log = tmp_path_factory.mktemp("late") / "collector.log"
    with running_process(args, log, wait_ports=[port]) as process:
        assert_delivered_whole(Collector(process, port), sent)
    assert metric(gateway, "gateway_spans_reported_total") == 20
    assert metric(gateway, "gateway_spans_dropped_total") == 0


def test_every_span_is_delivered_or_counted_by_reason(
    collector_proxy: CollectorProxy, start_gateway: GatewayStarter
) -> None:
    gateway = reporting_gateway(
        start_gateway,
        collector_proxy,
        reporter_max_attempts=2,
        trusted_cidrs="127.0.0.1/32",
        shutdown_timeout=1,
    )
    # A silent collector first: its first POST hangs for REPORTER_TIMEOUT, and the queue stays full until then.
    collector_proxy.fail(CollectorFault.BLACKHOLE)
    # New traces the gateway samples (room reserved), then traces a trusted client decided on (no reservation: the
    # full queue drops them, counted), then more new traces once the retries are given up.
    first = send(gateway, REQUESTS, "new")
    with httpx.Client(timeout=15) as http:
        for index in range(10):
            headers = {"X-B3-TraceId": f"{index + 1:032x}", "X-B3-SpanId": f"{index + 1:016x}", "X-B3-Sampled": "1"}
            assert http.get(f"{gateway.url}/trusted/{index}", headers=headers).status_code == 200
    assert metric(gateway, "gateway_span_batches_total") == 0, "the silent collector answered: nothing shows the drop"
    collector_proxy.fail(CollectorFault.STATUS, status=503)
    # Both attempts at each batch fail: the queue empties into retries_exhausted.
    drained = 3 * REPORTER_TIMEOUT  # the hanging POST times out, then each batch's two attempts fail at once
    assert settled_metric(gateway, "gateway_span_queue_depth", lambda depth: depth == 0, timeout=drained) == 0
    second = send(gateway, REQUESTS, "later")

    sampled = sum(item.sampled for item in first + second) + 10
    # The admin listener reads the counters from another thread while the reporter moves spans between them: a
    # snapshot may catch a batch half-moved, so the books must balance in some snapshot, not necessarily the first.
    snapshots: list[Metrics] = []
    balanced = settle(lambda: _balance(snapshots, gateway.metrics()) == 2 * sampled, timeout=5)
    metrics = snapshots[-1]
    assert balanced, f"{2 * sampled} spans sampled, accounted for: {_accounts(metrics)}"
    assert metrics.value("gateway_spans_dropped_total", reason="queue_full") > 0, _accounts(metrics)
    assert metrics.value("gateway_spans_dropped_total", reason="retries_exhausted") > 0, _accounts(metrics)

    # What is still queued when the shutdown deadline passes, the collector hanging, is counted as lost to it.
    collector_proxy.fail(CollectorFault.BLACKHOLE)
    send(gateway, 3, "last")
    assert gateway.sigterm_and_wait() == 0
    assert "spans not reported" in gateway.output()


def _accounts(metrics: Metrics) -> dict[str, float]:
    accounts = {
        reason: metrics.value("gateway_spans_dropped_total", reason=reason)
        for reason in ("queue_full", "retries_exhausted", "rejected", "shutdown", "encode_error")
    }
    accounts["reported"] = metrics.value("gateway_spans_reported_total")
    accounts["queued"] = metrics.value("gateway_span_queue_depth")
    return accounts


def _balance(snapshots: list[Metrics], metrics: Metrics) -> float:
    snapshots.append(metrics)
    return sum(_accounts(metrics).values())


def test_the_span_queue_is_bounded_in_bytes_as_well_as_in_spans(
    collector_proxy: CollectorProxy, collector: Collector, start_gateway: GatewayStarter
) -> None:
    queue_bytes = 64 * 1024
    gateway = reporting_gateway(
        start_gateway, collector_proxy, reporter_queue_size=10_000, reporter_queue_bytes=queue_bytes
    )
    collector_proxy.fail(CollectorFault.REFUSE)
    # Each exchange holds its path twice (path and span name): about 6 KiB here, so 64 KiB hold some ten traces,
    # far fewer than the 5,000 the span count allows.
    long_path = "/long/" + "p" * 3000
    sent = []
    with httpx.Client(timeout=15) as http:
        for index in range(40):
            response = http.get(f"{gateway.url}{long_path}{index}")
            assert response.status_code == 200
            trace_id, _, decision = traceresponse(response)
            sent.append(Sent(trace_id, decision))

    sampled = [item for item in sent if item.sampled]
    assert 0 < len(sampled) < 15, f"{len(sampled)} long-path traces sampled with a 64 KiB queue"
    metrics = gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="not_sampled", reason="queue_full") >= 40 - len(sampled)
    assert metrics.value("gateway_span_queue_bytes") <= queue_bytes + 16 * 1024
    collector_proxy.heal()
    assert_delivered_whole(collector, sent)

    # A path past MAX_TEXT_CHARS is cut in the spans rather than held whole.
    with httpx.Client(timeout=15) as http:
        huge = http.get(f"{gateway.url}/huge-path/{'h' * 20_000}")
    trace_id, _, decision = traceresponse(huge)
    assert decision
    collector.wait_for_spans(2 * len(sampled) + 2)
    for span in by_kind(collector.trace(trace_id)).values():
        path = span["tags"]["http.path"]
        assert len(path) <= 4096 and path.endswith("\u2026"), f"{len(path)} characters: {path[-20:]!r}"
