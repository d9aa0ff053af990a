"""A real grpcio server for the gRPC tests: generic handlers with bytes in and out, so no generated code."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

SERVICE = "demo.Echo"
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
DETAILS_BIN = b"\x08\x05\x12\x04gone"  # any bytes: the -bin trailer must arrive unchanged


@dataclass
class Seen:
    """What the server saw: each call's metadata, and which calls ended by cancellation."""

    metadata: list[dict[str, str | bytes]] = field(default_factory=list)
    time_remaining: list[float | None] = field(default_factory=list)  # each call's deadline as the server saw it
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def _identity(value: bytes) -> bytes:
    return value


class EchoServer:
    def __init__(self, port: int = 0) -> None:
        self.seen = Seen()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=UNLIMITED)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary, _identity, _identity),
            "Collect": grpc.stream_unary_rpc_method_handler(self._collect, _identity, _identity),
            "Repeat": grpc.unary_stream_rpc_method_handler(self._repeat, _identity, _identity),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat, _identity, _identity),
            "Hang": grpc.unary_unary_rpc_method_handler(self._hang, _identity, _identity),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")

    def start(self) -> EchoServer:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace).wait()

    def _record(self, context: grpc.ServicerContext) -> None:
        self.seen.metadata.append(dict(context.invocation_metadata()))
        self.seen.time_remaining.append(context.time_remaining())

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        if request.startswith(b"fail:"):
            context.set_trailing_metadata((("custom-trailer", "kept"), ("grpc-status-details-bin", DETAILS_BIN)))
            context.abort(grpc.StatusCode.NOT_FOUND, request[5:].decode())
        if request == b"early-fail":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied before any message")
        context.set_trailing_metadata((("custom-trailer", "kept"),))
        return request

    def _collect(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._record(context)
        sizes = [len(request) for request in requests]
        return f"{len(sizes)}:{sum(sizes)}".encode()

    def _repeat(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record(context)
        count, size = (int(part) for part in request.split(b":"))
        for index in range(count):
            if request.startswith(b"die") or (context.is_active() is False):
                return
            yield bytes([index % 256]) * size

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record(context)
        for request in requests:
            yield b"echo:" + request

    def _hang(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        ended = threading.Event()
        context.add_callback(ended.set)  # called when the call ends: here, only by cancellation
        self.seen.started.set()
        # Until the call is cancelled, or a bound well past every test's deadline.
        ended.wait(30)
        if not context.is_active():
            self.seen.cancelled.set()
        return request
