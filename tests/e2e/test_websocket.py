"""WebSocket sessions through a real gateway process, with the `websockets` library as client and as upstream."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.e2e.conftest import Collector, Gateway, GatewayFactory, announced, padded, wait_for
from tests.e2e.ws_support import WsUpstream, new_token, run, ws_upstream, ws_url
from tests.support import LOOPBACK, free_port

pytestmark = pytest.mark.e2e
__all__ = ["ws_upstream"]  # a fixture: imported so that pytest finds it here


@pytest.fixture
def ws_gateway(start_gateway: GatewayFactory, ws_upstream: WsUpstream) -> Gateway:
    return start_gateway(upstream_url=ws_upstream.url, propagation="b3multi,tracecontext")


def test_text_binary_large_and_fragmented_messages_arrive_unchanged(ws_gateway: Gateway) -> None:
    large = secrets.token_bytes(600_000)

    async def session() -> list[str | bytes]:
        async with connect(ws_url(ws_gateway, "/echo"), max_size=None) as ws:
            got: list[str | bytes] = []
            await ws.send("héllo, wörld")
            got.append(await ws.recv())
            await ws.send(b"\x00\x01\xff")
            got.append(await ws.recv())
            await ws.send(large)
            got.append(await ws.recv())
            await ws.send(["frag", "mented ", "text"])  # one message in three frames
            got.append(await ws.recv())
            await ws.send([b"\x01", b"\x02\x03"])
            got.append(await ws.recv())
            return got

    assert run(session()) == ["héllo, wörld", b"\x00\x01\xff", large, "fragmented text", b"\x01\x02\x03"]


def test_a_client_ping_gets_its_pong_from_the_gateway(ws_gateway: Gateway) -> None:
    async def session() -> float:
        async with connect(ws_url(ws_gateway, "/echo"), ping_interval=None) as ws:
            pong = await ws.ping(b"are you there")
            return await asyncio.wait_for(pong, 10)

    assert run(session()) >= 0.0


def test_client_close_code_and_reason_reach_the_upstream(ws_gateway: Gateway, ws_upstream: WsUpstream) -> None:
    token = new_token()

    async def session() -> None:
        async with connect(ws_url(ws_gateway, f"/echo?token={token}")) as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(4000, "client bye")

    run(session())
    assert ws_upstream.closed(token) == {"type": "closed", "code": 4000, "reason": "client bye"}


def test_upstream_close_code_and_reason_reach_the_client(ws_gateway: Gateway, ws_upstream: WsUpstream) -> None:
    token = new_token()

    async def session() -> tuple[int, str]:
        async with connect(ws_url(ws_gateway, f"/close?code=4001&reason=upstream+bye&token={token}")) as ws:
            await ws.send("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(session()) == (4001, "upstream bye")
    assert ws_upstream.closed(token)["code"] == 4001


def test_a_refused_upgrade_passes_through_with_traceresponse(ws_gateway: Gateway) -> None:
    async def session() -> Any:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(ws_gateway, "/refuse")):
                pass
        return refused.value.response

    response = run(session())
    assert response.status_code == 403
    assert response.headers["x-refused-by"] == "upstream"
    assert bytes(response.body) == b"go away\n"
    announced(response.headers["traceresponse"])


def test_an_unreachable_upstream_is_a_502(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(upstream_url=f"http://{LOOPBACK}:{free_port()}")
    assert _refusal_status(gateway) == 502


def test_an_upstream_that_never_answers_the_upgrade_is_a_504(start_gateway: GatewayFactory) -> None:
    with socket.create_server((LOOPBACK, 0)) as silent:  # the kernel accepts; nobody ever answers
        gateway = start_gateway(upstream_url=f"http://{LOOPBACK}:{silent.getsockname()[1]}", upstream_timeout=0.5)
        assert _refusal_status(gateway) == 504


def _refusal_status(gateway: Gateway) -> int:
    async def session() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gateway, "/echo")):
                pass
        announced(refused.value.response.headers["traceresponse"])
        return refused.value.response.status_code

    status: int = run(session())
    return status


def test_the_subprotocol_offer_goes_upstream_and_the_choice_comes_back(
    ws_gateway: Gateway, ws_upstream: WsUpstream
) -> None:
    token = new_token()

    async def session() -> str | None:
        offer = [Subprotocol("chat.v1"), Subprotocol("chat.v2")]
        async with connect(ws_url(ws_gateway, f"/echo?token={token}"), subprotocols=offer) as ws:
            return ws.subprotocol

    assert run(session()) == "chat.v2"
    assert ws_upstream.handshake(token)["sec-websocket-protocol"] == ["chat.v1, chat.v2"]


def test_the_upstream_handshake_carries_the_trace_and_the_101_its_traceresponse(
    ws_gateway: Gateway, ws_upstream: WsUpstream
) -> None:
    token = new_token()

    async def session() -> str:
        async with connect(ws_url(ws_gateway, f"/echo?token={token}")) as ws:
            assert ws.response is not None
            return str(ws.response.headers["traceresponse"])

    trace_id, server_span_id, sampled = announced(run(session()))
    assert sampled
    seen = ws_upstream.handshake(token)
    assert padded(seen["x-b3-traceid"][0]) == trace_id
    assert seen["x-b3-parentspanid"] == [server_span_id]
    assert seen["x-b3-sampled"] == ["1"]
    client_span_id = seen["x-b3-spanid"][0]
    assert client_span_id != server_span_id
    [traceparent] = seen["traceparent"]
    assert traceparent.startswith(f"00-{trace_id}-{client_span_id}-") and int(traceparent[-2:], 16) & 1
    assert seen["x-forwarded-for"] == [LOOPBACK]
    assert seen["x-forwarded-proto"] == ["http"]


def test_forged_trace_headers_of_an_untrusted_client_are_stripped_and_counted(
    start_gateway: GatewayFactory, ws_upstream: WsUpstream
) -> None:
    gateway = start_gateway(upstream_url=ws_upstream.url, sample_rate=0.0)
    token = new_token()
    forged = {
        "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124",
        "X-B3-SpanId": "a2fb4a1d1a96d312",
        "X-B3-Sampled": "1",
        "X-B3-Flags": "1",
        "b3": "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-d",
        "traceparent": "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01",
        "l5d-dst-override": "secret-svc.internal:80",
    }

    async def session() -> str:
        async with connect(ws_url(gateway, f"/echo?token={token}"), additional_headers=forged) as ws:
            assert ws.response is not None
            return str(ws.response.headers["traceresponse"])

    traceresponse = run(session())
    seen = ws_upstream.handshake(token)
    assert seen["x-b3-sampled"] == ["0"]
    assert padded(seen["x-b3-traceid"][0]) != forged["X-B3-TraceId"]
    assert "x-b3-flags" not in seen and "b3" not in seen and "l5d-dst-override" not in seen
    assert traceresponse.endswith("-00")
    assert gateway.metrics().value("gateway_trace_headers_ignored_total", reason="untrusted") == 1


def test_one_decision_and_two_spans_per_session_lasting_it_with_its_tags(
    ws_gateway: Gateway, collector: Collector
) -> None:
    async def session() -> str:
        async with connect(ws_url(ws_gateway, "/echo")) as ws:
            assert ws.response is not None
            for index in range(5):
                await ws.send(f"message {index}")
                await ws.recv()
            await ws.send(b"12345678")
            await ws.recv()
            await asyncio.sleep(0.5)  # so that the spans have a known least duration
            await ws.close(4002, "done")
            return str(ws.response.headers["traceresponse"])

    trace_id = announced(run(session()))[0]
    assert wait_for(lambda: len(collector.trace(trace_id)) == 2, timeout=15)
    spans = {span["kind"]: span for span in collector.trace(trace_id)}
    server, client = spans["SERVER"], spans["CLIENT"]
    assert server["duration"] >= 500_000 and client["duration"] >= 500_000
    assert client["parentId"] == server["id"]
    for span in (server, client):
        tags = span["tags"]
        assert tags["websocket.client_messages"] == "6"
        assert tags["websocket.upstream_messages"] == "6"
        assert tags["websocket.client_bytes"] == str(5 * len("message 0") + 8)
        assert tags["websocket.closed_by"] == "client"
        assert tags["websocket.close_code"] == "4002"
        assert tags["websocket.close_reason"] == "done"
    assert server["tags"]["http.status_code"] == "101"
    metrics = ws_gateway.metrics()
    assert metrics.value("gateway_requests_total", decision="sampled") == 1
    assert metrics.value("gateway_http_request_duration_seconds_count", status_class="1xx", method="GET") == 1
    logged = [json.loads(line) for line in ws_gateway.output().splitlines() if '"websocket"' in line]
    access = [line for line in logged if "websocket" in line]  # the session's line, not the startup summary
    assert [line["websocket"]["close_code"] for line in access] == [4002]
    assert access[0]["status"] == 101 and access[0]["trace_id"].rjust(32, "0") == trace_id


def test_an_unrouted_upgrade_gets_the_no_route_status_and_routed_ones_the_routes_tags(
    start_gateway: GatewayFactory, ws_upstream: WsUpstream, collector: Collector, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - name: live\n    path_prefix: /echo\n    upstream: {ws_upstream.url}\n"
        "    tags:\n      team: realtime\n"
    )
    gateway = start_gateway(upstream_url=None, routes_file=routes, no_route_status=421)

    async def sessions() -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gateway, "/elsewhere")):
                pass
        async with connect(ws_url(gateway, "/echo")) as ws:
            assert ws.response is not None
            await ws.send("routed")
            assert await ws.recv() == "routed"
            routed = str(ws.response.headers["traceresponse"])
        return refused.value.response.status_code, routed

    status, routed = run(sessions())
    assert status == 421
    trace_id = announced(routed)[0]
    assert wait_for(lambda: len(collector.trace(trace_id)) == 2, timeout=15)
    for span in collector.trace(trace_id):
        assert span["tags"]["team"] == "realtime" and span["tags"]["websocket.client_messages"] == "1"
    assert gateway.metrics().value("gateway_upstream_errors_total", kind="no_route") == 1
