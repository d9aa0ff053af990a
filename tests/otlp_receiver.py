"""A real OTLP/HTTP receiver on 127.0.0.1 for tests: answers as scripted, keeps every request decoded with
opentelemetry-proto's own messages (never a hand-written decoder)."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from tests.support import LOOPBACK

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    rejected_spans: int = 0


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes  # as sent (gzip)
    request: ExportTraceServiceRequest


@dataclass
class OtlpReceiver:
    port: int
    script: list[Answer] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1/traces"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def spans(self) -> list[tuple[ResourceSpans, Span]]:
        """Every span received, with the ResourceSpans it came in (retried bodies count once each time)."""
        return [
            (resource_spans, span)
            for received in self.requests()
            for resource_spans in received.request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def wait_for_requests(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests()

    def wait_for_spans(self, count: int, timeout: float = 15.0) -> list[tuple[ResourceSpans, Span]]:
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans()

    def _answer(self) -> Answer:
        with self.lock:
            return self.script.pop(0) if self.script else Answer()


@contextlib.contextmanager
def running_receiver(*script: Answer) -> Iterator[OtlpReceiver]:
    receiver_box: list[OtlpReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = ExportTraceServiceRequest()
            request.ParseFromString(gzip.decompress(body))
            receiver = receiver_box[0]
            with receiver.lock:
                receiver.received.append(
                    Received(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body, request)
                )
            answer = receiver._answer()
            reply = b""
            if answer.status == 200:
                reply = ExportTraceServiceResponse(
                    partial_success=ExportTracePartialSuccess(
                        rejected_spans=answer.rejected_spans,
                        error_message="some spans were refused" if answer.rejected_spans else "",
                    )
                ).SerializeToString()
            self.send_response(answer.status)
            self.send_header("content-type", PROTOBUF)
            self.send_header("content-length", str(len(reply)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    receiver_box.append(OtlpReceiver(server.server_address[1], list(script)))
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield receiver_box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
