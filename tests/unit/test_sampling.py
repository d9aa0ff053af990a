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
    Decision,
    RatioSampler,
    TracesPerSecondCap,
    decide,
)
from tests.support import FakeClock


@pytest.mark.parametrize(
    ("rate", "trace_id", "expected"),
    [
        (0.5, 0x7FFFFFFFFFFFFFFF, True),
        (0.5, 0x8000000000000000, False),
        (0.5, 0, True),
        (0.5, MAX_64BIT, False),
        (0.25, 0x3FFFFFFFFFFFFFFF, True),
        (0.25, 0x4000000000000000, False),
        (1.0, MAX_64BIT, True),
        (1.0, 0, True),
        (0.0, 0, False),
        (0.0, 1, False),
        (2**-64, 0, True),
        (2**-64, 1, False),
    ],
)
def test_ratio_sampler_boundaries(rate, trace_id, expected):
    assert RatioSampler(rate).should_sample(trace_id) is expected


@pytest.mark.parametrize("high_bits", [1, 0xFFFF, MAX_64BIT])
def test_ratio_sampler_reads_only_the_low_64_bits(high_bits):
    sampler = RatioSampler(0.5)
    assert sampler.should_sample(high_bits << 64 | 0x7FFFFFFFFFFFFFFF) is True
    assert sampler.should_sample(high_bits << 64 | 0x8000000000000000) is False


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


SAMPLED_ID = 0x7FFFFFFFFFFFFFFF
NOT_SAMPLED_ID = 0x8000000000000000
PARENT = TraceContext(1, 2, None, True)


def run(incoming: Extracted, trace_id: int, tokens: float = 10, room: bool = True) -> tuple[Decision, int, int]:
    """decide() at rate 0.5; returns the decision, the tokens taken from the cap and the calls to reserve."""
    clock = FakeClock()
    cap = TracesPerSecondCap(tokens, now=clock)
    reserve = Reserve(room)
    decision = decide(incoming, trace_id, RatioSampler(0.5), cap, reserve)
    left = 0
    while left < 100 and cap.try_acquire():
        left += 1
    return decision, int(max(1, tokens)) - left, reserve.calls


DECIDE_CASES = [
    pytest.param(NO_CONTEXT, SAMPLED_ID, 10, True, Decision(True, False, "ratio"), 1, 1, id="new-trace-sampled"),
    pytest.param(NO_CONTEXT, NOT_SAMPLED_ID, 10, True, Decision(False, False, "ratio"), 0, 0, id="new-trace-by-ratio"),
    pytest.param(
        NO_CONTEXT, SAMPLED_ID, 1, True, Decision(True, False, "ratio"), 1, 1, id="new-trace-takes-last-token"
    ),
    pytest.param(
        NO_CONTEXT, SAMPLED_ID, 10, False, Decision(False, False, "queue_full"), 1, 1, id="new-trace-queue-full"
    ),
    pytest.param(
        Extracted(context=TraceContext(1, 2, None, None)),
        SAMPLED_ID,
        10,
        True,
        Decision(True, False, "ratio"),
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


def test_decide_rate_limited_does_not_reserve():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    assert cap.try_acquire() is True
    reserve = Reserve()
    assert decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(0.5), cap, reserve) == Decision(False, False, "rate_limited")
    assert reserve.calls == 0


def test_decide_queue_full_still_spends_the_token():
    # The cap counts traces the gateway tried to sample; a full queue is counted apart as queue_full.
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    decide(NO_CONTEXT, SAMPLED_ID, RatioSampler(1.0), cap, Reserve(False))
    assert cap.try_acquire() is False


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
    decision = decide(
        incoming, trace_id, RatioSampler(rate), TracesPerSecondCap(max_per_second, FakeClock()), Reserve(room)
    )
    assert decision.reason in (SAMPLED_REASONS if decision.sampled else NOT_SAMPLED_REASONS)
    assert not decision.debug or decision.sampled
