"""WebSocket sessions under the gateway's limits: idle, oversized messages, a client that stops reading, SIGTERM, and
the HTTP deadlines that must not apply to an upgraded connection."""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import Collector, wait_for
from tests.e2e.ws_support import WsUpstream, new_token, run, ws_upstream, ws_url
from tests.reliability.conftest import GatewayStarter
from tests.support import LOOPBACK

pytestmark = pytest.mark.e2e
__all__ = ["ws_upstream"]  # a fixture: imported so that pytest finds it here


async def _closed_by_gateway(url: str, send: str | bytes | None = None, **options: object) -> tuple[int, str]:
    """Connects, sends `send` (if any), waits for the gateway's close; the close frame's code and reason."""
    async with connect(url, **options) as ws:  # type: ignore[arg-type]
        if send is not None:
            await ws.send(send)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None, f"no close frame: {closed.value!r}"
        return closed.value.rcvd.code, closed.value.rcvd.reason


def test_an_idle_session_is_closed_with_1001_both_ways(start_gateway: GatewayStarter, ws_upstream: WsUpstream) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, websocket_idle_timeout=1)
    token = new_token()
    assert run(_closed_by_gateway(ws_url(gateway, f"/echo?token={token}"))) == (1001, "idle timeout")
    assert ws_upstream.closed(token) == {"type": "closed", "code": 1001, "reason": "idle timeout"}


def test_an_upgraded_connection_outlives_the_http_deadlines(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream
) -> None:
    gateway = start_gateway(
        upstream_url=ws_upstream.url,
        client_header_timeout=0.3,
        client_body_timeout=0.3,
        client_keepalive_timeout=0.3,
        websocket_idle_timeout=60,
    )

    async def session() -> list[str | bytes]:
        async with connect(ws_url(gateway, "/echo")) as ws:
            got = []
            for index in range(5):
                await ws.send(f"tick {index}")
                got.append(await ws.recv())
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.5)  # silent for five times every HTTP deadline, well within the idle timeout
            await ws.send("still here")
            got.append(await ws.recv())
            return got

    assert run(session()) == [f"tick {index}" for index in range(5)] + ["still here"]
    assert gateway.metrics().value("gateway_client_errors_total") == 0


def test_a_client_message_over_the_limit_is_closed_1009_both_ways(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream
) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, websocket_max_message_bytes=1000)
    token = new_token()
    code, _ = run(_closed_by_gateway(ws_url(gateway, f"/echo?token={token}"), b"x" * 1001))
    assert code == 1009
    assert ws_upstream.closed(token)["code"] == 1009


def test_an_upstream_message_over_the_limit_is_closed_1009_both_ways(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream
) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, websocket_max_message_bytes=1000)
    token = new_token()
    code, _ = run(_closed_by_gateway(ws_url(gateway, f"/big?size=1001&token={token}")))
    assert code == 1009
    assert ws_upstream.closed(token)["code"] == 1009


def test_a_client_that_stops_reading_is_cut_off(start_gateway: GatewayStarter, ws_upstream: WsUpstream) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, client_send_timeout=1)
    token = new_token()
    # A raw socket: a WebSocket library would go on reading into its own buffers. This one reads the 101 and no more.
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((LOOPBACK, gateway.port))
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        client.sendall(
            f"GET /flood?size=262144&count=400&token={token} HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert client.recv(12) == b"HTTP/1.1 101"
        assert wait_for(
            lambda: gateway.metrics().value("gateway_client_errors_total", kind="send_timeout") == 1, timeout=30
        )
    assert ws_upstream.closed(token)["code"] == 1001


def test_sigterm_closes_open_sessions_with_1001_both_ways_and_flushes_their_spans(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream, collector: Collector
) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, zipkin_url=collector.spans_url)
    tokens = [new_token() for _ in range(3)]

    async def sessions() -> list[tuple[int, str]]:
        async def one(token: str) -> tuple[int, str]:
            async with connect(ws_url(gateway, f"/echo?token={token}")) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code, closed.value.rcvd.reason

        running = [asyncio.create_task(one(token)) for token in tokens]
        await asyncio.sleep(0.5)  # every session is open (each has had its echo by then on any sane machine)
        gateway.process.terminate()
        return list(await asyncio.gather(*running))

    assert run(sessions()) == [(1001, "gateway shutting down")] * 3
    assert gateway.process.popen.wait(20) == 0
    for token in tokens:
        assert ws_upstream.closed(token)["code"] == 1001
    assert wait_for(lambda: len(collector.spans()) == 6, timeout=10)


def test_sigterm_with_several_workers_closes_every_session_with_1001(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream
) -> None:
    # The supervisor passes SIGTERM on to each worker, where the sessions' handler sees it before uvicorn's does.
    gateway = start_gateway(upstream_url=ws_upstream.url, workers=2)
    tokens = [new_token() for _ in range(4)]

    async def sessions() -> list[int]:
        async def one(token: str) -> int:
            async with connect(ws_url(gateway, f"/echo?token={token}")) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code

        running = [asyncio.create_task(one(token)) for token in tokens]
        await asyncio.sleep(0.5)
        gateway.process.terminate()
        return list(await asyncio.gather(*running))

    assert run(sessions()) == [1001] * 4
    assert gateway.process.popen.wait(20) == 0
    assert [ws_upstream.closed(token)["code"] for token in tokens] == [1001] * 4


def _raw_upgrade(port: int, target: str, extra: str = "") -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=10) as client:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        client.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        return client.recv(65536)


def test_the_request_guards_apply_to_an_upgrade_request_before_it_is_upgraded(
    start_gateway: GatewayStarter, ws_upstream: WsUpstream
) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, client_max_header_bytes=2048)
    token = new_token()
    assert _raw_upgrade(gateway.port, f"/public/../echo?token={token}").startswith(b"HTTP/1.1 400")
    assert _raw_upgrade(gateway.port, f"/echo?token={token}", f"X-Big: {'a' * 4096}\r\n").startswith(b"HTTP/1.1 431")
    assert _raw_upgrade(gateway.port, f"/echo?token={token}").startswith(b"HTTP/1.1 101")
    # Only the third reached the upstream.
    assert [event["type"] for event in ws_upstream.events(token)][:1] == ["handshake"]
    assert len([event for event in ws_upstream.events(token) if event["type"] == "handshake"]) == 1
