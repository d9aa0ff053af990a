"""A stderr that stops being read (a full pipe, a stuck log collector) stalls no request: access lines are dropped
and counted instead, and flow again once the reader is back."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import GATEWAY_BIN, Gateway, Upstream, _wait_until_ready, gateway_env
from tests.reliability.conftest import settle
from tests.support import REPO_ROOT, RunningProcess, wait_for_port

pytestmark = pytest.mark.e2e

# The smallest pipe Linux allows and the smallest buffer the gateway allows: a few hundred requests fill both.
PIPE_BYTES = 4096
BUFFER_BYTES = 64 * 1024
MAX_REQUESTS = 5_000
REQUEST_TIMEOUT = 10.0
DROPPED = "gateway_access_log_dropped_lines_total"


class PausableReader:
    """Reads a pipe in a thread while not paused; paused, it leaves the pipe to fill up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reading = threading.Event()
        self._reading.set()
        self._lock = threading.Lock()
        self._data = bytearray()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def lines(self) -> list[str]:
        with self._lock:
            return bytes(self._data).decode(errors="replace").splitlines()

    def _run(self) -> None:
        while True:
            self._reading.wait()
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return
            with self._lock:
                self._data += chunk


@contextlib.contextmanager
def gateway_with_stderr_pipe(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[Gateway, PausableReader]]:
    env = gateway_env(upstream, None, sample_rate=0.0, access_log_buffer_bytes=BUFFER_BYTES, shutdown_timeout=5)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    reader = PausableReader(read_end)
    log_path = tmp_path / "gateway-stdout.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen([GATEWAY_BIN], stdout=log, stderr=write_end, env={**os.environ, **env}, cwd=REPO_ROOT)
    os.close(write_end)
    gateway = Gateway(RunningProcess(popen, log_path), int(env["GATEWAY_PORT"]), int(env["GATEWAY_ADMIN_PORT"]), env)
    try:
        wait_for_port(gateway.port, 20.0, popen)
        _wait_until_ready(gateway, 20.0)
        yield gateway, reader
    finally:
        reader.resume()  # so that the gateway's last lines cannot hold its exit
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGTERM)
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(20)
        os.close(read_end)


def access_paths(reader: PausableReader) -> set[str]:
    paths = set()
    for line in reader.lines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("logger") == "gateway.access":
                paths.add(record["path"])
    return paths


def test_a_stderr_nobody_reads_drops_access_lines_not_requests(tmp_path: Path, upstream: Upstream) -> None:
    with (
        gateway_with_stderr_pipe(tmp_path, upstream) as (gateway, reader),
        httpx.Client(base_url=gateway.url, timeout=REQUEST_TIMEOUT) as http,
    ):
        assert http.get("/before").status_code == 200
        assert settle(lambda: "/before" in access_paths(reader)), "the access line of a request before the pause"

        reader.pause()
        answered = 0
        dropped = 0.0
        # Each request must be answered within REQUEST_TIMEOUT: a gateway blocked on stderr would time out here.
        while answered < MAX_REQUESTS and dropped == 0:
            for _ in range(100):
                assert http.get(f"/during/{answered}").status_code == 200
                answered += 1
            dropped = gateway.metrics().value(DROPPED)
        assert dropped > 0, f"{answered} requests answered while stderr was not read, and no access line dropped"

        reader.resume()
        flowing = settle(lambda: http.get("/after").status_code == 200 and "/after" in access_paths(reader))
        assert flowing, "access lines do not flow again once stderr is read"
        assert settle(lambda: any("lines flow again" in line for line in reader.lines()))
        warnings = [line for line in reader.lines() if "access log:" in line]
        assert "stderr is not keeping up" in warnings[0]
        # Every request's line was written or counted (a line goes in after its response: read the count last).
        written_during = sum(path.startswith("/during/") for path in access_paths(reader))
        assert written_during + gateway.metrics().value(DROPPED) >= answered
    assert gateway.process.popen.returncode == 0
