"""Real bounded locust runs against the real gateway, demo mesh and collector, each a process on loopback.

One healthy mesh serves the module: a collector, emoji, voting, web, and three gateways in front of web (at rate 0.5,
at rate 0.0, and with a route file giving /api/vote and /api/leaderboard rates of their own). The collector is
emptied before each run. A misbehaving service gets a web (and voting) of its own, with a gateway in front.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.loadtest.fake_jaeger import FakeJaeger
from tests.support import LOOPBACK, RunningProcess, ThreadedServer, free_port, python_module, running_process

pytestmark = pytest.mark.e2e

LOCUST = str(Path(sys.executable).with_name("locust"))
GATEWAY = str(Path(sys.executable).with_name("ingress-gateway"))
LOCUSTFILE = "loadtest/locustfile.py"
# Every reporter flushes five times a second; the check waits for two quiet seconds, ten flushes, so that a busy
# machine does not make it judge before the last spans are in.
FLUSH_INTERVAL = "0.2"
SETTLE = "2"
RUN_TIMEOUT = 90.0
WAIT = 40.0
SERVICES = {"ingress-gateway", "web", "emoji", "voting"}
BROKEN_LINE = re.compile(r"^  (partial|missing|leaked|orphan) +([0-9a-f]{16,32}) ", re.MULTILINE)


@dataclass
class Gateway:
    url: str
    admin_url: str


@dataclass
class Stack:
    collector: str
    emoji: str
    voting: str
    web: str
    half: Gateway  # GATEWAY_SAMPLE_RATE=0.5
    never: Gateway  # GATEWAY_SAMPLE_RATE=0.0
    routed: Gateway  # a route file: votes at 1.0, the leaderboard at 0.0, the rest at 0.5
    routes_file: Path
    log_dir: Path

    def reset(self) -> None:
        httpx.post(f"{self.collector}/api/v2/_reset", timeout=5).raise_for_status()

    def services(self) -> set[str]:
        return set(httpx.get(f"{self.collector}/api/v2/services", timeout=5).json())

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.collector}/api/v2/trace/{trace_id}", timeout=5)
        return list(response.json()) if response.status_code == 200 else []


class Processes:
    """Starts processes at once, waits for each after, and stops them all by PID when the block ends."""

    def __init__(self, stack: contextlib.ExitStack, log_dir: Path) -> None:
        self._stack = stack
        self._log_dir = log_dir
        self._waiting: list[tuple[RunningProcess, int, str | None]] = []

    def service(self, name: str, collector: str, *extra: str) -> str:
        port = free_port()
        args = ["--port", str(port), "--zipkin-url", f"{collector}/api/v2/spans", "--flush-interval", FLUSH_INTERVAL]
        self._start(python_module("gateway_devtools.mesh", name, *args, *extra), f"{name}-{port}", port)
        return f"http://{LOOPBACK}:{port}"

    def collector(self) -> str:
        port = free_port()
        self._start(python_module("gateway_devtools.collector", "--port", str(port)), "collector", port)
        return f"http://{LOOPBACK}:{port}"

    def gateway(self, collector: str, rate: str, upstream: str | None = None, routes: Path | None = None) -> Gateway:
        port, admin = free_port(), free_port()
        env = {
            "GATEWAY_HOST": LOOPBACK,
            "GATEWAY_PORT": str(port),
            "GATEWAY_ADMIN_PORT": str(admin),
            "GATEWAY_SAMPLE_RATE": rate,
            "GATEWAY_ZIPKIN_URL": f"{collector}/api/v2/spans",
            "GATEWAY_REPORTER_FLUSH_INTERVAL": FLUSH_INTERVAL,
            "GATEWAY_ACCESS_LOG": "false",
            **({"GATEWAY_UPSTREAM_URL": upstream} if upstream else {}),
            **({"GATEWAY_ROUTES_FILE": str(routes)} if routes else {}),
        }
        admin_url = f"http://{LOOPBACK}:{admin}"
        self._start([GATEWAY], f"gateway-{port}", port, env, ready=f"{admin_url}/ready")
        return Gateway(f"http://{LOOPBACK}:{port}", admin_url)

    def wait(self) -> None:
        for process, port, ready in self._waiting:
            _wait_until(partial(_answers, port, ready), f"nothing ready on port {port}", process)
        self._waiting.clear()

    def _start(
        self, args: list[str], name: str, port: int, env: dict[str, str] | None = None, ready: str | None = None
    ) -> None:
        process = self._stack.enter_context(running_process(args, self._log_dir / f"{name}.log", env=env))
        self._waiting.append((process, port, ready))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stack")
    with contextlib.ExitStack() as exits:
        start = Processes(exits, log_dir)
        # Started together, waited for after: interpreters starting one after the other would take seconds.
        collector = start.collector()
        emoji, voting = start.service("emoji", collector), start.service("voting", collector)
        web = start.service("web", collector, "--emoji-url", emoji, "--voting-url", voting)
        routes_file = log_dir / "routes.yaml"
        routes_file.write_text(
            "routes:\n"
            f"  - {{name: votes, path_prefix: /api/vote, upstream: '{web}', sample_rate: 1.0}}\n"
            f"  - {{name: leaderboard, path_prefix: /api/leaderboard, upstream: '{web}', sample_rate: 0.0}}\n"
            f"  - {{name: web, upstream: '{web}'}}\n"
        )
        half, never = start.gateway(collector, "0.5", web), start.gateway(collector, "0.0", web)
        routed = start.gateway(collector, "0.5", routes=routes_file)
        start.wait()
        yield Stack(collector, emoji, voting, web, half, never, routed, routes_file, log_dir)


@pytest.fixture
def mesh(stack: Stack) -> Stack:
    stack.reset()
    return stack


def locust_args(
    gateway: str, backend_url: str, *extra: str, seconds: int = 3, users: int = 6, locustfile: str = LOCUSTFILE
) -> list[str]:
    return [
        LOCUST,
        *("-f", locustfile, "--only-summary", "--stop-timeout", "5"),
        *("-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", gateway),
        *("--trace-backend-url", backend_url, "--trace-settle", SETTLE),
        *extra,
    ]


def run_locust(
    tmp_path: Path,
    gateway: str,
    backend_url: str,
    *extra: str,
    seconds: int = 3,
    users: int = 6,
    locustfile: str = LOCUSTFILE,
) -> tuple[int, str, dict[str, Any]]:
    """Runs the locustfile headless; returns its exit status, output and JSON verdict."""
    report = tmp_path / "report.json"
    args = locust_args(gateway, backend_url, *extra, seconds=seconds, users=users, locustfile=locustfile)
    args.append("--headless")
    with running_process([*args, "--trace-report", str(report)], tmp_path / "locust.log") as locust:
        status = locust.popen.wait(RUN_TIMEOUT)
        output = locust.output()
    assert report.exists(), f"locust wrote no verdict (exit {status}):\n{output}"
    return status, output, json.loads(report.read_text())


def only_whole_or_absent(verdict: dict[str, Any]) -> bool:
    counts = verdict["counts"]
    return all(counts[status] == 0 for status in ("missing", "partial", "leaked", "orphan"))


# --- a healthy mesh ---------------------------------------------------------------------------------------------------


def test_clean_run_at_half_rate_leaves_only_whole_or_absent_traces(mesh, tmp_path):
    records, csv = tmp_path / "records.json", tmp_path / "run"
    status, output, verdict = run_locust(
        tmp_path,
        mesh.half.url,
        mesh.collector,
        *("--trace-rate", "0.5", "--trace-records", str(records), "--csv", str(csv)),
        users=8,
    )
    assert status == 0, output
    # Locust's own options work as usual alongside the check's.
    assert (tmp_path / "run_stats.csv").exists()
    assert output.count("Trace check: PASSED") == 1
    assert verdict["passed"] is True
    assert verdict["responses"] >= 30, output
    counts = verdict["counts"]
    assert counts["complete"] - verdict["unannounced_complete"] == verdict["sampled"] > 0
    assert counts["unsampled"] == verdict["responses"] - verdict["sampled"] > 0
    assert only_whole_or_absent(verdict)
    assert verdict["rate_ok"] is True
    assert {group["group"] for group in verdict["rates"]} == {"all requests", "all requests (forged trace headers)"}
    # Both kinds of users ran: the hostile one's forged ids were all looked for, and none was found.
    assert verdict["hostile"]["responses"] > 0
    assert verdict["hostile"]["forged_trace_ids_checked"] > 0
    assert verdict["hostile"]["forged_trace_ids_seen"] == []
    # The load went through the whole mesh: every service reported spans.
    assert mesh.services() == SERVICES

    # The same records, checked again from the command line, give the same verdict.
    check = python_module("loadtest.check", "--backend-url", mesh.collector, "--records", str(records))
    with running_process([*check, "--settle", "0.5", "--rate", "0.5"], tmp_path / "check.log") as checker:
        assert checker.popen.wait(RUN_TIMEOUT) == 0, checker.output()
        assert checker.output().count("Trace check: PASSED") == 1


def test_a_wrong_expected_rate_fails_the_rate_check_alone(mesh, tmp_path):
    status, output, verdict = run_locust(tmp_path, mesh.half.url, mesh.collector, "--trace-rate", "0.05")
    assert status == 1, output
    assert "Sample rate: NOT as configured" in output
    assert "BAD all requests:" in output
    assert verdict["rate_ok"] is False
    # Every trace is whole: the rate is all that failed.
    assert only_whole_or_absent(verdict)
    assert verdict["problems"] == []


def test_the_hostile_client_never_causes_a_sampled_trace(mesh, tmp_path):
    status, output, verdict = run_locust(
        tmp_path, mesh.never.url, mesh.collector, "HostileClient", "--trace-rate", "0.0", users=4
    )
    assert status == 0, output
    assert verdict["responses"] == verdict["hostile"]["responses"] > 0
    assert verdict["sampled"] == verdict["hostile"]["sampled"] == 0
    assert verdict["counts"]["unsampled"] == verdict["responses"]
    assert verdict["hostile"]["forged_trace_ids_checked"] > 0
    assert verdict["hostile"]["forged_trace_ids_seen"] == []
    # Not one span anywhere: forged sampled and debug flags decided nothing.
    assert mesh.services() == set()
    # The forged headers did reach the gateway, which dropped them.
    metrics = httpx.get(f"{mesh.never.admin_url}/metrics", timeout=5).text
    ignored = re.search(r'gateway_trace_headers_ignored_total\{reason="untrusted"\} (\S+)', metrics)
    assert ignored and float(ignored[1]) > 0, metrics


def test_each_route_is_held_to_its_own_rate(mesh, tmp_path):
    status, output, verdict = run_locust(
        tmp_path,
        mesh.routed.url,
        mesh.collector,
        *("EmojiVoter", "--trace-rate", "0.5", "--trace-routes-file", str(mesh.routes_file)),
    )
    assert status == 0, output
    groups = {group["group"]: group for group in verdict["rates"]}
    assert set(groups) == {"votes", "leaderboard", "web"}, output
    assert groups["votes"]["expected_rate"] == 1.0
    assert groups["votes"]["sampled"] == groups["votes"]["requests"] > 0
    assert groups["leaderboard"]["expected_rate"] == 0.0
    assert groups["leaderboard"]["sampled"] == 0 < groups["leaderboard"]["requests"]
    assert groups["web"]["expected_rate"] == 0.5
    assert only_whole_or_absent(verdict)


def test_a_distributed_run_gives_one_combined_report(mesh, tmp_path):
    port = free_port()
    report = tmp_path / "report.json"
    worker = [LOCUST, "-f", LOCUSTFILE, "--worker", "--master-host", LOOPBACK, "--master-port", str(port)]
    master = [
        *locust_args(mesh.half.url, mesh.collector, "--trace-rate", "0.5", seconds=4),
        *("--headless", "--master", "--master-bind-host", LOOPBACK, "--master-bind-port", str(port)),
        *("--expect-workers", "2", "--trace-report", str(report)),
    ]
    with contextlib.ExitStack() as exits:
        workers = [exits.enter_context(running_process(worker, tmp_path / f"worker{index}.log")) for index in range(2)]
        with running_process(master, tmp_path / "master.log") as run:
            status = run.popen.wait(RUN_TIMEOUT)
            output = run.output()
        for each in workers:
            each.popen.wait(WAIT)
    assert status == 0, output
    assert output.count("Trace check: PASSED") == 1
    assert "from 2 workers" in output
    for each in workers:
        assert "Trace check" not in each.output(), each.output()
    verdict = json.loads(report.read_text())
    assert verdict["workers"] == 2
    assert verdict["responses"] > 0
    assert verdict["counts"]["complete"] + verdict["counts"]["unsampled"] >= verdict["responses"]
    assert only_whole_or_absent(verdict)
    # Every response of both workers is in the one report: the collector holds exactly the sampled ones.
    listed = httpx.get(f"{mesh.collector}/api/v2/traces", params={"limit": "100000"}, timeout=10).json()
    assert len(listed) == verdict["counts"]["complete"]


def test_the_traces_tab_follows_the_run_live_and_shows_the_verdict(mesh, tmp_path):
    web_port = free_port()
    report = tmp_path / "report.json"
    args = [
        *locust_args(mesh.half.url, mesh.collector, "--trace-rate", "0.5", seconds=120, users=4),
        *("--web-host", LOOPBACK, "--web-port", str(web_port), "--autostart", "--autoquit", "120"),
        *("--trace-live-interval", "0.5", "--trace-settle", "1", "--trace-report", str(report)),
    ]
    ui = f"http://{LOOPBACK}:{web_port}"
    with running_process(args, tmp_path / "locust.log", wait_ports=[web_port]) as locust:
        page = httpx.get(f"{ui}/", timeout=10).text
        tabs = json.loads(re.search(r"window.templateArgs = (\{.*\})", page)[1])["extended_tabs"]  # type: ignore[index]
        assert tabs == [{"title": "Traces", "key": "traces"}]

        live = _wait_for(lambda: _traces(ui) if _traces(ui)["live"]["checked"] >= 5 else None, locust)
        assert live["state"] == "running"
        assert live["final"] is None
        assert live["live"]["counts"]["complete"] + live["live"]["counts"]["unsampled"] == live["live"]["checked"]
        rows = _tab_rows(ui)
        assert rows[0]["what"] == "check" and rows[0]["count"] == "running"
        assert any(row["what"] == "complete" and row["detail"].startswith("so far") for row in rows)

        httpx.post(f"{ui}/stop", timeout=WAIT).raise_for_status()
        done = _wait_for(lambda: _traces(ui) if _traces(ui)["final"] is not None else None, locust)
        assert done["state"] == "done"
        assert done["final"]["passed"] is True
        assert done["final"] == json.loads(report.read_text())
        rows = _tab_rows(ui)
        assert rows[0]["count"] == "PASSED"
        assert {row["what"]: row["count"] for row in rows}["complete"] == done["final"]["counts"]["complete"]

        os.kill(locust.pid, signal.SIGTERM)
        assert locust.popen.wait(WAIT) == 0, locust.output()
        assert locust.output().count("Trace check: PASSED") == 1


def test_the_spike_shape_drives_bursts_and_the_check_holds(mesh, tmp_path):
    status, output, verdict = run_locust(
        tmp_path,
        mesh.half.url,
        mesh.collector,
        *("--trace-rate", "0.5", "--spike-users", "8", "--spike-every", "2", "--spike-length", "1"),
        seconds=4,
        users=2,
        locustfile=f"{LOCUSTFILE},loadtest/spike.py",
    )
    assert status == 0, output
    assert "Shape test updating to 8 users" in output
    assert "Shape test updating to 2 users" in output
    assert verdict["passed"] is True


def test_the_check_reads_jaeger_too(mesh, tmp_path):
    fake = FakeJaeger(mesh.collector)
    with ThreadedServer(fake.app) as jaeger:
        status, output, verdict = run_locust(
            tmp_path, mesh.half.url, jaeger.url, "--trace-backend", "jaeger", "--trace-rate", "0.5"
        )
    assert status == 0, output
    assert "Trace check: PASSED" in output
    assert verdict["counts"]["complete"] > 0
    assert only_whole_or_absent(verdict)
    # Every announced trace was asked for by id (/api/traces/{id}), and the window searched service by service.
    by_id = [path for path in fake.requests if path.startswith("/api/traces/")]
    assert len(by_id) >= verdict["responses"] - verdict["counts"]["complete"]
    assert "/api/services" in fake.requests


# --- a mesh that breaks the rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "flag"),
    [("web", "ignore-decision"), ("voting", "drop-spans"), ("web", "no-propagate")],
)
def test_each_misbehaviour_fails_the_run_and_names_the_broken_traces(mesh, tmp_path, service, flag):
    with contextlib.ExitStack() as exits:
        start = Processes(exits, tmp_path)
        voting = start.service("voting", mesh.collector, "--misbehave", flag) if service == "voting" else mesh.voting
        web = start.service(
            "web",
            mesh.collector,
            *("--emoji-url", mesh.emoji, "--voting-url", voting),
            *(("--misbehave", flag) if service == "web" else ()),
        )
        gateway = start.gateway(mesh.collector, "0.5", web)
        start.wait()
        status, output, verdict = run_locust(tmp_path, gateway.url, mesh.collector, "EmojiVoter", users=4)
    assert status == 1, output
    assert "Trace check: FAILED" in output
    named = BROKEN_LINE.findall(output)
    assert named, output
    broken = {entry["trace_id"]: entry for entry in verdict["broken"]}
    for status_name, trace_id in named:
        assert broken[trace_id]["status"] == status_name
    counts = verdict["counts"]
    trace_id = named[0][1]
    reported_by = {span["localEndpoint"]["serviceName"] for span in mesh.trace(trace_id)}
    if flag == "ignore-decision":
        # web samples whatever the gateway decided: every unsampled request leaks web's spans, and emoji's.
        assert counts["leaked"] == verdict["responses"] - verdict["sampled"] > 0
        assert counts["unsampled"] == 0
        assert named[0][0] == "leaked"
        assert {"web", "emoji"} <= reported_by and "ingress-gateway" not in reported_by
    elif flag == "drop-spans":
        assert counts["partial"] > 0
        assert {entry["problem"] for entry in verdict["trace_problems"]} == {"partial: missing voting SERVER"}
        assert "voting" not in reported_by and "web" in reported_by
    else:
        # emoji and voting get no context: each call starts a trace of its own, and the gateway's lack them.
        assert counts["complete"] == 0
        assert counts["partial"] >= verdict["sampled"] > 0
        assert counts["orphan"] > 0
        cut = next(trace for kind, trace in named if kind == "partial")
        assert "emoji" not in {span["localEndpoint"]["serviceName"] for span in mesh.trace(cut)}


# --- make loadtest ----------------------------------------------------------------------------------------------------


def test_make_loadtests_script_starts_the_demo_checks_and_stops_it(tmp_path):
    report = tmp_path / "report.json"
    args = python_module("loadtest.demo", "-u", "4", "-t", "3s", "--report", str(report), "--", "--trace-settle", "1")
    with running_process(args, tmp_path / "loadtest.log") as run:
        status = run.popen.wait(RUN_TIMEOUT)
        output = run.output()
    assert status == 0, output
    assert output.count("Trace check: PASSED") == 1
    assert json.loads(report.read_text())["rate_ok"] is True
    host = re.search(r"--host (http://127\.0\.0\.1:(\d+))", output)
    assert host, output
    # The demo is gone: its gateway's port is free again.
    with pytest.raises(httpx.ConnectError):
        httpx.get(host[1], timeout=2)
    assert "demo: stopped" in (tmp_path / "demo.log").read_text()


# --- helpers ----------------------------------------------------------------------------------------------------------


def _traces(ui: str) -> dict[str, Any]:
    return dict(httpx.get(f"{ui}/traces", timeout=10).json())


def _tab_rows(ui: str) -> list[dict[str, Any]]:
    stats = httpx.get(f"{ui}/stats/requests", timeout=10).json()
    [tab] = [tab for tab in stats["extended_stats"] if tab["key"] == "traces"]
    return list(tab["data"])


def _wait_for(probe: Any, process: RunningProcess) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.popen.poll() is None:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up after {WAIT}s:\n{process.output()}")


def _answers(port: int, ready: str | None) -> bool:
    try:
        if ready is not None:
            return bool(httpx.get(ready, timeout=1).status_code == 200)
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except (OSError, httpx.HTTPError):
        return False


def _wait_until(ready: Any, what: str, process: RunningProcess) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.popen.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}:\n{process.output()}")
