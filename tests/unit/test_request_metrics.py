from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import LATENCY_BUCKETS, Metrics
from gateway.request_metrics import EXEMPLAR_INTERVAL, RequestMetrics, format_trace_id

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


def histogram() -> Histogram:
    return Metrics(CollectorRegistry()).http_request_duration


def sample_value(metric: Histogram, suffix: str, **labels: str) -> float | None:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == f"gateway_http_request_duration_seconds{suffix}" and sample.labels == {
                **sample.labels,
                **labels,
            }:
                return sample.value
    return None


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
def test_labels_are_bounded(method, status, method_label, status_class):
    metric = histogram()
    RequestMetrics(metric, exemplars=True).observe("web", method, status, False, 0.01, TRACE_ID)
    labels = {
        "route": "web",
        "method": method_label,
        "status_class": status_class,
        "grpc_status": "",
        "decision": "not_sampled",
    }
    assert sample_value(metric, "_count", **labels) == 1


def exemplars_of(metric: Histogram) -> list[dict[str, str]]:
    return [
        sample.exemplar.labels
        for family in metric.collect()
        for sample in family.samples
        if sample.exemplar is not None
    ]


def test_a_sampled_request_leaves_its_trace_id_as_the_exemplar_of_its_bucket():
    metric = histogram()
    observer = RequestMetrics(metric, exemplars=True)
    observer.observe("web", "GET", 200, True, 0.003, TRACE_ID)
    observer.observe("web", "GET", 200, False, 0.003, TRACE_ID + 1)
    assert exemplars_of(metric) == [{"trace_id": "0af7651916cd43dd8448eb211c80319c"}]


def test_each_bucket_takes_one_exemplar_per_interval():
    metric = histogram()
    now = [100.0]
    observer = RequestMetrics(metric, exemplars=True, clock=lambda: now[0])
    observer.observe("web", "GET", 200, True, 0.003, 1)
    observer.observe("web", "GET", 200, True, 0.004, 2)  # the same bucket, within the interval: no new exemplar
    observer.observe("web", "GET", 200, True, 0.3, 3)  # another bucket takes its own
    observer.observe("web", "GET", 200, True, 99.0, 4)  # above the last bound: the +Inf bucket
    assert exemplars_of(metric) == [{"trace_id": f"{n:016x}"} for n in (1, 3, 4)]
    now[0] += EXEMPLAR_INTERVAL
    observer.observe("web", "GET", 200, True, 0.005, 5)  # 0.005 is the 0.005 bucket's own bound
    assert exemplars_of(metric) == [{"trace_id": f"{n:016x}"} for n in (5, 3, 4)]
    assert sample_value(metric, "_count", decision="sampled") == 5


def test_exemplar_buckets_are_the_histograms():
    # An observation on a bound counts in that bound's bucket: bisect_left, as prometheus-client's `<=`.
    metric = histogram()
    observer = RequestMetrics(metric, exemplars=True)
    for n, bound in enumerate(LATENCY_BUCKETS, start=1):
        observer.observe("web", "GET", 200, True, bound, n)
    observer.observe("web", "GET", 200, True, float("inf"), 99)
    assert exemplars_of(metric) == [{"trace_id": f"{n:016x}"} for n in (*range(1, len(LATENCY_BUCKETS) + 1), 99)]


def test_no_exemplar_when_they_are_off():
    metric = histogram()
    RequestMetrics(metric, exemplars=False).observe("web", "GET", 200, True, 0.003, TRACE_ID)
    assert exemplars_of(metric) == []
    assert sample_value(metric, "_count", decision="sampled") == 1


def test_the_same_labels_reuse_one_child():
    metric = histogram()
    observer = RequestMetrics(metric, exemplars=True)
    for _ in range(3):
        observer.observe("web", "GET", 201, False, 0.5, TRACE_ID)
    assert sample_value(metric, "_count", method="GET", status_class="2xx") == 3
    assert sample_value(metric, "_sum", method="GET", status_class="2xx") == 1.5


def test_format_trace_id_is_as_on_the_wire():
    assert format_trace_id(0x1) == "0000000000000001"
    assert format_trace_id(TRACE_ID) == "0af7651916cd43dd8448eb211c80319c"


def test_no_created_series():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.requests.labels("sampled", "ratio", "web").inc()
    names = {sample.name for family in registry.collect() for sample in family.samples}
    assert not [name for name in names if name.endswith("_created")]
