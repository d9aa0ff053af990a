"""The request flow: decide, propagate, forward, relay, record. Plain ASGI, no framework on the hot path.

`create_app()` is uvicorn's factory: each worker builds its own app from `Settings()`; tests pass their own settings
and collaborators.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.access_line import access_line
from gateway.access_log import AccessLogWriter
from gateway.config_view import View, reload_record, worker_view
from gateway.context import NO_CONTEXT, IdGenerator, RandomIdGenerator, TraceContext
from gateway.exporters import build_reporter
from gateway.forwarding import downstream_response_headers, upstream_request_headers
from gateway.grpc_flow import GrpcCalls, is_grpc_call
from gateway.h2_upstream import H2Upstream
from gateway.logs import ACCESS_LOGGER
from gateway.metrics import Metrics
from gateway.propagation import extract_context
from gateway.propagation.b3 import format_multi, format_single
from gateway.propagation.w3c import MALFORMED_TRACESTATE, format_traceparent, format_traceresponse
from gateway.proxy import HttpxUpstream, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse
from gateway.reload import LoadedRoutes, ReloadOutcome, RouteReloader, load_route_file
from gateway.reporter import SpanReporter
from gateway.request_metrics import RequestMetrics
from gateway.routes import Route, parse_upstream
from gateway.routing import DEFAULT_ROUTE_NAME, ActiveRoute, Counter, Defaults, build_routing, decision_labels
from gateway.sampling import TracesPerSecondCap, decide, tracestate_after
from gateway.settings import Propagation, Settings, has_exporter
from gateway.spans import Exchange, local_endpoint
from gateway.threshold import NO_OT, parse_ot
from gateway.trace_start import TraceStart
from gateway.trust import TrustedNetworks
from gateway.websocket_proxy import WebSocketProxy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOST = b"host"
TRACE_RESPONSE = b"traceresponse"
TRACESTATE = b"tracestate"
WATCH_AFTER = 0.05
_NEW_TRACE_REASONS = frozenset({"ratio"})

logger = logging.getLogger("gateway")
access_logger = logging.getLogger(ACCESS_LOGGER)


class ClientDisconnected(Exception):
    """The client went away before the exchange finished."""


def create_app(
    settings: Settings | None = None,
    *,
    metrics: Metrics | None = None,
    upstream: Upstream | None = None,
    reporter: SpanReporter | None = None,
    ids: IdGenerator | None = None,
    handle_sighup: bool = False,
    state_dir: Path | None = None,
) -> Gateway:
    settings = settings if settings is not None else Settings()
    return Gateway(
        settings,
        metrics=metrics,
        upstream=upstream,
        reporter=reporter,
        ids=ids,
        handle_sighup=handle_sighup,
        state_dir=state_dir,
    )


def create_upstream(settings: Settings) -> Upstream:
    if settings.upstream_client == "aiohttp":
        from gateway.aiohttp_upstream import AiohttpUpstream

        return AiohttpUpstream(settings.upstream_timeout, settings.upstream_max_connections)
    return HttpxUpstream(settings.upstream_timeout, settings.upstream_max_connections)


def load_route_config(settings: Settings) -> tuple[LoadedRoutes | None, Route | None]:
    """The route file, loaded, and the GATEWAY_UPSTREAM_URL fallback route, if any (raises RouteFileError,
    ValueError)."""
    loaded = load_route_file(settings.routes_file) if settings.routes_file is not None else None
    default = (
        Route(
            name=DEFAULT_ROUTE_NAME,
            upstream=parse_upstream(settings.upstream_url),
            protocol=settings.upstream_protocol,
        )
        if settings.upstream_url
        else None
    )
    return loaded, default


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        upstream: Upstream | None = None,
        reporter: SpanReporter | None = None,
        ids: IdGenerator | None = None,
        handle_sighup: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        loaded, self._default_route = load_route_config(settings)
        self._defaults = Defaults(settings.sample_rate, settings.upstream_timeout)
        self._route_metrics = _RouteMetrics(self.metrics)
        # Read once per request: a reload swaps in a whole new Routing, never edits the one in force.
        self.routing = build_routing(
            loaded.routes if loaded is not None else [],
            self._default_route,
            self._defaults,
            self._route_metrics,
            source=loaded.source if loaded is not None else None,
        )
        self._reloader = (
            RouteReloader(loaded, settings.routes_reload_interval, self._apply_routes, self._record_reload)
            if loaded is not None
            else None
        )
        self._last_reload: View | None = None
        self._handle_sighup = handle_sighup
        self._sighup_pending = False
        if handle_sighup:
            # Until the event loop takes SIGHUP over at startup, remember one, rather than die of its default action.
            signal.signal(signal.SIGHUP, self._remember_sighup)
        self._state_file = state_dir / f"worker-{os.getpid()}.json" if state_dir is not None else None
        self._no_route = self.metrics.upstream_errors.labels("no_route")
        self._no_route_status = settings.no_route_status
        self._cap = TracesPerSecondCap(settings.max_traces_per_second)
        self._trust = TrustedNetworks(settings.trust_incoming_trace, settings.trusted_cidrs)
        self._ids = ids if ids is not None else RandomIdGenerator(settings.trace_id_128bit)
        self._upstream_override = upstream
        self._upstream: Upstream | None = None
        self._h2: H2Upstream | None = None  # for h2c routes (gRPC), made at startup
        self._local = local_endpoint(settings.service_name, settings.host, settings.port)
        self.reporter = reporter if reporter is not None else self._default_reporter()
        # A reporter passed in (tests, embedders) exports somewhere by definition.
        self._exporting = reporter is not None or has_exporter(settings)
        # prometheus-client's multiprocess mode keeps no exemplars (gateway/request_metrics.py).
        self._request_metrics = RequestMetrics(
            self.metrics.http_request_duration, exemplars="PROMETHEUS_MULTIPROC_DIR" not in os.environ
        )
        self._emit_single = Propagation.B3_SINGLE in settings.propagation
        self._emit_traceparent = Propagation.TRACE_CONTEXT in settings.propagation
        self._durations = {
            True: self.metrics.request_duration.labels("sampled"),
            False: self.metrics.request_duration.labels("not_sampled"),
        }
        self._ignored_untrusted = self.metrics.trace_headers_ignored.labels("untrusted")
        self._ignored_tracestate = self.metrics.trace_headers_ignored.labels(MALFORMED_TRACESTATE)
        self._access_log = self._access_log_writer()
        self._grpc = GrpcCalls(self, self._access_log, self._request_metrics)
        self._websockets = WebSocketProxy(
            settings,
            self.metrics,
            self._trust,
            self._ids,
            self._cap,
            lambda: self.routing,
            self.reporter,
            self._access_log,
            self._request_metrics,
            self._exporting,
        )

    def _access_log_writer(self) -> AccessLogWriter | None:
        # A GATEWAY_LOG_LEVEL above info silences the access lines, as it did when they were `logging` records.
        if not self.settings.access_log or not access_logger.isEnabledFor(logging.INFO):
            return None
        return AccessLogWriter(self.metrics.access_log_dropped_lines, self.settings.access_log_buffer_bytes)

    def _default_reporter(self) -> SpanReporter:
        return build_reporter(self.settings, self._local, self.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope.get("http_version") == "2" and is_grpc_call(scope):
                await self._grpc(scope, receive, send)
            else:
                await self._exchange(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websockets(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise RuntimeError(f"unsupported ASGI scope type {scope['type']!r}")

    async def startup(self) -> None:
        if self._access_log is not None:
            self._access_log.start()
        self._upstream = self._upstream_override or create_upstream(self.settings)
        settings = self.settings
        self._h2 = H2Upstream(
            settings.upstream_timeout, settings.upstream_max_connections, settings.upstream_h2_max_streams
        )
        await self.reporter.start()
        if self._reloader is not None:
            self._reloader.start()
        if self._handle_sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            if self._sighup_pending:
                self._on_sighup()
        self._websockets.start(handle_signals=self._handle_sighup)
        self._write_state()
        self.metrics.ready.set(1)

    async def shutdown(self) -> None:
        self.metrics.ready.set(0)
        self._websockets.stop()
        if self._handle_sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            # Its default action would end the process mid-shutdown.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self._reloader is not None:
            await self._reloader.stop()
        await self.reporter.stop(self.settings.shutdown_timeout)
        if self._upstream is not None:
            await self._upstream.aclose()
        if self._h2 is not None:
            await self._h2.aclose()
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)
        if self._access_log is not None:
            # In a thread: with stderr blocked, the wait is the shutdown timeout, and the loop must not stop for it.
            await asyncio.to_thread(self._access_log.stop, self.settings.shutdown_timeout)

    async def reload_routes(self) -> bool:
        """Reload the route file now, as SIGHUP does; False when there is none or it was rejected."""
        return self._reloader is not None and await self._reloader.reload("request")

    def config_view(self) -> View:
        """This worker's route table in force, for the admin listener's ``GET /config``."""
        return worker_view(self.routing, self.settings, os.getpid(), self._last_reload)

    def _remember_sighup(self, signum: int, frame: FrameType | None) -> None:
        self._sighup_pending = True

    def _on_sighup(self) -> None:
        if self._reloader is None:
            logger.info("SIGHUP: no GATEWAY_ROUTES_FILE, nothing to reload")
        else:
            self._reloader.request()

    def _apply_routes(self, loaded: LoadedRoutes) -> None:
        self.routing = build_routing(
            loaded.routes,
            self._default_route,
            self._defaults,
            self._route_metrics,
            source=loaded.source,
            previous=self.routing,
        )

    def _record_reload(self, outcome: ReloadOutcome) -> None:
        self.metrics.route_reloads.labels(outcome.outcome).inc()
        self._last_reload = reload_record(outcome.at, outcome.trigger, outcome.outcome, outcome.reason, outcome.version)
        self._write_state()

    def _write_state(self) -> None:
        # With several workers the admin listener lives in the supervisor; it reads each worker's view from here.
        if self._state_file is None:
            return
        partial = self._state_file.with_suffix(".tmp")
        try:
            partial.write_text(json.dumps(self.config_view()))
            os.replace(partial, self._state_file)
        except OSError as exc:
            logger.warning("cannot write %s for GET /config: %s", self._state_file, exc)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _exchange(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        started_wall = time.time()
        request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        client_host = client[0] if client else None

        routing = self.routing
        route = routing.match(_host_of(request_headers) if routing.routes_by_host else "", path)
        if route is None:
            self._no_route.inc()
            await _plain_response(
                send, self._no_route_status, "no route for this host and path\n", self.unrouted_trace_response()
            )
            return

        begun = self.start_trace(scope, route, request_headers, client_host)
        trace_id, server_span_id, client_span_id = begun.trace_id, begun.server_span_id, begun.client_span_id
        decision, outgoing, trace_response = begun.decision, begun.outgoing, begun.trace_response

        query: bytes = scope.get("query_string", b"")
        relay = _Relay(send, trace_response)
        client_started_wall = time.time()
        client_started = time.perf_counter()
        try:
            # The request's own bytes go upstream: scope["path"] is percent-decoded ("%3F" would become a query).
            raw_path = scope.get("raw_path")
            target = raw_path.decode("latin-1") if raw_path else path
            await relay.run(
                self._upstream_or_fail() if route.route.protocol == "http1" else self.h2_upstream(),
                method,
                route.upstream.url_for(target, query),
                outgoing,
                receive,
                route.timeout,
            )
        finally:
            client_finished = relay.upstream_finished or time.perf_counter()
            finished = time.perf_counter()
            if relay.error_kind is not None:
                self.metrics.upstream_errors.labels(relay.error_kind).inc()
            route.decisions[(decision.sampled, decision.reason)].inc()
            self._durations[decision.sampled].observe(finished - started)
            self._request_metrics.observe(
                route.name, method, relay.status, decision.sampled, finished - started, trace_id
            )
            if decision.sampled:
                # Positional, in field order: with twenty keywords, making the record cost three times as much.
                self.reporter.submit(
                    Exchange(
                        trace_id,
                        server_span_id,
                        client_span_id,
                        begun.parent_id,
                        decision.debug,
                        route.span_name(method, path),  # name
                        method,
                        path,
                        begun.host,
                        relay.status,  # status_code
                        relay.upstream_status,  # upstream_status_code
                        relay.error,
                        client_host,
                        client[1] if client else None,  # client_port
                        route.upstream,
                        started_wall,  # server_start
                        finished - started,  # server_duration
                        client_started_wall,  # client_start
                        client_finished - client_started,  # client_duration
                        begun.tags(route.tags),
                    ),
                    begun.reserved,
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

    def start_trace(
        self, scope: Scope, route: ActiveRoute, request_headers: list[tuple[bytes, bytes]], client_host: str | None
    ) -> TraceStart:
        """Trust, extract, decide once and propagate: the start every flow (HTTP, gRPC) gives a routed request."""
        forwarded = upstream_request_headers(
            request_headers,
            client_host=client_host,
            scheme=scope.get("scheme", "http"),
            upstream_authority=route.upstream.authority,
            preserve_host=self.settings.preserve_host,
        )
        incoming = NO_CONTEXT
        if self._trust.trusts(client_host):
            incoming = extract_context(request_headers)
            if incoming.invalid is not None:
                self.metrics.trace_headers_ignored.labels(incoming.invalid).inc()
                incoming = NO_CONTEXT
            elif incoming.tracestate_invalid:
                self._ignored_tracestate.inc()
        elif forwarded.had_trace_headers:
            self._ignored_untrusted.inc()

        parent = incoming.context
        trace_id = parent.trace_id if parent is not None else self._ids.new_trace_id()
        ot = parse_ot(incoming.tracestate) if incoming.tracestate else NO_OT
        decision = decide(
            incoming, trace_id, route.sampler, route.cap, self._cap, self.reporter.reserve, ot, self._exporting
        )
        tracestate = tracestate_after(incoming.tracestate, ot, decision)
        # decide() reserves span room only for new traces; a decision taken upstream of us is honoured as is.
        reserved = decision.sampled and decision.reason in _NEW_TRACE_REASONS
        server_span_id = self._ids.new_span_id()
        client_span_id = self._ids.new_span_id()
        upstream_context = TraceContext(trace_id, client_span_id, server_span_id, decision.sampled, decision.debug)
        outgoing = forwarded.headers
        outgoing.extend(format_multi(upstream_context))
        if self._emit_single:
            outgoing.append((b"b3", format_single(upstream_context).encode()))
        if self._emit_traceparent:
            # The Random flag only on an id of the gateway's making: a client's may not be random.
            outgoing.append((b"traceparent", format_traceparent(upstream_context, random=parent is None).encode()))
            if tracestate:
                # The vendors' state of a trusted client's trace goes on with it (W3C: "MUST propagate"), with the
                # gateway's sampling threshold in its `ot` entry.
                outgoing.append((TRACESTATE, tracestate.encode("latin-1")))
        return TraceStart(
            trace_id,
            server_span_id,
            client_span_id,
            parent.span_id if parent is not None else None,
            decision,
            reserved,
            forwarded.host,
            outgoing,
            self._trace_response(trace_id, server_span_id, decision.sampled),
            tracestate,
        )

    def unrouted_trace_response(self) -> list[tuple[bytes, bytes]]:
        # Nothing goes into the mesh, so nothing is traced; the contract still promises a traceresponse.
        return self._trace_response(self._ids.new_trace_id(), self._ids.new_span_id(), sampled=False)

    def h2_upstream(self) -> Upstream:
        if self._h2 is None:
            raise RuntimeError("the gateway serves requests only after its lifespan startup")
        return self._h2

    def _trace_response(self, trace_id: int, span_id: int, sampled: bool) -> list[tuple[bytes, bytes]]:
        if not self.settings.trace_response_header:
            return []
        return [(TRACE_RESPONSE, format_traceresponse(trace_id, span_id, sampled).encode())]

    def _upstream_or_fail(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the gateway serves requests only after its lifespan startup")
        return self._upstream


class _Relay:
    """One exchange with the upstream, relayed to the client, with what happened recorded for span and log."""

    __slots__ = (
        "_send",
        "_extra_headers",
        "status",
        "upstream_status",
        "error",
        "error_kind",
        "upstream_finished",
        "_watch",
    )

    def __init__(self, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._extra_headers = extra_headers
        self.status: int | None = None
        self.upstream_status: int | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.upstream_finished: float | None = None
        self._watch: _DisconnectWatch | None = None

    async def run(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        timeout: float | None,
    ) -> None:
        response: UpstreamResponse | None = None
        try:
            body = await self._request_body(receive)
            response = await upstream.forward(UpstreamRequest(method, url, headers, body, timeout))
            await self._relay(response)
        except UpstreamError as exc:
            self._fail(str(exc), exc.kind)
            if self.status is None:
                await self._error_response(exc.status, str(exc))
        except ClientDisconnected:
            self._fail("client disconnected", "client_disconnected")
        except asyncio.CancelledError:
            if self._watch is None or not self._watch.fired:
                raise
            # Our own watcher cancelled the exchange because the client left: not a shutdown, so carry on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._fail("client disconnected", "client_disconnected")
        finally:
            if self._watch is not None:
                self._watch.stop()
            if response is not None:
                await response.aclose()
            if self.upstream_finished is None:
                self.upstream_finished = time.perf_counter()

    async def _request_body(self, receive: Receive) -> AsyncIterator[bytes] | None:
        first = await receive()
        if first["type"] == "http.disconnect":
            raise ClientDisconnected
        if not first.get("more_body", False):
            self._watch = _DisconnectWatch(receive)
            body: bytes = first.get("body", b"")
            return _once(body) if body else None
        return self._stream_body(first.get("body", b""), receive)

    async def _stream_body(self, first: bytes, receive: Receive) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self._watch = _DisconnectWatch(receive)
                return

    async def _relay(self, response: UpstreamResponse) -> None:
        self.status = self.upstream_status = response.status_code
        headers = downstream_response_headers(response.headers)
        if self._extra_headers:
            # The gateway's traceresponse replaces any the upstream sent: one trace, one answer.
            headers = [header for header in headers if header[0] != TRACE_RESPONSE]
            headers.extend(self._extra_headers)
        send = self._send
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for chunk in response.body():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.upstream_finished = time.perf_counter()
        if self._watch is not None:
            self._watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _fail(self, error: str, kind: str) -> None:
        self.error = error
        self.error_kind = kind

    async def _error_response(self, status: int, reason: str) -> None:
        self.status = status
        await _plain_response(self._send, status, f"{reason}\n", self._extra_headers)


class _DisconnectWatch:
    """Cancels the exchange's task when the client disconnects, so that the upstream call is cancelled too.

    Most exchanges end within milliseconds, and a task per request is a measurable share of the gateway's cost,
    so the watching task starts only once the exchange has lasted WATCH_AFTER seconds: a client that leaves a
    quick exchange costs the upstream nothing worth cancelling.
    """

    __slots__ = ("fired", "_receive", "_target", "_timer", "_task")

    def __init__(self, receive: Receive) -> None:
        self.fired = False
        self._receive = receive
        self._target = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        if self._target is not None:
            self._target.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _plain_response(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _host_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HOST:
            return value.decode("latin-1")
    return ""


class _RouteMetrics:
    """Creates a route's prometheus children (its decisions, its rate) when a table with the route is loaded."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def decisions(self, route: str) -> Mapping[tuple[bool, str], Counter]:
        requests = self._metrics.requests
        return {
            (sampled, reason): requests.labels("sampled" if sampled else "not_sampled", reason, route)
            for sampled, reason in decision_labels()
        }

    def rate_gauge(self, route: str) -> Callable[[float], None]:
        return self._metrics.route_sample_rate.labels(route).set
