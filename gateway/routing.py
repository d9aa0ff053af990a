"""The routes in force: each route of the table with its sampler, caps, span name and tags, built once per load.

Everything a request needs from its route is computed here, when the table is (re)loaded, so that the request path
only reads attributes. A reload builds a new `Routing` and the gateway swaps it in whole; a route that keeps its
name and sampling settings keeps its sampler and cap, so a reload neither resets an adaptive rate nor refills a
token bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.route_table import RouteTable
from gateway.routes import Route, Upstream, render_span_name
from gateway.sampling import (
    NOT_SAMPLED_REASONS,
    SAMPLED_REASONS,
    AdaptiveSampler,
    RatioSampler,
    Sampler,
    TracesPerSecondCap,
)

DEFAULT_ROUTE_NAME = "default"


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class RouteMetrics(Protocol):
    """Where a route's decisions are counted and its sampling rate shown (prometheus children in the gateway)."""

    def decisions(self, route: str) -> Mapping[tuple[bool, str], Counter]: ...

    def rate_gauge(self, route: str) -> Callable[[float], None]: ...


@dataclass(frozen=True, slots=True)
class Defaults:
    """The gateway-wide settings a route falls back on."""

    sample_rate: float
    timeout: float


@dataclass(frozen=True, slots=True)
class RouteSource:
    """The file a table came from: its path, the sha256 of its text, and when it was loaded (epoch seconds)."""

    path: Path
    digest: str
    loaded_at: float


class ActiveRoute:
    """A route as the request path uses it. ``timeout`` is None when it is the gateway's default."""

    __slots__ = (
        "route",
        "name",
        "host",
        "path_prefix",
        "upstream",
        "sampler",
        "cap",
        "decisions",
        "tags",
        "timeout",
        "is_default",
        "_span_template",
    )

    def __init__(
        self,
        route: Route,
        sampler: Sampler,
        cap: TracesPerSecondCap,
        decisions: Mapping[tuple[bool, str], Counter],
        timeout: float | None,
        is_default: bool,
    ) -> None:
        self.route = route
        self.name = route.name
        self.host = route.host
        self.path_prefix = route.path_prefix
        self.upstream: Upstream = route.upstream
        self.sampler = sampler
        self.cap = cap
        self.decisions = decisions
        self.tags = route.tags
        self.timeout = timeout
        self.is_default = is_default
        self._span_template = route.span_name

    def span_name(self, method: str, path: str) -> str:
        """``span_name`` rendered, or "<METHOD> <route name>"; the fallback route names spans by path instead."""
        if self._span_template is not None:
            return render_span_name(self._span_template, method, path)
        return f"{method} {path if self.is_default else self.name}"


class Routing:
    """One route table in force. ``match`` is the table's, bound once: it is called on every request."""

    __slots__ = ("table", "match", "routes_by_host", "source")

    def __init__(self, table: RouteTable[ActiveRoute], source: RouteSource | None) -> None:
        self.table = table
        self.match = table.match
        self.routes_by_host = table.routes_by_host
        self.source = source

    @property
    def routes(self) -> tuple[ActiveRoute, ...]:
        return self.table.routes

    @property
    def default(self) -> ActiveRoute | None:
        return self.table.default


def build_routing(
    routes: Sequence[Route],
    default: Route | None,
    defaults: Defaults,
    metrics: RouteMetrics,
    *,
    source: RouteSource | None = None,
    previous: Routing | None = None,
    now: Callable[[], float] = time.monotonic,
) -> Routing:
    """The table for ``routes`` (and the fallback ``default``), reusing ``previous``'s samplers and caps where
    a route of the same name samples the same way."""
    kept: dict[str, ActiveRoute] = {}
    if previous is not None:
        kept = {active.name: active for active in previous.routes}
        if previous.default is not None:
            kept[_DEFAULT_KEY] = previous.default

    def activate(route: Route, is_default: bool) -> ActiveRoute:
        old = kept.get(_DEFAULT_KEY if is_default else route.name)
        if old is not None and _samples_alike(old.route, route):
            sampler, cap = old.sampler, old.cap
        else:
            sampler = _sampler(route, defaults, metrics.rate_gauge(route.name), now)
            cap = TracesPerSecondCap(route.max_traces_per_second, now)
        timeout = route.timeout if route.timeout is not None and route.timeout != defaults.timeout else None
        return ActiveRoute(route, sampler, cap, metrics.decisions(route.name), timeout, is_default)

    active = [activate(route, False) for route in routes]
    fallback = activate(default, True) if default is not None else None
    return Routing(RouteTable(active, fallback), source)


def decision_labels() -> list[tuple[bool, str]]:
    """Every (sampled, reason) a decision can have."""
    return [(True, reason) for reason in SAMPLED_REASONS] + [(False, reason) for reason in NOT_SAMPLED_REASONS]


# The fallback route is kept apart from a file route that happens to be called "default".
_DEFAULT_KEY = "\0default"


def _samples_alike(old: Route, new: Route) -> bool:
    return (old.sample_rate, old.adaptive, old.max_traces_per_second) == (
        new.sample_rate,
        new.adaptive,
        new.max_traces_per_second,
    )


def _sampler(
    route: Route, defaults: Defaults, rate_gauge: Callable[[float], None], now: Callable[[], float]
) -> Sampler:
    rate = route.sample_rate if route.sample_rate is not None else defaults.sample_rate
    adaptive = route.adaptive
    if adaptive is None:
        rate_gauge(rate)
        return RatioSampler(rate)
    # With `adaptive`, the route's sample_rate (else GATEWAY_SAMPLE_RATE) is where the rate starts from.
    return AdaptiveSampler(
        adaptive.target_traces_per_second, adaptive.min_sample_rate, adaptive.interval, rate, now, rate_gauge
    )
