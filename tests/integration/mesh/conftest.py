"""A real collector and the three demo services on loopback ports, in uvicorn threads, one mesh per test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.context import RandomIdGenerator
from gateway_devtools.collector.app import create_collector_app
from gateway_devtools.mesh.app import EMOJI, VOTING, WEB, ServiceConfig, create_app
from gateway_devtools.mesh.tracing import Misbehaviour
from tests.integration.mesh.traces import ZipkinReader
from tests.support import LOOPBACK, ThreadedServer, free_port

FLUSH_INTERVAL = 0.05
VOTE = "/api/vote?choice=:joy:"
VOTE_SPANS = 5  # web's SERVER span, its CLIENT spans to emoji and voting, their SERVER spans

_IDS = RandomIdGenerator()


def b3(sampled: str | None = "1", **extra: str) -> tuple[dict[str, str], str, str]:
    """Headers as the gateway sends them upstream: (headers, trace id, the gateway CLIENT span's id)."""
    trace_id, span_id = f"{_IDS.new_trace_id():032x}", f"{_IDS.new_span_id():016x}"
    headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-ParentSpanId": f"{_IDS.new_span_id():016x}"}
    if sampled is not None:
        headers["X-B3-Sampled"] = sampled
    return {**headers, **extra}, trace_id, span_id


@dataclass
class Mesh:
    web_url: str
    zipkin: ZipkinReader

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.web_url + path, headers=headers, timeout=10, trust_env=False)

    def barrier(self) -> str:
        """A sampled vote, once its spans are in: each service sends its spans in order, so any it reported for
        an earlier request are in too. Returns its trace id."""
        headers, trace_id, _ = b3()
        assert self.get(VOTE, headers).status_code == 200
        assert len(self.zipkin.wait_for_trace(trace_id, VOTE_SPANS)) == VOTE_SPANS
        return trace_id


@pytest.fixture(scope="module")
def collector() -> Iterator[ZipkinReader]:
    with ThreadedServer(create_collector_app()) as server:
        yield ZipkinReader(server.url)


@pytest.fixture
def zipkin(collector: ZipkinReader) -> ZipkinReader:
    httpx.delete(f"{collector.base_url}/api/v2/_reset", timeout=5, trust_env=False).raise_for_status()
    return collector


MeshFactory = Callable[..., Mesh]


@pytest.fixture
def start_mesh(zipkin: ZipkinReader) -> Iterator[MeshFactory]:
    """`start_mesh(voting=Misbehaviour.DROP_SPANS)` -> web, emoji and voting reporting to the test's collector."""
    with contextlib.ExitStack() as stack:

        def start(**misbehaviour: Misbehaviour) -> Mesh:
            def serve(service: str, emoji_url: str = "", voting_url: str = "") -> str:
                port = free_port()
                config = ServiceConfig(
                    service,
                    LOOPBACK,
                    port,
                    zipkin_url=f"{zipkin.base_url}/api/v2/spans",
                    misbehaviour=misbehaviour.get(service, Misbehaviour.NONE),
                    flush_interval=FLUSH_INTERVAL,
                    emoji_url=emoji_url,
                    voting_url=voting_url,
                )
                return stack.enter_context(ThreadedServer(create_app(config), port)).url

            emoji_url, voting_url = serve(EMOJI), serve(VOTING)
            return Mesh(serve(WEB, emoji_url=emoji_url, voting_url=voting_url), zipkin)

        yield start
