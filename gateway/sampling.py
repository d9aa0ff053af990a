"""The sampling decision: the trace id's randomness decides at the route's rate (OpenTelemetry's consistent
threshold rule, gateway/threshold.py); per-route and per-process caps and the reporter's room may veto."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.context import Extracted
from gateway.threshold import OtState, is_sampled, randomness, threshold_for, with_ot

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

# Clock differences round (1000.1 - 1000.0 != 0.1): one period's refill must still make a whole token.
_TOKEN_EPSILON = 1e-9
# Weight of the last interval in the adaptive sampler's estimate of the traffic. The estimate moves half way each
# interval on a log scale (a geometric mean), so a tenfold rise or fall is followed at the same pace: within 1% of
# a 100-fold change after 10 intervals, without chasing every burst.
_SMOOTHING = 0.5


class Sampler(Protocol):
    @property
    def rate(self) -> float: ...

    @property
    def threshold(self) -> int:
        """The threshold of the last decision (of the rate, before any): the one a sampled trace records."""
        ...

    def should_sample(self, trace_id: int, random_value: int | None = None) -> bool:
        """Sampled when the randomness (``random_value``, else the trace id's rightmost 56 bits) reaches the
        threshold."""
        ...


class RatioSampler:
    """OpenTelemetry's consistent probability sampler: sampled when R >= T, T = (1 - rate) x 2^56.

    R is the trace id's rightmost 56 bits (or a trusted ``rv``): the same trace id gets the same answer in every
    worker and every gateway at the same rate, and a lower rate samples a subset of a higher one's traces.
    """

    def __init__(self, rate: float) -> None:
        self.rate = _checked_rate(rate)
        self.threshold = threshold_for(rate)

    def should_sample(self, trace_id: int, random_value: int | None = None) -> bool:
        return is_sampled(self.threshold, randomness(trace_id) if random_value is None else random_value)


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

    def should_sample(self, trace_id: int, random_value: int | None = None) -> bool:
        now = self._now()
        if now >= self._next_adjustment:
            self._adjust(now)
        self._seen += 1
        return is_sampled(self.threshold, randomness(trace_id) if random_value is None else random_value)

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
        self.threshold = threshold_for(rate)
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
        # While the bucket refuses traces, those it lets through are not sampled at the route's probability.
        self._limiting_until = -float("inf")
        self._refill_period = max(1.0, 1.0 / max_per_second) if max_per_second else 0.0

    def try_acquire(self) -> bool:
        if not self.max_per_second:
            return True
        now = self._now()
        # max(0, ...): a clock that steps back must not drain the bucket.
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self.max_per_second)
        self._last = now
        if self._tokens < 1.0 - _TOKEN_EPSILON:
            self._limiting_until = now + self._refill_period
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def limiting(self) -> bool:
        """Did the bucket refuse a trace within its last refill period (at least a second)? Then the share it lets
        through depends on the traffic, not on the trace id, and no threshold tells it."""
        return self.max_per_second > 0 and self._now() <= self._limiting_until

    def refund(self) -> None:
        """Gives back the token of a trace that another cap refused after this one allowed it."""
        if self.max_per_second:
            self._tokens = min(self._burst, self._tokens + 1.0)


@dataclass(frozen=True, slots=True)
class Decision:
    """``threshold`` is the consistent-sampling threshold a new sampled trace records (``ot=th``), or None: a
    decision taken upstream (its tracestate goes on as it came), a debug trace, or one a limiting cap let through.
    ``reserved``: the reporter's room was reserved for the trace's spans (only a new sampled trace asks for it), so
    they are to be submitted as reserved."""

    sampled: bool
    debug: bool
    reason: str
    threshold: int | None = None
    reserved: bool = False


_DEBUG = Decision(True, True, DEBUG)
_PARENT_SAMPLED = Decision(True, False, TRUSTED_PARENT)
_PARENT_NOT_SAMPLED = Decision(False, False, TRUSTED_PARENT)
_RATIO_SAMPLED = Decision(True, False, RATIO, reserved=True)
_RATIO_NOT_SAMPLED = Decision(False, False, RATIO)
_ROUTE_RATE_LIMITED = Decision(False, False, ROUTE_RATE_LIMITED)
_RATE_LIMITED = Decision(False, False, RATE_LIMITED)
_QUEUE_FULL = Decision(False, False, QUEUE_FULL)
_NO_EXPORTER = Decision(False, False, NO_EXPORTER)
_NO_OT = OtState()
# One Decision per threshold in use, as the constants above: a route's rate, or an adaptive one's recent ones.
_MAX_CACHED_THRESHOLDS = 4096
_sampled_at: dict[int, Decision] = {}


def _ratio_sampled(threshold: int) -> Decision:
    """A new Decision for a threshold not in _sampled_at, which keeps it (looked up in decide() without a call)."""
    if len(_sampled_at) >= _MAX_CACHED_THRESHOLDS:
        _sampled_at.clear()
    decision = _sampled_at[threshold] = Decision(True, False, RATIO, threshold, reserved=True)
    return decision


def decide(
    incoming: Extracted,
    trace_id: int,
    sampler: Sampler,
    route_cap: TracesPerSecondCap,
    process_cap: TracesPerSecondCap,
    reserve: Callable[[], bool],
    ot: OtState | None = None,
    exporting: bool = True,
) -> Decision:
    """Sample this request's trace or not.

    ``incoming`` is what a trusted client sent (NO_CONTEXT for any other client). A debug flag or a
    parent's decision is honoured as is: joining a trace is not a new trace, so neither the caps nor the
    reporter's room is asked. A new (or deferred) trace must pass the route's sampler, then the route's cap,
    then the process's cap (a route's token comes back when the process refuses), then ``reserve``, which asks
    the span reporter for room and so is called only for a trace about to be sampled.

    ``ot`` is a trusted client's ``ot`` tracestate entry: its ``rv`` replaces the trace id's random bits, and
    its ``th`` may raise the route's threshold, never lower it (an earlier stage kept only R >= th).

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
    ot = ot or _NO_OT
    if not sampler.should_sample(trace_id, ot.random_value):
        return _RATIO_NOT_SAMPLED
    threshold = sampler.threshold
    if ot.threshold is not None and ot.threshold > threshold:
        threshold = ot.threshold
        if not is_sampled(threshold, randomness(trace_id) if ot.random_value is None else ot.random_value):
            return _RATIO_NOT_SAMPLED
    # Most routes and processes have no cap (0): their buckets are not asked, on the path of every sampled trace.
    route_capped = route_cap.max_per_second > 0
    process_capped = process_cap.max_per_second > 0
    if route_capped and not route_cap.try_acquire():
        return _ROUTE_RATE_LIMITED
    if process_capped and not process_cap.try_acquire():
        route_cap.refund()
        return _RATE_LIMITED
    if not reserve():
        return _QUEUE_FULL
    if (route_capped and route_cap.limiting()) or (process_capped and process_cap.limiting()):
        return _RATIO_SAMPLED
    return _sampled_at.get(threshold) or _ratio_sampled(threshold)


def tracestate_after(incoming_tracestate: str | None, ot: OtState, decision: Decision) -> str | None:
    """The tracestate that goes upstream with the decision and is recorded on the gateway's spans.

    A parent's decision leaves a trusted client's tracestate as it came. A decision of the gateway's own sets the
    ``ot`` entry's ``th`` to the threshold that applied (none when not sampled, or not by a threshold: the spec
    asks a non-probabilistic stage to erase it), keeps its ``rv`` and the other vendors' entries.
    """
    if decision.reason == TRUSTED_PARENT:
        return incoming_tracestate
    threshold = decision.threshold if decision.sampled else None
    if incoming_tracestate is None and ot.random_value is None and not ot.others:
        # A trace new at the edge, the common case: its tracestate is the threshold's `ot` entry and nothing else.
        return None if threshold is None else _ot_entry_alone(threshold)
    return with_ot(incoming_tracestate, OtState(threshold, ot.random_value, ot.others)) or None


@functools.lru_cache(maxsize=_MAX_CACHED_THRESHOLDS)
def _ot_entry_alone(threshold: int) -> str:
    # Made once per threshold in use rather than on every sampled request (an OtState and two formattings).
    return with_ot(None, OtState(threshold))


def _checked_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample rate must be within [0.0, 1.0], got {rate!r}")
    return rate
