"""Each request's latency by route, method, status class, gRPC status and decision, with its trace id as an exemplar.

The labels are bounded: route names come from the route table, methods outside the standard ones count as
"other", statuses as their class, gRPC statuses by name (empty for a request that is not a gRPC call). A child is
made on a combination's first request and kept in a dict, so a request pays one dict lookup rather than
prometheus-client's `labels()` (which validates and locks); making every combination up front would show a hundred
empty series per route.

Exemplars exist only in the OpenMetrics exposition, and prometheus-client's multiprocess mode does not store them
(`MultiProcessValue.set_exemplar` is a no-op): with several workers none is recorded, so none is built. A bucket
shows only its latest exemplar, so a bucket takes at most one per EXEMPLAR_INTERVAL: prometheus-client validates and
builds each one (its labels, a timestamp), which made a sampled request's observation cost three times an
unsampled one's, for exemplars a scrape every few seconds would never see.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.metrics import LATENCY_BUCKETS

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
OTHER_METHOD = "other"
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
EXEMPLAR_LABEL = "trace_id"
EXEMPLAR_INTERVAL = 1.0

_METHOD_LABELS = {method: method for method in METHODS}


class Observer(Protocol):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None: ...


class LabelledHistogram(Protocol):
    def labels(self, *values: str) -> Observer: ...


class RequestMetrics:
    """``buckets`` are the histogram's upper bounds (+Inf implied), so that an exemplar is taken once per bucket."""

    def __init__(
        self,
        histogram: LabelledHistogram,
        exemplars: bool,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._histogram = histogram
        self._exemplars = exemplars
        self._bounds = tuple(buckets)
        self._clock = clock
        # Per label combination: its child, and when each of its buckets may next take an exemplar.
        self._children: dict[tuple[str, str, int, str, bool], tuple[Observer, list[float]]] = {}

    def observe(
        self,
        route: str,
        method: str,
        status: int | None,
        sampled: bool,
        duration: float,
        trace_id: int,
        grpc_status: str = "",
    ) -> None:
        method = _METHOD_LABELS.get(method, OTHER_METHOD)
        status_class = status // 100 if status is not None and 100 <= status <= 599 else 0
        key = (route, method, status_class, grpc_status, sampled)
        entry = self._children.get(key)
        if entry is None:
            child = self._histogram.labels(
                route, method, STATUS_CLASSES[status_class], grpc_status, "sampled" if sampled else "not_sampled"
            )
            entry = self._children[key] = (child, [0.0] * (len(self._bounds) + 1))
        child, exemplar_due = entry
        if sampled and self._exemplars:
            # The bucket prometheus-client counts it in: the first upper bound at or above it.
            bucket = bisect_left(self._bounds, duration)
            now = self._clock()
            if now >= exemplar_due[bucket]:
                exemplar_due[bucket] = now + EXEMPLAR_INTERVAL
                child.observe(duration, {EXEMPLAR_LABEL: format_trace_id(trace_id)})
                return
        child.observe(duration)


def format_trace_id(trace_id: int) -> str:
    """As on the wire and in the access log: 32 hex digits, or 16 for a 64-bit id."""
    return f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}"
