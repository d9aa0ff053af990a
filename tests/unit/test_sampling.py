from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.context import MAX_64BIT, MAX_128BIT, NO_CONTEXT, Extracted, TraceContext
from gateway.sampling import (
    NOT_SAMPLED_REASONS,
    SAMPLED_REASONS,
    AdaptiveSampler,
    Decision,
    RatioSampler,
    TracesPerSecondCap,
    decide,
)
from tests.support import FakeClock


# The consistent rule: R (the rightmost 56 bits) >= T = (1 - rate) x 2^56.
@pytest.mark.parametrize(
    ("rate", "trace_id", "expected"),
    [
        (0.5, 0x80000000000000, True),
        (0.5, 0x7FFFFFFFFFFFFF, False),
        (0.5, 0xFFFFFFFFFFFFFF, True),
        (0.5, 0, False),
        (0.25, 0xC0000000000000, True),
        (0.25, 0xBFFFFFFFFFFFFF, False),
        (1.0, MAX_64BIT, True),
        (1.0, 0, True),
        (0.0, 0xFFFFFFFFFFFFFF, False),
        (0.0, 0, False),
        (2**-56, 0xFFFFFFFFFFFFFF, True),
        (2**-56, 0xFFFFFFFFFFFFFE, False),
        (2**-58, 0xFFFFFFFFFFFFFF, False),
    ],
)
def test_ratio_sampler_boundaries(rate, trace_id, expected):
    assert RatioSampler(rate).should_sample(trace_id) is expected


@pytest.mark.parametrize("high_bits", [1, 0xFF, 0xFFFF, MAX_64BIT])
def test_ratio_sampler_reads_only_the_rightmost_56_bits(high_bits):
    sampler = RatioSampler(0.5)
    assert sampler.should_sample(high_bits << 56 | 0x80000000000000) is True
    assert sampler.should_sample(high_bits << 56 | 0x7FFFFFFFFFFFFF) is False


def test_ratio_sampler_takes_a_trusted_random_value_over_the_trace_id():
    sampler = RatioSampler(0.5)
    assert sampler.should_sample(0xFFFFFFFFFFFFFF, random_value=0x7FFFFFFFFFFFFF) is False
    assert sampler.should_sample(0, random_value=0x80000000000000) is True


@pytest.mark.parametrize("rate", [-0.01, 1.01, -math.inf, math.inf, math.nan])
def test_ratio_sampler_rejects_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match="sample rate must be within"):
        RatioSampler(rate)


@given(st.integers(0, MAX_128BIT), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_ratio_sampler_is_monotonic_in_rate(trace_id, a, b):
    low, high = sorted((a, b))
    if RatioSampler(low).should_sample(trace_id):
        assert RatioSampler(high).should_sample(trace_id)


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.99])
def test_ratio_sampler_fraction_is_within_four_sigma_of_rate(rate):
    rng = random.Random(20240611)
    n = 20_000
    sampler = RatioSampler(rate)
    sampled = sum(sampler.should_sample(rng.getrandbits(128)) for _ in range(n))
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(sampled - n * rate) <= 4 * sigma


def test_cap_of_zero_never_limits():
    clock = FakeClock()
    cap = TracesPerSecondCap(0, now=clock)
    assert all(cap.try_acquire() for _ in range(10_000))


def test_cap_allows_a_burst_then_refills_at_the_rate():
    clock = FakeClock()
    cap = TracesPerSecondCap(10, now=clock)
    assert [cap.try_acquire() for _ in range(11)] == [True] * 10 + [False]
    clock.advance(0.05)
    assert cap.try_acquire() is False
    clock.advance(0.05)
    assert cap.try_acquire() is True
    assert cap.try_acquire() is False
    clock.advance(0.5)
    assert [cap.try_acquire() for _ in range(6)] == [True] * 5 + [False]


def test_cap_never_holds_more_than_its_burst():
    clock = FakeClock()
    cap = TracesPerSecondCap(4, now=clock)
    clock.advance(3600)
    assert [cap.try_acquire() for _ in range(5)] == [True] * 4 + [False]


def test_cap_below_one_per_second_still_allows_one_trace():
    clock = FakeClock()
    cap = TracesPerSecondCap(0.5, now=clock)
    assert cap.try_acquire() is True
    assert cap.try_acquire() is False
    clock.advance(1.5)
    assert cap.try_acquire() is False
    clock.advance(0.5)
    assert cap.try_acquire() is True
    assert cap.try_acquire() is False


def test_cap_denials_do_not_spend_tokens():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    assert cap.try_acquire() is True
    for _ in range(100):
        assert cap.try_acquire() is False
    clock.advance(1.0)
    assert cap.try_acquire() is True


def test_cap_survives_a_clock_stepping_back():
    clock = FakeClock()
    cap = TracesPerSecondCap(2, now=clock)
    assert cap.try_acquire() is True
    clock.advance(-100)
    assert cap.try_acquire() is True
    assert cap.try_acquire() is False
    clock.advance(0.5)
    assert cap.try_acquire() is True


def test_cap_refill_survives_clock_rounding():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    assert cap.try_acquire() is True
    for _ in range(999):
        clock.advance(0.001)
        assert cap.try_acquire() is False
    clock.advance(0.001)
    assert cap.try_acquire() is True
    assert cap.try_acquire() is False


@pytest.mark.parametrize("rate", [-1.0, -0.001, math.nan])
def test_cap_rejects_negative_rate(rate):
    with pytest.raises(ValueError, match="max traces per second"):
        TracesPerSecondCap(rate, now=FakeClock())


class Reserve:
    """A `reserve` callable that answers as told and counts its calls."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


NO_CAP = TracesPerSecondCap(0)
SAMPLED_ID = 0x80000000000000
NOT_SAMPLED_ID = 0x7FFFFFFFFFFFFF
# The threshold of rate 0.5, which a trace the ratio sampled records.
HALF = 2**55
PARENT = TraceContext(1, 2, None, True)


def run(incoming: Extracted, trace_id: int, tokens: float = 10, room: bool = True) -> tuple[Decision, int, int]:
    """decide() at rate 0.5 with no route cap; returns the decision, the tokens taken from the process cap and the
    calls to reserve."""
    clock = FakeClock()
    cap = TracesPerSecondCap(tokens, now=clock)
    reserve = Reserve(room)
    decision = decide(incoming, trace_id, RatioSampler(0.5), NO_CAP, cap, reserve)
    return decision, int(max(1, tokens)) - tokens_left(cap), reserve.calls


def tokens_left(cap: TracesPerSecondCap) -> int:
    """How many traces the cap would still let through now (it is used up by the count)."""
    left = 0
    while left < 100 and cap.try_acquire():
        left += 1
    return left


DECIDE_CASES = [
    pytest.param(
        NO_CONTEXT,
        SAMPLED_ID,
        10,
        True,
        Decision(True, False, "ratio", HALF, reserved=True),
        1,
        1,
        id="new-trace-sampled",
    ),
    pytest.param(NO_CONTEXT, NOT_SAMPLED_ID, 10, True, Decision(False, False, "ratio"), 0, 0, id="new-trace-by-ratio"),
    pytest.param(
        NO_CONTEXT,
        SAMPLED_ID,
        1,
        True,
        Decision(True, False, "ratio", HALF, reserved=True),
        1,
        1,
        id="new-trace-takes-last-token",
    ),
    pytest.param(
        NO_CONTEXT, SAMPLED_ID, 10, False, Decision(False, False, "queue_full"), 1, 1, id="new-trace-queue-full"
    ),
    pytest.param(
        Extracted(context=TraceContext(1, 2, None, None)),
        SAMPLED_ID,
        10,
        True,
        Decision(True, False, "ratio", HALF, reserved=True),
        1,
        1,
        id="deferred-parent-is-a-new-decision",
    ),
    pytest.param(
        Extracted(context=PARENT, sampled=True),
        NOT_SAMPLED_ID,
        10,
        False,
        Decision(True, False, "trusted_parent"),
        0,
        0,
        id="trusted-parent-sampled-skips-ratio-cap-and-reserve",
    ),
    pytest.param(
        Extracted(context=PARENT, sampled=False),
        SAMPLED_ID,
        10,
        True,
        Decision(False, False, "trusted_parent"),
        0,
        0,
        id="trusted-parent-not-sampled",
    ),
    pytest.param(
        Extracted(sampled=True), NOT_SAMPLED_ID, 10, True, Decision(True, False, "trusted_parent"), 0, 0, id="b3-1"
    ),
    pytest.param(
        Extracted(sampled=True, debug=True), NOT_SAMPLED_ID, 10, False, Decision(True, True, "debug"), 0, 0, id="debug"
    ),
]


@pytest.mark.parametrize(("incoming", "trace_id", "tokens", "room", "expected", "taken", "reserved"), DECIDE_CASES)
def test_decide(incoming, trace_id, tokens, room, expected, taken, reserved):
    assert run(incoming, trace_id, tokens, room) == (expected, taken, reserved)


@pytest.mark.parametrize(("incoming", "trace_id", "tokens", "room", "expected", "taken", "reserved"), DECIDE_CASES)
def test_decision_says_whether_it_reserved_room(incoming, trace_id, tokens, room, expected, taken, reserved):
    decision, _, reserve_calls = run(incoming, trace_id, tokens, room)
    assert decision.reserved is (reserve_calls == 1 and room)


def test_decide_rate_limited_does_not_reserve():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    assert cap.try_acquire() is True
    reserve = Reserve()
    assert decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(0.5), NO_CAP, cap, reserve) == Decision(
        False, False, "rate_limited"
    )
    assert reserve.calls == 0


def test_decide_queue_full_still_spends_the_tokens():
    # The caps count traces the gateway tried to sample; a full queue is counted apart as queue_full.
    clock = FakeClock()
    route_cap, process_cap = TracesPerSecondCap(1, now=clock), TracesPerSecondCap(1, now=clock)
    decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(1.0), route_cap, process_cap, Reserve(False))
    assert (route_cap.try_acquire(), process_cap.try_acquire()) == (False, False)


def test_decide_route_cap_comes_before_the_process_cap():
    clock = FakeClock()
    route_cap, process_cap = TracesPerSecondCap(1, now=clock), TracesPerSecondCap(5, now=clock)
    reserve = Reserve()
    decisions = [decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(1.0), route_cap, process_cap, reserve) for _ in range(3)]
    assert [decision.reason for decision in decisions] == ["ratio", "route_rate_limited", "route_rate_limited"]
    assert reserve.calls == 1
    # The route's refusals took nothing from the process: 4 of its 5 tokens are left.
    assert tokens_left(process_cap) == 4


def test_decide_gives_a_routes_token_back_when_the_process_cap_refuses():
    clock = FakeClock()
    route_cap, process_cap = TracesPerSecondCap(2, now=clock), TracesPerSecondCap(1, now=clock)
    assert process_cap.try_acquire() is True
    decision = decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(1.0), route_cap, process_cap, Reserve())
    assert decision == Decision(False, False, "rate_limited")
    assert tokens_left(route_cap) == 2


def test_cap_refund_never_overfills_and_is_a_no_op_without_a_cap():
    clock = FakeClock()
    cap = TracesPerSecondCap(2, now=clock)
    cap.refund()
    assert tokens_left(cap) == 2
    uncapped = TracesPerSecondCap(0, now=clock)
    uncapped.refund()
    assert all(uncapped.try_acquire() for _ in range(1000))


@given(
    st.sampled_from(
        [NO_CONTEXT, Extracted(sampled=True), Extracted(sampled=False), Extracted(sampled=True, debug=True)]
    ),
    st.integers(0, MAX_128BIT),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.5, 3.0]),
    st.booleans(),
)
def test_decide_reasons_are_listed(incoming, trace_id, rate, max_per_second, room):
    clock = FakeClock()
    decision = decide(
        incoming,
        trace_id,
        RatioSampler(rate),
        TracesPerSecondCap(max_per_second, clock),
        TracesPerSecondCap(max_per_second, clock),
        Reserve(room),
    )
    assert decision.reason in (SAMPLED_REASONS if decision.sampled else NOT_SAMPLED_REASONS)
    assert not decision.debug or decision.sampled


# --- caps over time ---------------------------------------------------------------------------------------------


@given(
    st.lists(st.tuples(st.floats(0.0, 0.5), st.booleans()), min_size=1, max_size=400),
    st.sampled_from([0.5, 1.0, 3.0, 20.0]),
    st.sampled_from([0.0, 2.0, 7.0]),
    st.sampled_from([0.0, 4.0, 10.0]),
)
def test_caps_hold_over_time(arrivals, first_cap, second_cap, process_cap_rate):
    """Whatever the arrivals, no route ever gets more than its burst plus its rate times the time elapsed, and the
    process no more than its own, while every route gets at least its share when the process cap has room."""
    clock = FakeClock()
    caps = {True: TracesPerSecondCap(first_cap, now=clock), False: TracesPerSecondCap(second_cap, now=clock)}
    process_cap = TracesPerSecondCap(process_cap_rate, now=clock)
    sampled = {True: 0, False: 0}
    elapsed = 0.0
    for gap, first in arrivals:
        clock.advance(gap)
        elapsed += gap
        decision = decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(1.0), caps[first], process_cap, Reserve())
        sampled[first] += decision.sampled
        for route, rate in ((True, first_cap), (False, second_cap)):
            if rate:
                assert sampled[route] <= max(1.0, rate) + rate * elapsed + 1e-6
        if process_cap_rate:
            assert sum(sampled.values()) <= max(1.0, process_cap_rate) + process_cap_rate * elapsed + 1e-6
    if not process_cap_rate and not second_cap:
        assert sampled[False] == sum(1 for _, first in arrivals if not first)


# --- adaptive sampling ------------------------------------------------------------------------------------------


class Traffic:
    """A synthetic series: `per_second` requests a second, evenly spaced, with random trace ids (seeded)."""

    def __init__(self, sampler_factory, seed: int = 7) -> None:
        self.clock = FakeClock()
        self.rates: list[float] = []
        self.sampler = sampler_factory(self.clock, self.rates.append)
        self._rng = random.Random(seed)

    def run(self, per_second: float, seconds: float) -> int:
        """Sends the requests; returns how many were sampled."""
        sampled = 0
        gap = 1.0 / per_second
        for _ in range(round(per_second * seconds)):
            self.clock.advance(gap)
            sampled += self.sampler.should_sample(self._rng.getrandbits(128))
        return sampled


def adaptive(target: float, floor: float = 0.0001, interval: float = 5.0, initial: float = 0.5):
    return lambda clock, on_rate: AdaptiveSampler(target, floor, interval, initial, now=clock, on_rate=on_rate)


def assert_near_target(sampled: int, target: float, seconds: float) -> None:
    expected = target * seconds
    # Binomial: the traffic is exact, so only which ids fall under the bound varies; 5 sigma.
    assert abs(sampled - expected) <= 5 * math.sqrt(expected), (sampled, expected)


def test_adaptive_converges_to_its_target_as_the_traffic_changes():
    traffic = Traffic(adaptive(target=10.0))
    for per_second in (2000.0, 200.0, 5000.0, 40.0):
        traffic.run(per_second, 60.0)  # 12 intervals: the smoothed estimate has caught up with the new traffic
        assert traffic.sampler.rate == pytest.approx(10.0 / per_second, rel=0.01)
        assert_near_target(traffic.run(per_second, 30.0), 10.0, 30.0)


def test_adaptive_samples_every_trace_of_a_quiet_route():
    traffic = Traffic(adaptive(target=10.0, initial=0.01))
    traffic.run(4.0, 30.0)
    assert traffic.sampler.rate == 1.0
    assert traffic.run(4.0, 10.0) == 40


def test_adaptive_never_goes_below_its_floor():
    traffic = Traffic(adaptive(target=1.0, floor=0.05))
    traffic.run(1000.0, 60.0)
    assert traffic.sampler.rate == 0.05
    assert min(traffic.rates) == 0.05
    sampled = traffic.run(1000.0, 10.0)
    assert abs(sampled - 500) <= 5 * math.sqrt(500 * 0.95)


def test_adaptive_starts_at_its_initial_rate_raised_to_the_floor():
    clock = FakeClock()
    assert AdaptiveSampler(5.0, 0.0, 10.0, 0.3, now=clock).rate == 0.3
    assert AdaptiveSampler(5.0, 0.2, 10.0, 0.1, now=clock).rate == 0.2


def test_adaptive_keeps_its_rate_within_an_interval_and_reports_each_change():
    traffic = Traffic(adaptive(target=10.0, interval=5.0, initial=0.5))
    traffic.run(100.0, 4.9)
    assert traffic.rates == [0.5]
    traffic.run(100.0, 0.2)
    assert traffic.rates == [0.5, pytest.approx(0.1, rel=0.05)]
    assert traffic.sampler.traffic == pytest.approx(100.0, rel=0.05)


def test_adaptive_rate_rises_after_an_idle_period():
    traffic = Traffic(adaptive(target=10.0))
    traffic.run(1000.0, 60.0)
    busy_rate = traffic.sampler.rate
    traffic.clock.advance(3600.0)
    traffic.run(1.0, 1.0)
    assert busy_rate < traffic.sampler.rate <= 1.0


def test_adaptive_decisions_are_those_of_a_ratio_sampler_at_its_rate():
    traffic = Traffic(adaptive(target=10.0))
    traffic.run(500.0, 30.0)
    rng = random.Random(3)
    fixed = RatioSampler(traffic.sampler.rate)
    for _ in range(1000):
        trace_id = rng.getrandbits(128)
        assert traffic.sampler.should_sample(trace_id) is fixed.should_sample(trace_id)


def test_adaptive_survives_a_clock_stepping_back():
    clock = FakeClock()
    sampler = AdaptiveSampler(10.0, 0.0, 5.0, 0.5, now=clock)
    clock.advance(-100.0)
    assert sampler.should_sample(MAX_64BIT) is True
    assert sampler.rate == 0.5


@pytest.mark.parametrize(
    ("target", "floor", "interval", "initial", "message"),
    [
        (0.0, 0.0, 5.0, 0.5, "target traces per second must be more than 0"),
        (math.nan, 0.0, 5.0, 0.5, "target traces per second must be more than 0"),
        (1.0, 0.0, 0.0, 0.5, "adaptive interval must be more than 0 seconds"),
        (1.0, 1.5, 5.0, 0.5, "sample rate must be within"),
        (1.0, 0.0, 5.0, -0.5, "sample rate must be within"),
    ],
)
def test_adaptive_rejects_bad_settings(target, floor, interval, initial, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveSampler(target, floor, interval, initial, now=FakeClock())


# Without an exporter (GATEWAY_ZIPKIN_URL empty) no new trace is sampled; a trusted parent's decision still is.
NO_EXPORTER_CASES = [
    pytest.param(NO_CONTEXT, Decision(False, False, "no_exporter"), id="new-trace"),
    pytest.param(Extracted(context=PARENT, sampled=True), Decision(True, False, "trusted_parent"), id="parent-sampled"),
    pytest.param(
        Extracted(context=PARENT, sampled=False), Decision(False, False, "trusted_parent"), id="parent-not-sampled"
    ),
    pytest.param(Extracted(context=PARENT, sampled=True, debug=True), Decision(True, True, "debug"), id="debug"),
]


@pytest.mark.parametrize(("incoming", "expected"), NO_EXPORTER_CASES)
def test_without_an_exporter_no_new_trace_is_sampled_and_no_cap_or_room_is_taken(incoming, expected):
    clock = FakeClock()
    route_cap, process_cap, reserve = TracesPerSecondCap(1, now=clock), TracesPerSecondCap(1, now=clock), Reserve()
    decision = decide(incoming, SAMPLED_ID, RatioSampler(1.0), route_cap, process_cap, reserve, exporting=False)
    assert decision == expected
    assert decision.reason in (SAMPLED_REASONS if decision.sampled else NOT_SAMPLED_REASONS)
    assert (tokens_left(route_cap), tokens_left(process_cap), reserve.calls) == (1, 1, 0)
