"""deploy/grafana/: every query of the dashboard names metrics the gateway really exposes, and latency panels show
exemplars."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.request_metrics import EXEMPLAR_LABEL
from tests.deploy.manifests import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "ingress-gateway.json"
DATASOURCE = DEPLOY / "grafana" / "datasource.yaml"
METRIC_NAME = re.compile(r"\bgateway_[a-z0-9_]+")
# Grafana's variables, as Grafana substitutes them before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$route": ".*"}
# The attributes of promql_parser's nodes that hold subexpressions.
_CHILDREN = ("expr", "lhs", "rhs", "param", "vector_selector")
# What each metric type exposes, by sample name suffix (OpenMetrics and the classic text alike, `*_created` dropped).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exposed_names() -> set[str]:
    """Every sample name the gateway's registry exposes, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_has_queries():
    assert len(targets()) >= 15


def selected_metrics(node: Any) -> set[str]:
    """The metric names an expression's selectors read."""
    names = set()
    if type(node).__name__ == "VectorSelector" and node.name:
        names.add(node.name)
    for attribute in _CHILDREN:
        child = getattr(node, attribute, None)
        if child is not None:
            names |= selected_metrics(child)
    for child in getattr(node, "args", None) or []:
        names |= selected_metrics(child)
    return names


def parsed(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


@pytest.mark.parametrize(("panel", "target"), targets(), ids=[f"{p['title']}/{t['refId']}" for p, t in targets()])
def test_every_query_parses_and_names_only_metrics_the_gateway_exposes(panel, target):
    named = selected_metrics(parsed(target["expr"]))
    assert named, f"{panel['title']}: no metric in {target['expr']!r}"
    assert named <= exposed_names(), f"{panel['title']}: unknown {sorted(named - exposed_names())}"
    # Every gateway_ name of the text is one the parser saw: none hides where the walk above does not reach.
    assert set(METRIC_NAME.findall(target["expr"])) <= named


def test_the_walk_finds_every_selector():
    expr = "sum(rate(gateway_a_total[1m])) / on() group_left max(gateway_b) + histogram_quantile(0.9, gateway_c_bucket)"
    assert selected_metrics(parsed(expr)) == {"gateway_a_total", "gateway_b", "gateway_c_bucket"}


def test_the_variable_query_names_an_exposed_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert set(METRIC_NAME.findall(variable["definition"])) <= exposed_names()


def test_latency_panels_ask_for_exemplars_and_the_datasource_links_their_trace_id():
    latency = [(panel, target) for panel, target in targets() if "_bucket" in target["expr"]]
    assert latency and all(target.get("exemplar") is True for _, target in latency)
    datasource = yaml.safe_load(DATASOURCE.read_text())
    destinations = [
        destination
        for source in datasource["datasources"]
        for destination in source.get("jsonData", {}).get("exemplarTraceIdDestinations", [])
    ]
    assert [destination["name"] for destination in destinations] == [EXEMPLAR_LABEL]


def test_the_dashboard_covers_sampling_reporter_health_latency_and_errors():
    exprs = " ".join(target["expr"] for _, target in targets())
    for needed in (
        "gateway_requests_total",
        "gateway_span_queue_depth",
        "gateway_spans_dropped_total",
        "gateway_span_batches_total",
        "gateway_http_request_duration_seconds_bucket",
        'status_class="5xx"',
        "gateway_upstream_errors_total",
    ):
        assert needed in exprs
