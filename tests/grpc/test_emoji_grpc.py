"""The demo mesh's emoji-grpc behind the gateway: the call's trace is whole (gateway SERVER -> CLIENT -> emoji)."""

from __future__ import annotations

import json

import grpc
import pytest
from py_zipkin.encoding import Span

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.sampling import RatioSampler
from gateway.settings import Settings
from gateway.spans import local_endpoint
from gateway_devtools.mesh.emoji_grpc import SERVICE, add_to
from gateway_devtools.mesh.tracing import Tracer
from tests.grpc.asgi import AsgiCall
from tests.grpc.servers import frame
from tests.grpc.test_grpc_flow import RecordingReporter

pytestmark = pytest.mark.anyio


class Sink:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def submit(self, spans: list[Span]) -> None:
        self.spans.extend(spans)


async def test_a_grpc_call_through_the_gateway_is_one_whole_trace() -> None:
    sink = Sink()
    server = grpc.aio.server()
    add_to(server, Tracer(local_endpoint("emoji-grpc", "127.0.0.1", 0), RatioSampler(0.0)), sink)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = Settings(upstream_url=f"http://127.0.0.1:{port}", upstream_protocol="h2c", sample_rate=1.0)
    app = create_app(settings, metrics=Metrics(), reporter=RecordingReporter())
    await app.startup()
    try:
        call = AsgiCall(app, "FindByShortcode")
        call.scope["path"] = call.scope["raw_path"] = f"/{SERVICE}/FindByShortcode"
        await call.run(json.dumps({"id": ":rocket:"}).encode())
        missing = AsgiCall(app, "FindByShortcode")
        missing.scope["path"] = missing.scope["raw_path"] = f"/{SERVICE}/FindByShortcode"
        await missing.run(json.dumps({"id": ":nope:"}).encode())
    finally:
        await app.shutdown()
        await server.stop(None)
    assert call.body == frame(json.dumps({"emoji": {"shortcode": ":rocket:", "unicode": "🚀"}}).encode())
    assert missing.grpc_status == b"5"
    reporter = app.reporter
    assert isinstance(reporter, RecordingReporter)
    found, not_found = reporter.submitted
    assert found.name == f"{SERVICE}/FindByShortcode"
    emoji_found, emoji_missing = sink.spans
    # The gateway decided (rate 1.0) although the service's own rate is 0: the decision travelled as metadata.
    assert emoji_found.trace_id == f"{found.trace_id:032x}" and emoji_found.parent_id == f"{found.client_span_id:016x}"
    assert emoji_missing.tags["error"] == "NOT_FOUND" and dict(not_found.tags)["rpc.grpc.status_code"] == "5"
