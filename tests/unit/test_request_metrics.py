from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from gateway.metrics import Metrics
from gateway.request_metrics import RequestMetrics, format_trace_id

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
