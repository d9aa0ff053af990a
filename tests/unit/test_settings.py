from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Propagation, Settings, describe, has_exporter

BASE = {"GATEWAY_UPSTREAM_URL": "http://web-svc.emojivoto:80"}


@pytest.fixture
def settings_from_env(monkeypatch, tmp_path):
    """Builds Settings from exactly the given GATEWAY_ variables, ignoring the caller's environment and .env."""
    monkeypatch.chdir(tmp_path)

    def make(**env: str) -> Settings:
        for name in list(__import__("os").environ):
            if name.startswith("GATEWAY_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return make


def errors_of(make, **env: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        make(**env)
    return [describe(error) for error in info.value.errors()]


def test_defaults_match_the_contract(settings_from_env):
    settings = settings_from_env(**BASE)
    assert (settings.host, settings.port, settings.admin_port, settings.workers) == ("0.0.0.0", 8080, 9901, 1)
    assert settings.sample_rate == 0.5
    assert settings.max_traces_per_second == 0
    assert settings.zipkin_url == ""
    assert settings.service_name == "ingress-gateway"
    assert settings.trust_incoming_trace is False
    assert settings.trusted_cidrs == []
    assert settings.trace_id_128bit is True
    assert settings.trace_response_header is True
    assert settings.upstream_timeout == 30
    assert settings.propagation == [Propagation.B3_MULTI]
    assert settings.routes_file is None
    assert (settings.routes_reload_interval, settings.no_route_status) == (2.0, 404)


def test_lists_are_comma_separated_not_json(settings_from_env):
    settings = settings_from_env(
        **BASE,
        GATEWAY_TRUSTED_CIDRS="10.0.0.0/8, 192.168.0.0/16,fd00::/8",
        GATEWAY_PROPAGATION="b3multi,b3,tracecontext",
    )
    assert settings.trusted_cidrs == [ip_network("10.0.0.0/8"), ip_network("192.168.0.0/16"), ip_network("fd00::/8")]
    assert settings.propagation == [Propagation.B3_MULTI, Propagation.B3_SINGLE, Propagation.TRACE_CONTEXT]


def test_reads_a_dotenv_file(settings_from_env, tmp_path):
    (tmp_path / ".env").write_text("GATEWAY_UPSTREAM_URL=http://from-dotenv:8000\nGATEWAY_SAMPLE_RATE=0.25\n")
    settings = settings_from_env()
    assert settings.upstream_url == "http://from-dotenv:8000"
    assert settings.sample_rate == 0.25


def test_a_routes_file_replaces_the_upstream_url(settings_from_env):
    assert settings_from_env(GATEWAY_ROUTES_FILE="routes.yaml").routes_file == Path("routes.yaml")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GATEWAY_SAMPLE_RATE", "1.5", "GATEWAY_SAMPLE_RATE: Input should be less than or equal to 1 (got '1.5')"),
        ("GATEWAY_SAMPLE_RATE", "-0.1", "GATEWAY_SAMPLE_RATE: Input should be greater than or equal to 0"),
        ("GATEWAY_SAMPLE_RATE", "abc", "GATEWAY_SAMPLE_RATE: Input should be a valid number"),
        ("GATEWAY_PORT", "70000", "GATEWAY_PORT: Input should be less than or equal to 65535 (got '70000')"),
        ("GATEWAY_PORT", "0", "GATEWAY_PORT: Input should be greater than or equal to 1"),
        ("GATEWAY_ADMIN_PORT", "-1", "GATEWAY_ADMIN_PORT: Input should be greater than or equal to 0"),
        ("GATEWAY_WORKERS", "0", "GATEWAY_WORKERS: Input should be greater than or equal to 1"),
        ("GATEWAY_UPSTREAM_URL", "ftp://x", "GATEWAY_UPSTREAM_URL: "),
        ("GATEWAY_UPSTREAM_URL", "web-svc:80", "GATEWAY_UPSTREAM_URL: "),
        ("GATEWAY_ZIPKIN_URL", "collector:9411", "GATEWAY_ZIPKIN_URL: must be an http:// or https:// URL with a host"),
        ("GATEWAY_TRUSTED_CIDRS", "10.0.0.0/8,not-a-net", "GATEWAY_TRUSTED_CIDRS: "),
        ("GATEWAY_PROPAGATION", "b3multi,jaeger", "GATEWAY_PROPAGATION: Input should be 'b3multi', 'b3' or"),
        ("GATEWAY_TRUST_INCOMING_TRACE", "maybe", "GATEWAY_TRUST_INCOMING_TRACE: Input should be a valid boolean"),
        ("GATEWAY_UPSTREAM_TIMEOUT", "0", "GATEWAY_UPSTREAM_TIMEOUT: Input should be greater than 0"),
        ("GATEWAY_MAX_TRACES_PER_SECOND", "-5", "GATEWAY_MAX_TRACES_PER_SECOND: Input should be greater than or"),
        ("GATEWAY_LOG_LEVEL", "loud", "GATEWAY_LOG_LEVEL: Input should be 'debug', 'info'"),
        ("GATEWAY_NO_ROUTE_STATUS", "200", "GATEWAY_NO_ROUTE_STATUS: Input should be greater than or equal to 400"),
        ("GATEWAY_NO_ROUTE_STATUS", "600", "GATEWAY_NO_ROUTE_STATUS: Input should be less than or equal to 599"),
        ("GATEWAY_NO_ROUTE_STATUS", "4o4", "GATEWAY_NO_ROUTE_STATUS: Input should be a valid integer"),
        ("GATEWAY_ROUTES_RELOAD_INTERVAL", "-1", "GATEWAY_ROUTES_RELOAD_INTERVAL: Input should be greater than or"),
        ("GATEWAY_ROUTES_RELOAD_INTERVAL", "2s", "GATEWAY_ROUTES_RELOAD_INTERVAL: Input should be a valid number"),
        ("GATEWAY_UPSTREAM_PROTOCOL", "grpc", "GATEWAY_UPSTREAM_PROTOCOL: Input should be 'http1' or 'h2c'"),
        ("GATEWAY_UPSTREAM_H2_MAX_STREAMS", "0", "GATEWAY_UPSTREAM_H2_MAX_STREAMS: Input should be greater than or"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_allowed(settings_from_env, variable, value, expected):
    env = {**BASE, variable: value}
    lines = errors_of(settings_from_env, **env)
    assert len(lines) == 1
    assert lines[0].startswith(expected), lines[0]


def test_every_bad_variable_gets_its_own_line(settings_from_env):
    lines = errors_of(settings_from_env, **BASE, GATEWAY_SAMPLE_RATE="2", GATEWAY_PORT="abc")
    assert sorted(line.split(":")[0] for line in lines) == ["GATEWAY_PORT", "GATEWAY_SAMPLE_RATE"]


def test_an_upstream_is_required(settings_from_env):
    assert errors_of(settings_from_env) == ["GATEWAY_UPSTREAM_URL: required unless GATEWAY_ROUTES_FILE is set"]


def test_every_setting_has_a_description_for_the_help_and_the_readme():
    assert [name for name, info in Settings.model_fields.items() if not info.description] == []


@pytest.mark.parametrize("variable", ["GATEWAY_PORT", "GATEWAY_ADMIN_PORT"])
def test_a_kubernetes_service_link_in_a_port_setting_leaves_its_default(settings_from_env, variable):
    settings = settings_from_env(**BASE, **{variable: "tcp://10.0.0.1:8080"})
    assert (settings.port, settings.admin_port) == (8080, 9901)


def test_a_port_that_is_neither_a_number_nor_a_service_link_is_still_an_error(settings_from_env):
    assert errors_of(settings_from_env, **BASE, GATEWAY_PORT="tcp://gateway") == [
        "GATEWAY_PORT: Input should be a valid integer, unable to parse string as an integer (got 'tcp://gateway')"
    ]


BAD_VALUES = {
    "GATEWAY_UPSTREAM_URL": "notaurl",
    "GATEWAY_ZIPKIN_URL": "collector:9411",
    "GATEWAY_SAMPLE_RATE": "abc",
    "GATEWAY_PORT": "70000",
    "GATEWAY_TRUSTED_CIDRS": "10.0.0.0/33",
    "GATEWAY_PROPAGATION": "jaeger",
    "GATEWAY_UPSTREAM_CLIENT": "curl",
    "GATEWAY_LOG_LEVEL": "loud",
    "GATEWAY_PRESERVE_HOST": "maybe",
    "GATEWAY_WORKERS": "0",
}


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES.items(), ids=BAD_VALUES)
def test_every_error_names_the_variable_and_shows_the_value_once(settings_from_env, variable, value):
    (line,) = errors_of(settings_from_env, **{**BASE, variable: value})
    assert line.startswith(f"{variable}: ")
    assert line.count(f"(got {value!r})") == 1, line
    assert line.count("(got ") == 1, line


def test_an_upstream_url_with_credentials_is_not_echoed(settings_from_env):
    (line,) = errors_of(settings_from_env, GATEWAY_UPSTREAM_URL="http://user:s3cret@web:80")
    assert "s3cret" not in line
    assert line == "GATEWAY_UPSTREAM_URL: must not carry credentials (user:password@) (got 'http://user:***@web:80')"


def test_has_exporter_is_the_zipkin_url(settings_from_env):
    assert not has_exporter(settings_from_env(**BASE))
    assert has_exporter(settings_from_env(**BASE, GATEWAY_ZIPKIN_URL="http://collector:9411/api/v2/spans"))


def test_an_empty_variable_means_the_default(settings_from_env):
    settings = settings_from_env(**BASE, GATEWAY_ROUTES_FILE="", GATEWAY_SAMPLE_RATE="", GATEWAY_PROPAGATION="")
    assert (settings.routes_file, settings.sample_rate, settings.propagation) == (None, 0.5, [Propagation.B3_MULTI])


@pytest.mark.parametrize("variable", ["GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE", "GATEWAY_TLS_CERTS_DIR"])
def test_an_empty_tls_variable_means_no_tls(settings_from_env, tmp_path, variable):
    # `GATEWAY_TLS_CERT_FILE=` in a ConfigMap: no TLS, not the directory "." (Path("") is "."); so in a .env file.
    field = variable.removeprefix("GATEWAY_").lower()
    assert getattr(settings_from_env(**BASE, **{variable: ""}), field) is None
    (tmp_path / ".env").write_text(f"{variable}=\n")
    assert getattr(settings_from_env(**BASE), field) is None


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("10.0.0.1/8", "GATEWAY_TRUSTED_CIDRS: has host bits set: the network is 10.0.0.0/8 (got '10.0.0.1/8')"),
        ("10.0.0.0/33", "GATEWAY_TRUSTED_CIDRS: must be a network such as 10.0.0.0/8 or fd00::/8 (got '10.0.0.0/33')"),
    ],
)
def test_a_bad_network_says_what_is_expected(settings_from_env, value, line):
    assert errors_of(settings_from_env, **BASE, GATEWAY_TRUSTED_CIDRS=value) == [line]


def test_h2c_needs_a_cleartext_upstream(settings_from_env):
    assert errors_of(settings_from_env, GATEWAY_UPSTREAM_URL="https://grpc", GATEWAY_UPSTREAM_PROTOCOL="h2c") == [
        "GATEWAY_UPSTREAM_PROTOCOL: h2c needs an http:// upstream (got 'https://grpc')"
    ]
    assert (
        settings_from_env(GATEWAY_UPSTREAM_URL="http://grpc", GATEWAY_UPSTREAM_PROTOCOL="h2c").upstream_protocol
        == "h2c"
    )
