"""WebSocket sessions, proxied: the handshake is one request like any other, then messages are relayed both ways.

The handshake is routed, trusted or not, sampled once and propagated as an HTTP request is (gateway/app.py); the
session itself is `websocket_relay.SessionRelay`'s. ASGI carries no control frames: each hop answers pings itself
(uvicorn towards the client, the client library towards the upstream), so a ping is never relayed, and neither keeps
an idle session alive here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

from gateway.access_line import access_line
from gateway.access_log import AccessLogWriter
from gateway.context import NO_CONTEXT, IdGenerator, TraceContext
from gateway.forwarding import upstream_request_headers
from gateway.metrics import Metrics
from gateway.propagation import extract_context
from gateway.propagation.b3 import format_multi, format_single
from gateway.propagation.w3c import MALFORMED_TRACESTATE, format_traceparent, format_traceresponse
from gateway.reporter import SpanReporter
from gateway.request_metrics import RequestMetrics
from gateway.routing import Routing
from gateway.sampling import TracesPerSecondCap, decide, tracestate_after
from gateway.settings import Propagation, Settings
from gateway.spans import W3C_TRACESTATE, Exchange
from gateway.threshold import NO_OT, parse_ot
from gateway.trust import TrustedNetworks
from gateway.websocket_relay import SessionRelay, refuse, text_headers
from gateway.websocket_session import (
    upstream_handshake_headers,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METHOD = "GET"
TRACE_RESPONSE = b"traceresponse"
_NEW_TRACE_REASONS = frozenset({"ratio"})

logger = logging.getLogger("gateway.websocket")


class WebSocketProxy:
    """Proxies the gateway's WebSocket sessions, and closes them with 1001 when the server is told to stop."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        trust: TrustedNetworks,
        ids: IdGenerator,
        process_cap: TracesPerSecondCap,
        routing: Callable[[], Routing],
        reporter: SpanReporter,
        access_log: AccessLogWriter | None,
        request_metrics: RequestMetrics,
        exporting: bool,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._trust = trust
        self._ids = ids
        self._cap = process_cap
        self._routing = routing
        self._reporter = reporter
        self._access_log = access_log
        self._request_metrics = request_metrics
        self._exporting = exporting  # no exporter: nothing is sampled (decide() says why)
        self._emit_single = Propagation.B3_SINGLE in settings.propagation
        self._emit_traceparent = Propagation.TRACE_CONTEXT in settings.propagation
        self._going_away = asyncio.Event()
        # One event per open session, set once its client has been sent its close (or the session is over).
        self._client_closes: set[asyncio.Event] = set()
        self._chained_handler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Task[None] | None = None  # held, so that the task is not collected mid-way

    def start(self, handle_signals: bool) -> None:
        """With ``handle_signals``, learn of SIGTERM before uvicorn acts on it (see `_on_stop_signal`)."""
        if handle_signals:
            previous = signal.getsignal(signal.SIGTERM)
            if callable(previous):
                self._chained_handler = previous
                self._loop = asyncio.get_running_loop()
                signal.signal(signal.SIGTERM, self._on_stop_signal)

    def stop(self) -> None:
        if self._chained_handler is not None:
            signal.signal(signal.SIGTERM, self._chained_handler)
            self._chained_handler = None

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # On SIGTERM uvicorn's shutdown calls each connection's shutdown() at once, and its WebSocket protocols then
        # send 1012 (service restart) and close: the app would have no say. A stop is a "going away" (RFC 6455
        # 7.4.1) for client and upstream alike, so the sessions close with 1001 first, and uvicorn is handed the
        # signal once they have sent their close frames (a protocol whose app has closed just closes its
        # transport). Only the public signal API is used: the handler uvicorn installed is chained, not replaced.
        if self._loop is not None:
            # A signal handler may run between any two bytecodes of the loop's own code: hand over thread-safely.
            self._loop.call_soon_threadsafe(self._begin_stop, signum, frame)

    def _begin_stop(self, signum: int, frame: FrameType | None) -> None:
        self._going_away.set()
        self._stopping = asyncio.get_running_loop().create_task(self._hand_on_stop(signum, frame))

    async def _hand_on_stop(self, signum: int, frame: FrameType | None) -> None:
        closes = [asyncio.ensure_future(closed.wait()) for closed in self._client_closes]
        if closes:
            await asyncio.wait(closes, timeout=self._settings.shutdown_timeout)
            for waiter in closes:
                waiter.cancel()
        handler = self._chained_handler
        if callable(handler):
            handler(signum, frame)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client_closed = asyncio.Event()
        self._client_closes.add(client_closed)
        try:
            await self._session(scope, receive, send, client_closed)
        finally:
            client_closed.set()
            self._client_closes.discard(client_closed)

    async def _session(self, scope: Scope, receive: Receive, send: Send, client_closed: asyncio.Event) -> None:
        started, started_wall = time.perf_counter(), time.time()
        connect_message = await receive()
        if connect_message["type"] != "websocket.connect":
            return
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        path: str = scope["path"]
        client = scope.get("client")
        client_host = client[0] if client else None
        routing = self._routing()
        route = routing.match(_host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None:
            self._metrics.upstream_errors.labels("no_route").inc()
            unrouted = self._trace_response(self._ids.new_trace_id(), self._ids.new_span_id(), sampled=False)
            text = b"no route for this host and path\n"
            await refuse(scope, send, self._settings.no_route_status, text_headers(text) + unrouted, text)
            return

        forwarded = upstream_request_headers(
            request_headers,
            client_host=client_host,
            scheme="https" if scope.get("scheme") == "wss" else "http",
            upstream_authority=route.upstream.authority,
            preserve_host=self._settings.preserve_host,
        )
        incoming = NO_CONTEXT
        if self._trust.trusts(client_host):
            incoming = extract_context(request_headers)
            if incoming.invalid is not None:
                self._metrics.trace_headers_ignored.labels(incoming.invalid).inc()
                incoming = NO_CONTEXT
            elif incoming.tracestate_invalid:
                self._metrics.trace_headers_ignored.labels(MALFORMED_TRACESTATE).inc()
        elif forwarded.had_trace_headers:
            self._metrics.trace_headers_ignored.labels("untrusted").inc()
        parent = incoming.context
        trace_id = parent.trace_id if parent is not None else self._ids.new_trace_id()
        ot = parse_ot(incoming.tracestate) if incoming.tracestate else NO_OT
        decision = decide(
            incoming, trace_id, route.sampler, route.cap, self._cap, self._reporter.reserve, ot, self._exporting
        )
        tracestate = tracestate_after(incoming.tracestate, ot, decision)
        reserved = decision.sampled and decision.reason in _NEW_TRACE_REASONS
        server_span_id, client_span_id = self._ids.new_span_id(), self._ids.new_span_id()
        context = TraceContext(trace_id, client_span_id, server_span_id, decision.sampled, decision.debug)
        outgoing = upstream_handshake_headers(forwarded.headers)
        outgoing.extend((name.decode(), value.decode()) for name, value in format_multi(context))
        if self._emit_single:
            outgoing.append(("b3", format_single(context)))
        if self._emit_traceparent:
            # The Random flag only on an id of the gateway's making, as for HTTP (gateway/app.py).
            outgoing.append(("traceparent", format_traceparent(context, random=parent is None)))
            if tracestate:
                outgoing.append(("tracestate", tracestate))

        trace_response = self._trace_response(trace_id, server_span_id, decision.sampled)
        relay = SessionRelay(scope, receive, send, trace_response, self._settings, client_closed)
        client_started, client_started_wall = time.perf_counter(), time.time()
        # The request's own bytes go upstream: scope["path"] is percent-decoded.
        raw_path: bytes | None = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else path
        query: bytes = scope.get("query_string", b"")
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        # The Host the upstream is to see: the route's authority, or the client's with GATEWAY_PRESERVE_HOST.
        upstream_host = forwarded.headers[0][1].decode("latin-1")
        try:
            # A route's timeout is None when it is the gateway's own.
            timeout = route.timeout if route.timeout is not None else self._settings.upstream_timeout
            await relay.run(route.upstream, upstream_host, target, outgoing, timeout, self._going_away)
        finally:
            finished = time.perf_counter()
            client_finished = relay.upstream_finished or finished
            if relay.error_kind is not None:
                self._metrics.upstream_errors.labels(relay.error_kind).inc()
            route.decisions[(decision.sampled, decision.reason)].inc()
            self._metrics.request_duration.labels("sampled" if decision.sampled else "not_sampled").observe(
                finished - started
            )
            self._request_metrics.observe(
                route.name, METHOD, relay.status, decision.sampled, finished - started, trace_id
            )
            if decision.sampled:
                self._reporter.submit(
                    Exchange(
                        trace_id,
                        server_span_id,
                        client_span_id,
                        parent.span_id if parent is not None else None,
                        decision.debug,
                        route.span_name(METHOD, path),
                        METHOD,
                        path,
                        forwarded.host,
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
                        route.tags + relay.tally.tags() + (((W3C_TRACESTATE, tracestate),) if tracestate else ()),
                    ),
                    reserved,
                )
            if self._access_log is not None:
                self._access_log.write(
                    access_line(
                        time.time(),
                        METHOD,
                        path,
                        relay.status,
                        finished - started,
                        trace_id,
                        route.name,
                        decision.sampled,
                        decision.reason,
                        client_host,
                        relay.error,
                        relay.tally.facts(),
                    )
                )

    def _trace_response(self, trace_id: int, span_id: int, sampled: bool) -> list[tuple[bytes, bytes]]:
        if not self._settings.trace_response_header:
            return []
        return [(TRACE_RESPONSE, format_traceresponse(trace_id, span_id, sampled).encode())]


def _host_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    return ""
