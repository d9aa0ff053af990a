from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config_view import merge_views, redact_url, reload_record, worker_view
from gateway.routes import Adaptive, Route, parse_upstream
from gateway.routing import DEFAULT_ROUTE_NAME, Defaults, RouteSource, build_routing
from gateway.settings import Settings
from tests.unit.test_routing import FakeMetrics

WEB = parse_upstream("http://web-svc.emojivoto:8080/v1")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://web-svc.emojivoto:80", "http://web-svc.emojivoto:80"),
        ("http://user:secret@collector:9411/api/v2/spans", "http://***@collector:9411/api/v2/spans"),
        ("https://token@collector/api", "https://***@collector/api"),
        ("https://a@b:c@collector/api", "https://***@collector/api"),
        ("http://collector/api?api_key=s3cret&x=", "http://collector/api?api_key=***&x=***"),
        ("http://collector/api#fragment", "http://collector/api"),
        ("", ""),
        ("http://[::1", "***"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"upstream_url": "http://fallback:80", "sample_rate": 0.25, **overrides}
    return Settings(_env_file=None, **values)


def test_worker_view_shows_every_route_with_its_effective_settings():
    config = settings(
        zipkin_url="http://user:pw@collector:9411/api/v2/spans?token=t",
        no_route_status=421,
        otlp_url="http://otel:4318/v1/traces",
        otlp_headers="api-key=s3cret,x-tenant=a",
    )
    routing = build_routing(
        [
            Route(
                "votes",
                WEB,
                host="*.example.com",
                path_prefix="/api/vote",
                span_name="vote {method}",
                sample_rate=0.5,
                adaptive=Adaptive(5.0, 0.01, 30.0),
                max_traces_per_second=20.0,
                timeout=2.0,
                tags=(("team", "voting"),),
            ),
            Route("rest", parse_upstream("https://api.internal")),
        ],
        Route(DEFAULT_ROUTE_NAME, parse_upstream(config.upstream_url)),
        Defaults(config.sample_rate, config.upstream_timeout),
        FakeMetrics(),
        source=RouteSource(Path("/etc/gw/routes.yaml"), "sha256:abc", 0.0),
    )
    last = reload_record(1.5, "SIGHUP", "rejected", "routes.yaml:3: bad", "sha256:abc")
    view = worker_view(routing, config, 4242, last)
    assert view["pid"] == 4242
    assert (view["routes_file"], view["version"], view["loaded_at"]) == (
        "/etc/gw/routes.yaml",
        "sha256:abc",
        "1970-01-01T00:00:00.000Z",
    )
    assert view["last_reload"] == {
        "at": "1970-01-01T00:00:01.500Z",
        "trigger": "SIGHUP",
        "outcome": "rejected",
        "reason": "routes.yaml:3: bad",
        "version": "sha256:abc",
    }
    assert view["settings"] == {
        "sample_rate": 0.25,
        "max_traces_per_second": 0.0,
        "upstream_timeout": 30.0,
        "upstream_protocol": "http1",
        "no_route_status": 421,
        "propagation": ["b3multi"],
        "routes_reload_interval": 2.0,
        "zipkin_url": "http://***@collector:9411/api/v2/spans?token=***",
        "otlp_url": "http://otel:4318/v1/traces",
        "otlp_headers": ["api-key", "x-tenant"],
    }
    assert view["routes"] == [
        {
            "name": "votes",
            "host": "*.example.com",
            "path_prefix": "/api/vote",
            "upstream": "http://web-svc.emojivoto:8080/v1",
            "span_name": "vote {method}",
            "sample_rate": 0.5,
            "adaptive": {"target_traces_per_second": 5.0, "min_sample_rate": 0.01, "interval": 30.0},
            "max_traces_per_second": 20.0,
            "timeout": 2.0,
            "tags": {"team": "voting"},
            "protocol": "http1",
        },
        {
            "name": "rest",
            "host": None,
            "path_prefix": "/",
            "upstream": "https://api.internal",
            "span_name": "{method} rest",
            "sample_rate": 0.25,
            "adaptive": None,
            "max_traces_per_second": 0.0,
            "timeout": 30.0,
            "tags": {},
            "protocol": "http1",
        },
    ]
    assert view["default_route"]["span_name"] == "{method} {path}"
    assert view["default_route"]["upstream"] == "http://fallback"
    json.dumps(view)  # JSON-ready as it is


def test_worker_view_without_a_route_file():
    config = settings()
    routing = build_routing(
        [], Route(DEFAULT_ROUTE_NAME, WEB), Defaults(config.sample_rate, config.upstream_timeout), FakeMetrics()
    )
    view = worker_view(routing, config, 1, None)
    assert (view["routes_file"], view["version"], view["loaded_at"], view["routes"]) == (None, None, None, [])
    assert view["default_route"]["name"] == DEFAULT_ROUTE_NAME


def view(pid: int, version: str, loaded_at: str) -> dict[str, object]:
    return {
        "pid": pid,
        "version": version,
        "loaded_at": loaded_at,
        "last_reload": None,
        "routes": [{"name": version}],
        "default_route": None,
        "settings": {},
        "routes_file": "routes.yaml",
    }


def test_merge_views_of_workers_that_agree():
    merged = merge_views([view(20, "v2", "t2"), view(10, "v2", "t1")])
    assert merged["consistent"] is True
    assert merged["version"] == "v2"
    assert merged["routes"] == [{"name": "v2"}]
    assert [worker["pid"] for worker in merged["workers"]] == [10, 20]
    assert "pid" not in merged and "last_reload" not in merged


def test_merge_views_while_a_reload_reaches_the_workers():
    merged = merge_views([view(1, "old", "t1"), view(2, "new", "t3"), view(3, "new", "t2")])
    assert merged["consistent"] is False
    assert merged["version"] == "new"  # what most workers serve
    assert [worker["version"] for worker in merged["workers"]] == ["old", "new", "new"]


def test_merge_views_prefers_the_newest_table_on_a_tie():
    merged = merge_views([view(1, "old", "2026-01-01T00:00:00.000Z"), view(2, "new", "2026-01-02T00:00:00.000Z")])
    assert merged["version"] == "new"


def test_merge_views_of_no_worker_yet():
    assert merge_views([]) == {"consistent": False, "workers": [], "routes": None, "default_route": None}
