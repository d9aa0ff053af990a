"""The sample-rate check: binomial bounds per group, rates 0 and 1 exact, per-route rates from the gateway's file."""

from __future__ import annotations

import math
import random

import pytest

from gateway.route_file import load_routes
from loadtest.rates import ALL_ROUTES, NO_ROUTE, RateGroup, RouteRate, check_rate, rate_groups, route_lookup


def test_the_bound_is_four_standard_deviations_of_the_binomial():
    group = RateGroup("all", 0.5, 400, 200)
    assert group.allowance == pytest.approx(4 * math.sqrt(400 * 0.25))  # 40 requests either way
    assert group.bounds == pytest.approx((0.4, 0.6))
    assert RateGroup("all", 0.5, 400, 240).ok
    assert not RateGroup("all", 0.5, 400, 241).ok
    assert RateGroup("all", 0.5, 400, 160).ok
    assert not RateGroup("all", 0.5, 400, 159).ok


def test_fewer_sigmas_is_a_tighter_bound():
    assert RateGroup("all", 0.5, 400, 230).ok
    assert not RateGroup("all", 0.5, 400, 230, sigmas=2).ok


@pytest.mark.parametrize(
    ("rate", "sampled", "ok"), [(0.0, 0, True), (0.0, 1, False), (1.0, 50, True), (1.0, 49, False)]
)
def test_rates_of_zero_and_one_allow_no_deviation(rate, sampled, ok):
    assert RateGroup("all", rate, 50, sampled).ok is ok


def test_a_group_without_a_rate_is_not_checked():
    group = RateGroup("all", None, 10, 10)
    assert group.ok
    assert group.describe() == "all: 10 of 10 sampled (100.0%), no rate configured"
    assert group.as_json()["allowed"] is None


def test_describe_and_json():
    group = RateGroup("emojivoto-vote", 1.0, 10, 7)
    assert group.describe() == (
        "emojivoto-vote: 7 of 10 sampled (70.0%), expected 100.0%: OUTSIDE 100.0%-100.0% (4 sigma)"
    )
    assert group.as_json() == {
        "group": "emojivoto-vote",
        "requests": 10,
        "sampled": 7,
        "expected_rate": 1.0,
        "upper_only": False,
        "allowed": [1.0, 1.0],
        "ok": False,
        "summary": group.describe(),
    }


def test_upper_only_allows_fewer_never_more():
    assert RateGroup("all", 0.5, 400, 10, upper_only=True).ok
    assert RateGroup("all", 0.5, 400, 240, upper_only=True).ok
    assert not RateGroup("all", 0.5, 400, 241, upper_only=True).ok
    group = RateGroup("all", 1.0, 10, 3, upper_only=True)
    assert group.ok
    assert group.bounds == (0.0, 1.0)
    assert group.describe() == "all: 3 of 10 sampled (30.0%), at most 100.0%: within 0.0%-100.0% (4 sigma)"
    assert [g.upper_only for g in rate_groups([("/", True, False)], 0.5, upper_only=True)] == [True]


def test_a_fair_sampler_passes_and_a_biased_one_fails():
    rng = random.Random(20240601)
    fair = [("/api/list", rng.random() < 0.3, False) for _ in range(5000)]
    [group] = rate_groups(fair, 0.3)
    assert (group.name, group.requests, group.ok) == (ALL_ROUTES, 5000, True)
    biased = [("/api/list", rng.random() < 0.35, False) for _ in range(5000)]
    assert not rate_groups(biased, 0.3)[0].ok


def test_hostile_requests_are_grouped_apart():
    decisions = [("/api/list", False, False)] * 10 + [("/api/list", True, True)] * 3
    groups = rate_groups(decisions, 0.0)
    assert [(group.name, group.requests, group.sampled, group.ok) for group in groups] == [
        ("all requests", 10, 0, True),
        ("all requests (forged trace headers)", 3, 3, False),
    ]


def test_per_route_rates_from_the_gateways_route_file(tmp_path):
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(
        "routes:\n"
        "  - {name: votes, path_prefix: /api/vote, upstream: 'http://web:80', sample_rate: 1.0}\n"
        "  - {name: quiet, path_prefix: /api/leaderboard, upstream: 'http://web:80', sample_rate: 0.0}\n"
        "  - {name: shop, host: shop.example.com, upstream: 'http://shop:80', sample_rate: 0.0}\n"
        "  - {name: web, upstream: 'http://web:80'}\n"
    )
    lookup = route_lookup(load_routes(routes_file), "127.0.0.1:8080")
    assert lookup("/api/vote") == RouteRate("votes", 1.0)
    assert lookup("/api/vote?choice=:joy:") == RouteRate("votes", 1.0)
    assert lookup("/api/voter") == RouteRate("web")
    assert lookup("/api/list") == RouteRate("web")
    assert route_lookup(load_routes(routes_file), "SHOP.example.com:443")("/api/list") == RouteRate("shop", 0.0)
    decisions = [("/api/vote", True, False)] * 5 + [("/api/leaderboard", False, False)] * 5
    decisions += [("/api/list", index % 2 == 0, False) for index in range(20)]
    groups = rate_groups(decisions, 0.5, lookup)
    assert [(group.name, group.expected, group.requests, group.sampled, group.ok) for group in groups] == [
        ("quiet", 0.0, 5, 0, True),
        ("votes", 1.0, 5, 5, True),
        ("web", 0.5, 20, 10, True),
    ]
    # A route without a sample_rate, and no global rate: that route is not checked.
    assert [group.expected for group in rate_groups(decisions, None, lookup)] == [0.0, 1.0, None]


def test_a_path_no_route_matches_falls_to_the_global_rate(tmp_path):
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text("routes:\n  - {name: api, path_prefix: /api, upstream: 'http://web:80'}\n")
    lookup = route_lookup(load_routes(routes_file), "localhost")
    assert lookup("/health") == RouteRate(NO_ROUTE)
    [group] = rate_groups([("/health", True, False)], 1.0, lookup)
    assert (group.name, group.expected) == (NO_ROUTE, 1.0)


def test_a_capped_route_is_held_to_the_upper_bound_and_an_adaptive_one_not_at_all(tmp_path):
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(
        "routes:\n"
        "  - {name: votes, path_prefix: /api/vote, upstream: 'http://web:80', sample_rate: 1.0,"
        " max_traces_per_second: 5}\n"
        "  - {name: api, path_prefix: /api, upstream: 'http://web:80', adaptive: {target_traces_per_second: 2}}\n"
    )
    lookup = route_lookup(load_routes(routes_file), "localhost")
    assert lookup("/api/vote") == RouteRate("votes", 1.0, capped=True)
    assert lookup("/api/list") == RouteRate("api", None, adaptive=True)
    decisions = [("/api/vote", index < 3, False) for index in range(10)] + [("/api/list", True, False)] * 4
    votes, api = sorted(rate_groups(decisions, 0.5, lookup), key=lambda group: group.name, reverse=True)
    assert (votes.name, votes.upper_only, votes.ok) == ("votes", True, True)
    assert (api.name, api.expected, api.ok) == ("api", None, True)
    assert api.describe() == "api: 4 of 4 sampled (100.0%), an adaptive rate, not checked"


@pytest.mark.parametrize("rate", [-0.1, 1.01, math.nan])
def test_check_rate_refuses_what_is_not_a_probability(rate):
    with pytest.raises(ValueError, match="within"):
        check_rate(rate)
