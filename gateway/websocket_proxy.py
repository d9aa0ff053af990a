"""WebSocket sessions, proxied: the handshake is one request like any other, then messages are relayed both ways.

The handshake is routed, trusted or not, sampled once and propagated as an HTTP request is (gateway/trace_start.py);
the session itself is `websocket_relay.SessionRelay`'s. ASGI carries no control frames: each hop answers pings itself
(uvicorn towards the client, the client library towards the upstream), so a ping is never relayed, and neither keeps
an idle session alive here.
"""

from __future__ import annotations

import asyncio
import signal
import time
from types import FrameType
from typing import Any

from gateway.access_line import access_line
from gateway.asgi import Receive, Scope, Send, host_of
from gateway.flow_parts import FlowParts
from gateway.http_relay import text_headers
from gateway.routing import Routing
from gateway.websocket_relay import SessionRelay, refuse
from gateway.websocket_session import upstream_handshake_headers

METHOD = "GET"


class WebSocketProxy:
    """Proxies the gateway's WebSocket sessions, and closes them with 1001 when the server is told to stop."""

    def __init__(self, parts: FlowParts, routing: Routing) -> None:
        self.routing = routing  # swapped whole on a reload, as `HttpExchanges.routing` is
        self._parts = parts
        self._settings = parts.settings
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
        routing = self.routing
        route = routing.match(host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None:
            self._parts.metrics.upstream_errors.labels("no_route").inc()
            text = b"no route for this host and path\n"
            headers = text_headers(text) + self._parts.starter.unrouted_trace_response()
            await refuse(scope, send, self._settings.no_route_status, headers, text)
            return

        scheme = "https" if scope.get("scheme") == "wss" else "http"
        begun = self._parts.starter.start(route, request_headers, client_host, scheme)
        decision = begun.decision
        # The Host the upstream is to see (the route's authority, or the client's with GATEWAY_PRESERVE_HOST) goes
        # in the URI: the WebSocket client writes the Host header itself.
        upstream_host = begun.outgoing[0][1].decode("latin-1")
        relay = SessionRelay(scope, receive, send, begun.trace_response, self._settings, client_closed)
        client_started, client_started_wall = time.perf_counter(), time.time()
        # The request's own bytes go upstream: scope["path"] is percent-decoded.
        raw_path: bytes | None = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else path
        query: bytes = scope.get("query_string", b"")
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        outgoing = upstream_handshake_headers(begun.outgoing)
        try:
            # A route's timeout is None when it is the gateway's own.
            timeout = route.timeout if route.timeout is not None else self._settings.upstream_timeout
            await relay.run(route.upstream, upstream_host, target, outgoing, timeout, self._going_away)
        finally:
            finished = time.perf_counter()
            client_finished = relay.upstream_finished or finished
            if relay.error_kind is not None:
                self._parts.metrics.upstream_errors.labels(relay.error_kind).inc()
            route.decisions[(decision.sampled, decision.reason)].inc()
            self._parts.request_metrics.observe(
                route.name, METHOD, relay.status, decision.sampled, finished - started, begun.trace_id
            )
            if decision.sampled:
                self._parts.reporter.submit(
                    begun.exchange(
                        route.span_name(METHOD, path),
                        METHOD,
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
                        route.tags + relay.tally.tags(),
                    ),
                    decision.reserved,
                )
            access_log = self._parts.access_log
            if access_log is not None:
                access_log.write(
                    access_line(
                        time.time(),
                        METHOD,
                        path,
                        relay.status,
                        finished - started,
                        begun.trace_id,
                        route.name,
                        decision.sampled,
                        decision.reason,
                        client_host,
                        relay.error,
                        relay.tally.facts(),
                    )
                )
