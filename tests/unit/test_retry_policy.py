"""The backoff between attempts at a span batch, with the jitter chosen by the test."""

from __future__ import annotations

import pytest

from gateway.retry_policy import BACKOFF_MAX, JITTER_HIGH, JITTER_LOW, RETRY_AFTER_MAX, RetryPolicy


def at_top(low: float, high: float) -> float:
    return high


def test_pauses_double_from_the_first_up_to_the_cap() -> None:
    policy = RetryPolicy(10, jitter=at_top)
    assert [policy.pause(attempt) for attempt in range(1, 10)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert policy.pause(10_000) == BACKOFF_MAX  # no overflow however long the outage


def test_the_jitter_picks_between_half_and_all_of_the_backoff() -> None:
    asked: list[tuple[float, float]] = []

    def at_bottom(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    assert RetryPolicy(3, jitter=at_bottom).pause(3) == 0.4 * JITTER_LOW
    assert asked == [(JITTER_LOW, JITTER_HIGH)]


@pytest.mark.parametrize(
    ("retry_after", "pause"), [(None, 0.2), (0.0, 0.2), (2.5, 2.5), (RETRY_AFTER_MAX + 60, RETRY_AFTER_MAX)]
)
def test_a_collectors_retry_after_lengthens_a_pause_up_to_a_cap(retry_after: float | None, pause: float) -> None:
    assert RetryPolicy(3, jitter=at_top).pause(2, retry_after) == pause


def test_the_last_attempt_is_the_maximum() -> None:
    policy = RetryPolicy(3)
    assert [policy.is_last(attempt) for attempt in (1, 2, 3)] == [False, False, True]
