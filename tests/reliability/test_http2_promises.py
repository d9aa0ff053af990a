"""The gateway's promises over HTTP/2, against a real gateway process: a client's reset cancels the upstream call,
SIGTERM sends GOAWAY and finishes the stream in flight, thousands of idle h2 connections are held cheaply and closed
with GOAWAY after the keep-alive timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.e2e.conftest import Gateway, Upstream, gateway_env, run_gateway, running_upstream_app
from tests.h2_client import RawH2
from tests.reliability.conftest import rss_kib, settled_metric
from tests.support import LOOPBACK

pytestmark = pytest.mark.e2e

KEEPALIVE_TIMEOUT = 8.0
IDLE_CONNECTIONS = 2000
SLACK = 6.0


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with running_upstream_app(tmp_path_factory.mktemp("h2-upstream")) as running:
        yield running


@contextlib.contextmanager
def start(tmp_path: Path, upstream: Upstream, **overrides: object) -> Iterator[Gateway]:
    with run_gateway(tmp_path, gateway_env(upstream, None, access_log=False, **overrides)) as gateway:
        yield gateway


def test_a_client_reset_stream_cancels_the_upstream_call(tmp_path: Path, upstream: Upstream) -> None:
    with start(tmp_path, upstream) as gateway:
        token = uuid.uuid4().hex
        raw = RawH2(gateway.port)
        try:
            stream = raw.request(f"/sleep?seconds=30&token={token}")
            assert "started" in upstream.wait_for_event(token, "started")
            raw.reset(stream)
            assert "disconnected" in upstream.wait_for_event(token, "disconnected", timeout=10)
            assert settled_metric(gateway, "gateway_http2_resets_total", lambda count: count >= 1, by="client") == 1
            # The connection serves on.
            assert raw.response(raw.request("/after-reset")).status == 200
        finally:
            raw.close()


def test_sigterm_sends_goaway_and_the_stream_in_flight_completes(tmp_path: Path, upstream: Upstream) -> None:
    with start(tmp_path, upstream) as gateway:
        token = uuid.uuid4().hex
        raw = RawH2(gateway.port)
        try:
            stream = raw.request(f"/sleep?seconds=2&token={token}")
            assert "started" in upstream.wait_for_event(token, "started")
            os.kill(gateway.process.popen.pid, signal.SIGTERM)
            assert raw.until(lambda: raw.goaway is not None)
            assert raw.goaway is not None and (raw.goaway.last_stream_id, raw.goaway.error_code) == (stream, 0)
            seen = raw.response(stream, timeout=15)
            assert seen.status == 200
            assert b'"slept": 2' in bytes(seen.body)
            assert raw.until(lambda: raw.eof, timeout=15)
            assert gateway.process.popen.wait(20) == 0
        finally:
            raw.close()


def test_thousands_of_idle_h2_connections_are_held_cheaply_then_closed_with_goaway(
    tmp_path: Path, upstream: Upstream
) -> None:
    with start(tmp_path, upstream, client_keepalive_timeout=KEEPALIVE_TIMEOUT) as gateway:
        pid = gateway.process.popen.pid
        before = rss_kib(pid)

        async def scenario() -> tuple[float, int, int]:
            limit = asyncio.Semaphore(200)

            async def open_and_ask() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h2.connection.H2Connection]:
                async with limit:
                    reader, writer = await asyncio.open_connection(LOOPBACK, gateway.port)
                    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                    conn.initiate_connection()
                    conn.send_headers(
                        1, [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/ok")], True
                    )
                    writer.write(conn.data_to_send())
                    while True:
                        data = await reader.read(65536)
                        assert data, "closed before the response"
                        events = conn.receive_data(data)
                        writer.write(conn.data_to_send())
                        if any(isinstance(event, h2.events.StreamEnded) for event in events):
                            return reader, writer, conn

            connections = await asyncio.gather(*(open_and_ask() for _ in range(IDLE_CONNECTIONS)))
            held = await asyncio.to_thread(
                settled_metric, gateway, "gateway_client_connections", lambda count: count >= IDLE_CONNECTIONS
            )
            grown = rss_kib(pid) - before
            # Meanwhile a new client is served as usual.
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as fresh:
                assert (await fresh.get(f"{gateway.url}/fresh")).status_code == 200

            async def closed_with_goaway(reader: asyncio.StreamReader, conn: h2.connection.H2Connection) -> bool:
                goaway = False
                while data := await asyncio.wait_for(reader.read(65536), KEEPALIVE_TIMEOUT + SLACK):
                    events = conn.receive_data(data)
                    goaway = goaway or any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
                return goaway

            closed = sum(await asyncio.gather(*(closed_with_goaway(reader, conn) for reader, _, conn in connections)))
            for _, writer, _ in connections:
                writer.close()
            return held, grown, closed

        held, grown_kib, closed = asyncio.run(scenario())
        assert held >= IDLE_CONNECTIONS
        # Cheap: well under 64 KiB of memory for each idle connection (its h2 state, windows and buffers).
        assert grown_kib < IDLE_CONNECTIONS * 64, f"{grown_kib} KiB for {IDLE_CONNECTIONS} idle connections"
        assert closed == IDLE_CONNECTIONS
        assert settled_metric(gateway, "gateway_client_connections", lambda count: count == 0) == 0
