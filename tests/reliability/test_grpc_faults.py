"""gRPC's promises under faults: an upstream killed mid-stream, clients cancelling many calls at once; each leaves
the gateway whole (no leaked sockets or tasks), the client with a gRPC status, and the trace complete."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e.conftest import Collector, Gateway, gateway_env, run_gateway
from tests.grpc.servers import SERVICE, UNLIMITED
from tests.reliability.conftest import Footprint, settled_metric
from tests.support import LOOPBACK, free_port, python_module, running_process

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def grpc_server(log_dir: Path, port: int) -> Iterator[Any]:
    with running_process(
        python_module("tests.grpc.serve", str(port)), log_dir / f"grpc-{port}.log", wait_ports=[port]
    ) as process:
        yield process


@pytest.fixture
def upstream_port() -> int:
    return free_port()


@pytest.fixture
def gateway(tmp_path: Path, upstream_port: int, collector: Collector) -> Iterator[Gateway]:
    env = gateway_env(None, collector, upstream_url=f"http://{LOOPBACK}:{upstream_port}", upstream_protocol="h2c")
    with run_gateway(tmp_path, env) as running:
        yield running


def test_an_upstream_killed_mid_stream_fails_the_call_and_the_gateway_recovers(
    tmp_path: Path, gateway: Gateway, upstream_port: int, collector: Collector
) -> None:
    with grpc.insecure_channel(f"{LOOPBACK}:{gateway.port}", options=UNLIMITED) as channel:
        repeat = channel.unary_stream(f"/{SERVICE}/Repeat")
        with grpc_server(tmp_path, upstream_port) as server:
            stream = repeat(b"1000000:1000", timeout=60)
            next(stream)
            os.kill(server.pid, signal.SIGKILL)
            with pytest.raises(grpc.RpcError) as caught:
                for _ in stream:
                    pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc_server(tmp_path, upstream_port):
            assert channel.unary_unary(f"/{SERVICE}/Unary")(b"again", timeout=10) == b"again"
    spans = collector.wait_for_spans(4)
    failed = [span for span in spans if span["tags"].get("rpc.grpc.status_code") == "14"]
    assert {span["kind"] for span in failed} == {"SERVER", "CLIENT"} and all("error" in span["tags"] for span in failed)
    assert len({span["traceId"] for span in spans}) == 2


def test_many_cancelled_calls_leave_nothing_behind(tmp_path: Path, gateway: Gateway, upstream_port: int) -> None:
    with grpc_server(tmp_path, upstream_port), grpc.insecure_channel(f"{LOOPBACK}:{gateway.port}") as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        assert unary(b"warm", timeout=10) == b"warm"
        before = Footprint(gateway)
        hang = channel.unary_unary(f"/{SERVICE}/Hang")
        futures = [hang.future(b"x", timeout=60) for _ in range(50)]
        settled_metric(gateway, "gateway_event_loop_tasks", lambda tasks: tasks >= before.tasks + 50)
        for future in futures:
            future.cancel()
        cancelled = settled_metric(
            gateway, "gateway_grpc_calls_total", lambda calls: calls >= 50, grpc_status="CANCELLED"
        )
        assert cancelled == 50
        before.assert_back(extra_sockets=1)
