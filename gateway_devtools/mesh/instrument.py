"""The tracing helper's I/O: a plain ASGI middleware for the SERVER span, an httpx wrapper for CLIENT spans."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from py_zipkin.encoding import Endpoint, Span
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.context import TraceContext
from gateway.propagation.b3 import extract
from gateway.spans import local_endpoint
from gateway_devtools.mesh.tracing import HttpCall, Tracer

TRACE_KEY = "mesh.trace"
_STATUS_MESSAGES = frozenset({"http.response.start", "websocket.http.response.start"})


class SpanSink(Protocol):
    def submit(self, spans: list[Span]) -> None: ...


@dataclass(slots=True)
class RequestTrace:
    """The SERVER span's context for the request being served, its finished CLIENT spans and, when a handler
    sets one, the error message for the SERVER span's `error` tag."""

    context: TraceContext
    client_spans: list[Span] = field(default_factory=list)
    error: str | None = None


def request_trace(request: HTTPConnection) -> RequestTrace:
    trace: RequestTrace = request.scope[TRACE_KEY]
    return trace


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracer: Tracer, sink: SpanSink) -> None:
        self.app = app
        self._tracer = tracer
        self._sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        trace = RequestTrace(self._tracer.server_context(extract(scope["headers"])))
        scope[TRACE_KEY] = trace
        status_code: int | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] in _STATUS_MESSAGES:
                status_code = message["status"]
            elif message["type"] == "websocket.accept":
                status_code = 101
            elif message["type"] == "websocket.close" and status_code is None:
                status_code = 403  # refused before the handshake, as uvicorn answers it
            await send(message)

        start, started = time.time(), time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        except Exception as exc:
            # Starlette's ServerErrorMiddleware, outside this one, answers 500.
            status_code = status_code or 500
            trace.error = trace.error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self._tracer.reports(trace.context):
                call = HttpCall(
                    # A WebSocket session's span lasts it, from the upgrade request to the close.
                    method=scope.get("method", "GET"),
                    path=scope["path"],
                    start=start,
                    duration=time.perf_counter() - started,
                    status_code=status_code,
                    error=trace.error,
                    remote=_peer(scope),
                )
                self._sink.submit([self._tracer.server_span(trace.context, call), *trace.client_spans])


class DownstreamError(Exception):
    """The downstream service could not be reached or did not answer in time."""


class Downstream:
    """A service this one calls: every call is a CLIENT span, child of the current request's SERVER span."""

    def __init__(self, name: str, base_url: str, client: httpx.AsyncClient, tracer: Tracer) -> None:
        url = httpx.URL(base_url)
        self.name = name
        self._base_url = str(url).rstrip("/")
        self._client = client
        self._tracer = tracer
        # local_endpoint builds an Endpoint from an IP literal without a DNS lookup; here it names the callee.
        self._remote = local_endpoint(name, url.host, url.port or 0)

    async def request(
        self, trace: RequestTrace, method: str, path: str, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        context = self._tracer.client_context(trace.context)
        headers = self._tracer.outgoing_headers(context)
        status_code: int | None = None
        error: str | None = None
        start, started = time.time(), time.perf_counter()
        try:
            response = await self._client.request(method, self._base_url + path, params=params, headers=headers)
            status_code = response.status_code
            return response
        except httpx.HTTPError as exc:
            error = f"{self.name} unreachable: {type(exc).__name__}"
            raise DownstreamError(error) from exc
        finally:
            if self._tracer.reports(context):
                call = HttpCall(method, path, start, time.perf_counter() - started, status_code, error, self._remote)
                trace.client_spans.append(self._tracer.client_span(context, call))


def _peer(scope: Scope) -> Endpoint | None:
    client = scope.get("client")
    if not client:
        return None
    remote = local_endpoint("", client[0], client[1])
    return remote if remote.ipv4 or remote.ipv6 else None
