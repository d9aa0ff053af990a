"""WebSocket sessions, proxied: the handshake is one request like any other, then messages are relayed both ways.

The handshake is routed, trusted or not, sampled once and propagated as an HTTP request is (gateway/app.py); the
upstream side is the `websockets` client, which, unlike aiohttp's `ws_connect`, hands back the whole answer of an
upstream that refuses the upgrade (status, headers and body), so the client gets that answer as it was. ASGI carries
no control frames: each hop answers pings itself (uvicorn towards the client, the client library towards the
upstream), so a ping is never relayed, and neither keeps an idle session alive here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from types import FrameType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Subprotocol

from gateway import client_guard
from gateway.context import NO_CONTEXT, IdGenerator, TraceContext
from gateway.forwarding import downstream_response_headers, upstream_request_headers
from gateway.logs import ACCESS_LOGGER
from gateway.metrics import Metrics
from gateway.propagation import extract_context
from gateway.propagation.b3 import format_multi, format_single
from gateway.propagation.w3c import MALFORMED_TRACESTATE, format_traceparent, format_traceresponse
from gateway.routes import Upstream
from gateway.routing import ActiveRoute, Routing
from gateway.sampling import TracesPerSecondCap, decide
from gateway.settings import Propagation, Settings
from gateway.spans import Exchange
from gateway.trust import TrustedNetworks
from gateway.websocket_session import (
    CLOSED_BY_CLIENT,
    CLOSED_BY_GATEWAY,
    CLOSED_BY_UPSTREAM,
    GOING_AWAY,
    SessionTally,
    accepted_response_headers,
    message_size,
    offered_subprotocols,
    sendable_close_code,
    upstream_handshake_headers,
    wire_headers,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METHOD = "GET"
TRACE_RESPONSE = b"traceresponse"
IDLE_REASON = "idle timeout"
SHUTDOWN_REASON = "gateway shutting down"
HTTP_RESPONSE_EXTENSION = "websocket.http.response"
SWITCHING_PROTOCOLS = 101
# The upstream hop's keepalive: a dead upstream is noticed within these seconds (websockets' defaults).
UPSTREAM_PING_INTERVAL = 20.0
_NEW_TRACE_REASONS = frozenset({"ratio"})

logger = logging.getLogger("gateway.websocket")
access_logger = logging.getLogger(ACCESS_LOGGER)


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
        reporter: Any,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._trust = trust
        self._ids = ids
        self._cap = process_cap
        self._routing = routing
        self._reporter = reporter
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
            await _refuse(scope, send, self._settings.no_route_status, _text_headers(text) + unrouted, text)
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
        decision = decide(incoming, trace_id, route.sampler, route.cap, self._cap, self._reporter.reserve)
        reserved = decision.sampled and decision.reason in _NEW_TRACE_REASONS
        server_span_id, client_span_id = self._ids.new_span_id(), self._ids.new_span_id()
        context = TraceContext(trace_id, client_span_id, server_span_id, decision.sampled, decision.debug)
        outgoing = upstream_handshake_headers(forwarded.headers)
        outgoing.extend((name.decode(), value.decode()) for name, value in format_multi(context))
        if self._emit_single:
            outgoing.append(("b3", format_single(context)))
        if self._emit_traceparent:
            outgoing.append(("traceparent", format_traceparent(context)))
            if incoming.tracestate:
                outgoing.append(("tracestate", incoming.tracestate))

        trace_response = self._trace_response(trace_id, server_span_id, decision.sampled)
        relay = _SessionRelay(scope, receive, send, trace_response, self._settings, client_closed)
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
                        route.tags + relay.tally.tags(),
                    ),
                    reserved,
                )
            if self._settings.access_log:
                duration = finished - started
                _log_access(path, route, relay, trace_id, decision.sampled, decision.reason, client_host, duration)

    def _trace_response(self, trace_id: int, span_id: int, sampled: bool) -> list[tuple[bytes, bytes]]:
        if not self._settings.trace_response_header:
            return []
        return [(TRACE_RESPONSE, format_traceresponse(trace_id, span_id, sampled).encode())]


class _SessionRelay:
    """One session: the upstream's handshake, then the messages both ways until either side closes."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        trace_response: list[tuple[bytes, bytes]],
        settings: Settings,
        client_closed: asyncio.Event,
    ) -> None:
        self._client_closed = client_closed
        self._scope = scope
        self._receive = receive
        self._send = send
        self._trace_response = trace_response
        self._send_timeout = settings.client_send_timeout
        self._idle_timeout = settings.websocket_idle_timeout
        self._max_size = settings.websocket_max_message_bytes
        self._last_message = asyncio.get_running_loop().time()
        self.tally = SessionTally()
        self.status: int | None = None
        self.upstream_status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None

    async def run(
        self,
        upstream: Upstream,
        host: str,
        target: str,
        headers: list[tuple[str, str]],
        timeout: float | None,
        going_away: asyncio.Event,
    ) -> None:
        connection = await self._open(upstream, host, target, headers, timeout)
        if connection is None:
            return
        try:
            try:
                await self._accept(connection)
            except OSError:
                self.tally.closed(CLOSED_BY_CLIENT, None, "client gone before the upgrade completed")
                self._fail("client disconnected", "client_disconnected")
                return
            await self._relay(connection, going_away)
        finally:
            # A no-op after a close handshake; else the client is gone (cut off, or the task cancelled).
            await connection.close(GOING_AWAY, self.tally.close_reason)
            self.upstream_finished = time.perf_counter()

    async def _open(
        self, upstream: Upstream, host: str, target: str, headers: list[tuple[str, str]], timeout: float | None
    ) -> ClientConnection | None:
        subprotocols = offered_subprotocols(self._scope["headers"])
        try:
            return await _connect(upstream, host, target, headers, subprotocols, timeout, self._max_size)
        except InvalidStatus as refusal:
            answer = refusal.response
            self.upstream_status = answer.status_code
            passed = downstream_response_headers(wire_headers(answer.headers.raw_items()))
            kept = [header for header in passed if header[0] not in _REFUSAL_DROPPED]
            await self._refuse(answer.status_code, kept, bytes(answer.body))
        except TimeoutError:
            self._fail("upstream timed out", "timeout")
            await self._refuse_text(HTTPStatus.GATEWAY_TIMEOUT, "upstream timed out")
        except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
            self._fail(f"upstream unreachable: {exc}", "unreachable")
            await self._refuse_text(HTTPStatus.BAD_GATEWAY, "upstream unreachable")
        return None

    async def _accept(self, connection: ClientConnection) -> None:
        response = connection.response
        extra = []
        if response is not None:
            self.upstream_status = response.status_code
            extra = accepted_response_headers(wire_headers(response.headers.raw_items()))
        message: Message = {"type": "websocket.accept", "headers": extra + self._trace_response}
        if connection.subprotocol is not None:
            message["subprotocol"] = connection.subprotocol
        await self._to_client(message)
        self.status = SWITCHING_PROTOCOLS

    async def _relay(self, connection: ClientConnection, going_away: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        from_client = loop.create_task(self._client_to_upstream(connection))
        from_upstream = loop.create_task(self._upstream_to_client(connection))
        stopping = loop.create_task(going_away.wait())
        pumps = {from_client, from_upstream}
        try:
            while True:
                idle_left = self._last_message + self._idle_timeout - loop.time()
                done, _ = await asyncio.wait(
                    {*pumps, stopping}, timeout=max(idle_left, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if done & pumps:
                    break
                if stopping in done:
                    await self._close_both(connection, GOING_AWAY, SHUTDOWN_REASON)
                    break
                if loop.time() - self._last_message >= self._idle_timeout:
                    await self._close_both(connection, GOING_AWAY, IDLE_REASON)
                    break
            # The first pump to end has closed the other hop; the second ends on that close, within a bound.
            await asyncio.wait(pumps, timeout=self._send_timeout)
        finally:
            for task in (*pumps, stopping):
                task.cancel()
            for task in pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                if task.done() and not task.cancelled():
                    _log_unexpected(task.exception())

    async def _client_to_upstream(self, connection: ClientConnection) -> None:
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self._last_message = asyncio.get_running_loop().time()
                self.tally.from_client(message_size(data))
                try:
                    await connection.send(data)
                except ConnectionClosed as closed:
                    await self._upstream_closed(closed)
                    return
            elif kind == "websocket.disconnect":
                code: int | None = message.get("code")
                reason: str = message.get("reason") or ""
                if self.tally.closed(CLOSED_BY_CLIENT, code, reason):
                    await connection.close(sendable_close_code(code), reason)
                return

    async def _upstream_to_client(self, connection: ClientConnection) -> None:
        while True:
            try:
                data = await connection.recv()
            except ConnectionClosed as closed:
                await self._upstream_closed(closed)
                return
            self._last_message = asyncio.get_running_loop().time()
            self.tally.from_upstream(message_size(data))
            if isinstance(data, str):
                await self._to_client({"type": "websocket.send", "text": data})
            else:
                await self._to_client({"type": "websocket.send", "bytes": data})

    async def _upstream_closed(self, closed: ConnectionClosed) -> None:
        # Whichever close frame came first: the upstream's (it closed) or the gateway's (e.g. a message too big).
        received, sent = closed.rcvd, closed.sent
        if received is not None and (sent is None or closed.rcvd_then_sent):
            by, code, reason = CLOSED_BY_UPSTREAM, int(received.code), received.reason
        elif sent is not None:
            by, code, reason = CLOSED_BY_GATEWAY, int(sent.code), sent.reason
        else:
            by, code, reason = CLOSED_BY_UPSTREAM, None, ""
        if self.tally.closed(by, code, reason):
            await self._close_client(sendable_close_code(code) if code is not None else GOING_AWAY, reason)

    async def _close_both(self, connection: ClientConnection, code: int, reason: str) -> None:
        self.tally.closed(CLOSED_BY_GATEWAY, code, reason)
        await self._close_client(code, reason)
        if connection.state is State.OPEN:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(code, reason), self._send_timeout)

    async def _close_client(self, code: int, reason: str) -> None:
        try:
            with contextlib.suppress(OSError):
                await self._to_client({"type": "websocket.close", "code": code, "reason": reason})
        finally:
            self._client_closed.set()

    async def _to_client(self, message: Message) -> None:
        # uvicorn's send waits while the client's socket buffer is full: a client that reads nothing for
        # GATEWAY_CLIENT_SEND_TIMEOUT seconds is cut off, as an HTTP response's reader is.
        try:
            await asyncio.wait_for(self._send(message), self._send_timeout)
        except TimeoutError:
            self.tally.closed(CLOSED_BY_GATEWAY, None, "send timeout")
            self._fail("client stopped reading", "client_disconnected")
            client_guard.cut_off(self._scope.get("client"))
            raise OSError("client stopped reading") from None

    async def _refuse(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        with contextlib.suppress(OSError):  # the client may have gone while the upstream was asked
            await _refuse(self._scope, self._send, status, headers + self._trace_response, body)

    async def _refuse_text(self, status: HTTPStatus, text: str) -> None:
        body = f"{text}\n".encode()
        await self._refuse(status, _text_headers(body), body)

    def _fail(self, error: str, kind: str) -> None:
        self.error, self.error_kind = error, kind


_REFUSAL_DROPPED = frozenset({b"content-length", b"date", b"server", TRACE_RESPONSE})


async def _connect(
    upstream: Upstream,
    host: str,
    target: str,
    headers: list[tuple[str, str]],
    subprotocols: list[str],
    timeout: float | None,
    max_size: int,
) -> ClientConnection:
    secure = upstream.scheme == "https"
    # The URI's authority is the Host the upstream sees; the socket goes to the route's upstream whatever it says.
    uri = f"{'wss' if secure else 'ws'}://{host}{upstream.base_path}{target}"
    options: dict[str, Any] = {"host": upstream.host, "port": upstream.port}
    if secure:
        options["server_hostname"] = upstream.host
    return await connect(
        uri,
        additional_headers=headers,
        user_agent_header=None,
        subprotocols=[Subprotocol(offer) for offer in subprotocols] or None,
        compression=None,  # in the cluster bandwidth is cheap and CPU is not; the client's hop negotiates its own
        open_timeout=timeout,
        ping_interval=UPSTREAM_PING_INTERVAL,
        max_size=max_size,
        proxy=None,
        **options,
    )


async def _refuse(scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """An HTTP answer instead of the upgrade; a server without the ASGI extension can only close (a 403)."""
    if HTTP_RESPONSE_EXTENSION not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    if status not in _KNOWN_STATUSES:
        # uvicorn writes the reason phrase from its own table, which knows the registered codes only.
        status = HTTPStatus.BAD_GATEWAY
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


_KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)


def _log_unexpected(exc: BaseException | None) -> None:
    # A peer going away mid-send is how sessions end; anything else is a bug worth a traceback.
    if exc is not None and not isinstance(exc, OSError | ConnectionClosed):
        logger.error("WebSocket relay failed", exc_info=exc)


def _text_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]


def _host_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    return ""


def _log_access(
    path: str,
    route: ActiveRoute,
    relay: _SessionRelay,
    trace_id: int,
    sampled: bool,
    reason: str,
    client_host: str | None,
    duration: float,
) -> None:
    tally = relay.tally
    access_logger.info(
        "%s %s %s",
        METHOD,
        path,
        relay.status,
        extra={
            "method": METHOD,
            "path": path,
            "status": relay.status,
            "duration_ms": round(duration * 1000, 3),
            "trace_id": f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}",
            "route": route.name,
            "sampled": sampled,
            "reason": reason,
            "client": client_host,
            "error": relay.error,
            "websocket": {
                "client_messages": tally.client_messages,
                "client_bytes": tally.client_bytes,
                "upstream_messages": tally.upstream_messages,
                "upstream_bytes": tally.upstream_bytes,
                "closed_by": tally.closed_by,
                "close_code": tally.close_code,
                "close_reason": tally.close_reason,
            },
        },
    )
