"""The gateway as one ASGI app: its parts wired from the settings, its lifespan, and each scope sent to its flow.

`create_app()` is uvicorn's factory: each worker builds its own app from `Settings()`; tests pass their own settings
and collaborators. The flows are gateway/http_flow.py (HTTP requests), gateway/grpc_flow.py (gRPC calls) and
gateway/websocket_proxy.py (WebSocket sessions); the route table in force is gateway/worker_routes.py's.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.access_log import AccessLogWriter
from gateway.asgi import Receive, Scope, Send
from gateway.config_view import View
from gateway.context import IdGenerator, RandomIdGenerator
from gateway.exporters import build_reporter
from gateway.flow_parts import FlowParts
from gateway.grpc_flow import GrpcCalls, is_grpc_call
from gateway.h2_upstream import H2Upstream
from gateway.http1_upstream import Http1Upstream
from gateway.http_flow import HttpExchanges
from gateway.logs import ACCESS_LOGGER
from gateway.metrics import Metrics
from gateway.proxy import HttpxUpstream, Upstream
from gateway.reporter import SpanReporter
from gateway.routing import Routing
from gateway.settings import Settings, has_exporter
from gateway.spans import local_endpoint
from gateway.trace_start import TraceStarter
from gateway.websocket_proxy import WebSocketProxy
from gateway.worker_routes import WorkerRoutes

access_logger = logging.getLogger(ACCESS_LOGGER)


class Gateway:
    """The gateway's ASGI app, as uvicorn, gateway/edge.py and gateway/h2_server.py call it; one per worker."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        metrics: Metrics | None = None,
        upstream: Upstream | None = None,
        reporter: SpanReporter | None = None,
        ids: IdGenerator | None = None,
        handle_sighup: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings = settings if settings is not None else Settings()
        self.metrics = metrics = metrics if metrics is not None else Metrics()
        self._routes = WorkerRoutes(
            settings, metrics, self._use_routing, handle_sighup=handle_sighup, state_dir=state_dir
        )
        self._handle_sighup = handle_sighup
        self._upstream_override = upstream
        self._upstream: Upstream | None = None
        self._h2: H2Upstream | None = None  # for h2c routes (gRPC), made at startup
        local = local_endpoint(settings.service_name, settings.host, settings.port)
        self.reporter = reporter if reporter is not None else build_reporter(settings, local, metrics)
        # A reporter passed in (tests, embedders) exports somewhere by definition.
        exporting = reporter is not None or has_exporter(settings)
        ids = ids if ids is not None else RandomIdGenerator(settings.trace_id_128bit)
        starter = TraceStarter(settings, metrics, ids, self.reporter.reserve, exporting)
        self._access_log = _access_log_writer(settings, metrics)
        parts = FlowParts(settings, metrics, starter, self.reporter, self._access_log, metrics.request_latency)
        self._http = HttpExchanges(parts, self._routes.routing)
        self._exchange = self._http.exchange  # bound once: it is called on every request
        self._grpc = GrpcCalls(parts, self._routes.routing)
        self._websockets = WebSocketProxy(parts, self._routes.routing)

    @property
    def routing(self) -> Routing:
        """This worker's route table in force."""
        return self._routes.routing

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
        settings = self.settings
        self._upstream = self._upstream_override or create_upstream(settings)
        self._h2 = H2Upstream(
            settings.upstream_timeout, settings.upstream_max_connections, settings.upstream_h2_max_streams
        )
        self._http.use_upstreams(self._upstream, self._h2)
        self._grpc.use_upstream(self._h2)
        await self.reporter.start()
        self._routes.start()
        self._websockets.start(handle_signals=self._handle_sighup)
        self.metrics.ready.set(1)

    async def shutdown(self) -> None:
        self.metrics.ready.set(0)
        self._websockets.stop()
        await self._routes.stop_reloading()
        await self.reporter.stop(self.settings.shutdown_timeout)
        if self._upstream is not None:
            await self._upstream.aclose()
        if self._h2 is not None:
            await self._h2.aclose()
        self._routes.withdraw()
        if self._access_log is not None:
            # In a thread: with stderr blocked, the wait is the shutdown timeout, and the loop must not stop for it.
            await asyncio.to_thread(self._access_log.stop, self.settings.shutdown_timeout)

    async def reload_routes(self) -> bool:
        """Reload the route file now, as SIGHUP does; False when there is none or it was rejected."""
        return await self._routes.reload()

    def config_view(self) -> View:
        """This worker's route table in force, for the admin listener's ``GET /config``."""
        return self._routes.view()

    def _use_routing(self, routing: Routing) -> None:
        # Each flow reads its table once per request: a reload swaps in a whole new one, never edits the one in force.
        self._http.routing = self._grpc.routing = self._websockets.routing = routing

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


# uvicorn's factory (`uvicorn.run("gateway.app:create_app", factory=True)`) is the class itself: each worker's call
# builds the app from `Settings()`; tests and `gateway.__main__` pass settings and collaborators by keyword.
create_app = Gateway


def create_upstream(settings: Settings) -> Upstream:
    if settings.upstream_client == "httptools":
        return Http1Upstream(settings.upstream_timeout, settings.upstream_max_connections)
    if settings.upstream_client == "aiohttp":
        from gateway.aiohttp_upstream import AiohttpUpstream

        return AiohttpUpstream(settings.upstream_timeout, settings.upstream_max_connections)
    return HttpxUpstream(settings.upstream_timeout, settings.upstream_max_connections)


def _access_log_writer(settings: Settings, metrics: Metrics) -> AccessLogWriter | None:
    # A GATEWAY_LOG_LEVEL above info silences the access lines, as it did when they were `logging` records.
    if not settings.access_log or not access_logger.isEnabledFor(logging.INFO):
        return None
    return AccessLogWriter(metrics.access_log_dropped_lines, settings.access_log_buffer_bytes)
