from __future__ import annotations

from pathlib import Path

import pytest

from gateway.environment import environment_warnings, gateway_variables, is_service_link
from gateway.settings import Settings, env_name

KNOWN = {env_name(name) for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("GATEWAY_SAMPLERATE", "GATEWAY_SAMPLE_RATE"),
        ("GATEWAY_ZIPKINURL", "GATEWAY_ZIPKIN_URL"),
        ("GATEWAY_TRUSTED_CIDR", "GATEWAY_TRUSTED_CIDRS"),
        ("GATEWAY_WORKER", "GATEWAY_WORKERS"),
        ("GATEWAY_LOGLEVEL", "GATEWAY_LOG_LEVEL"),
    ],
)
def test_an_unknown_variable_is_named_with_the_closest_known_name(typo, meant):
    assert environment_warnings({typo: "0.1"}, KNOWN) == [f"{typo}: unknown setting; did you mean {meant}?"]


def test_an_unknown_variable_like_no_setting_is_named_without_a_guess():
    assert environment_warnings({"GATEWAY_FOO": "x"}, KNOWN) == ["GATEWAY_FOO: unknown setting (ignored)"]


def test_known_variables_and_other_prefixes_give_no_warning():
    assert environment_warnings({"GATEWAY_SAMPLE_RATE": "0.1", "GATEWAY_PORT": "8080"}, KNOWN) == []


# What Kubernetes injects into every pod of a namespace with a Service named `gateway` (ports 8080, http).
SERVICE_LINKS = {
    "GATEWAY_SERVICE_HOST": "10.0.0.1",
    "GATEWAY_SERVICE_PORT": "8080",
    "GATEWAY_SERVICE_PORT_HTTP": "8080",
    "GATEWAY_PORT": "tcp://10.0.0.1:8080",
    "GATEWAY_PORT_8080_TCP": "tcp://10.0.0.1:8080",
    "GATEWAY_PORT_8080_TCP_PROTO": "tcp",
    "GATEWAY_PORT_8080_TCP_PORT": "8080",
    "GATEWAY_PORT_8080_TCP_ADDR": "10.0.0.1",
}


def test_service_links_give_one_warning_naming_enable_service_links_and_the_overridden_setting():
    warnings = environment_warnings(SERVICE_LINKS, KNOWN)
    assert len(warnings) == 1
    (warning,) = warnings
    assert "enableServiceLinks: false" in warning
    assert "GATEWAY_PORT='tcp://10.0.0.1:8080' ignored" in warning
    assert all(name in warning for name in SERVICE_LINKS)
    assert "unknown setting" not in warning


def test_a_service_named_gateway_admin_collides_with_the_admin_port_and_is_recognised():
    links = {"GATEWAY_ADMIN_PORT": "tcp://[fd00::1]:9901", "GATEWAY_ADMIN_SERVICE_HOST": "fd00::1"}
    (warning,) = environment_warnings(links, KNOWN)
    assert "GATEWAY_ADMIN_PORT='tcp://[fd00::1]:9901' ignored" in warning


@pytest.mark.parametrize(
    ("name", "value", "link"),
    [
        ("GATEWAY_PORT", "tcp://10.0.0.1:8080", True),
        ("GATEWAY_PORT", "8080", False),
        ("GATEWAY_PORT", "tcp://nothost", False),
        ("GATEWAY_SERVICE_HOST", "10.0.0.1", True),
        ("GATEWAY_SERVICE_NAME", "x", False),
        ("GATEWAY_PORT_53_UDP_ADDR", "10.0.0.1", True),
        ("GATEWAY_SAMPLE_RATE", "tcp://10.0.0.1:8080", False),
    ],
)
def test_is_service_link(name, value, link):
    assert is_service_link(name, value) is link


def test_the_env_file_counts_and_the_environment_wins_over_it(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("GATEWAY_SAMPLERATE=0.1\nGATEWAY_PORT=1\nOTHER=x\n")
    variables = gateway_variables({"GATEWAY_PORT": "2", "HOME": "/root"}, env_file)
    assert variables == {"GATEWAY_SAMPLERATE": "0.1", "GATEWAY_PORT": "2"}
    assert gateway_variables({}, tmp_path / "absent.env") == {}
