"""Client faults: a client that leaves mid-upload or mid-download frees the upstream call at once; slow heads, slow
bodies and unread responses are cut off by deadlines; thousands of idle connections cost nothing lasting, and
running out of file descriptors is survived."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Gateway, gateway_env, run_gateway
from tests.reliability.conftest import (
    Footprint,
    metric,
    read_until_closed,
    rss_kib,
    settle,
    settled_metric,
    socket_count,
)
from tests.reliability.faults import FaultyUpstream
from tests.support import LOOPBACK, running_process

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SEND_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
# For the test that holds thousands of idle connections: opening them takes seconds on a busy machine, and the
# first must still be open when the last is made, or the count it reads is of connections already closing.
IDLE_KEEPALIVE_TIMEOUT = 8.0
POOL = 4
# A deadline is enforced by a sweep a few times a second: allow for it, and for a busy machine.
SLACK = 4.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, faulty_upstream: FaultyUpstream) -> Iterator[Gateway]:
    yield from _guarded_gateway(tmp_path_factory, faulty_upstream, KEEPALIVE_TIMEOUT)


@pytest.fixture
def patient_gateway(tmp_path_factory: pytest.TempPathFactory, faulty_upstream: FaultyUpstream) -> Iterator[Gateway]:
    yield from _guarded_gateway(tmp_path_factory, faulty_upstream, IDLE_KEEPALIVE_TIMEOUT)


def _guarded_gateway(
    tmp_path_factory: pytest.TempPathFactory, faulty_upstream: FaultyUpstream, keepalive_timeout: float
) -> Iterator[Gateway]:
    env = gateway_env(
        None,
        None,
        upstream_url=faulty_upstream.url,
        upstream_max_connections=POOL,
        client_header_timeout=HEADER_TIMEOUT,
        client_body_timeout=BODY_TIMEOUT,
        client_send_timeout=SEND_TIMEOUT,
        client_keepalive_timeout=keepalive_timeout,
        access_log=False,
    )
    with run_gateway(tmp_path_factory.mktemp("client-faults"), env) as running:
        with httpx.Client(timeout=10) as warm_up:
            assert warm_up.get(f"{running.url}/ok").status_code == 200
        yield running


def connect(gateway: Gateway, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((LOOPBACK, gateway.port), timeout=timeout)


@contextlib.contextmanager
def closing_all() -> Iterator[list[socket.socket]]:
    """A list of sockets, every one closed at the end of the block, whatever happens in it."""
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_a_client_gone_mid_upload_frees_the_upstream_call(gateway: Gateway, faulty_upstream: FaultyUpstream) -> None:
    footprint = Footprint(gateway)
    before = metric(gateway, "gateway_upstream_errors_total", kind="client_disconnected")
    token = uuid.uuid4().hex
    with connect(gateway) as sock:
        sock.sendall(f"POST /upload?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: {64 * MIB}\r\n\r\n".encode())
        sock.sendall(b"u" * MIB)
        assert faulty_upstream.wait_for(token, "started") == ["started"]
    assert faulty_upstream.wait_for(token, "abandoned", timeout=5) == ["started", "abandoned"]
    disconnected = settled_metric(
        gateway, "gateway_upstream_errors_total", lambda count: count > before, kind="client_disconnected"
    )
    assert disconnected == before + 1
    assert metric(gateway, "gateway_upstream_errors_total", kind="protocol") == 0, (
        "the client's leaving was blamed on the upstream"
    )
    footprint.assert_back(extra_sockets=POOL)


def test_a_client_gone_mid_download_frees_the_upstream_call(gateway: Gateway, faulty_upstream: FaultyUpstream) -> None:
    footprint = Footprint(gateway)
    token = uuid.uuid4().hex
    with connect(gateway) as sock:
        sock.sendall(f"GET /endless?token={token} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        received = 0
        while received < 4 * MIB:
            received += len(sock.recv(65536))
    assert faulty_upstream.wait_for(token, "abandoned", timeout=5) == ["started", "abandoned"]
    footprint.assert_back(extra_sockets=POOL)


def test_slow_and_silent_request_heads_are_cut_off_while_others_are_served(gateway: Gateway) -> None:
    footprint = Footprint(gateway)
    before = metric(gateway, "gateway_client_errors_total", kind="header_timeout")
    with closing_all() as silent, closing_all() as slow, httpx.Client(timeout=5) as http:
        silent.extend(connect(gateway) for _ in range(50))
        slow.extend(connect(gateway) for _ in range(50))
        for sock in slow:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        served = 0
        # A slowloris client sends one more header line now and then, for longer than the header deadline.
        while time.monotonic() - started < HEADER_TIMEOUT + SLACK / 2:
            for sock in slow:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            assert http.get(f"{gateway.url}/ok").status_code == 200
            served += 1
            time.sleep(0.2)
        for sock in slow:
            answer = read_until_closed(sock, SLACK)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        for sock in silent:
            assert read_until_closed(sock, SLACK) == b""
    assert served >= 5
    assert metric(gateway, "gateway_client_errors_total", kind="header_timeout") == before + 100
    footprint.assert_back(extra_sockets=POOL)


def test_a_stalled_request_body_is_cut_off_and_frees_the_upstream_call(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    footprint = Footprint(gateway)
    before = metric(gateway, "gateway_client_errors_total", kind="body_timeout")
    tokens = [uuid.uuid4().hex for _ in range(POOL * 2)]
    with closing_all() as sockets:
        for token in tokens:
            sock = connect(gateway)
            sockets.append(sock)
            sock.sendall(f"POST /upload?token={token} HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".encode())
            sock.sendall(b"b" * 1000)
        for sock in sockets:
            answer = read_until_closed(sock, BODY_TIMEOUT + SLACK)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    for token in tokens:
        events = faulty_upstream.wait_for(token, "abandoned", timeout=5)
        assert events in ([], ["started", "abandoned"]), events
    assert metric(gateway, "gateway_client_errors_total", kind="body_timeout") == before + len(tokens)
    # More stalled uploads than upstream connections, all cut off: the pool serves again.
    with httpx.Client(timeout=5) as http:
        assert http.post(f"{gateway.url}/upload", content=b"x" * 1000).text == "1000"
    footprint.assert_back(extra_sockets=POOL)


def test_a_client_that_stops_reading_is_cut_off_without_the_response_piling_up(
    gateway: Gateway, faulty_upstream: FaultyUpstream
) -> None:
    footprint = Footprint(gateway)
    before = metric(gateway, "gateway_client_errors_total", kind="send_timeout")
    baseline = rss_kib(gateway.pid)
    token = uuid.uuid4().hex
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, gateway.port))
        sock.sendall(f"GET /huge?size={1024 * MIB}&token={token} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        events = faulty_upstream.wait_for(token, "abandoned", timeout=SEND_TIMEOUT + SLACK)
        assert events == ["started", "abandoned"], f"the gateway kept pulling for a client that reads nothing: {events}"
    assert rss_kib(gateway.pid) - baseline < 32 * 1024
    assert metric(gateway, "gateway_client_errors_total", kind="send_timeout") == before + 1
    footprint.assert_back(extra_sockets=POOL)


IDLE_CONNECTIONS = 2000


def test_thousands_of_idle_keepalive_connections_are_held_then_closed(patient_gateway: Gateway) -> None:
    gateway = patient_gateway
    footprint = Footprint(gateway)

    async def scenario() -> tuple[int, int, bytes]:
        limit = asyncio.Semaphore(200)

        async def open_and_ask() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with limit:
                reader, writer = await asyncio.open_connection(LOOPBACK, gateway.port)
                writer.write(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), head
                await reader.readexactly(3)
                return reader, writer

        connections = await asyncio.gather(*(open_and_ask() for _ in range(IDLE_CONNECTIONS)))
        held = await asyncio.to_thread(
            settled_metric, gateway, "gateway_client_connections", lambda count: count >= IDLE_CONNECTIONS
        )
        # Meanwhile a new client is served as usual.
        fresh_reader, fresh_writer = await asyncio.open_connection(LOOPBACK, gateway.port)
        fresh_writer.write(b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        fresh = await asyncio.wait_for(fresh_reader.read(), 10)
        fresh_writer.close()

        async def closed_by_gateway(reader: asyncio.StreamReader) -> bool:
            return await asyncio.wait_for(reader.read(), IDLE_KEEPALIVE_TIMEOUT + SLACK) == b""

        closed = sum(await asyncio.gather(*(closed_by_gateway(reader) for reader, _ in connections)))
        for _, writer in connections:
            writer.close()
        return int(held), closed, fresh

    held, closed, fresh = asyncio.run(scenario())

    assert held >= IDLE_CONNECTIONS
    assert fresh.startswith(b"HTTP/1.1 200 ")
    assert closed == IDLE_CONNECTIONS, f"only {closed} idle connections closed after the keep-alive timeout"
    assert settled_metric(gateway, "gateway_client_connections", lambda count: count == 0) == 0
    footprint.assert_back(extra_sockets=POOL)


def test_running_out_of_file_descriptors_is_survived(
    tmp_path: Path, faulty_upstream: FaultyUpstream, gateway: Gateway
) -> None:
    env = gateway_env(
        None, None, upstream_url=faulty_upstream.url, client_header_timeout=HEADER_TIMEOUT, access_log=False
    )
    port = int(env["GATEWAY_PORT"])
    binary = Path(sys.executable).with_name("ingress-gateway")
    # The gateway lifts its soft limit to the hard one; here both are low, as on a host configured tightly.
    limited = (
        "import os, resource; resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)); "
        f"os.execv({str(binary)!r}, [{str(binary)!r}])"
    )
    with (
        running_process([sys.executable, "-c", limited], tmp_path / "gateway.log", env=env, wait_ports=[port]) as proc,
        closing_all() as hogs,
    ):
        for _ in range(300):
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect((LOOPBACK, port))
            except OSError:
                sock.close()
                break
            hogs.append(sock)
        assert len(hogs) > 128, "could not open more connections than the gateway has descriptors"

        def served() -> bool:
            try:
                return httpx.get(f"http://{LOOPBACK}:{port}/ok", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        # The silent connections are cut after the header deadline, the descriptors come back, and so does service.
        assert settle(served, timeout=HEADER_TIMEOUT + 3 * SLACK), f"no recovery:\n{proc.output()[-2000:]}"
        for sock in hogs:
            sock.close()
        hogs.clear()
        assert proc.popen.poll() is None
        assert settle(lambda: socket_count(proc.pid) < 20), f"{socket_count(proc.pid)} sockets left open"
