"""`ingress-gateway`: validate the settings, then serve with uvicorn (uvloop + httptools) and the admin listener."""

from __future__ import annotations

import gc
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from gateway.settings import Settings, describe

if TYPE_CHECKING:
    from gateway.app import Gateway

EXIT_BAD_SETTINGS = 2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger("gateway")


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(describe(error), file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    sys.exit(serve(settings))


def serve(settings: Settings) -> int:
    multiproc_dir = None
    if settings.workers > 1:
        # Must be set before prometheus_client is imported anywhere, here and in the workers uvicorn spawns.
        multiproc_dir = tempfile.mkdtemp(prefix="ingress-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = multiproc_dir
    try:
        return _serve(settings)
    finally:
        if multiproc_dir is not None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def _serve(settings: Settings) -> int:
    import uvicorn
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway.admin import AdminServer
    from gateway.app import build_route_table
    from gateway.logs import logging_config
    from gateway.routes import RouteFileError

    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    try:
        build_route_table(settings)
    except (RouteFileError, ValueError) as exc:
        print(f"GATEWAY_ROUTES_FILE: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS

    if settings.workers > 1:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        target: object = "gateway.__main__:create_worker_app"
    else:
        app = create_worker_app(settings)
        registry = app.metrics.registry
        target = app

    admin = None
    if settings.admin_port:
        try:
            admin = AdminServer(settings.host, settings.admin_port, registry)
        except OSError as exc:
            print(f"GATEWAY_ADMIN_PORT: cannot listen on {settings.host}:{settings.admin_port}: {exc}", file=sys.stderr)
            return EXIT_BAD_SETTINGS
        admin.start()
    # uvicorn re-raises the signal that stopped it once it has shut down, and its default action would kill the
    # process with that signal: a graceful stop on SIGTERM or Ctrl-C should exit 0 instead.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stopped_by_signal)
    try:
        uvicorn.run(
            target,  # type: ignore[arg-type]
            factory=settings.workers > 1,
            host=settings.host,
            port=settings.port,
            workers=settings.workers if settings.workers > 1 else None,
            loop="uvloop",
            http="httptools",
            ws="none",
            lifespan="on",
            # The client address must be the peer's: X-Forwarded-For from the internet must not make it trusted.
            proxy_headers=False,
            server_header=False,
            date_header=False,
            access_log=False,
            log_config=log_config,
            timeout_graceful_shutdown=int(max(1, settings.shutdown_timeout)),
        )
    finally:
        if admin is not None:
            admin.stop()
    return 0


def create_worker_app(settings: Settings | None = None) -> Gateway:
    """The app of one worker process, with everything loaded so far kept out of the garbage collector's way."""
    from gateway.app import create_app

    app = create_app(settings)
    # Every import and the app itself live as long as the process. Frozen, they are not traversed by each full
    # collection, which otherwise stalls the event loop for milliseconds and shows in the p99 latency.
    gc.collect()
    gc.freeze()
    return app


def _stopped_by_signal(signum: int, frame: FrameType | None) -> None:
    logger.info("stopped by %s", signal.Signals(signum).name)


if __name__ == "__main__":
    main()
