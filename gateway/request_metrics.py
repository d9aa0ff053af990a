"""Each request's latency: `gateway_http_request_duration_seconds` by route, method, status class, gRPC status and
decision, with trace ids as exemplars, and `gateway_request_duration_seconds` by decision alone, from one observation.

The labels are bounded: route names come from the route table, methods outside the standard ones count as
"other", statuses as their class, gRPC statuses by name (empty for a request that is not a gRPC call). A
combination's series appears with its first request; making every combination up front would show a hundred empty
series per route.

With one worker (the default, and what deploy/ runs), `TalliedRequestLatency` counts each observation in plain lists
and writes both histograms when /metrics is collected, as a collector of the gateway's registry: an observation is a
dict lookup, a bisect and two additions. prometheus-client's `Histogram.observe` walks the buckets in Python and takes
a lock per update, and the two histograms and their exemplars cost about 5 % of a traced request's instructions
(docs/performance.md). With several workers, prometheus-client's multiprocess mode sums files that only its own
metric objects write: `PrometheusRequestLatency` observes those. It records no exemplars, which that mode does not
store (`MultiProcessValue.set_exemplar` is a no-op).

A bucket shows only its latest exemplar, so each takes a new one at most once per EXEMPLAR_INTERVAL.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
OTHER_METHOD = "other"
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
EXEMPLAR_LABEL = "trace_id"
EXEMPLAR_INTERVAL = 1.0

REQUEST_DURATION = "gateway_request_duration_seconds"
REQUEST_DURATION_HELP = "Time from request start to the end of the response, in seconds."
REQUEST_DURATION_LABELS = ("decision",)
HTTP_REQUEST_DURATION = "gateway_http_request_duration_seconds"
HTTP_REQUEST_DURATION_HELP = (
    "Time from request start to the end of the response, by route, method, status class, gRPC status (empty for "
    "other requests) and decision; sampled requests' buckets carry their trace id as an exemplar."
)
HTTP_REQUEST_DURATION_LABELS = ("route", "method", "status_class", "grpc_status", "decision")
DECISIONS = {True: "sampled", False: "not_sampled"}

_METHOD_LABELS = {method: method for method in METHODS}
# route, method label, status class index, gRPC status, sampled
_Key = tuple[str, str, int, str, bool]


class RequestLatency(Protocol):
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
        """One finished request: its route's name, method, status (None when no response was sent), decision,
        duration in seconds and trace id; ``grpc_status`` names a gRPC call's status."""
        ...


def request_key(route: str, method: str, status: int | None, sampled: bool, grpc_status: str) -> _Key:
    method = _METHOD_LABELS.get(method, OTHER_METHOD)
    status_class = status // 100 if status is not None and 100 <= status <= 599 else 0
    return (route, method, status_class, grpc_status, sampled)


def key_labels(key: _Key) -> tuple[str, str, str, str, str]:
    """The labels of `gateway_http_request_duration_seconds` for a key."""
    route, method, status_class, grpc_status, sampled = key
    return (route, method, STATUS_CLASSES[status_class], grpc_status, DECISIONS[sampled])


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class LabelledHistogram(Protocol):
    def labels(self, *values: str) -> Observer: ...


class PrometheusRequestLatency:
    """Both histograms as prometheus-client metric objects: what its multiprocess mode can sum across workers."""

    def __init__(self, by_decision: LabelledHistogram, by_request: LabelledHistogram) -> None:
        self._by_decision = {sampled: by_decision.labels(label) for sampled, label in DECISIONS.items()}
        self._by_request = by_request
        # A child per combination, kept: a request pays one dict lookup rather than `labels()` (validates, locks).
        self._children: dict[_Key, Observer] = {}

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
        key = request_key(route, method, status, sampled, grpc_status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._by_request.labels(*key_labels(key))
        child.observe(duration)
        self._by_decision[sampled].observe(duration)


class _Tally:
    """One label combination's observations: a count per bucket (not cumulative), their sum, and each bucket's
    latest exemplar (trace id, value, wall-clock time) with when it may next take one."""

    __slots__ = ("counts", "total", "exemplars", "exemplar_due")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0
        self.exemplars: list[tuple[int, float, float] | None] = [None] * buckets
        self.exemplar_due = [0.0] * buckets


class TalliedRequestLatency:
    """Both histograms counted in plain lists, written by ``collect()``: register it on the registry (one process).

    The event loop counts while the admin listener's thread collects: each read copies what it reads in one C call
    (a dict's items, a list), which the GIL keeps whole, so a scrape never sees a half-made combination.
    """

    def __init__(
        self,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        *,
        exemplars: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._bounds = tuple(buckets)
        self._le = [*(floatToGoString(bound) for bound in self._bounds), "+Inf"]  # type: ignore[no-untyped-call]
        self._exemplars = exemplars
        self._clock = clock
        self._wall_clock = wall_clock
        self._tallies: dict[_Key, _Tally] = {}

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
        key = request_key(route, method, status, sampled, grpc_status)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(len(self._le))
        # The bucket prometheus-client counts it in: the first upper bound at or above it (its `<=`).
        bucket = bisect_left(self._bounds, duration)
        tally.counts[bucket] += 1
        tally.total += duration
        if sampled and self._exemplars:
            now = self._clock()
            if now >= tally.exemplar_due[bucket]:
                tally.exemplar_due[bucket] = now + EXEMPLAR_INTERVAL
                tally.exemplars[bucket] = (trace_id, duration, self._wall_clock())

    def collect(self) -> Iterator[Metric]:
        by_request = HistogramMetricFamily(
            HTTP_REQUEST_DURATION, HTTP_REQUEST_DURATION_HELP, labels=HTTP_REQUEST_DURATION_LABELS
        )
        by_decision = {sampled: ([0] * len(self._le), [0.0]) for sampled in DECISIONS}
        for key, tally in list(self._tallies.items()):
            counts, total, exemplars = tally.counts[:], tally.total, tally.exemplars[:]
            by_request.add_metric(key_labels(key), self._buckets(counts, exemplars), total)
            decision_counts, decision_total = by_decision[key[-1]]
            for bucket, count in enumerate(counts):
                decision_counts[bucket] += count
            decision_total[0] += total
        yield by_request
        family = HistogramMetricFamily(REQUEST_DURATION, REQUEST_DURATION_HELP, labels=REQUEST_DURATION_LABELS)
        for sampled, (decision_counts, decision_total) in by_decision.items():
            family.add_metric([DECISIONS[sampled]], self._buckets(decision_counts, None), decision_total[0])
        yield family

    def _buckets(
        self, counts: list[int], exemplars: list[tuple[int, float, float] | None] | None
    ) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
        buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        cumulative = 0
        for bucket, count in enumerate(counts):
            cumulative += count
            exemplar = exemplars[bucket] if exemplars is not None else None
            if exemplar is None:
                buckets.append((self._le[bucket], float(cumulative)))
            else:
                trace_id, value, at = exemplar
                labels = {EXEMPLAR_LABEL: format_trace_id(trace_id)}
                buckets.append((self._le[bucket], float(cumulative), Exemplar(labels, value, at)))
        return buckets


def format_trace_id(trace_id: int) -> str:
    """As on the wire and in the access log: 32 hex digits, or 16 for a 64-bit id."""
    return f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}"
