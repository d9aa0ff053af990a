"""The admin listener (/live, /ready, /metrics) and a gateway with several workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Collector, Echo, GatewayFactory, Metrics, descendants, wait_for

pytestmark = pytest.mark.e2e

METRIC_NAMES = (
    "gateway_requests_total",
    "gateway_trace_headers_ignored_total",
    "gateway_spans_reported_total",
    "gateway_spans_dropped_total",
    "gateway_span_queue_depth",
    "gateway_upstream_errors_total",
    "gateway_request_duration_seconds_bucket",
    "gateway_request_duration_seconds_count",
    "gateway_request_duration_seconds_sum",
)


def test_live_ready_and_metrics_answer(
    start_gateway: GatewayFactory, collector: Collector, client: httpx.Client
) -> None:
    gateway = start_gateway()
    for index in range(3):
        Echo.of(client.get(f"{gateway.url}/counted/{index}"))

    assert client.get(f"{gateway.admin_url}/live").status_code == 200
    assert client.get(f"{gateway.admin_url}/ready").status_code == 200
    response = client.get(f"{gateway.admin_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    metrics = Metrics.parse(response.text)
    missing = [name for name in METRIC_NAMES if not metrics.has(name)]
    assert missing == [], f"/metrics lacks {missing}:\n{response.text}"
    assert metrics.value("gateway_requests_total", decision="sampled") == 3
    assert metrics.value("gateway_request_duration_seconds_count") == 3
    collector.wait_for_spans(6)
    reported = wait_for(lambda: gateway.metrics().value("gateway_spans_reported_total") == 6)
    assert reported, gateway.metrics().text
    # The admin listener is not the proxy: its paths are not forwarded, and proxied requests are not admin ones.
    assert Echo.of(client.get(f"{gateway.url}/metrics")).path == "/metrics"


def test_two_workers_serve_and_metrics_add_up_across_them(start_gateway: GatewayFactory, collector: Collector) -> None:
    gateway = start_gateway(workers=2, sample_rate=0.0)
    workers = worker_pids(gateway.pid)
    assert len(workers) >= 2, f"expected two worker processes under {gateway.pid}, found {workers}"
    written_before = {pid: bytes_written(pid) for pid in workers}

    # No keep-alive: a connection per request, so that the kernel can hand each one to either worker. Which worker
    # accepts is the kernel's choice, and one can win a whole burst: send bursts until both have served (bounded).
    no_keepalive = httpx.Limits(max_connections=8, max_keepalive_connections=0)
    requests, burst, deadline = 0, 100, time.monotonic() + 60
    with httpx.Client(timeout=15, limits=no_keepalive) as http, ThreadPoolExecutor(8) as pool:
        while True:
            indexes = range(requests, requests + burst)
            statuses = list(pool.map(lambda index: http.get(f"{gateway.url}/worker/{index}").status_code, indexes))
            assert statuses == [200] * burst
            requests += burst
            busy = [pid for pid in workers if bytes_written(pid) - written_before[pid] > 4096]
            if len(busy) >= 2 or requests >= 3000 or time.monotonic() > deadline:
                break
    assert len(busy) >= 2, f"only {busy} of the workers {workers} served {requests} requests; cannot show aggregation"
    counted = wait_for(lambda: gateway.metrics().value("gateway_requests_total") == requests)
    assert counted, gateway.metrics().text
    for _ in range(5):
        # Whichever worker answers /metrics, it reports both workers' counts.
        metrics = gateway.metrics()
        assert metrics.value("gateway_requests_total", decision="not_sampled") == requests
        assert metrics.value("gateway_request_duration_seconds_count") == requests


def worker_pids(pid: int) -> list[int]:
    """The processes under `pid` that run the gateway (not, e.g., multiprocessing's resource tracker)."""
    return [child for child in descendants(pid) if b"resource_tracker" not in _cmdline(child)]


def bytes_written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar in /proc/{pid}/io")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""
