"""The flow of one HTTP request through the gateway: route, start its trace, relay it, record it.

Plain ASGI, no framework: this is the hot path, so what every request reads is bound once here (the route table,
the trace starter's methods, metric children) rather than looked up through the gateway on each request.
"""

from __future__ import annotations

import asyncio
import time

from gateway.access_line import access_line
from gateway.asgi import Receive, Scope, Send, host_of, made_at_startup
from gateway.flow_parts import FlowParts
from gateway.http_relay import Relay, plain_response
from gateway.proxy import Upstream
from gateway.routing import Routing

NO_ROUTE = "no route for this host and path\n"


class HttpExchanges:
    """The gateway's HTTP requests (HTTP/1.1, and HTTP/2 requests that are not gRPC calls), each relayed upstream."""

    def __init__(self, parts: FlowParts, routing: Routing) -> None:
        # Read once per request: a reload swaps in a whole new Routing (gateway/worker_routes.py), never edits it.
        self.routing = routing
        # What every request uses is bound here, one attribute away, rather than reached through `parts`.
        self._start_trace = parts.starter.start
        self._unrouted_trace_response = parts.starter.unrouted_trace_response
        self._reporter = parts.reporter
        self._access_log = parts.access_log
        self._request_metrics = parts.request_metrics
        metrics = parts.metrics
        self._no_route = metrics.upstream_errors.labels("no_route")
        self._no_route_status = parts.settings.no_route_status
        self._upstream_errors = metrics.upstream_errors
        self._upstream: Upstream | None = None
        self._h2: Upstream | None = None  # for h2c routes
        self._loop: asyncio.AbstractEventLoop | None = None

    def use_upstreams(self, upstream: Upstream, h2: Upstream) -> None:
        """The upstreams, made at the lifespan's startup (in the worker's loop, which the relays keep): an HTTP/1.1
        route's, and the h2c routes'."""
        self._upstream, self._h2 = upstream, h2
        self._loop = asyncio.get_running_loop()

    async def exchange(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        started_wall = time.time()
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        client_host = client[0] if client else None

        routing = self.routing
        route = routing.match(host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None:
            self._no_route.inc()
            await plain_response(send, self._no_route_status, NO_ROUTE, self._unrouted_trace_response())
            return

        begun = self._start_trace(route, request_headers, client_host, scope.get("scheme", "http"))
        trace_id, decision = begun.trace_id, begun.decision

        query: bytes = scope.get("query_string", b"")
        relay = Relay(send, begun.trace_response, made_at_startup(self._loop))
        client_started_wall = time.time()
        client_started = time.perf_counter()
        try:
            # The request's own bytes go upstream: scope["path"] is percent-decoded ("%3F" would become a query).
            raw_path = scope.get("raw_path")
            target = raw_path.decode("latin-1") if raw_path else path
            await relay.run(
                made_at_startup(self._upstream if route.route.protocol == "http1" else self._h2),
                method,
                route.upstream.url_for(target, query),
                begun.outgoing,
                receive,
                route.timeout,
            )
        finally:
            client_finished = relay.upstream_finished or time.perf_counter()
            finished = time.perf_counter()
            if relay.error_kind is not None:
                self._upstream_errors.labels(relay.error_kind).inc()
            route.decisions[(decision.sampled, decision.reason)].inc()
            self._request_metrics.observe(
                route.name, method, relay.status, decision.sampled, finished - started, trace_id
            )
            if decision.sampled:
                self._reporter.submit(
                    begun.exchange(
                        route.span_name(method, path),
                        method,
                        path,
                        relay.status,
                        relay.upstream_status,
                        relay.error,
                        client_host,
                        client[1] if client else None,
                        route.upstream,
                        started_wall,
                        finished - started,
                        client_started_wall,
                        client_finished - client_started,
                        route.tags,
                    ),
                    decision.reserved,
                )
            if self._access_log is not None:
                self._access_log.write(
                    access_line(
                        time.time(),
                        method,
                        path,
                        relay.status,
                        finished - started,
                        trace_id,
                        route.name,
                        decision.sampled,
                        decision.reason,
                        client_host,
                        relay.error,
                    )
                )
