"""The admin listener: /live, /ready, /metrics and /config, served from the main process beside uvicorn.

It runs in a thread of the process that started uvicorn (gateway/threaded_listener.py), so that one port serves
every worker: with several workers it reads prometheus-client's multiprocess files and the route table each worker
wrote; with one, the app's own registry and table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway.threaded_listener import ThreadedListener

READY_METRIC = "gateway_worker_ready"

logger = logging.getLogger("gateway.admin")


ConfigView = Callable[[], dict[str, Any]]


class AdminServer(ThreadedListener):
    """``config_view`` gives the route table in force (`gateway.config_view.merge_views`) for ``GET /config``."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, config_view: ConfigView | None = None
    ) -> None:
        super().__init__(host, port, _handler_for(registry, config_view), name="admin")

    def start(self) -> None:
        super().start()
        logger.info("admin listening on port %d", self.port, extra={"port": self.port})


def is_ready(registry: CollectorRegistry) -> bool:
    return (registry.get_sample_value(READY_METRIC) or 0.0) > 0.0


def _handler_for(registry: CollectorRegistry, config_view: ConfigView | None) -> type[BaseHTTPRequestHandler]:
    paths = "/live, /ready, /metrics or /config" if config_view is not None else "/live, /ready or /metrics"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/live":
                self._reply(200, b"live\n", "text/plain; charset=utf-8")
            elif path == "/ready":
                ready = is_ready(registry)
                self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n", "text/plain")
            elif path == "/metrics":
                # OpenMetrics (with exemplars) for a scraper that asks for it, the classic text format otherwise.
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encode(registry), content_type)
            elif path == "/config" and config_view is not None:
                body = json.dumps(config_view(), indent=2).encode() + b"\n"
                self._reply(200, body, "application/json")
            else:
                self._reply(404, f"not found: try {paths}\n".encode(), "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler
