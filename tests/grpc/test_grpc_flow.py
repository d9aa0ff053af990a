"""The gateway app at the ASGI level (HTTP/2 scope, trailers extension) in front of a real grpcio server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from gateway.app import Gateway, create_app
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.spans import Exchange
from tests.grpc.asgi import AsgiCall
from tests.grpc.servers import DETAILS_BIN, EchoServer, frame
from tests.support import free_port

pytestmark = pytest.mark.anyio
GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


class RecordingReporter:
    def __init__(self) -> None:
        self.submitted: list[Exchange] = []

    def reserve(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def submit(self, exchange: Exchange, reserved: bool) -> None:
        self.submitted.append(exchange)

    async def start(self) -> None:
        return None

    async def stop(self, deadline: float) -> None:
        return None


@pytest.fixture
def gateway(echo_server: EchoServer) -> GatewayFactory:
    @asynccontextmanager
    async def factory(**env: Any) -> AsyncIterator[Gateway]:
        env.setdefault("upstream_url", f"http://127.0.0.1:{echo_server.port}")
        env.setdefault("upstream_protocol", "h2c")
        app = create_app(Settings(sample_rate=1.0, **env), metrics=Metrics(), reporter=RecordingReporter())
        await app.startup()
        try:
            yield app
        finally:
            await app.shutdown()

    return factory


def _span(app: Gateway) -> Exchange:
    reporter = app.reporter
    assert isinstance(reporter, RecordingReporter)
    (exchange,) = reporter.submitted
    return exchange


def _tags(app: Gateway) -> dict[str, str]:
    return dict(_span(app).tags)


def _calls(app: Gateway, grpc_status: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "gateway_grpc_calls_total", {"route": "default", "http_status": "200", "grpc_status": grpc_status}
    )
    return value or 0.0


def _latency_count(app: Gateway, grpc_status: str) -> float:
    labels = {"route": "default", "method": "POST", "status_class": "2xx", "grpc_status": grpc_status}
    value = app.metrics.registry.get_sample_value(
        "gateway_http_request_duration_seconds_count", {**labels, "decision": "sampled"}
    )
    return value or 0.0


async def test_unary_call_is_relayed_with_trailers_and_traced(gateway: GatewayFactory, echo_server: EchoServer) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Unary").run(b"hello")
    assert call.sent[0]["status"] == 200 and call.sent[0]["trailers"] is True
    assert call.body == frame(b"hello")
    assert call.trailers == {b"grpc-status": b"0", b"custom-trailer": b"kept"} | {
        key: value for key, value in (call.trailers or {}).items() if key == b"grpc-message"
    }
    span = _span(app)
    assert span.name == "demo.Echo/Unary"
    assert call.headers[b"traceresponse"].decode().split("-")[1] == f"{span.trace_id:032x}"
    seen = echo_server.seen.metadata[0]
    assert seen["x-b3-traceid"] == f"{span.trace_id:032x}" and seen["x-b3-spanid"] == f"{span.client_span_id:016x}"
    tags = _tags(app)
    assert tags["rpc.system"] == "grpc" and tags["rpc.service"] == "demo.Echo" and tags["rpc.method"] == "Unary"
    assert tags["rpc.grpc.status_code"] == "0"
    assert tags["grpc.request_messages"] == "1" and tags["grpc.response_messages"] == "1"
    assert span.error is None
    assert _calls(app, "OK") == 1
    assert _latency_count(app, "OK") == 1


async def test_error_status_with_details_passes_as_trailers_only(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Unary").run(b"fail:it is gone")
    assert [message["type"] for message in call.sent] == ["http.response.start", "http.response.body"]
    headers = call.headers
    assert headers[b"grpc-status"] == b"5" and headers[b"grpc-message"] == b"it is gone"
    # Binary metadata travels base64-encoded, unpadded (PROTOCOL-HTTP2.md), and arrives byte for byte.
    assert headers[b"grpc-status-details-bin"] == base64.b64encode(DETAILS_BIN).rstrip(b"=")
    assert headers[b"custom-trailer"] == b"kept"
    assert _tags(app)["rpc.grpc.status_code"] == "5" and _span(app).error == "NOT_FOUND"
    assert _calls(app, "NOT_FOUND") == 1
    # The latency histogram by gRPC status too: a failed call is a 2xx by HTTP.
    assert _latency_count(app, "NOT_FOUND") == 1 and _latency_count(app, "OK") == 0


async def test_client_streaming_counts_each_message(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Collect").run(b"a", b"bb", b"ccc")
    assert call.body == frame(b"3:6") and call.grpc_status == b"0"
    assert _tags(app)["grpc.request_messages"] == "3"


async def test_server_streaming_counts_each_message(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Repeat").run(b"5:1000")
    assert call.body == b"".join(frame(bytes([index]) * 1000) for index in range(5))
    assert _tags(app)["grpc.response_messages"] == "5" and call.grpc_status == b"0"


async def test_bidirectional_call_answers_each_message_before_the_next_is_sent(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = AsgiCall(app, "Chat")
        call.put(b"one")
        task = call.start()
        await asyncio.wait_for(call.wait_for(2), 30)  # the start, then the first answer
        assert call.sent[1]["body"] == frame(b"echo:one")
        call.put(b"two", end=True)
        await asyncio.wait_for(task, 30)
    assert call.body == frame(b"echo:one") + frame(b"echo:two") and call.grpc_status == b"0"
    assert _tags(app)["grpc.request_messages"] == "2" and _tags(app)["grpc.response_messages"] == "2"


async def test_messages_of_several_mebibytes_pass_whole(gateway: GatewayFactory) -> None:
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    async with gateway() as app:
        call = await AsgiCall(app, "Unary").run(big)
    assert call.body == frame(big) and call.grpc_status == b"0"


async def test_deadline_cancels_upstream_and_answers_deadline_exceeded(
    gateway: GatewayFactory, echo_server: EchoServer
) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Hang", [(b"grpc-timeout", b"300m")]).run(b"x")
        assert await asyncio.to_thread(echo_server.seen.cancelled.wait, 10)
    assert call.headers[b"grpc-status"] == b"4"
    (remaining,) = echo_server.seen.time_remaining
    assert remaining is not None and 0 < remaining <= 0.3  # the deadline went upstream with the call
    assert _tags(app)["rpc.grpc.status_code"] == "4"


async def test_malformed_grpc_timeout_is_ignored_and_counted(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = await AsgiCall(app, "Unary", [(b"grpc-timeout", b"123456789S")]).run(b"x")
        ignored = app.metrics.registry.get_sample_value("gateway_grpc_timeouts_ignored_total")
    assert call.grpc_status == b"0" and ignored == 1


async def test_client_cancelling_cancels_the_upstream_call(gateway: GatewayFactory, echo_server: EchoServer) -> None:
    async with gateway() as app:
        call = AsgiCall(app, "Hang")
        call.put(b"x", end=True)
        task = call.start()
        assert await asyncio.to_thread(echo_server.seen.started.wait, 10)
        call.disconnect()
        await asyncio.wait_for(task, 30)
        assert await asyncio.to_thread(echo_server.seen.cancelled.wait, 10)
    assert call.sent == []
    assert _tags(app)["rpc.grpc.status_code"] == "1"


async def test_unreachable_upstream_is_unavailable_in_a_trailers_only_response(gateway: GatewayFactory) -> None:
    async with gateway(upstream_url=f"http://127.0.0.1:{free_port()}") as app:
        call = await AsgiCall(app, "Unary").run(b"x")
    assert call.sent[0]["status"] == 200 and call.headers[b"grpc-status"] == b"14"
    assert call.headers[b"content-type"] == b"application/grpc" and b"traceresponse" in call.headers
    assert _span(app).error == "upstream unreachable"


async def test_call_to_an_http1_route_is_unimplemented(gateway: GatewayFactory) -> None:
    async with gateway(upstream_protocol="http1") as app:
        call = await AsgiCall(app, "Unary").run(b"x")
    assert call.headers[b"grpc-status"] == b"12" and call.sent[0]["status"] == 200


async def test_no_route_is_unimplemented(gateway: GatewayFactory, tmp_path: Any, echo_server: EchoServer) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - path_prefix: /other.Service/\n    upstream: http://127.0.0.1:{echo_server.port}\n"
        "    protocol: h2c\n"
    )
    async with gateway(upstream_url="", routes_file=routes) as app:
        call = await AsgiCall(app, "Unary").run(b"x")
    assert call.headers[b"grpc-status"] == b"12"


async def test_upstream_dying_mid_stream_ends_the_call_with_an_error_status(
    gateway: GatewayFactory, echo_server: EchoServer
) -> None:
    async with gateway() as app:
        call = AsgiCall(app, "Repeat")
        call.put(b"100000:1000", end=True)
        task = call.start()
        await asyncio.wait_for(call.wait_for(2), 30)  # streaming has begun
        await asyncio.to_thread(echo_server.stop, 0)
        await asyncio.wait_for(task, 30)
    assert call.trailers is not None and call.trailers[b"grpc-status"] not in (b"0", None)
    assert _tags(app)["rpc.grpc.status_code"] != "0"


async def test_plain_http_to_an_h2c_route_goes_upstream_over_http2(gateway: GatewayFactory) -> None:
    async with gateway() as app:
        call = AsgiCall(app, "Unary")
        call.scope["http_version"] = "1.1"  # not a gRPC call here: the plain HTTP flow, over the h2c upstream
        del call.scope["extensions"]
        await call.run(b"plain")
    assert call.sent[0]["status"] == 200 and call.body == frame(b"plain")
    # No RPC tags on a plain request: only the trace's tracestate, with its threshold (rate 1.0: th:0).
    assert "trailers" not in call.sent[0] and dict(_span(app).tags) == {"w3c.tracestate": "ot=th:0"}


async def test_traceparent_goes_upstream_as_metadata_when_configured(
    gateway: GatewayFactory, echo_server: EchoServer
) -> None:
    async with gateway(propagation="b3multi,tracecontext") as app:
        await AsgiCall(app, "Unary").run(b"x")
    span = _span(app)
    seen = echo_server.seen.metadata[0]
    # 03: sampled, and the Random flag on the gateway's own trace id.
    assert seen["traceparent"] == f"00-{span.trace_id:032x}-{span.client_span_id:016x}-03"


@pytest.mark.parametrize("trusted", [True, False])
async def test_a_clients_trace_is_joined_only_when_trusted(
    gateway: GatewayFactory, echo_server: EchoServer, trusted: bool
) -> None:
    forged = [(b"x-b3-traceid", b"0af7651916cd43dd8448eb211c80319c"), (b"x-b3-spanid", b"b7ad6b7169203331")]
    trust = {"trust_incoming_trace": True, "trusted_cidrs": ["127.0.0.1/32"]} if trusted else {}
    async with gateway(**trust) as app:
        await AsgiCall(app, "Unary", forged).run(b"x")
    span = _span(app)
    joined = span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C and span.parent_id == 0xB7AD6B7169203331
    assert joined is trusted
    assert echo_server.seen.metadata[0]["x-b3-traceid"] == f"{span.trace_id:032x}"
