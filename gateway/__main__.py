"""`ingress-gateway`: validate the settings, then serve with uvicorn (uvloop + httptools) and the admin listener."""

from __future__ import annotations

import contextlib
import gc
import json
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.check import CHECKS
from gateway.config_view import View, merge_views
from gateway.settings import Settings, describe

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.app import Gateway
    from gateway.tls import TlsTerminator

EXIT_BAD_SETTINGS = 2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Internal: where the workers of one run write their views of the route table (not a setting).
STATE_DIR_ENV = "_INGRESS_GATEWAY_STATE_DIR"

logger = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> None:
    from gateway.cli import parse_args, run_check

    args = parse_args(argv)
    if args.command == "check":
        sys.exit(run_check(strict=args.strict, quiet=args.quiet))
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(describe(error), file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    sys.exit(serve(settings))


def serve(settings: Settings) -> int:
    run_dirs: list[str] = []
    if settings.workers > 1:
        # Must be set before prometheus_client is imported anywhere, here and in the workers uvicorn spawns.
        os.environ[MULTIPROC_ENV] = _run_dir(run_dirs, "metrics")
        # Each worker writes the route table it serves here, for the admin listener's GET /config.
        os.environ[STATE_DIR_ENV] = _run_dir(run_dirs, "state")
    try:
        return _serve(settings)
    finally:
        for path in run_dirs:
            shutil.rmtree(path, ignore_errors=True)


def _serve(settings: Settings) -> int:
    import uvicorn

    from gateway.edge import PROTOCOL
    from gateway.logs import logging_config
    from gateway.open_file_limit import raise_open_file_limit

    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    # The same checks as `ingress-gateway check`, so that what passes there starts here.
    problems = [problem for run in CHECKS for problem in run(settings)]
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    _log_in_force(settings)
    logger.info("open files limit %d", raise_open_file_limit())

    # uvicorn re-raises the signal that stopped it once it has shut down, and its default action would kill the
    # process with that signal: a graceful stop on SIGTERM or Ctrl-C should exit 0 instead.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stopped_by_signal)
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # HTTP/1.1 (httptools, with a bounded request head and deadlines for slow clients: gateway/http1_protocol.py) or
        # HTTP/2 (gateway/h2_server.py), chosen once per connection by gateway/edge.py.
        http=PROTOCOL,
        timeout_keep_alive=settings.client_keepalive_timeout,
        # WebSocket upgrades go to uvicorn's protocol on the `websockets` sans-I/O core (gateway/websocket_proxy.py):
        # its C extension unmasks client frames, it refuses a frame whose declared length is over the limit before
        # buffering it (close 1009), and the same library is the upstream side's client.
        ws="websockets-sansio",
        ws_max_size=settings.websocket_max_message_bytes,
        lifespan="on",
        # The client address must be the peer's: X-Forwarded-For from the internet must not make it trusted.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=log_config,
        timeout_graceful_shutdown=int(max(1, settings.shutdown_timeout)),
    )
    if settings.workers > 1:
        return _serve_workers(settings, options)
    app = create_worker_app(settings)
    with (
        _admin(settings, app.metrics.registry, lambda: merge_views([app.config_view()])) as started,
        _redirect(settings) as redirecting,
    ):
        if not (started and redirecting):
            return EXIT_BAD_SETTINGS
        uvicorn.run(app, **options)
    return 0


def _serve_workers(settings: Settings, options: dict[str, Any]) -> int:
    """As `uvicorn.run(..., workers=N)`, with a supervisor that passes SIGHUP on to the workers."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from gateway.worker_metrics import LiveWorkersCollector

    registry = CollectorRegistry()
    LiveWorkersCollector(registry)
    # uvicorn runs several workers only from an import string; each worker's factory reads Settings() itself.
    config = uvicorn.Config("gateway.__main__:create_worker_app", factory=True, workers=settings.workers, **options)
    supervisor = _Supervisor(config, sockets=[config.bind_socket()])
    state_dir = Path(os.environ[STATE_DIR_ENV])
    with (
        _admin(settings, registry, lambda: merge_views(_worker_views(state_dir, supervisor))) as started,
        _redirect(settings) as redirecting,
    ):
        if not (started and redirecting):
            return EXIT_BAD_SETTINGS
        supervisor.run()
    return 0


def create_worker_app(settings: Settings | None = None) -> Gateway:
    """The app of one worker process, with everything loaded so far kept out of the garbage collector's way."""
    from gateway import edge
    from gateway.app import create_app
    from gateway.client_guard import configure

    state_dir = os.environ.get(STATE_DIR_ENV)
    app = create_app(settings, handle_sighup=True, state_dir=Path(state_dir) if state_dir else None)
    configure(app.settings, app.metrics)
    edge.configure(app.settings, app.metrics)
    edge.use_tls(_tls_terminator(app))
    # Every import and the app itself live as long as the process. Frozen, they are not traversed by each full
    # collection, which otherwise stalls the event loop for milliseconds and shows in the p99 latency.
    gc.collect()
    gc.freeze()
    return app


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except on SIGHUP: uvicorn's replaces every worker (a new one that fails to
    start is dropped and the old one kept), which would reset the workers' sampling state and metrics; this one
    passes SIGHUP on to each worker, which reloads its route table in place."""

    def handle_hup(self) -> None:
        pids = [process.pid for process in self.processes if process.pid is not None and process.process.is_alive()]
        logger.info("SIGHUP: reloading the routes of %d workers", len(pids), extra={"workers": pids})
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


def _worker_views(state_dir: Path, supervisor: Multiprocess) -> list[View]:
    views = []
    for process in list(supervisor.processes):
        try:
            views.append(json.loads((state_dir / f"worker-{process.pid}.json").read_text()))
        except (OSError, ValueError):
            continue  # a worker still starting has not written its view yet
    return views


@contextlib.contextmanager
def _admin(settings: Settings, registry: CollectorRegistry, config_view: Callable[[], View]) -> Iterator[bool]:
    """The admin listener for the block's duration (if any); False when it cannot listen, after saying why."""
    from gateway.admin import AdminServer

    if not settings.admin_port:
        yield True
        return
    try:
        admin = AdminServer(settings.host, settings.admin_port, registry, config_view)
    except OSError as exc:
        print(f"GATEWAY_ADMIN_PORT: cannot listen on {settings.host}:{settings.admin_port}: {exc}", file=sys.stderr)
        yield False
        return
    admin.start()
    try:
        yield True
    finally:
        admin.stop()


def _tls_terminator(app: Gateway) -> TlsTerminator | None:
    """TLS for this worker's connections, when configured. The renewal check runs in a daemon thread, not in the
    app's lifespan: loading a key and building a context is blocking work that must not stall the event loop, and
    the thread needs nothing from the loop (a new context is one attribute swap, read by each handshake). It lives
    as long as the worker process, as the listener does."""
    from gateway.tls import TlsTerminator
    from gateway.tls_checks import tls_configured

    if not tls_configured(app.settings):
        return None
    terminator = TlsTerminator(app.settings, app.metrics)
    terminator.start()
    logger.info("TLS on port %d: %d certificates", app.settings.port, len(terminator.certificates()))
    return terminator


@contextlib.contextmanager
def _redirect(settings: Settings) -> Iterator[bool]:
    """The cleartext 308 listener for the block's duration (if any); False when it cannot listen, after saying why."""
    from gateway.redirect_listener import RedirectServer

    if not settings.http_redirect_port:
        yield True
        return
    try:
        server = RedirectServer(
            settings.host, settings.http_redirect_port, settings.http_redirect_https_port or settings.port
        )
    except OSError as exc:
        port = settings.http_redirect_port
        print(f"GATEWAY_HTTP_REDIRECT_PORT: cannot listen on {settings.host}:{port}: {exc}", file=sys.stderr)
        yield False
        return
    server.start()
    try:
        yield True
    finally:
        server.stop()


def _log_in_force(settings: Settings) -> None:
    """Warnings about the environment, then one line with what is in force."""
    from gateway.check import NO_EXPORTER_WARNING, in_force, known_variables, load_routes, settings_env_file
    from gateway.environment import environment_warnings, gateway_variables
    from gateway.settings import has_exporter

    for warning in environment_warnings(gateway_variables(os.environ, settings_env_file()), known_variables()):
        logger.warning(warning)
    if not has_exporter(settings):
        logger.warning(NO_EXPORTER_WARNING)
    logger.info("in force", extra=in_force(settings, *load_routes(settings)))


def _run_dir(run_dirs: list[str], kind: str) -> str:
    path = tempfile.mkdtemp(prefix=f"ingress-gateway-{kind}-")
    run_dirs.append(path)
    return path


def _stopped_by_signal(signum: int, frame: FrameType | None) -> None:
    logger.info("stopped by %s", signal.Signals(signum).name)


if __name__ == "__main__":
    main()
