"""`ingress-gateway --help`, `--version` and `check`, as a user or a CI job runs them: real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import Settings, env_name
from tests.e2e.conftest import GATEWAY_BIN

pytestmark = pytest.mark.e2e

UPSTREAM = "http://127.0.0.1:9"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command with exactly these GATEWAY_ variables (none inherited), in `cwd` (where a .env would be read)."""
    clean = {name: value for name, value in os.environ.items() if not name.upper().startswith("GATEWAY_")}
    return subprocess.run(args, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [[GATEWAY_BIN], [sys.executable, "-m", "gateway"]], ids=["script", "module"])
def test_help_lists_every_setting_and_serves_nothing(tmp_path, command):
    # Even with a setting that would stop the gateway: --help answers before the settings are read.
    result = run([*command, "--help"], tmp_path, GATEWAY_SAMPLE_RATE="7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ingress-gateway")
    for name in Settings.model_fields:
        assert f"\n  {env_name(name)} " in result.stdout
    assert "check" in result.stdout


def test_version_is_the_package_version(tmp_path):
    from importlib.metadata import version

    result = run([GATEWAY_BIN, "--version"], tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, f"ingress-gateway {version('ingress-gateway')}")


def test_check_prints_the_effective_configuration_with_secrets_masked_and_exits_0(tmp_path):
    result = run(
        [GATEWAY_BIN, "check"],
        tmp_path,
        GATEWAY_UPSTREAM_URL=UPSTREAM,
        GATEWAY_SAMPLE_RATE="0.25",
        GATEWAY_ZIPKIN_URL="https://tenant:s3cret@collector.example:9411/api/v2/spans",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [env_name(name) for name in Settings.model_fields]
    assert "GATEWAY_SAMPLE_RATE=0.25" in lines
    assert "GATEWAY_ZIPKIN_URL=https://tenant:***@collector.example:9411/api/v2/spans" in lines
    assert "s3cret" not in result.stdout + result.stderr
    assert "configuration check passed" in result.stderr


def test_check_prints_every_problem_at_once_and_exits_2(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - name: web\n    upstream: notaurl\n")
    result = run(
        [GATEWAY_BIN, "check"],
        tmp_path,
        GATEWAY_SAMPLE_RATE="1.5",
        GATEWAY_PORT="70000",
        GATEWAY_UPSTREAM_URL="notaurl",
        GATEWAY_ROUTES_FILE=str(routes),
        GATEWAY_SAMPLERATE="0.1",
    )
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    assert "GATEWAY_SAMPLE_RATE: Input should be less than or equal to 1 (got '1.5')" in errors
    assert "GATEWAY_PORT: Input should be less than or equal to 65535 (got '70000')" in errors
    assert "GATEWAY_UPSTREAM_URL: must be an http:// or https:// URL (got 'notaurl')" in errors
    assert any(line.startswith("GATEWAY_ROUTES_FILE: ") and "notaurl" in line for line in errors), errors
    assert "warning: GATEWAY_SAMPLERATE: unknown setting; did you mean GATEWAY_SAMPLE_RATE?" in errors
    assert errors[-1] == "ingress-gateway: configuration check failed: 4 problem(s)"
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_check_reads_the_env_file_as_serving_does(tmp_path):
    (tmp_path / ".env").write_text(f"GATEWAY_UPSTREAM_URL={UPSTREAM}\nGATEWAY_WORKER=4\n")
    result = run([GATEWAY_BIN, "check", "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: GATEWAY_WORKER: unknown setting; did you mean GATEWAY_WORKERS?" in result.stderr
    strict = run([GATEWAY_BIN, "check", "--strict"], tmp_path, GATEWAY_ZIPKIN_URL="http://127.0.0.1:9/api/v2/spans")
    assert strict.returncode == 2


def test_check_tolerates_the_service_links_of_a_service_named_gateway(tmp_path):
    result = run(
        [GATEWAY_BIN, "check"],
        tmp_path,
        GATEWAY_UPSTREAM_URL=UPSTREAM,
        GATEWAY_PORT="tcp://10.96.0.12:8080",
        GATEWAY_PORT_8080_TCP="tcp://10.96.0.12:8080",
        GATEWAY_PORT_8080_TCP_ADDR="10.96.0.12",
        GATEWAY_SERVICE_HOST="10.96.0.12",
        GATEWAY_SERVICE_PORT="8080",
    )
    assert result.returncode == 0, result.stderr
    assert "GATEWAY_PORT=8080" in result.stdout.splitlines()
    (warning,) = [line for line in result.stderr.splitlines() if "enableServiceLinks" in line]
    assert "GATEWAY_PORT='tcp://10.96.0.12:8080' ignored" in warning


def test_without_an_exporter_check_warns_how_to_turn_tracing_on(tmp_path):
    result = run([GATEWAY_BIN, "check", "--quiet"], tmp_path, GATEWAY_UPSTREAM_URL=UPSTREAM)
    assert result.returncode == 0
    assert "no new trace is sampled" in result.stderr and "GATEWAY_ZIPKIN_URL" in result.stderr
