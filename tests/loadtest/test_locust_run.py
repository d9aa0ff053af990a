"""Real bounded locust runs against the real gateway, demo mesh and collector, each a process on loopback.

A healthy mesh at GATEWAY_SAMPLE_RATE=0.5 must give only complete and cleanly unsampled traces, and locust exits 0;
a mesh that breaks the rules on purpose must make the check report the broken traces, and locust exit 1.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LOOPBACK, RunningProcess, free_port, python_module, running_process, wait_for_port

pytestmark = pytest.mark.e2e

LOCUST = str(Path(sys.executable).with_name("locust"))
GATEWAY = str(Path(sys.executable).with_name("ingress-gateway"))
LOCUSTFILE = "loadtest/locustfile.py"
# Every reporter flushes five times a second; the check waits for two quiet seconds, ten flushes, so that a busy
# machine does not make it judge before the last spans are in.
FLUSH_INTERVAL = "0.2"
SETTLE = "2"
RUN_TIMEOUT = 90.0


@dataclass
class Mesh:
    gateway_url: str
    collector_url: str
    processes: list[RunningProcess]


@contextlib.contextmanager
def demo_mesh(log_dir: Path, web: str = "none", voting: str = "none") -> Iterator[Mesh]:
    """A collector, emoji, voting and web (misbehaving as asked) and the gateway in front of web, all started at
    once and stopped by PID."""
    ports = {name: free_port() for name in ("collector", "emoji", "voting", "web", "gateway", "admin")}
    url = {name: f"http://{LOOPBACK}:{port}" for name, port in ports.items()}
    spans = f"{url['collector']}/api/v2/spans"

    def service(name: str, *extra: str) -> list[str]:
        args = ["--port", str(ports[name]), "--zipkin-url", spans, "--flush-interval", FLUSH_INTERVAL, *extra]
        return python_module("gateway.devtools.mesh", name, *args)

    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "collector": (python_module("gateway.devtools.collector", "--port", str(ports["collector"])), {}),
        "emoji": (service("emoji"), {}),
        "voting": (service("voting", "--misbehave", voting), {}),
        "web": (
            service("web", "--emoji-url", url["emoji"], "--voting-url", url["voting"], "--misbehave", web),
            {},
        ),
        "gateway": (
            [GATEWAY],
            {
                "GATEWAY_HOST": LOOPBACK,
                "GATEWAY_PORT": str(ports["gateway"]),
                "GATEWAY_ADMIN_PORT": str(ports["admin"]),
                "GATEWAY_UPSTREAM_URL": url["web"],
                "GATEWAY_SAMPLE_RATE": "0.5",
                "GATEWAY_ZIPKIN_URL": spans,
                "GATEWAY_REPORTER_FLUSH_INTERVAL": FLUSH_INTERVAL,
                "GATEWAY_ACCESS_LOG": "false",
            },
        ),
    }
    with contextlib.ExitStack() as stack:
        # Started together, waited for after: five interpreters starting one after the other would take seconds.
        started = {
            name: stack.enter_context(running_process(args, log_dir / f"{name}.log", env=env))
            for name, (args, env) in commands.items()
        }
        for name, process in started.items():
            wait_for_port(ports[name], 30.0, process.popen)
        try:
            _wait_until_ready(f"{url['admin']}/ready", started["gateway"])
            yield Mesh(url["gateway"], url["collector"], list(started.values()))
        finally:
            # SIGTERM to all at once; the exit stack then waits for each (and kills what hangs).
            for process in started.values():
                process.terminate()


def run_locust(tmp_path: Path, mesh: Mesh, seconds: int, users: int = 10) -> tuple[int, str, dict[str, Any], Path]:
    """Runs the locustfile headless; returns its exit status, output, JSON verdict and records file."""
    records, report = tmp_path / "records.json", tmp_path / "report.json"
    args = [
        LOCUST,
        *("-f", LOCUSTFILE, "--headless", "--only-summary"),
        *("-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", mesh.gateway_url),
        *("--trace-collector", mesh.collector_url, "--trace-settle", SETTLE),
        *("--trace-records", str(records), "--trace-report", str(report)),
    ]
    with running_process(args, tmp_path / "locust.log") as locust:
        status = locust.popen.wait(RUN_TIMEOUT)
        output = locust.output()
    assert report.exists(), f"locust wrote no verdict (exit {status}):\n{output}"
    return status, output, json.loads(report.read_text()), records


def test_healthy_mesh_leaves_only_whole_or_absent_traces(tmp_path):
    with demo_mesh(tmp_path) as mesh:
        status, output, verdict, records = run_locust(tmp_path, mesh, seconds=6)
        assert status == 0, output
        assert "Trace check: PASSED" in output
        counts = verdict["counts"]
        assert verdict["passed"] is True
        assert verdict["responses"] >= 50, output
        # About half sampled: with this many independent trace ids, far outside 25%-75% does not happen.
        assert 0.25 < verdict["sampled"] / verdict["responses"] < 0.75, verdict
        assert counts["complete"] - verdict["unannounced_complete"] == verdict["sampled"]
        assert counts["unsampled"] == verdict["responses"] - verdict["sampled"]
        assert counts["missing"] == counts["partial"] == counts["leaked"] == counts["orphan"] == 0
        assert len(json.loads(records.read_text())["records"]) == verdict["responses"]
        # The load went through the whole mesh: every service reported spans.
        services = httpx.get(f"{mesh.collector_url}/api/v2/services", timeout=5).json()
        assert set(services) == {"ingress-gateway", "web", "emoji", "voting"}

        # The same records, checked again from the command line, give the same verdict.
        check = python_module("loadtest.check", "--collector", mesh.collector_url, "--records", str(records))
        with running_process([*check, "--settle", "0.5"], tmp_path / "check.log") as checker:
            assert checker.popen.wait(RUN_TIMEOUT) == 0, checker.output()
            assert checker.output().count("Trace check: PASSED") == 1


def test_mesh_that_ignores_decisions_and_drops_spans_fails_the_check(tmp_path):
    with demo_mesh(tmp_path, web="ignore-decision", voting="drop-spans") as mesh:
        status, output, verdict, _ = run_locust(tmp_path, mesh, seconds=4)
    assert status == 1, output
    assert "Trace check: FAILED" in output
    counts = verdict["counts"]
    # web samples every request it gets, so that no unsampled trace stays clean; voting reports nothing.
    assert counts["leaked"] == verdict["responses"] - verdict["sampled"] > 0
    assert counts["unsampled"] == 0
    assert counts["partial"] > 0
    problems = {entry["problem"] for entry in verdict["trace_problems"]}
    assert "partial: no span from voting" in problems
    assert any(problem.startswith("leaked: not sampled, yet reported by") for problem in problems)


def test_mesh_that_does_not_propagate_leaves_orphans(tmp_path):
    with demo_mesh(tmp_path, web="no-propagate") as mesh:
        status, output, verdict, _ = run_locust(tmp_path, mesh, seconds=3)
    assert status == 1, output
    counts = verdict["counts"]
    # emoji and voting get no context: each call starts a trace of its own, and the gateway's traces lack them
    # (those of requests cut off when the load stopped as well: hence at least as many partial traces as sampled).
    assert counts["complete"] == 0
    assert counts["partial"] >= verdict["sampled"] > 0
    assert counts["orphan"] > 0
    assert any(entry["problem"].startswith("orphan: announced by no response") for entry in verdict["trace_problems"])


def _wait_until_ready(url: str, gateway: RunningProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and gateway.popen.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"gateway not ready at {url}:\n{gateway.output()}")
