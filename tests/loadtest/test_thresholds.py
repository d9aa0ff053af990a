"""The load check's verdict on the sampling thresholds the gateway recorded, per route (no I/O)."""

from __future__ import annotations

import random

from gateway.threshold import threshold_for
from loadtest.expectations import DEFAULT_FILE, load_expectations
from loadtest.rates import RouteRate
from loadtest.thresholds import threshold_groups
from loadtest.traces import RatePolicy, Record, Recording, SpanView, judge, summary

HALF = threshold_for(0.5)
Decisions = list[tuple[str, bool, int | None]]


def decisions(route: str, requests: int, rate: float, recorded: int | None, seed: int = 7) -> Decisions:
    rng = random.Random(seed)
    made: Decisions = []
    for _ in range(requests):
        sampled = rng.random() < rate
        made.append((route, sampled, recorded if sampled else None))
    return made


def test_a_fixed_rate_whose_threshold_matches_the_share_is_consistent():
    [group] = threshold_groups(decisions("api", 2000, 0.5, HALF), {"api": 0.5})
    assert group.ok, group.describe()
    assert group.thresholds == (HALF,)


def test_a_threshold_that_overstates_the_probability_is_caught():
    # Sampled at 0.1 but recorded as 0.5: a collector would count five times too few requests.
    [group] = threshold_groups(decisions("api", 2000, 0.1, HALF))
    assert not group.ok
    assert "th says 50.00%" in str(group.verdict)


def test_a_threshold_that_is_not_the_configured_rate_is_caught():
    [group] = threshold_groups(decisions("api", 200, 0.25, threshold_for(0.25)), {"api": 0.5})
    assert not group.ok and "the route's rate 0.5 is th:8" in str(group.verdict)


def test_adaptive_thresholds_are_judged_by_the_weighted_count():
    def run(overstated: float) -> Decisions:
        rng = random.Random(3)
        made: Decisions = []
        for rate in (0.4, 0.2, 0.1, 0.05):
            for _ in range(1000):
                sampled = rng.random() < rate
                made.append(("adaptive", sampled, threshold_for(rate * overstated) if sampled else None))
        return made

    [group] = threshold_groups(run(1.0))
    assert len(group.thresholds) == 4 and group.ok, group.describe()
    # Each rate recorded as twice what it was: the weights count half the requests.
    [group] = threshold_groups(run(2.0))
    assert not group.ok and "weigh" in str(group.verdict)


def test_a_limiting_caps_traces_without_threshold_are_reported_not_counted():
    made = decisions("capped", 500, 0.3, HALF)
    made += [("capped", True, None)] * 20
    [group] = threshold_groups(made)
    assert group.ok and group.unweighted == 20
    assert "20 without th" in group.describe()


def test_judge_reads_the_threshold_of_the_gateways_server_span():
    records = []
    traces: dict[int, list[SpanView]] = {}
    rng = random.Random(11)
    for index in range(400):
        trace_id, span_id = 0x1000 + index, 0x5000 + index
        sampled = rng.random() < 0.5
        records.append(Record(trace_id, span_id, sampled, "/api/vote", 1_700_000_000.0))
        if sampled:
            traces[trace_id] = [SpanView(trace_id, span_id, None, "SERVER", "gw", "get", "/api/vote", None, "ot=th:c")]
    report = judge(
        Recording(tuple(records)),
        traces,
        load_expectations(DEFAULT_FILE),
        check_unannounced=False,
        rates=RatePolicy(routes=lambda endpoint: RouteRate("votes", 0.5)),
    )
    [group] = report.thresholds
    # th:c is 25%, but half the requests were sampled; and the route's rate is 0.5.
    assert group.thresholds == (threshold_for(0.25),)
    assert not group.ok and not report.passed
    assert "recorded sampling thresholds" in summary(report)
