"""Does the sampled fraction agree with the configured rate? A binomial bound per group of requests (no I/O).

The gateway samples a new trace when the rightmost 56 bits of its random trace id reach `(1 - rate) x 2^56`, so each
request is sampled independently with probability `rate`: out of n requests, the sampled count has mean n x rate
and standard deviation sqrt(n x rate x (1 - rate)). A count further than `sigmas` standard deviations from the mean
(4 by default: a healthy run fails about once in 16 000) says the configured rate is not the one applied. Rates of
0 and 1 allow no deviation at all.

With the gateway's route file, each request is held to its route's `sample_rate` (else the global rate), and each
route is a group of its own; requests with forged trace headers form groups of their own, so that a gateway that
let them force sampling shows up even when their share of the load is small. A route with a traces-per-second cap
is held to the upper bound only (the cap may sample fewer), and so is every group when the gateway may sample fewer
than its rate for reasons the check cannot see (GATEWAY_MAX_TRACES_PER_SECOND, a full span queue under a spike); an
adaptive route has no fixed rate to check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.route_table import RouteTable
from gateway.routes import Route

DEFAULT_SIGMAS = 4.0
ALL_ROUTES = "all requests"
HOSTILE_SUFFIX = " (forged trace headers)"
NO_ROUTE = "(no route)"


@dataclass(frozen=True, slots=True)
class RouteRate:
    """What the gateway's route file says of one route's sampling: its `sample_rate` (None: the global rate),
    whether it adapts its rate to the traffic, whether a traces-per-second cap may sample fewer."""

    name: str
    rate: float | None = None
    adaptive: bool = False
    capped: bool = False


# endpoint path -> the route that serves it
RouteLookup = Callable[[str], RouteRate]


@dataclass(frozen=True, slots=True)
class RateGroup:
    """The requests of one route (and one kind of client): how many, how many sampled, against which rate."""

    name: str
    expected: float | None  # None: no fixed rate is configured for these requests, so none is checked
    requests: int
    sampled: int
    sigmas: float = DEFAULT_SIGMAS
    upper_only: bool = False  # a cap may sample fewer: only sampling more than the rate is wrong
    unchecked_because: str = "no rate configured"

    @property
    def allowance(self) -> float:
        """How far from the mean the sampled count may lie."""
        if self.expected is None:
            return math.inf
        return self.sigmas * math.sqrt(self.requests * self.expected * (1.0 - self.expected))

    @property
    def bounds(self) -> tuple[float, float]:
        """The sampled fraction allowed, as (low, high)."""
        if self.expected is None or not self.requests:
            return 0.0, 1.0
        share = self.allowance / self.requests
        low = 0.0 if self.upper_only else max(0.0, self.expected - share)
        return low, min(1.0, self.expected + share)

    @property
    def ok(self) -> bool:
        if self.expected is None:
            return True
        excess = self.sampled - self.requests * self.expected
        if self.upper_only:
            return excess <= self.allowance + 1e-9
        return abs(excess) <= self.allowance + 1e-9

    def describe(self) -> str:
        share = f"{self.sampled / self.requests:.1%}" if self.requests else "-"
        head = f"{self.name}: {self.sampled} of {self.requests} sampled ({share})"
        if self.expected is None:
            return f"{head}, {self.unchecked_because}"
        low, high = self.bounds
        verdict = "within" if self.ok else "OUTSIDE"
        expected = f"at most {self.expected:.1%}" if self.upper_only else f"expected {self.expected:.1%}"
        return f"{head}, {expected}: {verdict} {low:.1%}-{high:.1%} ({self.sigmas:g} sigma)"

    def as_json(self) -> dict[str, object]:
        low, high = self.bounds
        return {
            "group": self.name,
            "requests": self.requests,
            "sampled": self.sampled,
            "expected_rate": self.expected,
            "upper_only": self.upper_only,
            "allowed": [low, high] if self.expected is not None else None,
            "ok": self.ok,
            "summary": self.describe(),
        }


def rate_groups(
    decisions: Iterable[tuple[str, bool, bool]],
    rate: float | None,
    routes: RouteLookup | None = None,
    sigmas: float = DEFAULT_SIGMAS,
    upper_only: bool = False,
) -> list[RateGroup]:
    """Groups (endpoint, sampled, hostile) decisions by route and client kind, each against its expected rate;
    without a route lookup every request is in one group (two with forged headers), held to `rate`."""
    counts: dict[tuple[str, bool], list[int]] = {}
    found: dict[str, RouteRate] = {}
    for endpoint, sampled, hostile in decisions:
        route = routes(endpoint) if routes is not None else RouteRate(ALL_ROUTES)
        found[route.name] = route
        tally = counts.setdefault((route.name, hostile), [0, 0])
        tally[0] += 1
        tally[1] += sampled
    return [
        _group(found[name], hostile, total, sampled, rate, sigmas, upper_only)
        for (name, hostile), (total, sampled) in sorted(counts.items())
    ]


def check_rate(value: float) -> float:
    """A configured rate as the gateway takes it; raises ValueError otherwise."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a sample rate must be within [0.0, 1.0], got {value!r}")
    return value


def route_lookup(routes: Sequence[Route], host: str) -> RouteLookup:
    """Each endpoint's route in the gateway's route table (the file GATEWAY_ROUTES_FILE names) for requests to
    `host`, as the gateway matches them; a path no route matches falls to the global rate."""
    table = RouteTable(routes)
    cache: dict[str, RouteRate] = {}

    def lookup(endpoint: str) -> RouteRate:
        found = cache.get(endpoint)
        if found is None:
            route = table.match(host, endpoint.partition("?")[0])
            found = cache[endpoint] = RouteRate(NO_ROUTE) if route is None else _route_rate(route)
        return found

    return lookup


def _route_rate(route: Route) -> RouteRate:
    return RouteRate(route.name, route.sample_rate, route.adaptive is not None, route.max_traces_per_second > 0)


def _group(
    route: RouteRate, hostile: bool, total: int, sampled: int, rate: float | None, sigmas: float, upper_only: bool
) -> RateGroup:
    name = route.name + (HOSTILE_SUFFIX if hostile else "")
    if route.adaptive:
        return RateGroup(name, None, total, sampled, sigmas, unchecked_because="an adaptive rate, not checked")
    expected = route.rate if route.rate is not None else rate
    return RateGroup(name, expected, total, sampled, sigmas, upper_only or route.capped)
