"""The demo's supervisor: starts the plan's children stage by stage, relays their output, and stops them by PID.

Every child runs in a process group of its own, so that Ctrl-C in the terminal reaches the demo alone; it then stops
the children in order: the bot first, so no request is cut short, then the gateway and the services, which flush
their spans, and the collector, which receives them, last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from types import FrameType
from typing import IO

import httpx

from gateway_devtools.demo.environment import HOST
from gateway_devtools.demo.plan import Child, Plan, banner

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
EXIT_FAILED = 1

_COLOURS = ("36", "33", "35", "32", "34", "31")


class Supervisor:
    """Starts the plan's children, relays their output line by line with a prefix, and stops them by PID."""

    def __init__(self, plan: Plan, out: IO[str]) -> None:
        self._plan = plan
        self._out = out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: list[list[tuple[Child, subprocess.Popen[bytes]]]] = []
        self._relays: list[threading.Thread] = []
        self._colour = out.isatty() and not os.environ.get("NO_COLOR")

    def run(self) -> int:
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = self._start()
            if status is None:
                self._say(banner(self._plan))
                status = self._watch()
        finally:
            self._stop_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _start(self) -> int | None:
        """None once everything is ready; else the exit status (0 when a signal came during startup)."""
        for path, text in self._plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        names = ", ".join(child.name for stage in self._plan.stages for child in stage)
        self._say(f"demo: starting {names} on {HOST}; their output follows, prefixed with their name")
        for stage in self._plan.stages:
            self._running.append([(child, self._spawn(child)) for child in stage])
            for child, process in self._running[-1]:
                problem = self._wait_ready(child, process)
                if self._stop.is_set():
                    return 0
                if problem is not None:
                    self._say(f"demo: {child.name} {problem}; stopping the others")
                    return EXIT_FAILED
        return None

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            child.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **child.env},
            # Its own process group: Ctrl-C goes to the demo, which stops the children in order.
            process_group=0,
        )
        prefix = f"{child.name:>9} | "
        if self._colour:
            prefix = f"\x1b[{_COLOURS[len(self._relays) % len(_COLOURS)]}m{prefix}\x1b[0m"
        relay = threading.Thread(target=self._relay, args=(process, prefix), name=f"relay-{child.name}", daemon=True)
        relay.start()
        self._relays.append(relay)
        return process

    def _relay(self, process: subprocess.Popen[bytes], prefix: str) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self._say(prefix + raw.decode("utf-8", "replace").rstrip("\r\n"))
        process.stdout.close()

    def _wait_ready(self, child: Child, process: subprocess.Popen[bytes]) -> str | None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._stop.is_set():
            if process.poll() is not None:
                return f"exited with status {process.returncode} before it was ready (its output is above)"
            if _is_ready(child):
                return None
            if time.monotonic() > deadline:
                return f"was not ready after {READY_TIMEOUT:.0f}s"
            self._stop.wait(0.05)
        return None

    def _watch(self) -> int:
        while not self._stop.wait(0.2):
            for stage in self._running:
                for child, process in stage:
                    if process.poll() is not None:
                        self._say(f"demo: {child.name} exited with status {process.returncode}; stopping the others")
                        return EXIT_FAILED
        return 0

    def _stop_all(self) -> None:
        if self._running:
            self._say("demo: stopping every process")
        for stage in reversed(self._running):
            signalled = [(child, process) for child, process in stage if process.poll() is None]
            for _, process in signalled:
                os.kill(process.pid, signal.SIGTERM)
            for child, process in signalled:
                self._reap(child, process)
        for relay in self._relays:
            relay.join(5)
        if self._running:
            self._say("demo: stopped")

    def _reap(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        try:
            status = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._say(f"demo: {child.name} (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f}s: killed")
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        if status != 0:
            self._say(f"demo: {child.name} exited with status {status} while stopping")

    def _say(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _is_ready(child: Child) -> bool:
    if child.ready_url is not None:
        try:
            return httpx.get(child.ready_url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False
    if child.port is not None:
        try:
            with socket.create_connection((HOST, child.port), timeout=1.0):
                return True
        except OSError:
            return False
    return True
