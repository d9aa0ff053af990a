"""The sampling decision: the trace id decides at the route's rate; per-route and per-process caps and the
reporter's room may veto."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.context import Extracted

DEBUG = "debug"
TRUSTED_PARENT = "trusted_parent"
RATIO = "ratio"
ROUTE_RATE_LIMITED = "route_rate_limited"
RATE_LIMITED = "rate_limited"
QUEUE_FULL = "queue_full"
NO_EXPORTER = "no_exporter"
# Every reason label `decide` gives, by outcome, so that metric children can be created up front.
SAMPLED_REASONS = (DEBUG, TRUSTED_PARENT, RATIO)
NOT_SAMPLED_REASONS = (TRUSTED_PARENT, RATIO, ROUTE_RATE_LIMITED, RATE_LIMITED, QUEUE_FULL, NO_EXPORTER)

_LOW_64_BITS = 2**64 - 1
# Clock differences round (1000.1 - 1000.0 != 0.1): one period's refill must still make a whole token.
_TOKEN_EPSILON = 1e-9
# Weight of the last interval in the adaptive sampler's estimate of the traffic. The estimate moves half way each
# interval on a log scale (a geometric mean), so a tenfold rise or fall is followed at the same pace: within 1% of
# a 100-fold change after 10 intervals, without chasing every burst.
_SMOOTHING = 0.5


class Sampler(Protocol):
    @property
    def rate(self) -> float: ...

    def should_sample(self, trace_id: int) -> bool: ...


class RatioSampler:
    """OpenTelemetry's TraceIdRatioBased: the low 64 bits of the trace id against ``rate * 2**64``.

    The same trace id gets the same answer in every worker and every gateway at the same rate.
    """

    def __init__(self, rate: float) -> None:
        self.rate = _checked_rate(rate)
        self._bound = round(rate * 2**64)

    def should_sample(self, trace_id: int) -> bool:
        return trace_id & _LOW_64_BITS < self._bound


class AdaptiveSampler:
    """A ratio sampler whose rate follows the traffic, so that about ``target_per_second`` new traces are sampled.

    Every ``interval`` seconds the rate becomes ``target / traffic`` (new traces per second seen, smoothed), within
    ``[min_rate, 1.0]``: a busy route is sampled less, a quiet one up to every trace, and none below the floor.
    Between adjustments it is a `RatioSampler`, so every worker and replica at the same rate agrees on a trace id.
    The clock is read on each call, and the rate only changes on a call, so an idle sampler costs nothing.
    ``on_rate`` hears each new rate (a metrics gauge).
    """

    def __init__(
        self,
        target_per_second: float,
        min_rate: float,
        interval: float,
        initial_rate: float,
        now: Callable[[], float] = time.monotonic,
        on_rate: Callable[[float], None] | None = None,
    ) -> None:
        if not target_per_second > 0.0:
            raise ValueError(f"target traces per second must be more than 0, got {target_per_second!r}")
        if not interval > 0.0:
            raise ValueError(f"adaptive interval must be more than 0 seconds, got {interval!r}")
        self.target_per_second = target_per_second
        self.min_rate = _checked_rate(min_rate)
        self.interval = interval
        self._now = now
        self._on_rate = on_rate
        self._traffic: float | None = None
        self._seen = 0
        self._window_start = now()
        self._next_adjustment = self._window_start + interval
        self._set_rate(max(min_rate, _checked_rate(initial_rate)))

    @property
    def traffic(self) -> float | None:
        """The smoothed new traces per second seen so far; None before the first interval ends."""
        return self._traffic

    def should_sample(self, trace_id: int) -> bool:
        now = self._now()
        if now >= self._next_adjustment:
            self._adjust(now)
        self._seen += 1
        return trace_id & _LOW_64_BITS < self._bound

    def _adjust(self, now: float) -> None:
        # An empty interval counts as one request: at most that many came, and a log scale has no room for zero.
        observed = max(self._seen, 1) / (now - self._window_start)
        previous = self._traffic
        traffic = observed if previous is None else observed**_SMOOTHING * previous ** (1 - _SMOOTHING)
        self._traffic = traffic
        self._set_rate(min(1.0, max(self.min_rate, self.target_per_second / traffic)))
        self._seen = 0
        self._window_start = now
        self._next_adjustment = now + self.interval

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        self._bound = round(rate * 2**64)
        if self._on_rate is not None:
            self._on_rate(rate)


class TracesPerSecondCap:
    """A token bucket of new sampled traces per second; 0 means no cap.

    The bucket holds ``max(1, max_per_second)`` tokens and starts full: a cap of 10 lets a burst of 10
    traces through, then 10 a second; a cap below 1 (0.5: one trace every 2 seconds) still needs room
    for one whole trace. Used from one event loop only, so there is no lock.
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

    def refund(self) -> None:
        """Gives back the token of a trace that another cap refused after this one allowed it."""
        if self.max_per_second:
            self._tokens = min(self._burst, self._tokens + 1.0)


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
_ROUTE_RATE_LIMITED = Decision(False, False, ROUTE_RATE_LIMITED)
_RATE_LIMITED = Decision(False, False, RATE_LIMITED)
_QUEUE_FULL = Decision(False, False, QUEUE_FULL)
_NO_EXPORTER = Decision(False, False, NO_EXPORTER)


def decide(
    incoming: Extracted,
    trace_id: int,
    sampler: Sampler,
    route_cap: TracesPerSecondCap,
    process_cap: TracesPerSecondCap,
    reserve: Callable[[], bool],
    exporting: bool = True,
) -> Decision:
    """Sample this request's trace or not.

    ``incoming`` is what a trusted client sent (NO_CONTEXT for any other client). A debug flag or a
    parent's decision is honoured as is: joining a trace is not a new trace, so neither the caps nor the
    reporter's room is asked. A new (or deferred) trace must pass the route's sampler, then the route's cap,
    then the process's cap (a route's token comes back when the process refuses), then ``reserve``, which asks
    the span reporter for room and so is called only for a trace about to be sampled.

    Without an exporter (``exporting`` false) no new trace is sampled: the mesh would report its spans of a trace
    whose root nobody receives. A trusted parent's decision is still honoured: its trace has a root elsewhere, the
    mesh reports the rest of it, and only the gateway's two spans are missing, as they would be either way.
    """
    if incoming.debug:
        return _DEBUG
    if incoming.sampled is not None:
        return _PARENT_SAMPLED if incoming.sampled else _PARENT_NOT_SAMPLED
    if not exporting:
        return _NO_EXPORTER
    if not sampler.should_sample(trace_id):
        return _RATIO_NOT_SAMPLED
    if not route_cap.try_acquire():
        return _ROUTE_RATE_LIMITED
    if not process_cap.try_acquire():
        route_cap.refund()
        return _RATE_LIMITED
    if not reserve():
        return _QUEUE_FULL
    return _RATIO_SAMPLED


def _checked_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample rate must be within [0.0, 1.0], got {rate!r}")
    return rate
