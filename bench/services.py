"""The benchmark's long-lived child processes: started pinned to CPUs, stopped by PID whatever happens."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import procfs

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded before any fork: the child only calls into it.
_LIBC = ctypes.CDLL(None, use_errno=True)


class ServiceError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    # Every process ever seen in the tree, by pid -> start time, so that stop() can reap workers that
    # outlive their parent without ever signalling an unrelated process that reused a pid.
    seen: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """The pids of the process and its live descendants (e.g. nginx's or uvicorn's workers)."""
        pids = [self.pid, *procfs.descendants(self.pid)]
        for pid in pids:
            if (stat := procfs.read_stat(pid)) is not None:
                self.seen.setdefault(pid, stat.start_ticks)
        return pids

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            self.tree()
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT)
        for pid, start in self.seen.items():
            stat = procfs.read_stat(pid)
            if pid != self.pid and stat is not None and stat.start_ticks == start:
                os.kill(pid, signal.SIGKILL)


def start(
    stack: ExitStack,
    name: str,
    args: Sequence[str],
    *,
    cpus: Sequence[int],
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start `args` pinned to `cpus`, stopped by `stack` on exit; return once `port` accepts connections."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            ["taskset", "--cpu-list", ",".join(map(str, cpus)), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            # Its own session: Ctrl-C reaches the benchmark alone, which stops the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    service = Service(name, popen, log_path, port)
    stack.callback(service.stop)
    try:
        _wait_for_port(service)
    except ServiceError:
        service.stop()  # now: a process that failed to start must not idle on a CPU being measured
        raise
    service.tree()
    return service


def run_to_completion(args: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run a load tool in a session of its own, killed past `timeout`: its exit status and its output.

    Raises subprocess.TimeoutExpired when it had to be killed."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, output.decode(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not service.alive():
            raise ServiceError(f"{service.name} exited with {service.popen.returncode}:\n{service.log_tail()}")
        try:
            with socket.create_connection((LOOPBACK, service.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{service.name} is not listening on port {service.port} after {START_TIMEOUT}s")


def _die_with_parent() -> None:
    # Should the benchmark itself be killed (SIGKILL runs no cleanup), its servers follow it.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
