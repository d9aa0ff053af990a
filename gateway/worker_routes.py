"""This worker's route table in force: built at start, swapped whole on a reload (SIGHUP, the route file's change, an
admin request), and published in a per-worker state file for the supervisor's ``GET /config``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from gateway.config_view import View, reload_record, worker_view
from gateway.metrics import Metrics
from gateway.reload import LoadedRoutes, ReloadOutcome, RouteReloader, load_route_file
from gateway.request_metrics import DECISIONS
from gateway.routes import Route, parse_upstream
from gateway.routing import DEFAULT_ROUTE_NAME, Counter, Defaults, Routing, build_routing, decision_labels
from gateway.settings import Settings

logger = logging.getLogger("gateway")


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


class WorkerRoutes:
    """The route table in force (``routing``), reloaded in place; ``on_swap`` hears of each new one.

    With ``handle_sighup``, SIGHUP reloads the route file; with a ``state_dir``, the worker's view of its table is
    written there as ``worker-<pid>.json`` at start and after each reload.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        on_swap: Callable[[Routing], None],
        *,
        handle_sighup: bool,
        state_dir: Path | None,
    ) -> None:
        self._settings = settings
        self._reloads = metrics.route_reloads
        self._on_swap = on_swap
        loaded, self._default_route = load_route_config(settings)
        self._defaults = Defaults(settings.sample_rate, settings.upstream_timeout)
        self._route_metrics = _RouteMetrics(metrics)
        self.routing = build_routing(
            loaded.routes if loaded is not None else [],
            self._default_route,
            self._defaults,
            self._route_metrics,
            source=loaded.source if loaded is not None else None,
        )
        self._reloader = (
            RouteReloader(loaded, settings.routes_reload_interval, self._apply, self._record)
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

    def start(self) -> None:
        if self._reloader is not None:
            self._reloader.start()
        if self._handle_sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            if self._sighup_pending:
                self._on_sighup()
        self._write_state()

    async def stop_reloading(self) -> None:
        if self._handle_sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            # Its default action would end the process mid-shutdown.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self._reloader is not None:
            await self._reloader.stop()

    def withdraw(self) -> None:
        """Removes the state file: the worker is gone from ``GET /config``."""
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)

    async def reload(self) -> bool:
        """Reload the route file now, as SIGHUP does; False when there is none or it was rejected."""
        return self._reloader is not None and await self._reloader.reload("request")

    def view(self) -> View:
        return worker_view(self.routing, self._settings, os.getpid(), self._last_reload)

    def _remember_sighup(self, signum: int, frame: FrameType | None) -> None:
        self._sighup_pending = True

    def _on_sighup(self) -> None:
        if self._reloader is None:
            logger.info("SIGHUP: no GATEWAY_ROUTES_FILE, nothing to reload")
        else:
            self._reloader.request()

    def _apply(self, loaded: LoadedRoutes) -> None:
        self.routing = build_routing(
            loaded.routes,
            self._default_route,
            self._defaults,
            self._route_metrics,
            source=loaded.source,
            previous=self.routing,
        )
        self._on_swap(self.routing)

    def _record(self, outcome: ReloadOutcome) -> None:
        self._reloads.labels(outcome.outcome).inc()
        self._last_reload = reload_record(outcome.at, outcome.trigger, outcome.outcome, outcome.reason, outcome.version)
        self._write_state()

    def _write_state(self) -> None:
        # With several workers the admin listener lives in the supervisor; it reads each worker's view from here.
        if self._state_file is None:
            return
        partial = self._state_file.with_suffix(".tmp")
        try:
            partial.write_text(json.dumps(self.view()))
            os.replace(partial, self._state_file)
        except OSError as exc:
            logger.warning("cannot write %s for GET /config: %s", self._state_file, exc)


class _RouteMetrics:
    """Creates a route's prometheus children (its decisions, its rate) when a table with the route is loaded."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def decisions(self, route: str) -> Mapping[tuple[bool, str], Counter]:
        requests = self._metrics.requests
        return {
            (sampled, reason): requests.labels(DECISIONS[sampled], reason, route)
            for sampled, reason in decision_labels()
        }

    def rate_gauge(self, route: str) -> Callable[[float], None]:
        return self._metrics.route_sample_rate.labels(route).set
