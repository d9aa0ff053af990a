"""Upstream faults: the client gets 502, 504 or the upstream's own status, both spans carry `error`, and no fault
leaves a connection or a task behind. A response larger than the gateway's memory streams through it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Collector, Gateway, by_kind, gateway_env, run_gateway, traceresponse
from tests.reliability.conftest import Footprint, rss_kib
from tests.reliability.faults import FaultyUpstream
from tests.support import free_port

pytestmark = pytest.mark.e2e

POOL = 4
TIMEOUT = 1.0
MIB = 1024 * 1024
HUGE = 256 * MIB
RSS_ALLOWANCE_KIB = 48 * 1024


@dataclass(frozen=True)
class Fault:
    path: str
    status: int  # what the client is told
    error: str  # in both spans' `error` tag
    truncated: bool = False  # the status was already sent: the client sees the body cut short instead
    abandoned: bool = False  # the upstream sees the gateway go away (`?token=` is added)


FAULTS = {
    "refused": Fault("/refused/x", 502, "upstream unreachable"),
    "slow-past-timeout": Fault("/slow?seconds=6", 504, "upstream timed out", abandoned=True),
    "reset-before-response": Fault("/reset-before-response", 502, "upstream failed"),
    "reset-mid-response": Fault("/reset-mid-response?sent=20000", 200, "upstream failed", truncated=True),
    "stall-mid-body": Fault("/stall?sent=20000", 200, "upstream timed out", truncated=True, abandoned=True),
    "503": Fault("/status/503", 503, "503"),
    "500": Fault("/status/500", 500, "500"),
}
REPEATS = 3


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, faulty_upstream: FaultyUpstream, session_collector: Collector
) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("upstream-faults")
    routes = directory / "routes.yaml"
    routes.write_text(
        f"routes:\n  - name: refused\n    path_prefix: /refused\n    upstream: http://127.0.0.1:{free_port()}\n"
    )
    env = gateway_env(
        None,
        session_collector,
        upstream_url=faulty_upstream.url,
        routes_file=str(routes),
        upstream_timeout=TIMEOUT,
        upstream_max_connections=POOL,
    )
    with run_gateway(Path(directory), env) as running:
        with httpx.Client(timeout=10) as warm_up:
            assert warm_up.get(f"{running.url}/ok").status_code == 200
        yield running


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_upstream_fault_answers_the_right_status_tags_both_spans_and_leaks_nothing(
    gateway: Gateway, collector: Collector, faulty_upstream: FaultyUpstream, fault: Fault
) -> None:
    footprint = Footprint(gateway)
    trace_ids = []
    with httpx.Client(timeout=15) as http:
        for _ in range(REPEATS):
            token = uuid.uuid4().hex
            separator = "&" if "?" in fault.path else "?"
            with http.stream("GET", f"{gateway.url}{fault.path}{separator}token={token}") as response:
                assert response.status_code == fault.status, response.headers
                trace_id, _, sampled = traceresponse(response)
                assert sampled
                trace_ids.append(trace_id)
                if fault.truncated:
                    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                        response.read()
                else:
                    assert len(response.read()) < 4096
            if fault.abandoned:
                events = faulty_upstream.wait_for(token, "abandoned", timeout=5)
                assert events == ["started", "abandoned"], f"the gateway held on to the upstream call: {events}"
        # The gateway still serves after each fault.
        assert http.get(f"{gateway.url}/ok").status_code == 200

    collector.wait_for_spans(2 * REPEATS + 2)
    for trace_id in trace_ids:
        spans = by_kind(collector.trace(trace_id))
        assert spans["SERVER"]["tags"]["http.status_code"] == str(fault.status)
        for kind, span in spans.items():
            assert fault.error in span["tags"].get("error", ""), f"{kind} span: {span['tags']}"
    footprint.assert_back(extra_sockets=POOL)


def test_a_response_larger_than_memory_streams_through_in_bounded_memory(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    footprint = Footprint(gateway)
    baseline = rss_kib(gateway.pid)
    peak = baseline
    received = 0
    with httpx.Client(timeout=30) as http, http.stream("GET", f"{gateway.url}/huge?size={HUGE}") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(HUGE)
        for index, chunk in enumerate(response.iter_raw(MIB)):
            received += len(chunk)
            if index % 16 == 0:
                peak = max(peak, rss_kib(gateway.pid))
    assert received == HUGE
    grown = peak - baseline
    assert grown < RSS_ALLOWANCE_KIB, f"the gateway grew by {grown // 1024} MiB relaying {HUGE // MIB} MiB"
    footprint.assert_back(extra_sockets=POOL)
