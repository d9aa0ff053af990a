"""`emoji-grpc`: emojivoto's EmojiService (ListAll, FindByShortcode) over gRPC, as emojivoto's own `emoji` serves it.

A grpc.aio server with generic handlers and JSON messages (no generated code), traced like the other demo services:
it joins the caller's B3 trace from the call's metadata and reports a SERVER span per call. Behind an h2c route of the
gateway, a gRPC call from outside shows in the trace page as gateway SERVER -> gateway CLIENT -> emoji-grpc SERVER.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import grpc

from gateway.propagation.b3 import extract
from gateway_devtools.mesh.emoji import EMOJIS
from gateway_devtools.mesh.instrument import SpanSink
from gateway_devtools.mesh.tracing import HttpCall, Tracer

SERVICE = "emojivoto.v1.EmojiService"
Handler = Callable[[bytes], tuple[grpc.StatusCode, bytes, str]]


def add_to(server: grpc.aio.Server, tracer: Tracer, sink: SpanSink) -> None:
    handlers = {
        "ListAll": grpc.unary_unary_rpc_method_handler(_traced("ListAll", _list_all, tracer, sink)),
        "FindByShortcode": grpc.unary_unary_rpc_method_handler(_traced("FindByShortcode", _find, tracer, sink)),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _list_all(request: bytes) -> tuple[grpc.StatusCode, bytes, str]:
    emojis = [{"shortcode": shortcode, "unicode": unicode} for shortcode, unicode in EMOJIS.items()]
    return grpc.StatusCode.OK, json.dumps({"list": emojis}).encode(), ""


def _find(request: bytes) -> tuple[grpc.StatusCode, bytes, str]:
    try:
        shortcode = str(json.loads(request or b"{}").get("id", ""))
    except (ValueError, AttributeError):
        return grpc.StatusCode.INVALID_ARGUMENT, b"", "the request is not a JSON object"
    if shortcode not in EMOJIS:
        return grpc.StatusCode.NOT_FOUND, b"", f"no emoji with shortcode {shortcode!r}"
    return (
        grpc.StatusCode.OK,
        json.dumps({"emoji": {"shortcode": shortcode, "unicode": EMOJIS[shortcode]}}).encode(),
        "",
    )


def _traced(
    method: str, handler: Handler, tracer: Tracer, sink: SpanSink
) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
    path = f"/{SERVICE}/{method}"

    async def serve(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        metadata = [
            (str(key).encode(), value if isinstance(value, bytes) else str(value).encode())
            for key, value in context.invocation_metadata() or ()
        ]
        trace = tracer.server_context(extract(metadata))
        start, started = time.time(), time.perf_counter()
        status, reply, message = handler(request)
        if tracer.reports(trace):
            error = None if status is grpc.StatusCode.OK else status.name
            call = HttpCall("POST", path, start, time.perf_counter() - started, 200, error)
            sink.submit([tracer.server_span(trace, call)])
        if status is not grpc.StatusCode.OK:
            await context.abort(status, message)
        return reply

    return serve
