from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.check import (
    NO_EXPORTER_WARNING,
    check,
    effective_configuration,
    in_force,
    load_routes,
    route_problems,
    shown_value,
)
from gateway.settings import Settings, env_name

UPSTREAM = "http://web-svc.emojivoto:80"


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """Exactly the given GATEWAY_ variables, in a directory without a .env."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)

    def set_env(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_a_valid_configuration_has_no_problem_and_warns_of_no_exporter(environment):
    environment(GATEWAY_UPSTREAM_URL=UPSTREAM)
    report = check()
    assert report.settings is not None and report.problems == []
    assert report.warnings == [NO_EXPORTER_WARNING]
    assert "GATEWAY_ZIPKIN_URL" in NO_EXPORTER_WARNING


def test_every_problem_is_reported_the_route_file_included_when_other_settings_are_bad(environment, tmp_path: Path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: [")
    environment(GATEWAY_SAMPLE_RATE="2", GATEWAY_WORKERS="0", GATEWAY_ROUTES_FILE=str(routes), GATEWAY_PORTT="1")
    report = check()
    assert report.settings is None
    assert [problem.split(":", 1)[0] for problem in report.problems] == [
        "GATEWAY_WORKERS",
        "GATEWAY_SAMPLE_RATE",
        "GATEWAY_ROUTES_FILE",
    ]
    assert report.warnings == ["GATEWAY_PORTT: unknown setting; did you mean GATEWAY_PORT?"]


def test_checks_plug_in_and_each_problem_counts(environment):
    environment(GATEWAY_UPSTREAM_URL=UPSTREAM, GATEWAY_ZIPKIN_URL="http://collector:9411/api/v2/spans")

    def tls_like(settings: Settings) -> list[str]:
        return ["GATEWAY_TLS_CERT_FILE: cannot read /x (got '/x')"]

    report = check([route_problems, tls_like])
    assert report.problems == ["GATEWAY_TLS_CERT_FILE: cannot read /x (got '/x')"]
    assert report.warnings == []


def test_the_effective_configuration_is_every_setting_with_secrets_masked():
    settings = Settings(_env_file=None, upstream_url=UPSTREAM, zipkin_url="https://u:pw@collector/api/v2/spans")
    lines = effective_configuration(settings)
    assert [line.split("=", 1)[0] for line in lines] == [env_name(name) for name in Settings.model_fields]
    assert "GATEWAY_ZIPKIN_URL=https://u:***@collector/api/v2/spans" in lines
    assert "GATEWAY_ROUTES_FILE=" in lines and "GATEWAY_PRESERVE_HOST=false" in lines


def test_header_lists_are_masked_by_their_name():
    assert shown_value("otlp_headers", "authorization=Bearer x,x-tenant=7") == "authorization=***,x-tenant=***"


def test_in_force_says_listeners_upstreams_rate_exporters_and_trust(tmp_path: Path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - name: api\n    upstream: http://api.internal:8080\n")
    settings = Settings(
        _env_file=None,
        upstream_url=UPSTREAM,
        routes_file=routes,
        admin_port=0,
        sample_rate=0.1,
        trusted_cidrs="10.0.0.0/8",
        zipkin_url="http://collector:9411/api/v2/spans",
    )
    summary = in_force(settings, *load_routes(settings))
    assert summary["listeners"] == {"proxy": "0.0.0.0:8080", "admin": None, "redirect": None}
    assert summary["protocols"] == ["http/1.1", "h2c", "websocket"]
    assert summary["upstreams"] == {"api": "http://api.internal:8080", "default": "http://web-svc.emojivoto"}
    assert summary["upstream_protocols"] == {"api": "http1", "default": "http1"}
    assert (summary["sample_rate"], summary["exporters"]) == (0.1, {"zipkin": "http://collector:9411/api/v2/spans"})
    assert summary["trust"] == {"all_clients": False, "trusted_cidrs": ["10.0.0.0/8"]}


def test_in_force_names_the_tls_protocols_when_the_listener_speaks_tls(tmp_path: Path):
    settings = Settings(
        _env_file=None,
        upstream_url=UPSTREAM,
        tls_cert_file=tmp_path / "tls.crt",
        tls_key_file=tmp_path / "tls.key",
        http_redirect_port=8081,
    )
    summary = in_force(settings, *load_routes(settings))
    assert summary["protocols"] == ["h2 (TLS)", "http/1.1 (TLS)", "websocket (TLS)"]
    assert summary["listeners"]["redirect"] == "0.0.0.0:8081"
