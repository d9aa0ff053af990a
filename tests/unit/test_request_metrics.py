from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.request_metrics import (
    EXEMPLAR_INTERVAL,
    LATENCY_BUCKETS,
    METHODS,
    PrometheusRequestLatency,
    RequestLatency,
    TalliedRequestLatency,
    format_trace_id,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
HTTP = "gateway_http_request_duration_seconds"
BY_DECISION = "gateway_request_duration_seconds"


def tallied(**kwargs) -> tuple[TalliedRequestLatency, CollectorRegistry]:
    metrics = Metrics(CollectorRegistry(), multiprocess=False)
    assert isinstance(metrics.request_latency, TalliedRequestLatency)
    if kwargs:
        metrics.registry.unregister(metrics.request_latency)
        metrics.request_latency = TalliedRequestLatency(LATENCY_BUCKETS, **kwargs)
        metrics.registry.register(metrics.request_latency)
    return metrics.request_latency, metrics.registry


def prometheus() -> tuple[RequestLatency, CollectorRegistry]:
    metrics = Metrics(CollectorRegistry(), multiprocess=True)
    assert isinstance(metrics.request_latency, PrometheusRequestLatency)
    return metrics.request_latency, metrics.registry


BOTH = pytest.mark.parametrize("make", [tallied, prometheus], ids=["tallied", "prometheus"])


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        if family.name in (HTTP, BY_DECISION)
        for sample in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    found = [v for (n, pairs), v in samples(registry).items() if n == name and labels.items() <= dict(pairs).items()]
    return sum(found) if found else None


def exemplars_of(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        sample.exemplar.labels
        for family in registry.collect()
        for sample in family.samples
        if sample.exemplar is not None
    ]


@BOTH
@pytest.mark.parametrize(
    ("method", "status", "method_label", "status_class"),
    [
        ("GET", 200, "GET", "2xx"),
        ("POST", 503, "POST", "5xx"),
        ("PROPFIND", 207, "other", "2xx"),
        ("get", 404, "other", "4xx"),
        ("DELETE", None, "DELETE", "none"),
        ("GET", 99, "GET", "none"),
    ],
)
def test_labels_are_bounded(make, method, status, method_label, status_class):
    latency, registry = make()
    latency.observe("web", method, status, False, 0.01, TRACE_ID)
    labels = {
        "route": "web",
        "method": method_label,
        "status_class": status_class,
        "grpc_status": "",
        "decision": "not_sampled",
    }
    assert value(registry, f"{HTTP}_count", **labels) == 1
    assert value(registry, f"{BY_DECISION}_count", decision="not_sampled") == 1
    assert value(registry, f"{BY_DECISION}_count", decision="sampled") == 0


@BOTH
def test_the_same_labels_add_up_in_one_series(make):
    latency, registry = make()
    for _ in range(3):
        latency.observe("web", "GET", 201, False, 0.5, TRACE_ID)
    latency.observe("web", "GET", 201, True, 0.25, TRACE_ID, grpc_status="OK")
    assert value(registry, f"{HTTP}_count", method="GET", status_class="2xx", grpc_status="") == 3
    assert value(registry, f"{HTTP}_sum", method="GET", status_class="2xx", grpc_status="") == 1.5
    assert value(registry, f"{HTTP}_bucket", grpc_status="", le="0.25") == 0
    assert value(registry, f"{HTTP}_bucket", grpc_status="", le="0.5") == 3
    assert value(registry, f"{HTTP}_bucket", grpc_status="OK", decision="sampled", le="0.25") == 1
    assert value(registry, f"{BY_DECISION}_sum", decision="sampled") == 0.25
    assert value(registry, f"{BY_DECISION}_bucket", decision="not_sampled", le="+Inf") == 3


@BOTH
def test_both_series_by_decision_are_there_from_the_start(make):
    _, registry = make()
    assert value(registry, f"{BY_DECISION}_count", decision="sampled") == 0
    assert value(registry, f"{BY_DECISION}_count", decision="not_sampled") == 0


OBSERVATIONS = st.lists(
    st.tuples(
        st.sampled_from(["web", "api", ""]),
        st.sampled_from([*METHODS, "PROPFIND", "get"]),
        st.none() | st.integers(0, 700),
        st.booleans(),
        st.floats(0.0, 100.0, allow_nan=False) | st.sampled_from(LATENCY_BUCKETS),
        st.sampled_from(["", "OK", "UNAVAILABLE"]),
    ),
    max_size=60,
)


@given(OBSERVATIONS)
def test_the_tally_writes_what_prometheus_clients_histograms_write(observations):
    # The one-worker implementation against the metric objects multiprocess mode uses: the same series, the same
    # counts; sums equal but for the order of float additions (a decision's sum adds up per label combination).
    (fast, fast_registry), (objects, objects_registry) = tallied(), prometheus()
    for route, method, status, sampled, duration, grpc_status in observations:
        fast.observe(route, method, status, sampled, duration, TRACE_ID, grpc_status)
        objects.observe(route, method, status, sampled, duration, TRACE_ID, grpc_status)
    written, expected = samples(fast_registry), samples(objects_registry)
    assert written.keys() == expected.keys()
    for key, number in expected.items():
        assert math.isclose(written[key], number, rel_tol=1e-9, abs_tol=1e-9), key


def test_a_sampled_request_leaves_its_trace_id_as_the_exemplar_of_its_bucket():
    latency, registry = tallied()
    latency.observe("web", "GET", 200, True, 0.003, TRACE_ID)
    latency.observe("web", "GET", 200, False, 0.003, TRACE_ID + 1)
    assert exemplars_of(registry) == [{"trace_id": "0af7651916cd43dd8448eb211c80319c"}]


def test_each_bucket_takes_one_exemplar_per_interval():
    now = [100.0]
    latency, registry = tallied(clock=lambda: now[0])
    latency.observe("web", "GET", 200, True, 0.003, 1)
    latency.observe("web", "GET", 200, True, 0.004, 2)  # the same bucket, within the interval: no new exemplar
    latency.observe("web", "GET", 200, True, 0.3, 3)  # another bucket takes its own
    latency.observe("web", "GET", 200, True, 99.0, 4)  # above the last bound: the +Inf bucket
    assert exemplars_of(registry) == [{"trace_id": f"{n:016x}"} for n in (1, 3, 4)]
    now[0] += EXEMPLAR_INTERVAL
    latency.observe("web", "GET", 200, True, 0.005, 5)  # 0.005 is the 0.005 bucket's own bound
    assert exemplars_of(registry) == [{"trace_id": f"{n:016x}"} for n in (5, 3, 4)]
    assert value(registry, f"{HTTP}_count", decision="sampled") == 5


def test_exemplar_buckets_are_the_histograms():
    # An observation on a bound counts in that bound's bucket (prometheus-client's `<=`), with its exemplar.
    latency, registry = tallied()
    for n, bound in enumerate(LATENCY_BUCKETS, start=1):
        latency.observe("web", "GET", 200, True, bound, n)
    latency.observe("web", "GET", 200, True, float("inf"), 99)
    assert exemplars_of(registry) == [{"trace_id": f"{n:016x}"} for n in (*range(1, len(LATENCY_BUCKETS) + 1), 99)]
    for n, bound in enumerate(LATENCY_BUCKETS, start=1):
        assert value(registry, f"{HTTP}_bucket", le=str(bound)) == n


def test_an_exemplar_has_the_requests_duration_and_time():
    latency, registry = tallied(wall_clock=lambda: 1_700_000_000.5)
    latency.observe("web", "GET", 200, True, 0.003, TRACE_ID)
    (exemplar,) = [s.exemplar for f in registry.collect() for s in f.samples if s.exemplar is not None]
    assert (exemplar.value, exemplar.timestamp) == (0.003, 1_700_000_000.5)


def test_no_exemplar_when_they_are_off():
    latency, registry = tallied(exemplars=False)
    latency.observe("web", "GET", 200, True, 0.003, TRACE_ID)
    assert exemplars_of(registry) == []
    assert value(registry, f"{HTTP}_count", decision="sampled") == 1


def test_multiprocess_mode_keeps_prometheus_clients_objects_and_no_exemplar():
    latency, registry = prometheus()
    latency.observe("web", "GET", 200, True, 0.003, TRACE_ID)
    assert exemplars_of(registry) == []


def test_the_mode_follows_prometheus_multiproc_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert isinstance(Metrics(CollectorRegistry()).request_latency, TalliedRequestLatency)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert isinstance(Metrics(CollectorRegistry()).request_latency, PrometheusRequestLatency)


def test_a_scrape_while_requests_are_counted_sees_whole_series():
    # The admin listener collects from its thread while the event loop counts, new label combinations included.
    latency, registry = tallied()
    stop = threading.Event()

    def count() -> None:
        n = 0
        while not stop.is_set() and n < 200_000:
            latency.observe(f"route-{n % 200}", "GET", 200, n % 2 == 0, 0.001 * (n % 50), n + 1)
            n += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        last = 0.0
        for _ in range(15):
            by_series = samples(registry)
            total = sum(v for (name, _), v in by_series.items() if name == f"{BY_DECISION}_count")
            assert total >= last
            last = total
            for (name, labels), number in by_series.items():
                if name == f"{HTTP}_count":
                    assert by_series[(f"{HTTP}_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] == number
    finally:
        stop.set()
        counter.join()


def test_format_trace_id_is_as_on_the_wire():
    assert format_trace_id(0x1) == "0000000000000001"
    assert format_trace_id(TRACE_ID) == "0af7651916cd43dd8448eb211c80319c"


def test_no_created_series():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.requests.labels("sampled", "ratio", "web").inc()
    metrics.request_latency.observe("web", "GET", 200, True, 0.1, TRACE_ID)
    names = {sample.name for family in registry.collect() for sample in family.samples}
    assert not [name for name in names if name.endswith("_created")]
