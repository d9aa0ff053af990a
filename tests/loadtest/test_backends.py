"""The trace backends: Zipkin's v2 API (the real collector, stand-ins for older ones) and Jaeger's query API (a
fake of jaeger-query fed from the real collector), and asking for many traces at bounded concurrency and time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from gateway_devtools.collector.app import create_collector_app
from loadtest.backends import (
    BackendKind,
    CheckError,
    Fetched,
    JaegerQuery,
    ZipkinQuery,
    fetch_all,
    jaeger_api,
    jaeger_spans,
    open_backend,
    zipkin_api,
)
from loadtest.traces import SpanView, group_by_trace
from tests.loadtest.fake_jaeger import FakeJaeger
from tests.loadtest.spans import LEAKED_TRACE, LIST_TRACE, UNSAMPLED_TRACE, list_trace, zipkin_span
from tests.support import FakeClock, ThreadedServer

HOUR = 3600.0


@pytest.fixture
def collector() -> Iterator[str]:
    with ThreadedServer(create_collector_app()) as server:
        yield server.url


@pytest.fixture
def jaeger(collector: str) -> Iterator[tuple[str, FakeJaeger]]:
    fake = FakeJaeger(collector)
    with ThreadedServer(fake.app) as server:
        yield server.url, fake


def post(collector: str, spans: list[dict[str, Any]]) -> None:
    httpx.post(f"{collector}/api/v2/spans", json=spans, timeout=5).raise_for_status()


# --- Zipkin -------------------------------------------------------------------------------------------------------


def test_zipkin_lists_a_window_and_fetches_by_id(collector):
    post(collector, list_trace(LIST_TRACE))
    post(collector, list_trace(LEAKED_TRACE, at=time.time() - HOUR))
    with httpx.Client() as http:
        zipkin = ZipkinQuery(collector, http)
        now = time.time()
        listed = zipkin.traces_between(now - 60, now + 1, 100)
        assert [len(trace) for trace in listed] == [5]
        fetched = group_by_trace(zipkin.fetch([LIST_TRACE, LEAKED_TRACE, UNSAMPLED_TRACE]))
    assert {trace: len(spans) for trace, spans in fetched.items()} == {LIST_TRACE: 5, LEAKED_TRACE: 5}


def test_zipkin_falls_back_to_one_get_per_trace_without_trace_many():
    stored = {f"{LIST_TRACE:032x}": list_trace(LIST_TRACE), f"{LEAKED_TRACE:032x}": list_trace(LEAKED_TRACE)[2:]}
    asked: list[str] = []

    def zipkin_without_trace_many(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        trace = request.url.path.removeprefix("/api/v2/trace/")
        if trace in stored:
            return httpx.Response(200, json=stored[trace])
        return httpx.Response(404, text="not found")

    with httpx.Client(transport=httpx.MockTransport(zipkin_without_trace_many)) as http:
        zipkin = ZipkinQuery("http://zipkin.test:9411", http)
        spans = zipkin.fetch([LIST_TRACE, LEAKED_TRACE, UNSAMPLED_TRACE])
        assert len(spans) == 8
        # Once known to be missing, traceMany is not asked for again.
        zipkin.fetch([LIST_TRACE, LEAKED_TRACE])
    assert asked.count("/api/v2/traceMany") == 1
    assert len([path for path in asked if path.startswith("/api/v2/trace/")]) == 5


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, "<html>", "answered something other than JSON"),
        (200, '{"traces": []}', "answered something other than a list of traces"),
        (200, "[[{}]]", "not a Zipkin v2 span"),
        (503, "try   later", "answered 503: try later"),
    ],
)
def test_answers_that_are_not_zipkins_are_check_errors(status, body, message):
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body)

    with httpx.Client(transport=httpx.MockTransport(broken)) as http, pytest.raises(CheckError, match=message):
        ZipkinQuery("http://zipkin.test:9411", http).traces_between(0, 1, 10)


@pytest.mark.parametrize(
    "given",
    [
        "http://collector:9411",
        "http://collector:9411/",
        "http://collector:9411/api/v2",
        "http://collector:9411/api/v2/spans",
        " http://collector:9411/api/v2/spans/ ",
    ],
)
def test_zipkin_api_accepts_base_api_or_span_endpoint(given):
    assert zipkin_api(given) == "http://collector:9411/api/v2"


@pytest.mark.parametrize("given", ["http://jaeger:16686", "http://jaeger:16686/", "http://jaeger:16686/api"])
def test_jaeger_api_accepts_base_or_api(given):
    assert jaeger_api(given) == "http://jaeger:16686/api"


@pytest.mark.parametrize("given", ["collector:9411", "ftp://collector", "http://", ""])
def test_backend_urls_must_be_http(given):
    for api in (zipkin_api, jaeger_api):
        with pytest.raises(CheckError, match="must be an http"):
            api(given)


# --- Jaeger -------------------------------------------------------------------------------------------------------

# A trace as jaeger-query 1.x answers GET /api/traces/{id}: web's CLIENT span calling emoji, emoji's SERVER span.
JAEGER_TRACE = {
    "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
    "spans": [
        {
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanID": "0000000000000004",
            "flags": 1,
            "operationName": "get /list",
            "references": [
                {"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "0000000000000003"}
            ],
            "startTime": 1700000000000000,
            "duration": 120,
            "tags": [
                {"key": "span.kind", "type": "string", "value": "client"},
                {"key": "peer.service", "type": "string", "value": "Emoji"},
                {"key": "http.path", "type": "string", "value": "/list"},
            ],
            "logs": [],
            "processID": "p1",
            "warnings": None,
        },
        {
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanID": "0000000000000005",
            "operationName": "get /list",
            "references": [
                {
                    "refType": "FOLLOWS_FROM",
                    "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
                    "spanID": "0000000000000009",
                },
                {"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "0000000000000004"},
            ],
            "startTime": 1700000000000010,
            "duration": 80,
            "tags": [{"key": "span.kind", "type": "string", "value": "server"}],
            "processID": "p2",
        },
        {
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanID": "0000000000000001",
            "operationName": "get /api/list",
            "references": [],
            "startTime": 1700000000000000,
            "duration": 500,
            "tags": [],
            "processID": "p3",
        },
    ],
    "processes": {
        "p1": {"serviceName": "web", "tags": [{"key": "ip", "type": "string", "value": "10.0.0.1"}]},
        "p2": {"serviceName": "emoji", "tags": []},
        "p3": {"serviceName": "ingress-gateway", "tags": []},
    },
    "warnings": None,
}


def test_jaeger_spans_reads_ids_references_kind_processes_and_peer_service():
    trace = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert jaeger_spans(JAEGER_TRACE) == [
        SpanView(trace, 0x4, 0x3, "CLIENT", "web", "get /list", "/list", "emoji"),
        SpanView(trace, 0x5, 0x4, "SERVER", "emoji", "get /list"),
        SpanView(trace, 0x1, None, None, "ingress-gateway", "get /api/list"),
    ]


@pytest.mark.parametrize("trace", [{}, {"spans": [{"spanID": "1"}]}, {"spans": [{"traceID": "zz", "spanID": "1"}]}])
def test_jaeger_spans_refuses_what_is_not_a_jaeger_trace(trace):
    with pytest.raises(CheckError, match="not a trace of Jaeger's JSON model"):
        jaeger_spans(trace)


def test_jaeger_fetches_traces_by_id_and_finds_nothing_for_an_unknown_one(collector, jaeger):
    url, fake = jaeger
    post(collector, list_trace(LIST_TRACE))
    with httpx.Client() as http:
        backend = open_backend(BackendKind.JAEGER, url, http)
        assert isinstance(backend, JaegerQuery)
        spans = backend.fetch([LIST_TRACE])
        assert backend.fetch([UNSAMPLED_TRACE]) == []
    # The same spans as Zipkin's API gives of the same trace: ids, parents, kinds, services and callees.
    with httpx.Client() as http:
        assert set(spans) == set(ZipkinQuery(collector, http).fetch([LIST_TRACE]))
    assert len(spans) == 5
    assert fake.requests == [f"/api/traces/{LIST_TRACE:032x}", f"/api/traces/{UNSAMPLED_TRACE:032x}"]


def test_jaeger_lists_a_window_service_by_service_counting_each_trace_once(collector, jaeger):
    url, fake = jaeger
    post(collector, list_trace(LIST_TRACE))
    post(collector, [zipkin_span(LEAKED_TRACE, 0x9, None, "voting", "SERVER", "/results")])
    post(collector, list_trace(UNSAMPLED_TRACE, at=time.time() - HOUR))
    now = time.time()
    with httpx.Client() as http:
        listed = JaegerQuery(url, http).traces_between(now - 60, now + 1, 100)
    assert sorted((trace[0].trace_id, len(trace)) for trace in listed) == sorted([(LIST_TRACE, 5), (LEAKED_TRACE, 1)])
    assert fake.requests.count("/api/traces") == 4  # one search per service: ingress-gateway, web, emoji, voting


def test_jaeger_errors_are_check_errors(jaeger):
    def not_jaeger(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[])

    with httpx.Client(transport=httpx.MockTransport(not_jaeger)) as http, pytest.raises(CheckError, match="Jaeger's"):
        JaegerQuery("http://jaeger.test:16686", http).traces_between(0, 1, 10)


# --- many traces, at bounded concurrency and time ----------------------------------------------------------------


class BarrierBackend:
    """A backend whose every fetch waits until `width` fetches are in flight at once, and counts them."""

    api = "barrier"

    def __init__(self, width: int, batch_size: int = 1, fail_on: int | None = None) -> None:
        self.batch_size = batch_size
        self.barrier = threading.Barrier(width, timeout=10)
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.asked: list[int] = []
        self.fail_on = fail_on

    def traces_between(self, start: float, end: float, limit: int) -> list[list[SpanView]]:
        return []

    def fetch(self, trace_ids: Sequence[int]) -> list[SpanView]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.asked.extend(trace_ids)
        try:
            if self.fail_on in trace_ids:
                raise CheckError("GET /trace answered 500")
            self.barrier.wait()
            return [SpanView(trace_id, 1) for trace_id in trace_ids]
        finally:
            with self.lock:
                self.in_flight -= 1


def test_fetch_all_keeps_exactly_concurrency_requests_in_flight():
    backend = BarrierBackend(width=3, batch_size=2)
    fetched = fetch_all(backend, list(range(1, 13)), concurrency=3)
    # The barrier lets a fetch through only when three are in flight: the pool ran three at a time, never more.
    assert backend.most_in_flight == 3
    assert sorted(span.trace_id for span in fetched.spans) == list(range(1, 13))
    assert fetched.unfetched == 0


def test_fetch_all_stops_asking_at_the_deadline_and_counts_what_it_left():
    clock = FakeClock()
    backend = BarrierBackend(width=1)
    assert fetch_all(backend, [1, 2, 3], concurrency=1, deadline=clock.now, clock=clock) == Fetched([], 3)
    assert backend.asked == []


def test_fetch_all_raises_the_first_check_error():
    backend = BarrierBackend(width=1, fail_on=2)
    with pytest.raises(CheckError, match="answered 500"):
        fetch_all(backend, [1, 2, 3], concurrency=1)
