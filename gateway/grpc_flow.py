"""The flow of one gRPC call through the gateway: route, decide, propagate, relay both ways with trailers, record.

A call arrives over HTTP/2 from a server that offers ASGI's trailers extension; it goes to an h2c route's upstream
(gateway/h2_upstream.py), its messages streaming both ways as they come. The gateway's own failures reach the client
as gRPC statuses in a trailers-only response (HTTP 200, one HEADERS frame), never as an HTTP error page. The spans
last the whole call and carry OpenTelemetry's RPC tags and the messages counted each way.
"""

from __future__ import annotations

import time

from gateway.access_line import access_line
from gateway.asgi import Receive, Scope, Send, host_of, made_at_startup
from gateway.flow_parts import FlowParts
from gateway.grpc import (
    CONTENT_TYPE,
    GRPC_TIMEOUT,
    REQUEST_MESSAGES,
    RESPONSE_MESSAGES,
    MethodName,
    Status,
    header,
    is_call,
    parse_method,
    parse_timeout,
    rpc_tags,
)
from gateway.grpc_call import Call, status_name, trailers_only
from gateway.proxy import Upstream, UpstreamRequest
from gateway.routing import ActiveRoute, Routing
from gateway.trace_start import TraceStart

TRAILERS_EXTENSION = "http.response.trailers"
# A call no route serves, or whose route's upstream speaks HTTP/1.1 (which cannot carry trailers): gRPC is not served
# there, which is what UNIMPLEMENTED tells a client (doc/statuscodes.md: "not implemented or not supported").
NOT_GRPC_ROUTE = Status.UNIMPLEMENTED


def is_grpc_call(scope: Scope) -> bool:
    """A gRPC call this flow can carry: HTTP/2, a server that can send trailers, a gRPC content-type."""
    if scope.get("http_version") != "2" or TRAILERS_EXTENSION not in (scope.get("extensions") or {}):
        return False
    return is_call(header(scope["headers"], CONTENT_TYPE))


class GrpcCalls:
    """The gateway's gRPC calls, each relayed to an h2c route's upstream."""

    def __init__(self, parts: FlowParts, routing: Routing) -> None:
        self.routing = routing  # swapped whole on a reload, as `HttpExchanges.routing` is
        self._parts = parts
        self._h2: Upstream | None = None
        metrics = parts.metrics
        self._calls = metrics.grpc_calls
        self._bad_timeouts = metrics.grpc_timeouts_ignored
        self._no_route = metrics.upstream_errors.labels("no_route")

    def use_upstream(self, h2: Upstream) -> None:
        """The h2c routes' upstream, made at the lifespan's startup."""
        self._h2 = h2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, started_wall = time.perf_counter(), time.time()
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        path: str = scope["path"]
        client = scope.get("client")
        client_host = client[0] if client else None
        routing = self.routing
        route = routing.match(host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None or route.route.protocol != "h2c":
            if route is None:
                self._no_route.inc()
            message = "no route for this host and path" if route is None else f"route {route.name!r} is not h2c"
            await trailers_only(send, NOT_GRPC_ROUTE, message, self._parts.starter.unrouted_trace_response())
            self._calls.labels(route.name if route else "", "200", NOT_GRPC_ROUTE.name).inc()
            return

        deadline = self._deadline(request_headers)
        begun = self._parts.starter.start(route, request_headers, client_host, scope.get("scheme", "http"))
        outgoing = [item for item in begun.outgoing if item[0] != GRPC_TIMEOUT]
        method = parse_method(path)
        call = Call(send, begun.trace_response)
        client_started, client_started_wall = time.perf_counter(), time.time()
        try:
            await call.run(
                made_at_startup(self._h2),
                UpstreamRequest("POST", route.upstream.url_for(path, b""), outgoing, None, route.timeout),
                receive,
                deadline,
            )
        finally:
            finished = time.perf_counter()
            self._record(route, begun, call, method, scope, client_host, finished - started)
            decision = begun.decision
            route.decisions[(decision.sampled, decision.reason)].inc()
            if decision.sampled:
                self._parts.reporter.submit(
                    begun.exchange(
                        method.span_name if method is not None else route.span_name("POST", path),
                        "POST",
                        path,
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
                    decision.reserved,
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
        call: Call,
        method: MethodName | None,
        scope: Scope,
        client_host: str | None,
        duration: float,
    ) -> None:
        self._calls.labels(route.name, str(call.http_status), status_name(call.status)).inc()
        if call.error_kind is not None:
            self._parts.metrics.upstream_errors.labels(call.error_kind).inc()
        decision = begun.decision
        self._parts.request_metrics.observe(
            route.name, "POST", call.http_status, decision.sampled, duration, begun.trace_id, status_name(call.status)
        )
        access_log = self._parts.access_log
        if access_log is not None:
            access_log.write(
                access_line(
                    time.time(),
                    "POST",
                    scope["path"],
                    call.http_status,
                    duration,
                    begun.trace_id,
                    route.name,
                    decision.sampled,
                    decision.reason,
                    client_host,
                    call.error,
                    grpc_status=call.status,
                )
            )
