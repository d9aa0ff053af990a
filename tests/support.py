"""Helpers shared by every test folder: free ports, real processes stopped by PID, fakes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


@dataclass
class RunningProcess:
    """A child process started by a test; `stop` signals it by PID and reaps it."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        return self.popen.returncode


@contextmanager
def running_process(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    wait_ports: Sequence[int] = (),
    timeout: float = 20.0,
) -> Iterator[RunningProcess]:
    """Start `args` with stdout+stderr in `log_path`, wait for `wait_ports`, stop it by PID on exit."""
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO_ROOT)
    process = RunningProcess(popen, log_path)
    try:
        for port in wait_ports:
            try:
                wait_for_port(port, timeout, popen)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n--- output of {args[:3]} ---\n{process.output()}") from exc
        yield process
    finally:
        process.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class ThreadedServer:
    """A uvicorn server for an ASGI app in a background thread (as httpx's tests do).

    Its socket listens before the thread starts: a client may connect at once (the kernel queues the connection until
    uvicorn accepts it), so nothing waits for the server to come up.
    """

    def __init__(self, app: object, port: int | None = None, **config: object) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        cfg = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_level="warning", lifespan="auto", **config)  # type: ignore[arg-type]
        self._server = uvicorn.Server(cfg)

    def __enter__(self) -> ThreadedServer:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((LOOPBACK, self.port))
        self._socket.listen()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


class FixedIds:
    """An IdGenerator that hands out the ids it was given, in order."""

    def __init__(self, trace_ids: Sequence[int] = (), span_ids: Sequence[int] = ()) -> None:
        self._trace_ids = list(trace_ids)
        self._span_ids = list(span_ids)

    def new_trace_id(self) -> int:
        return self._trace_ids.pop(0)

    def new_span_id(self) -> int:
        return self._span_ids.pop(0)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (containers, root), nothing that reaches for the network: the test machines are offline.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never `playwright install`: there is no network to fetch one)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield browser
        finally:
            browser.close()
