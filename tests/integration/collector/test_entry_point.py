"""`python -m gateway_devtools.collector` as a real process: starts, serves, stops on a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from tests.support import LOOPBACK, RunningProcess, free_port, python_module, running_process

MODULE = "gateway_devtools.collector"
SPAN = {"traceId": "00000000000000a1", "id": "00000000000000b2", "name": "get /", "timestamp": 1, "duration": 5}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_module_serves_until_a_signal_then_exits_cleanly(tmp_path, sig):
    port = free_port()
    args = python_module(MODULE, "--host", LOOPBACK, "--port", str(port), "--max-spans", "10", "--max-age", "30")
    with running_process(args, tmp_path / "collector.log", wait_ports=[port]) as process:
        url = f"http://{LOOPBACK}:{port}"
        posted = httpx.post(f"{url}/api/v2/spans", content=json.dumps([SPAN]), timeout=5)
        trace = httpx.get(f"{url}/api/v2/trace/00000000000000a1", timeout=5)
        stats = httpx.get(f"{url}/api/v2/_stats", timeout=5).json()

        process.popen.send_signal(sig)
        returncode = process.popen.wait(15)

    assert posted.status_code == 202
    assert trace.json()[0]["id"] == "00000000000000b2"
    assert (stats["maxSpans"], stats["maxAgeSeconds"]) == (10, 30.0)
    assert returncode == 0
    lines = process.output().splitlines()
    assert lines[0] == f"Zipkin collector listening on http://{LOOPBACK}:{port} (trace page at /, API at /api/v2)"
    assert "Traceback" not in process.output()


def test_fault_flags_reach_the_app(tmp_path):
    port = free_port()
    args = python_module(MODULE, "--port", str(port), "--fail-first", "1", "--response-delay", "0.2")
    with running_process(args, tmp_path / "collector.log", wait_ports=[port]):
        with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=5) as client:
            first = client.post("/api/v2/spans", content=b"[]", headers={"content-type": "application/json"})
            second = client.post("/api/v2/spans", content=b"[]", headers={"content-type": "application/json"})

    assert (first.status_code, second.status_code) == (503, 202)
    assert second.elapsed.total_seconds() >= 0.2


def test_port_zero_names_the_port_it_got(tmp_path):
    log = tmp_path / "collector.log"
    with running_process(python_module(MODULE, "--port", "0"), log) as process:
        output = _wait_for_output(process)
        port = int(output.split(f"http://{LOOPBACK}:")[1].split(" ")[0])
        assert httpx.get(f"http://{LOOPBACK}:{port}/api/v2/services", timeout=5).json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-spans", "0"], "--max-spans: '0' must be above 0"),
        (["--max-age", "soon"], "--max-age: 'soon' is not a number"),
        (["--response-delay", "-1"], "--response-delay: '-1' must be at least 0"),
        (["--fail-first", "nan"], "--fail-first: 'nan' is not a number"),
        (["--port", "70000"], "--port: 70000 is not a TCP port"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(args, message):
    result = subprocess.run(python_module(MODULE, *args), capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_exits_1_with_a_clear_line(tmp_path):
    port = free_port()
    with running_process(python_module(MODULE, "--port", str(port)), tmp_path / "first.log", wait_ports=[port]):
        result = subprocess.run(python_module(MODULE, "--port", str(port)), capture_output=True, text=True, timeout=30)

    assert result.returncode == 1
    assert result.stderr.startswith(f"collector: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def _wait_for_output(process: RunningProcess, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = process.output()
        if "listening on" in output:
            return output
        assert process.popen.poll() is None, output
        time.sleep(0.05)
    raise AssertionError(f"no listening line after {timeout}s: {process.output()!r}")
