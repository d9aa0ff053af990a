from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.routes import Adaptive, Route, parse_upstream
from gateway.routing import (
    DEFAULT_ROUTE_NAME,
    Counter,
    Defaults,
    RouteSource,
    Routing,
    build_routing,
    decision_labels,
)
from gateway.sampling import NOT_SAMPLED_REASONS, SAMPLED_REASONS, AdaptiveSampler, RatioSampler
from tests.support import FakeClock

WEB = parse_upstream("http://web-svc.emojivoto:80")
DEFAULTS = Defaults(sample_rate=0.5, timeout=30.0)


class Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class FakeMetrics:
    """A RouteMetrics that keeps its children, so that tests can see what was counted and shown."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, bool, str], Count] = {}
        self.rates: dict[str, list[float]] = {}

    def decisions(self, route: str) -> Mapping[tuple[bool, str], Counter]:
        return {key: self.counters.setdefault((route, *key), Count()) for key in decision_labels()}

    def rate_gauge(self, route: str) -> Callable[[float], None]:
        return self.rates.setdefault(route, []).append


def routing_of(
    *routes: Route, default: Route | None = None, metrics: FakeMetrics | None = None, **kwargs: Any
) -> Routing:
    return build_routing(list(routes), default, DEFAULTS, metrics or FakeMetrics(), **kwargs)


def test_decision_labels_cover_every_reason_once():
    labels = decision_labels()
    assert len(labels) == len(set(labels)) == len(SAMPLED_REASONS) + len(NOT_SAMPLED_REASONS)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param(Route("votes", WEB), "POST votes", id="named-route"),
        pytest.param(Route("votes", WEB, span_name="vote"), "vote", id="literal"),
        pytest.param(Route("votes", WEB, span_name="{method} {path}"), "POST /api/vote/1", id="template"),
        pytest.param(Route("votes", WEB, span_name="{{{method}}}"), "{POST}", id="escaped-braces"),
    ],
)
def test_span_names(route, expected):
    [active] = routing_of(route).routes
    assert active.span_name("POST", "/api/vote/1") == expected


def test_the_fallback_route_names_spans_by_path_even_beside_a_route_called_default():
    routing = routing_of(Route(DEFAULT_ROUTE_NAME, WEB, path_prefix="/api"), default=Route(DEFAULT_ROUTE_NAME, WEB))
    assert routing.match("", "/api/x").span_name("GET", "/api/x") == "GET default"  # type: ignore[union-attr]
    assert routing.match("", "/else").span_name("GET", "/else") == "GET /else"  # type: ignore[union-attr]


def test_timeout_is_none_when_it_is_the_gateways_default():
    routing = routing_of(
        Route("short", WEB, path_prefix="/a", timeout=2.5),
        Route("same", WEB, path_prefix="/b", timeout=30.0),
        Route("unset", WEB, path_prefix="/c"),
    )
    assert [active.timeout for active in routing.routes] == [2.5, None, None]


def test_tags_and_upstream_come_from_the_route():
    [active] = routing_of(Route("r", WEB, tags=(("team", "web"),))).routes
    assert (active.tags, active.upstream) == ((("team", "web"),), WEB)


def test_fixed_rates_fall_back_on_the_global_rate_and_show_in_the_gauge():
    metrics = FakeMetrics()
    routing = routing_of(Route("own", WEB, path_prefix="/a", sample_rate=0.1), Route("global", WEB), metrics=metrics)
    own, global_ = routing.routes
    assert isinstance(own.sampler, RatioSampler) and isinstance(global_.sampler, RatioSampler)
    assert (own.sampler.rate, global_.sampler.rate) == (0.1, 0.5)
    assert metrics.rates == {"own": [0.1], "global": [0.5]}


def test_adaptive_routes_start_at_their_rate_and_report_changes():
    clock = FakeClock()
    metrics = FakeMetrics()
    adaptive = Adaptive(target_traces_per_second=1.0, min_sample_rate=0.0, interval=1.0)
    routing = routing_of(
        Route("own-start", WEB, path_prefix="/a", sample_rate=0.2, adaptive=adaptive),
        Route("global-start", WEB, adaptive=adaptive),
        metrics=metrics,
        now=clock,
    )
    own, global_ = routing.routes
    assert isinstance(own.sampler, AdaptiveSampler)
    assert (own.sampler.rate, global_.sampler.rate) == (0.2, 0.5)
    for _ in range(100):
        clock.advance(0.02)
        own.sampler.should_sample(1)
    assert metrics.rates["own-start"] == [0.2, pytest.approx(1.0 / 50, rel=0.05)]


def test_route_caps_are_token_buckets_on_the_routes_clock():
    clock = FakeClock()
    [capped, uncapped] = routing_of(
        Route("capped", WEB, path_prefix="/a", max_traces_per_second=2), Route("free", WEB), now=clock
    ).routes
    assert [capped.cap.try_acquire() for _ in range(3)] == [True, True, False]
    clock.advance(0.5)
    assert capped.cap.try_acquire() is True
    assert all(uncapped.cap.try_acquire() for _ in range(100))


def test_decisions_are_counted_by_route():
    metrics = FakeMetrics()
    [first, second] = routing_of(Route("a", WEB, path_prefix="/a"), Route("b", WEB), metrics=metrics).routes
    first.decisions[(True, "ratio")].inc()
    second.decisions[(False, "route_rate_limited")].inc()
    counted = {key: count.value for key, count in metrics.counters.items() if count.value}
    assert counted == {("a", True, "ratio"): 1, ("b", False, "route_rate_limited"): 1}


def test_a_reload_keeps_the_sampling_state_of_routes_that_sample_alike():
    adaptive = Adaptive(target_traces_per_second=1.0)
    before = routing_of(
        Route("kept", WEB, path_prefix="/a", adaptive=adaptive, max_traces_per_second=3),
        Route("changed", WEB, path_prefix="/b", sample_rate=0.1),
        Route("gone", WEB, path_prefix="/c"),
        default=Route(DEFAULT_ROUTE_NAME, WEB),
    )
    after = routing_of(
        # Same sampling under another prefix and upstream: still the same route as far as sampling goes.
        Route("kept", parse_upstream("http://other"), path_prefix="/z", adaptive=adaptive, max_traces_per_second=3),
        Route("changed", WEB, path_prefix="/b", sample_rate=0.2),
        Route("new", WEB, path_prefix="/c"),
        Route(DEFAULT_ROUTE_NAME, WEB, path_prefix="/d", sample_rate=0.9),
        default=Route(DEFAULT_ROUTE_NAME, WEB),
        previous=before,
    )
    old = {active.name: active for active in before.routes}
    new = {active.name: active for active in after.routes}
    assert new["kept"].sampler is old["kept"].sampler and new["kept"].cap is old["kept"].cap
    assert new["kept"].upstream == parse_upstream("http://other")
    assert new["changed"].sampler is not old["changed"].sampler
    assert new["changed"].sampler.rate == 0.2
    assert after.default is not None and before.default is not None
    assert after.default.sampler is before.default.sampler
    # The file's route called "default" is not the fallback route, whatever its name.
    assert new[DEFAULT_ROUTE_NAME].sampler.rate == 0.9


def test_routing_knows_its_source_and_whether_hosts_matter():
    source = RouteSource(Path("routes.yaml"), "sha256:00", 1.0)
    assert routing_of(Route("any", WEB), source=source).source is source
    assert routing_of(Route("any", WEB)).routes_by_host is False
    assert routing_of(Route("host", WEB, host="a.com")).routes_by_host is True


@pytest.mark.parametrize("rates", [(0.1, 0.7), (0.02, 0.5), (0.9, 0.3)])
def test_per_route_rates_hold_over_many_trace_ids(rates):
    """Each route samples its own share of new trace ids, whatever the other routes do."""
    routing = routing_of(
        Route("first", WEB, path_prefix="/first", sample_rate=rates[0]),
        Route("second", WEB, path_prefix="/second", sample_rate=rates[1]),
        Route("rest", WEB),
    )
    rng = random.Random(20261125)
    n = 20_000
    for path, rate in zip(("/first/x", "/second", "/third"), (*rates, DEFAULTS.sample_rate), strict=True):
        active = routing.match("", path)
        assert active is not None
        sampled = sum(active.sampler.should_sample(rng.getrandbits(128)) for _ in range(n))
        assert abs(sampled - n * rate) <= 4 * math.sqrt(n * rate * (1 - rate)), (path, sampled, n * rate)


def test_a_trace_id_gets_the_same_answer_from_every_table_at_the_same_rate():
    rng = random.Random(5)
    one = routing_of(Route("a", WEB, sample_rate=0.3)).routes[0].sampler
    other = routing_of(Route("b", WEB, host="x.com", sample_rate=0.3)).routes[0].sampler
    for _ in range(2000):
        trace_id = rng.getrandbits(128)
        assert one.should_sample(trace_id) is other.should_sample(trace_id)
