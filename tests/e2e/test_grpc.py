"""grpcio clients through a real gateway process (h2c to its port) into grpcio servers: every call shape, statuses
and trailers, deadlines, cancellation, large messages, many calls on one connection, and each call's trace whole."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e.conftest import Collector, Gateway, gateway_env, run_gateway
from tests.grpc.servers import DETAILS_BIN, SERVICE, UNLIMITED, EchoServer
from tests.support import LOOPBACK, free_port
from tests.tls_support import CertificateFactory, write_plain

pytestmark = pytest.mark.e2e


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    yield server
    server.stop(0)


@pytest.fixture
def gateway(tmp_path: Path, echo_server: EchoServer, collector: Collector) -> Iterator[Gateway]:
    env = gateway_env(None, collector, upstream_url=f"http://{LOOPBACK}:{echo_server.port}", upstream_protocol="h2c")
    with run_gateway(tmp_path, env) as running:
        yield running


@pytest.fixture
def channel(gateway: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{LOOPBACK}:{gateway.port}", options=UNLIMITED) as opened:
        yield opened


def _method(channel: grpc.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


def _spans_of(collector: Collector, calls: int) -> list[dict[str, Any]]:
    spans = collector.wait_for_spans(2 * calls)
    assert len(spans) == 2 * calls
    return spans


def test_every_call_shape_through_the_gateway_is_traced_whole(channel: grpc.Channel, collector: Collector) -> None:
    assert _method(channel, "unary_unary", "Unary")(b"hello", timeout=10) == b"hello"
    assert _method(channel, "stream_unary", "Collect")(iter([b"a", b"bb", b"ccc"]), timeout=10) == b"3:6"
    assert list(_method(channel, "unary_stream", "Repeat")(b"3:10", timeout=10)) == [bytes([i]) * 10 for i in range(3)]
    assert list(_method(channel, "stream_stream", "Chat")(iter([b"x", b"y"]), timeout=10)) == [b"echo:x", b"echo:y"]
    spans = _spans_of(collector, 4)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    assert len(by_trace) == 4 and all(len(trace) == 2 for trace in by_trace.values())
    names = {span["name"].lower() for span in spans}  # Zipkin's API may lowercase span names
    assert names == {f"{SERVICE}/{method}".lower() for method in ("Unary", "Collect", "Repeat", "Chat")}
    collect = next(span for span in spans if span["name"].lower().endswith("/collect") and span["kind"] == "SERVER")
    assert collect["tags"]["rpc.system"] == "grpc" and collect["tags"]["rpc.grpc.status_code"] == "0"
    assert collect["tags"]["grpc.request_messages"] == "3" and "error" not in collect["tags"]


def test_an_error_arrives_with_its_details_and_trailers(channel: grpc.Channel, collector: Collector) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _method(channel, "unary_unary", "Unary")(b"fail:not here", timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "not here"
    trailers = dict(error.trailing_metadata())
    assert trailers["custom-trailer"] == "kept" and trailers["grpc-status-details-bin"] == DETAILS_BIN
    server = next(span for span in _spans_of(collector, 1) if span["kind"] == "SERVER")
    assert server["tags"]["rpc.grpc.status_code"] == "5" and server["tags"]["error"] == "NOT_FOUND"


def test_a_deadline_cancels_the_upstream_call(channel: grpc.Channel, echo_server: EchoServer) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _method(channel, "unary_unary", "Hang")(b"x", timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert echo_server.seen.cancelled.wait(10)


def test_a_client_cancelling_cancels_the_upstream_call(channel: grpc.Channel, echo_server: EchoServer) -> None:
    future = _method(channel, "unary_unary", "Hang").future(b"x", timeout=30)
    assert echo_server.seen.started.wait(10)
    future.cancel()
    assert echo_server.seen.cancelled.wait(10)


def test_messages_of_several_mebibytes_pass_both_ways(channel: grpc.Channel) -> None:
    big = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    assert _method(channel, "unary_unary", "Unary")(big, timeout=30) == big
    assert [len(message) for message in _method(channel, "unary_stream", "Repeat")(b"3:4194304", timeout=30)] == [
        4194304
    ] * 3


def test_many_concurrent_calls_share_one_connection(channel: grpc.Channel, collector: Collector) -> None:
    unary = _method(channel, "unary_unary", "Unary")
    futures = [unary.future(b"%d" % index, timeout=30) for index in range(200)]
    assert [future.result() for future in futures] == [b"%d" % index for index in range(200)]
    assert len({span["traceId"] for span in _spans_of(collector, 200)}) == 200


def test_an_unreachable_upstream_is_unavailable(tmp_path: Path, collector: Collector) -> None:
    env = gateway_env(None, collector, upstream_url=f"http://{LOOPBACK}:{free_port()}", upstream_protocol="h2c")
    with run_gateway(tmp_path, env) as running, grpc.insecure_channel(f"{LOOPBACK}:{running.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _method(channel, "unary_unary", "Unary")(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "upstream unreachable"


def test_an_upstream_dying_mid_stream_fails_the_call_not_the_gateway(
    channel: grpc.Channel, echo_server: EchoServer, gateway: Gateway
) -> None:
    stream = _method(channel, "unary_stream", "Repeat")(b"1000000:1000", timeout=30)
    next(stream)
    threading.Thread(target=echo_server.stop, args=(0,)).start()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)
    # The gateway lives on and answers the next call on the same connection with a gRPC status.
    with pytest.raises(grpc.RpcError) as after:
        _method(channel, "unary_unary", "Unary")(b"x", timeout=10)
    assert after.value.code() == grpc.StatusCode.UNAVAILABLE


def test_calls_over_tls_are_proxied_and_traced_like_h2c(
    tmp_path: Path, echo_server: EchoServer, collector: Collector
) -> None:
    # The gateway terminates TLS (ALPN h2) and speaks h2c upstream, as it does for a meshed gRPC service.
    certificates = CertificateFactory()
    cert, key = write_plain(tmp_path / "tls", certificates.issue("localhost"))
    env = gateway_env(
        None,
        collector,
        upstream_url=f"http://{LOOPBACK}:{echo_server.port}",
        upstream_protocol="h2c",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.cert_pem.bytes())
    with (
        run_gateway(tmp_path, env) as gateway,
        grpc.secure_channel(f"localhost:{gateway.port}", credentials, options=UNLIMITED) as channel,
    ):
        assert _method(channel, "unary_unary", "Unary")(b"over tls", timeout=10) == b"over tls"
        replies = list(_method(channel, "stream_stream", "Chat")(iter([b"x", b"y"]), timeout=10))
        assert replies == [b"echo:x", b"echo:y"]
        with pytest.raises(grpc.RpcError) as caught:
            _method(channel, "unary_unary", "Unary")(b"fail:not here", timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND and caught.value.details() == "not here"
    spans = _spans_of(collector, 3)
    assert len({span["traceId"] for span in spans}) == 3
    server_spans = [span for span in spans if span["kind"] == "SERVER"]
    assert sorted(span["tags"]["rpc.grpc.status_code"] for span in server_spans) == ["0", "0", "5"]
