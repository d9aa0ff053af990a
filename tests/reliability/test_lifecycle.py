"""Lifecycle: SIGTERM under load loses no request the gateway took and no span it queued; a crashed worker is
replaced; a bad setting stops the gateway with exit code 2 before it serves."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    GATEWAY_BIN,
    Collector,
    Upstream,
    by_kind,
    descendants,
    gateway_env,
    run_gateway,
    traceresponse,
)
from tests.reliability.conftest import settle, settled_metric
from tests.support import running_process

pytestmark = pytest.mark.e2e

CLIENTS = 8
REQUEST_SECONDS = 0.3


@dataclass
class Outcome:
    token: str
    status: int | None = None  # None: no response (the connection failed or was closed)
    trace_id: str | None = None
    sampled: bool = False
    finished_at: float = 0.0


def test_sigterm_under_load_finishes_every_request_taken_and_delivers_every_queued_span(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    # Spans are held until the shutdown flush: nothing is sent before SIGTERM, everything after.
    env = gateway_env(upstream, collector, reporter_flush_interval=30, reporter_batch_size=10_000, shutdown_timeout=15)
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                outcome = Outcome(uuid.uuid4().hex)
                outcomes.append(outcome)
                try:
                    response = http.get(
                        f"{gateway.url}/sleep", params={"seconds": REQUEST_SECONDS, "token": outcome.token}
                    )
                except httpx.HTTPError:
                    outcome.finished_at = time.monotonic()
                    return
                outcome.finished_at = time.monotonic()
                outcome.status = response.status_code
                outcome.trace_id, _, outcome.sampled = traceresponse(response)

    with run_gateway(tmp_path, env) as gateway:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        settle(lambda: sum(outcome.status == 200 for outcome in outcomes) >= 2 * CLIENTS, timeout=20)
        assert collector.spans() == [], "spans left before SIGTERM: this test could not tell a flush from a batch"
        # As a load balancer that has taken the pod out of its endpoints: no new requests from now on.
        stop.set()
        terminated_at = time.monotonic()
        gateway.process.terminate()
        for thread in threads:
            thread.join(30)
        code = gateway.process.popen.wait(30)

    assert code == 0, f"exit code {code}:\n{gateway.output()[-3000:]}"
    answered = [outcome for outcome in outcomes if outcome.status is not None]
    unanswered = [outcome for outcome in outcomes if outcome.status is None]
    assert all(outcome.status == 200 for outcome in answered), [outcome.status for outcome in answered]
    finished_after = [outcome for outcome in answered if outcome.finished_at > terminated_at]
    assert finished_after, "no request was in flight at SIGTERM: nothing was shown"
    for outcome in answered:
        assert upstream.events(outcome.token) == ["started", "completed"]
    # A request the gateway never read (sent as it closed an idle connection) never reached the upstream.
    for outcome in unanswered:
        assert upstream.events(outcome.token) == [], "a request the gateway took got no answer"

    sampled = {str(outcome.trace_id) for outcome in answered if outcome.sampled}
    assert len(sampled) == len(answered)  # rate 1.0
    spans = collector.wait_for_spans(2 * len(sampled), timeout=10)
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(str(span["traceId"]).rjust(32, "0"), []).append(span)
    missing = sampled - set(traces)
    assert not missing, f"{len(missing)} of {len(sampled)} sampled traces lost at shutdown"
    for trace_id in sampled:
        by_kind(traces[trace_id])


def worker_pids(gateway_pid: int) -> set[int]:
    """The uvicorn workers: the gateway's children started by multiprocessing's spawn (not its resource tracker)."""
    workers = set()
    for pid in descendants(gateway_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z":
            workers.add(pid)
    return workers


def test_a_crashed_worker_is_replaced_and_service_goes_on(tmp_path: Path, upstream: Upstream) -> None:
    env = gateway_env(upstream, None, workers=2)
    with run_gateway(tmp_path, env) as gateway, httpx.Client(timeout=10) as http:
        assert settle(lambda: len(worker_pids(gateway.pid)) == 2, timeout=20)
        assert settled_metric(gateway, "gateway_worker_ready", lambda ready: ready == 2) == 2
        before = worker_pids(gateway.pid)
        crashed = min(before)

        os.kill(crashed, signal.SIGKILL)

        # The other worker serves on; a connection the dead worker held is simply gone.
        for index in range(20):
            response = httpx.get(f"{gateway.url}/after-crash/{index}", timeout=10)
            assert response.status_code == 200
        replaced = settle(lambda: len(worker_pids(gateway.pid) - before) == 1, timeout=30)
        assert replaced, f"workers before: {before}, now: {worker_pids(gateway.pid)}\n{gateway.output()[-2000:]}"
        assert crashed not in worker_pids(gateway.pid)
        # The dead worker's gauges are forgotten: two workers ready, not three.
        assert settled_metric(gateway, "gateway_worker_ready", lambda ready: ready == 2) == 2
        assert http.get(f"{gateway.url}/replaced").status_code == 200
        assert f"Child process [{crashed}] died" in gateway.output()


BAD_CLIENT_SETTINGS = {
    "GATEWAY_CLIENT_HEADER_TIMEOUT": "0",
    "GATEWAY_CLIENT_BODY_TIMEOUT": "-1",
    "GATEWAY_CLIENT_SEND_TIMEOUT": "soon",
    "GATEWAY_CLIENT_KEEPALIVE_TIMEOUT": "0",
    "GATEWAY_CLIENT_MAX_HEADER_BYTES": "100",
    "GATEWAY_REPORTER_QUEUE_BYTES": "1k",
}


@pytest.mark.parametrize(("variable", "value"), BAD_CLIENT_SETTINGS.items(), ids=BAD_CLIENT_SETTINGS.keys())
def test_a_bad_limit_setting_exits_2_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    env = {**gateway_env(None, None, upstream_url="http://127.0.0.1:9"), variable: value}
    with running_process([GATEWAY_BIN], tmp_path / "gateway.log", env=env) as process:
        code = process.popen.wait(20)
        output = process.output()
    assert code == 2, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{variable}: ") and repr(value) in lines[0], output
