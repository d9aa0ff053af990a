"""Each request's latency by route, method, status class, gRPC status and decision, with its trace id as an exemplar.

The labels are bounded: route names come from the route table, methods outside the standard ones count as
"other", statuses as their class, gRPC statuses by name (empty for a request that is not a gRPC call). A child is
made on a combination's first request and kept in a dict, so a request pays one dict lookup rather than
prometheus-client's `labels()` (which validates and locks); making every combination up front would show a hundred
empty series per route.

Exemplars exist only in the OpenMetrics exposition, and prometheus-client's multiprocess mode does not store them
(`MultiProcessValue.set_exemplar` is a no-op): with several workers none is recorded, so none is built.
"""

from __future__ import annotations

from typing import Protocol

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
OTHER_METHOD = "other"
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
EXEMPLAR_LABEL = "trace_id"

_METHOD_LABELS = {method: method for method in METHODS}


class Observer(Protocol):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None: ...


class LabelledHistogram(Protocol):
    def labels(self, *values: str) -> Observer: ...


class RequestMetrics:
    def __init__(self, histogram: LabelledHistogram, exemplars: bool) -> None:
        self._histogram = histogram
        self._exemplars = exemplars
        self._children: dict[tuple[str, str, int, str, bool], Observer] = {}

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
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._histogram.labels(
                route, method, STATUS_CLASSES[status_class], grpc_status, "sampled" if sampled else "not_sampled"
            )
        if sampled and self._exemplars:
            child.observe(duration, {EXEMPLAR_LABEL: format_trace_id(trace_id)})
        else:
            child.observe(duration)


def format_trace_id(trace_id: int) -> str:
    """As on the wire and in the access log: 32 hex digits, or 16 for a 64-bit id."""
    return f"{trace_id:032x}" if trace_id >> 64 else f"{trace_id:016x}"
