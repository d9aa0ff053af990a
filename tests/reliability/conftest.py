"""Real processes on loopback: `ingress-gateway`, the e2e upstream, the devtools collector, and the fault servers.

The gateway, upstream and collector fixtures are the e2e suite's (tests/e2e/conftest.py), imported here so that both
suites start them the same way; `FaultyUpstream` and `CollectorProxy` (faults.py) misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import conftest as e2e
from tests.e2e.conftest import Collector, Gateway, Upstream, gateway_env, run_gateway
from tests.reliability.faults import CollectorProxy, FaultyUpstream

GatewayStarter = Callable[..., Gateway]

# The e2e suite's fixtures, shared by name: the upstream and the collector start once per session for both suites.
upstream = e2e.upstream
session_collector = e2e.session_collector
collector = e2e.collector
collector_factory = e2e.collector_factory


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyUpstream]:
    server = FaultyUpstream()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def collector_proxy(collector: Collector) -> Iterator[CollectorProxy]:
    """The session collector, behind a proxy that fails its POSTs on demand (passing them on until told)."""
    proxy = CollectorProxy(collector.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def start_gateway(tmp_path: Path, upstream: Upstream) -> Iterator[GatewayStarter]:
    """`start_gateway(zipkin_url=..., ...)` -> a ready gateway: the e2e upstream, rate 1.0, no exporter unless given."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> Gateway:
            env = gateway_env(upstream, None, **overrides)
            return stack.enter_context(run_gateway(tmp_path, env))

        yield start


@pytest.fixture(scope="session", autouse=True)
def enough_file_descriptors() -> None:
    """Thousands of client sockets in one test need more than the common soft limit of 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16_384 if hard == resource.RLIM_INFINITY else min(hard, 16_384)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# --- what a gateway process holds -----------------------------------------------------------------------


def socket_count(pid: int) -> int:
    """Sockets open in `pid` (listeners, clients, upstream and collector connections), from /proc."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if fd.readlink().name.startswith("socket:"):
                count += 1
    return count


def fd_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def settle(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Polls `condition` until it holds or `timeout` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.metrics().value(name, **labels)


def settled_metric(
    gateway: Gateway, name: str, want: Callable[[float], bool], timeout: float = 10.0, **labels: str
) -> float:
    """The value of `name` (summed over samples with `labels`) once `want` holds for it, or after `timeout`."""
    value = metric(gateway, name, **labels)
    deadline = time.monotonic() + timeout
    while not want(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric(gateway, name, **labels)
    return value


class Footprint:
    """Sockets and asyncio tasks of a gateway at one moment, to compare before and after a fault."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # The gauge is set by the worker's client-guard sweep, which starts with the first connection.
        self.tasks = settled_metric(gateway, "gateway_event_loop_tasks", lambda tasks: tasks > 0)
        self.sockets = socket_count(gateway.pid)

    def assert_back(self, extra_sockets: int = 0, timeout: float = 10.0) -> None:
        """Within `timeout`, the gateway holds no more sockets (bar `extra_sockets` pooled) and tasks than before."""
        pid = self.gateway.pid
        back = settle(
            lambda: (
                socket_count(pid) <= self.sockets + extra_sockets
                and metric(self.gateway, "gateway_event_loop_tasks") <= self.tasks
            ),
            timeout,
        )
        sockets, tasks = socket_count(pid), metric(self.gateway, "gateway_event_loop_tasks")
        assert back, (
            f"leak: {sockets} sockets (before: {self.sockets}, pool allowance {extra_sockets}), "
            f"{tasks:.0f} tasks (before: {self.tasks:.0f})"
        )


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the gateway sends until it closes the connection (b"" plus a reset counts as closed)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received
