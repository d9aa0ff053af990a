"""Consistent probability sampling: the threshold arithmetic, the `ot` tracestate entry, and what decide() records."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.context import NO_CONTEXT, Extracted, TraceContext
from gateway.propagation.w3c import format_traceparent, parse_tracestate
from gateway.sampling import (
    AdaptiveSampler,
    Decision,
    RatioSampler,
    TracesPerSecondCap,
    decide,
    tracestate_after,
)
from gateway.threshold import (
    MAX_RANDOMNESS,
    NEVER,
    NO_OT,
    OtState,
    format_th,
    parse_ot,
    parse_rv,
    parse_th,
    probability_of,
    threshold_for,
    with_ot,
)
from tests.support import FakeClock

TWO_56 = 2**56
NO_CAP = TracesPerSecondCap(0)


@pytest.mark.parametrize(
    ("rate", "threshold", "th"),
    [
        (1.0, 0, "0"),
        (0.5, 2**55, "8"),
        (0.25, 3 * 2**54, "c"),
        (0.75, 2**54, "4"),
        (0.1, 0xE6666666666666, "e6666666666666"),
        # The float nearest 1/3 is 0x15555555555555 x 2^-54: p x 2^56 is exact, and T is 2^56 less that.
        (1 / 3, 0xAAAAAAAAAAAAAC, "aaaaaaaaaaaaac"),
        (2 / 3, 0x55555555555558, "55555555555558"),
        (0.001, 0xFFBE76C8B43958, "ffbe76c8b43958"),
        (2**-56, TWO_56 - 1, "ffffffffffffff"),
        (1 - 2**-53, 8, "00000000000008"),
    ],
)
def test_threshold_and_its_th_encoding(rate, threshold, th):
    assert threshold_for(rate) == threshold
    assert format_th(threshold) == th
    assert parse_th(th) == threshold


def test_rate_zero_and_below_half_a_step_sample_nothing_and_have_no_th():
    assert threshold_for(0.0) == NEVER
    assert threshold_for(2**-58) == NEVER
    assert RatioSampler(0.0).should_sample(MAX_RANDOMNESS) is False
    with pytest.raises(ValueError, match="threshold"):
        format_th(NEVER)


@given(st.floats(0.0, 1.0))
def test_threshold_is_the_nearest_to_the_exact_one(rate):
    exact = (1 - Fraction(rate)) * TWO_56
    threshold = threshold_for(rate)
    assert 0 <= threshold <= TWO_56
    assert abs(Fraction(threshold) - exact) <= Fraction(1, 2)


@given(st.floats(0.0, 1.0), st.integers(0, MAX_RANDOMNESS))
def test_sampled_exactly_when_randomness_reaches_the_threshold(rate, randomness):
    high_bits = 0xABCDEF << 56
    assert RatioSampler(rate).should_sample(high_bits | randomness) is (randomness >= threshold_for(rate))


@given(st.integers(0, TWO_56 - 1))
def test_th_round_trips_and_drops_trailing_zeros(threshold):
    th = format_th(threshold)
    assert parse_th(th) == threshold
    assert 1 <= len(th) <= 14
    assert th == "0" or not th.endswith("0")


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**128 - 1))
def test_a_lower_rate_keeps_a_subset(a, b, trace_id):
    low, high = sorted((a, b))
    if RatioSampler(low).should_sample(trace_id):
        assert RatioSampler(high).should_sample(trace_id)


@pytest.mark.parametrize("value", ["", "g", "8" * 15, "A", "-1", " 8"])
def test_bad_th_is_none(value):
    assert parse_th(value) is None


@pytest.mark.parametrize("value", ["", "0" * 13, "0" * 15, "F" * 14, "x" * 14])
def test_bad_rv_is_none(value):
    assert parse_rv(value) is None


def test_parse_ot_keeps_unknown_sub_keys_and_drops_bad_values():
    ot = parse_ot("a=b,ot=th:c;rv:0123456789abcd;xy:z,c=d")
    assert ot == OtState(3 * 2**54, 0x0123456789ABCD, (("xy", "z"),))
    assert parse_ot("ot=th:zz;rv:12") == NO_OT
    assert parse_ot("a=b") == NO_OT
    assert parse_ot(None) == NO_OT


def test_with_ot_puts_ot_first_and_keeps_other_vendors():
    assert with_ot("a=b,ot=rv:0123456789abcd,c=d", OtState(2**55, 0x0123456789ABCD)) == (
        "ot=th:8;rv:0123456789abcd,a=b,c=d"
    )
    assert with_ot("a=b,ot=th:8", NO_OT) == "a=b"
    assert with_ot(None, OtState(0)) == "ot=th:0"


@given(st.integers(0, TWO_56 - 1), st.integers(0, MAX_RANDOMNESS) | st.none())
def test_ot_written_parses_back_and_is_a_valid_tracestate(threshold, random_value):
    written = with_ot("vendor=x", OtState(threshold, random_value))
    assert parse_tracestate([written]) == written
    assert parse_ot(written) == OtState(threshold, random_value)


def test_probability_of_threshold():
    assert probability_of(0) == 1.0
    assert probability_of(2**55) == 0.5
    assert probability_of(NEVER) == 0.0


# decide(): the threshold that truly applied.
SAMPLED_AT_HALF = 0x80000000000000
NOT_SAMPLED_AT_HALF = 0x7FFFFFFFFFFFFF


def decide_at(
    rate: float,
    trace_id: int,
    ot: OtState = NO_OT,
    incoming: Extracted = NO_CONTEXT,
    route_cap: TracesPerSecondCap = NO_CAP,
    process_cap: TracesPerSecondCap = NO_CAP,
) -> Decision:
    return decide(incoming, trace_id, RatioSampler(rate), route_cap, process_cap, lambda: True, ot)


def test_a_new_trace_records_the_routes_threshold():
    assert decide_at(0.5, SAMPLED_AT_HALF) == Decision(True, False, "ratio", 2**55, reserved=True)
    assert decide_at(1.0, 0) == Decision(True, False, "ratio", 0, reserved=True)
    assert decide_at(0.5, NOT_SAMPLED_AT_HALF).sampled is False


def test_a_trusted_rv_replaces_the_trace_ids_random_bits():
    assert decide_at(0.5, NOT_SAMPLED_AT_HALF, OtState(random_value=SAMPLED_AT_HALF)).sampled is True
    assert decide_at(0.5, SAMPLED_AT_HALF, OtState(random_value=NOT_SAMPLED_AT_HALF)).sampled is False


def test_a_trusted_th_may_raise_the_threshold_never_lower_it():
    raised = OtState(threshold=3 * 2**54)  # an earlier stage sampled at 0.25
    assert decide_at(0.5, SAMPLED_AT_HALF, raised).sampled is False
    assert decide_at(0.5, 3 * 2**54, raised) == Decision(True, False, "ratio", 3 * 2**54, reserved=True)
    lowered = OtState(threshold=0)
    assert decide_at(0.5, SAMPLED_AT_HALF, lowered) == Decision(True, False, "ratio", 2**55, reserved=True)
    assert decide_at(0.5, NOT_SAMPLED_AT_HALF, lowered).sampled is False


def test_an_adaptive_route_records_its_rate_of_the_moment():
    clock = FakeClock()
    sampler = AdaptiveSampler(1.0, 0.0, 1.0, 1.0, now=clock)
    for _ in range(4):
        sampler.should_sample(MAX_RANDOMNESS)
    clock.advance(1.0)  # 4 traces a second for a target of 1: the rate becomes 0.25
    decision = decide(NO_CONTEXT, MAX_RANDOMNESS, sampler, NO_CAP, NO_CAP, lambda: True)
    assert sampler.rate == 0.25
    assert decision == Decision(True, False, "ratio", threshold_for(0.25), reserved=True)


def test_a_trace_let_through_by_a_limiting_cap_records_no_threshold():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    assert decide_at(1.0, 1, route_cap=cap) == Decision(True, False, "ratio", 0, reserved=True)
    assert decide_at(1.0, 2, route_cap=cap).reason == "route_rate_limited"
    clock.advance(1.0)
    assert decide_at(1.0, 3, route_cap=cap) == Decision(True, False, "ratio", None, reserved=True)
    clock.advance(1.0)  # a whole refill period without a refusal: the cap no longer shapes the share
    assert decide_at(1.0, 4, route_cap=cap) == Decision(True, False, "ratio", 0, reserved=True)


def test_the_process_cap_limiting_also_erases_the_threshold():
    clock = FakeClock()
    cap = TracesPerSecondCap(1, now=clock)
    decide_at(1.0, 1, process_cap=cap)
    assert decide_at(1.0, 2, process_cap=cap).reason == "rate_limited"
    clock.advance(1.0)
    assert decide_at(1.0, 3, process_cap=cap).threshold is None


# tracestate_after(): what goes upstream and onto the spans.
PARENT = TraceContext(1, 2, None, True)


def test_tracestate_of_a_new_sampled_trace():
    decision = Decision(True, False, "ratio", 2**55)
    assert tracestate_after(None, NO_OT, decision) == "ot=th:8"
    incoming = "a=b,ot=rv:0123456789abcd;th:0"
    assert tracestate_after(incoming, parse_ot(incoming), decision) == "ot=th:8;rv:0123456789abcd,a=b"


@given(st.integers(0, NEVER - 1))
def test_a_new_traces_tracestate_is_its_threshold_alone_cached_or_not(threshold):
    # The common case is cached per threshold: it must be what the general path writes.
    decision = Decision(True, False, "ratio", threshold)
    expected = with_ot(None, OtState(threshold))
    assert tracestate_after(None, NO_OT, decision) == expected
    assert tracestate_after(None, NO_OT, decision) == expected  # from the cache
    assert tracestate_after(None, OtState(None, 5), decision) == with_ot(None, OtState(threshold, 5))


def test_tracestate_of_an_unsampled_or_unweighted_trace_has_no_th():
    incoming = "ot=th:0,a=b"
    assert tracestate_after(incoming, parse_ot(incoming), Decision(False, False, "ratio")) == "a=b"
    assert tracestate_after(None, NO_OT, Decision(False, False, "ratio")) is None
    assert tracestate_after(None, NO_OT, Decision(True, True, "debug")) is None
    assert tracestate_after(incoming, parse_ot(incoming), Decision(True, False, "ratio", None)) == "a=b"


def test_a_parents_decision_keeps_its_tracestate_as_it_came():
    incoming = "a=b,ot=th:c"
    decision = Decision(True, False, "trusted_parent")
    assert tracestate_after(incoming, parse_ot(incoming), decision) == incoming
    assert tracestate_after(None, NO_OT, decision) is None


@pytest.mark.parametrize(
    ("sampled", "random", "flags"), [(True, True, "03"), (False, True, "02"), (True, False, "01"), (False, False, "00")]
)
def test_traceparent_random_flag(sampled, random, flags):
    assert format_traceparent(TraceContext(1, 2, None, sampled), random=random).endswith(f"-{flags}")


def test_incoming_extracted_tracestate_is_what_the_gateway_parses():
    extracted = Extracted(context=PARENT, sampled=True, tracestate="ot=th:8")
    assert parse_ot(extracted.tracestate).threshold == 2**55
