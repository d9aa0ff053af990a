"""The flow of one gRPC call through the gateway: route, decide, propagate, relay both ways with trailers, record.

A call arrives over HTTP/2 from a server that offers ASGI's trailers extension; it goes to an h2c route's upstream
(gateway/h2_upstream.py), its messages streaming both ways as they come. The gateway's own failures reach the client
as gRPC statuses in a trailers-only response (HTTP 200, one HEADERS frame), never as an HTTP error page. The spans
last the whole call and carry OpenTelemetry's RPC tags and the messages counted each way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from gateway.forwarding import downstream_response_headers
from gateway.grpc import (
    CONTENT_TYPE,
    GRPC_STATUS,
    GRPC_TIMEOUT,
    REQUEST_MESSAGES,
    RESPONSE_MESSAGES,
    MessageCounter,
    MethodName,
    Status,
    error_headers,
    format_timeout,
    header,
    is_call,
    parse_method,
    parse_status,
    parse_timeout,
    rpc_tags,
    status_for_http,
    status_for_reset,
)
from gateway.h2_upstream import UpstreamReset
from gateway.logs import ACCESS_LOGGER
from gateway.metrics import Metrics
from gateway.proxy import Upstream, UpstreamError, UpstreamRequest, UpstreamResponse, UpstreamTimeout
from gateway.reporter import SpanReporter
from gateway.routing import ActiveRoute, Routing
from gateway.spans import Exchange
from gateway.trace_start import TraceStart

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRAILERS_EXTENSION = "http.response.trailers"
TRACE_RESPONSE = b"traceresponse"
HOST = b"host"
# A gRPC call to a route whose upstream speaks HTTP/1.1 cannot be carried (no trailers): the route does not serve
# gRPC, which is what UNIMPLEMENTED tells a client (doc/statuscodes.md: "not implemented or not supported").
NOT_GRPC_ROUTE = Status.UNIMPLEMENTED
_END = object()
# The share of a deadline by which the client's own timer, started before the call reached the gateway, may be ahead.
_DEADLINE_SLACK = 0.02

access_logger = logging.getLogger(ACCESS_LOGGER)


class CallHost(Protocol):
    """What a call needs from the gateway (gateway/app.py's Gateway)."""

    routing: Routing
    reporter: SpanReporter
    metrics: Metrics

    def start_trace(
        self, scope: Scope, route: ActiveRoute, request_headers: list[tuple[bytes, bytes]], client_host: str | None
    ) -> TraceStart: ...

    def unrouted_trace_response(self) -> list[tuple[bytes, bytes]]: ...

    def h2_upstream(self) -> Upstream: ...


def is_grpc_call(scope: Scope) -> bool:
    """A gRPC call this flow can carry: HTTP/2, a server that can send trailers, a gRPC content-type."""
    if scope.get("http_version") != "2" or TRAILERS_EXTENSION not in (scope.get("extensions") or {}):
        return False
    return is_call(header(scope["headers"], CONTENT_TYPE))


class GrpcCalls:
    def __init__(self, host: CallHost, access_log: bool) -> None:
        self._host = host
        self._access_log = access_log
        metrics = host.metrics
        self._calls = metrics.grpc_calls
        self._bad_timeouts = metrics.grpc_timeouts_ignored
        self._no_route = metrics.upstream_errors.labels("no_route")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, started_wall = time.perf_counter(), time.time()
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        path: str = scope["path"]
        client = scope.get("client")
        client_host = client[0] if client else None
        host = self._host
        routing = host.routing
        route = routing.match(_host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None or route.route.protocol != "h2c":
            if route is None:
                self._no_route.inc()
            message = "no route for this host and path" if route is None else f"route {route.name!r} is not h2c"
            await _trailers_only(send, Status.UNIMPLEMENTED, message, host.unrouted_trace_response())
            self._calls.labels(route.name if route else "", "200", Status.UNIMPLEMENTED.name).inc()
            return

        deadline = self._deadline(request_headers)
        begun = host.start_trace(scope, route, request_headers, client_host)
        outgoing = [item for item in begun.outgoing if item[0] != GRPC_TIMEOUT]
        method = parse_method(path)
        call = _Call(send, begun.trace_response)
        client_started, client_started_wall = time.perf_counter(), time.time()
        try:
            await call.run(
                host.h2_upstream(),
                UpstreamRequest("POST", route.upstream.url_for(path, b""), outgoing, None, route.timeout),
                receive,
                deadline,
            )
        finally:
            finished = time.perf_counter()
            self._record(route, begun, call, method, scope, client_host, client)
            decision = begun.decision
            route.decisions[(decision.sampled, decision.reason)].inc()
            host.metrics.request_duration.labels("sampled" if decision.sampled else "not_sampled").observe(
                finished - started
            )
            if decision.sampled:
                host.reporter.submit(
                    Exchange(
                        begun.trace_id,
                        begun.server_span_id,
                        begun.client_span_id,
                        begun.parent_id,
                        decision.debug,
                        method.span_name if method is not None else route.span_name("POST", path),
                        "POST",
                        path,
                        begun.host,
                        call.http_status,
                        call.upstream_http_status,
                        call.error,
                        client_host,
                        client[1] if client else None,
                        route.upstream,
                        started_wall,
                        finished - started,
                        client_started_wall,
                        (call.upstream_finished or finished) - client_started,
                        (
                            *route.tags,
                            *rpc_tags(method, call.status),
                            (REQUEST_MESSAGES, str(call.request_messages.messages)),
                            (RESPONSE_MESSAGES, str(call.response_messages.messages)),
                        ),
                    ),
                    begun.reserved,
                )

    def _deadline(self, headers: list[tuple[bytes, bytes]]) -> float | None:
        raw = header(headers, GRPC_TIMEOUT)
        if raw is None:
            return None
        seconds = parse_timeout(raw)
        if seconds is None:
            self._bad_timeouts.inc()
        return seconds

    def _record(
        self,
        route: ActiveRoute,
        begun: TraceStart,
        call: _Call,
        method: MethodName | None,
        scope: Scope,
        client_host: str | None,
        client: Any,
    ) -> None:
        status_name = _status_name(call.status)
        self._calls.labels(route.name, str(call.http_status), status_name).inc()
        if call.error_kind is not None:
            self._host.metrics.upstream_errors.labels(call.error_kind).inc()
        if self._access_log:
            trace_id = begun.trace_id
            access_logger.info(
                "POST %s %s grpc-status %s",
                scope["path"],
                call.http_status,
                call.status,
                extra={
                    "method": "POST",
                    "path": scope["path"],
                    "status": call.http_status,
                    "grpc_status": call.status,
                    "trace_id": f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}",
                    "route": route.name,
                    "sampled": begun.decision.sampled,
                    "reason": begun.decision.reason,
                    "client": client_host,
                    "error": call.error,
                },
            )


class _Call:
    """One call relayed both ways, with what happened recorded for spans, metrics and the access log."""

    def __init__(self, send: Send, trace_response: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._trace_response = trace_response
        self._started = False  # whether the client has had the response start
        self._ended = False  # whether the client has had the whole response
        self.http_status: int | None = None
        self.upstream_http_status: int | None = None
        self.status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None
        self.request_messages = MessageCounter()
        self.response_messages = MessageCounter()

    async def run(self, upstream: Upstream, request: UpstreamRequest, receive: Receive, deadline: float | None) -> None:
        started = time.perf_counter()
        client = _ClientSide(receive, self.request_messages)
        request.body = client.body()
        if deadline is not None:
            # The upstream gets what is left of the client's deadline, never more (gRPC deadline propagation).
            request.headers.append((GRPC_TIMEOUT, format_timeout(deadline)))
        watcher = asyncio.get_running_loop().create_task(client.watch(asyncio.current_task()))
        try:
            async with asyncio.timeout(deadline):
                await self._relay(upstream, request)
        except TimeoutError:
            await self._fail(Status.DEADLINE_EXCEEDED, "deadline exceeded at the gateway", "timeout")
        except UpstreamReset as exc:
            await self._fail(status_for_reset(exc.error_code), str(exc), exc.kind)
        except UpstreamTimeout as exc:
            await self._fail(Status.DEADLINE_EXCEEDED, str(exc), exc.kind)
        except UpstreamError as exc:
            await self._fail(Status.UNAVAILABLE, str(exc), exc.kind)
        except asyncio.CancelledError:
            if not client.disconnected:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # The client reset its stream: nothing more goes to it; the upstream stream was cancelled with the relay.
            # A client cancels at its own deadline a moment before the gateway's copy of it would expire.
            expired = deadline is not None and time.perf_counter() - started >= deadline * (1 - _DEADLINE_SLACK)
            if expired:
                self.status, self.error = Status.DEADLINE_EXCEEDED, "client's deadline passed"
            else:
                self.status, self.error = Status.CANCELLED, "client cancelled"
            self.error_kind = "client_disconnected"
        finally:
            watcher.cancel()
            if self.upstream_finished is None:
                self.upstream_finished = time.perf_counter()

    async def _relay(self, upstream: Upstream, request: UpstreamRequest) -> None:
        response = await upstream.forward(request)
        try:
            await self._relay_response(response)
        finally:
            await response.aclose()

    async def _relay_response(self, response: UpstreamResponse) -> None:
        self.upstream_http_status = response.status_code
        headers = [item for item in downstream_response_headers(response.headers) if item[0] != TRACE_RESPONSE]
        headers.extend(self._trace_response)
        send = self._send
        status = parse_status(header(response.headers, GRPC_STATUS))
        if status is not None:
            # Trailers-only (the upstream's HEADERS ended the stream): it goes on as one HEADERS frame too.
            async for _ in response.body():
                pass
            self.upstream_finished = time.perf_counter()
            self._set_status(status)
            self.http_status, self._started = response.status_code, True
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self._ended = True
            return
        self.http_status, self._started = response.status_code, True
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers, "trailers": True}
        )
        counter = self.response_messages
        async for chunk in response.body():
            counter.feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.upstream_finished = time.perf_counter()
        trailers = getattr(response, "trailers", [])
        status = parse_status(header(trailers, GRPC_STATUS))
        self._set_status(status if status is not None else status_for_http(response.status_code))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
        self._ended = True

    def _set_status(self, status: int) -> None:
        self.status = status
        if status != Status.OK:
            # As Brave's gRPC parser tags it: the status's name, on any status but OK.
            self.error = _status_name(status)

    async def _fail(self, status: Status, message: str, kind: str) -> None:
        if self._ended:
            return  # the client has its answer; what failed after it changes nothing
        self.status, self.error, self.error_kind = status, message, kind
        if not self._started:
            self.http_status = 200
            await _trailers_only(self._send, status, message, self._trace_response)
        else:
            # Mid-stream: the response has begun with trailers promised; the status goes in them.
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            trailers = error_headers(status, message)[1:]  # without content-type, which the headers had
            await self._send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
        self._ended = True


class _ClientSide:
    """The client's side of a call: its request messages as a body, and a watch for it going away."""

    def __init__(self, receive: Receive, counter: MessageCounter) -> None:
        self._receive = receive
        self._counter = counter
        self._chunks: asyncio.Queue[object] = asyncio.Queue(maxsize=4)  # bounded: a slow upstream holds the client
        self.disconnected = False

    async def watch(self, call: asyncio.Task[Any] | None) -> None:
        """Reads the client until it goes away; then cancels the call (and with it the upstream stream) at once."""
        body_open = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if body_open:
                    await self._chunks.put(_END)
                if call is not None:
                    call.cancel()
                return
            if body_open:
                chunk: bytes = message.get("body", b"")
                if chunk:
                    self._counter.feed(chunk)
                    await self._chunks.put(chunk)
                if not message.get("more_body", False):
                    body_open = False
                    await self._chunks.put(_END)

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not _END:
            assert isinstance(chunk, bytes)
            yield chunk


async def _trailers_only(send: Send, status: Status, message: str, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*error_headers(status, message), *extra]})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _status_name(status: int | None) -> str:
    if status is None:
        return "none"
    try:
        return Status(status).name
    except ValueError:
        return str(status)  # a code beyond the known ones passes through as its number


def _host_of(headers: list[tuple[bytes, bytes]]) -> str:
    value = header(headers, HOST)
    return value.decode("latin-1") if value is not None else ""
