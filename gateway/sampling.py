"""The sampling decision: the trace id decides, a per-second cap and the reporter's room may veto."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.context import Extracted

DEBUG = "debug"
TRUSTED_PARENT = "trusted_parent"
RATIO = "ratio"
RATE_LIMITED = "rate_limited"
QUEUE_FULL = "queue_full"
# Every reason label `decide` gives, by outcome, so that metric children can be created up front.
SAMPLED_REASONS = (DEBUG, TRUSTED_PARENT, RATIO)
NOT_SAMPLED_REASONS = (TRUSTED_PARENT, RATIO, RATE_LIMITED, QUEUE_FULL)

_LOW_64_BITS = 2**64 - 1
# Clock differences round (1000.1 - 1000.0 != 0.1): one period's refill must still make a whole token.
_TOKEN_EPSILON = 1e-9


class RatioSampler:
    """OpenTelemetry's TraceIdRatioBased: the low 64 bits of the trace id against ``rate * 2**64``.

    The same trace id gets the same answer in every worker and every gateway at the same rate.
    """

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample rate must be within [0.0, 1.0], got {rate!r}")
        self.rate = rate
        self._bound = round(rate * 2**64)

    def should_sample(self, trace_id: int) -> bool:
        return trace_id & _LOW_64_BITS < self._bound


class TracesPerSecondCap:
    """A token bucket of new sampled traces per second; 0 means no cap.

    The bucket holds ``max(1, max_per_second)`` tokens and starts full: a cap of 10 lets a burst of 10
    traces through, then 10 a second; a cap below 1 (0.5: one trace every 2 seconds) still needs room
    for one whole trace. One bucket per process, used from its event loop only, so there is no lock.
    """

    def __init__(self, max_per_second: float, now: Callable[[], float] = time.monotonic) -> None:
        if not max_per_second >= 0.0:
            raise ValueError(f"max traces per second must be 0 (no cap) or more, got {max_per_second!r}")
        self.max_per_second = max_per_second
        self._burst = max(1.0, max_per_second)
        self._tokens = self._burst
        self._now = now
        self._last = now()

    def try_acquire(self) -> bool:
        if not self.max_per_second:
            return True
        now = self._now()
        # max(0, ...): a clock that steps back must not drain the bucket.
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self.max_per_second)
        self._last = now
        if self._tokens < 1.0 - _TOKEN_EPSILON:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True


@dataclass(frozen=True, slots=True)
class Decision:
    sampled: bool
    debug: bool
    reason: str


_DEBUG = Decision(True, True, DEBUG)
_PARENT_SAMPLED = Decision(True, False, TRUSTED_PARENT)
_PARENT_NOT_SAMPLED = Decision(False, False, TRUSTED_PARENT)
_RATIO_SAMPLED = Decision(True, False, RATIO)
_RATIO_NOT_SAMPLED = Decision(False, False, RATIO)
_RATE_LIMITED = Decision(False, False, RATE_LIMITED)
_QUEUE_FULL = Decision(False, False, QUEUE_FULL)


def decide(
    incoming: Extracted,
    trace_id: int,
    sampler: RatioSampler,
    cap: TracesPerSecondCap,
    reserve: Callable[[], bool],
) -> Decision:
    """Sample this request's trace or not.

    ``incoming`` is what a trusted client sent (NO_CONTEXT for any other client). A debug flag or a
    parent's decision is honoured as is: joining a trace is not a new trace, so neither the cap nor the
    reporter's room is asked. A new (or deferred) trace must pass the ratio, then the cap, then
    ``reserve``, which asks the span reporter for room and so is called only for a trace about to be sampled.
    """
    if incoming.debug:
        return _DEBUG
    if incoming.sampled is not None:
        return _PARENT_SAMPLED if incoming.sampled else _PARENT_NOT_SAMPLED
    if not sampler.should_sample(trace_id):
        return _RATIO_NOT_SAMPLED
    if not cap.try_acquire():
        return _RATE_LIMITED
    if not reserve():
        return _QUEUE_FULL
    return _RATIO_SAMPLED
