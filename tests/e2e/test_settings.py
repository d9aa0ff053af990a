"""Bad settings: `ingress-gateway` exits 2 with one line per bad variable, naming it, and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import GATEWAY_BIN, gateway_env
from tests.support import running_process

pytestmark = pytest.mark.e2e

VALID_UPSTREAM = "http://127.0.0.1:9"
NAMED_VARIABLE = re.compile(r"\bGATEWAY_[A-Z0-9_]+")

# id, overrides, {variable the output must name: text its line must show (the bad value), or ""}
BAD_SETTINGS: list[tuple[str, dict[str, object], dict[str, str]]] = [
    ("rate-above-one", {"sample_rate": "1.5"}, {"GATEWAY_SAMPLE_RATE": "1.5"}),
    ("rate-not-a-number", {"sample_rate": "abc"}, {"GATEWAY_SAMPLE_RATE": "abc"}),
    ("rate-negative", {"sample_rate": "-0.1"}, {"GATEWAY_SAMPLE_RATE": "-0.1"}),
    ("upstream-ftp", {"upstream_url": "ftp://x"}, {"GATEWAY_UPSTREAM_URL": "ftp://x"}),
    ("upstream-no-scheme", {"upstream_url": "web-svc:80"}, {"GATEWAY_UPSTREAM_URL": "web-svc:80"}),
    ("port-out-of-range", {"port": "70000"}, {"GATEWAY_PORT": "70000"}),
    ("admin-port-not-a-number", {"admin_port": "x9901"}, {"GATEWAY_ADMIN_PORT": "x9901"}),
    ("upstream-missing", {"upstream_url": None}, {"GATEWAY_UPSTREAM_URL": ""}),
    ("bad-cidr", {"trusted_cidrs": "10.0.0.0/8,not-a-cidr"}, {"GATEWAY_TRUSTED_CIDRS": "not-a-cidr"}),
    ("cidr-prefix-too-long", {"trusted_cidrs": "10.0.0.0/33"}, {"GATEWAY_TRUSTED_CIDRS": "10.0.0.0/33"}),
    ("unknown-propagation", {"propagation": "b3,jaeger"}, {"GATEWAY_PROPAGATION": "jaeger"}),
    ("zipkin-url-not-http", {"zipkin_url": "collector:9411"}, {"GATEWAY_ZIPKIN_URL": "collector:9411"}),
    ("negative-timeout", {"upstream_timeout": "-1"}, {"GATEWAY_UPSTREAM_TIMEOUT": "-1"}),
    ("otlp-url-not-http", {"otlp_url": "otel:4318"}, {"GATEWAY_OTLP_URL": "otel:4318"}),
    # The headers often hold an API key: the line says what is wrong, never the value (see below).
    ("otlp-headers-not-key-value", {"otlp_headers": "api-key=s3cret,novalue"}, {"GATEWAY_OTLP_HEADERS": "entry 2"}),
    ("trust-not-a-bool", {"trust_incoming_trace": "maybe"}, {"GATEWAY_TRUST_INCOMING_TRACE": "maybe"}),
    (
        "three-bad-at-once",
        {"sample_rate": "1.5", "port": "70000", "trusted_cidrs": "300.1.1.1/8"},
        {"GATEWAY_SAMPLE_RATE": "1.5", "GATEWAY_PORT": "70000", "GATEWAY_TRUSTED_CIDRS": "300.1.1.1/8"},
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), [row[1:] for row in BAD_SETTINGS], ids=[r[0] for r in BAD_SETTINGS])
def test_bad_settings_exit_2_with_one_line_per_bad_variable(
    tmp_path: Path, overrides: dict[str, object], expected: dict[str, str]
) -> None:
    env = gateway_env(None, None, **{"upstream_url": VALID_UPSTREAM, **overrides})
    with running_process([GATEWAY_BIN], tmp_path / "gateway.log", env=env) as process:
        code = process.popen.wait(20)
        output = process.output()

    assert code == 2, f"exit code {code}, output:\n{output}"
    assert "Traceback" not in output, output
    # A line is about the first variable it names ("GATEWAY_UPSTREAM_URL: required unless GATEWAY_ROUTES_FILE ...").
    lines = [(line, match[0]) for line in output.splitlines() if (match := NAMED_VARIABLE.search(line))]
    named = sorted(variable for _, variable in lines)
    assert named == sorted(expected), f"expected one line for each of {sorted(expected)}, got:\n{output}"
    for line, variable in lines:
        assert expected[variable] in line, f"{variable}'s line does not show the bad value: {line!r}"
    assert "s3cret" not in output, "a secret setting's value is never shown"
