"""In-memory span storage with bounded retention, indexed by trace id and by service."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway_devtools.collector.model import Span
from gateway_devtools.collector.query import TraceQuery

DEFAULT_MAX_SPANS = 100_000
DEFAULT_MAX_AGE = 3600.0

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class StoreStats:
    spans: int
    traces: int
    received: int
    duplicates: int
    evicted: int


class SpanStore:
    """Spans grouped by trace; the least recently updated trace goes first when a limit is passed.

    A trace is kept `max_age` seconds after its last span arrived, and whole traces are evicted until at most
    `max_spans` spans remain; only a single trace bigger than `max_spans` loses its own oldest spans. A span equal
    to one already stored (a reporter retrying a batch the collector did receive) is counted, not stored twice.
    The lock makes every method atomic, for a store shared between uvicorn's loop and a test's thread.
    """

    def __init__(
        self,
        max_spans: int = DEFAULT_MAX_SPANS,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, got {max_spans!r}")
        if max_age <= 0:
            raise ValueError(f"max_age must be positive, got {max_age!r}")
        self.max_spans = max_spans
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._index = _ServiceIndex()
        self._span_count = 0
        self._received = self._duplicates = self._evicted = 0

    def accept(self, spans: Iterable[Span]) -> int:
        """Store `spans`; returns how many were new."""
        with self._lock:
            now = self._clock()
            added = 0
            for span in spans:
                added += self._add(span, now)
            self._expire(now)
            self._enforce_max_spans()
            return added

    def trace(self, trace_id: int) -> list[Span] | None:
        with self._lock:
            self._expire(self._clock())
            trace = self._traces.get(trace_id)
            return trace.sorted_spans() if trace else None

    def traces(self, query: TraceQuery) -> list[list[Span]]:
        """Traces matching `query`, newest first by their root span's timestamp."""
        with self._lock:
            self._expire(self._clock())
            if query.service_name is None:
                candidates: Iterable[int] = self._traces
            else:
                candidates = self._index.trace_ids(query.service_name)
            in_window = [self._traces[trace_id] for trace_id in candidates]
            in_window = [trace for trace in in_window if query.in_window(trace.timestamp)]
            in_window.sort(key=lambda trace: trace.timestamp or 0, reverse=True)
            found: list[list[Span]] = []
            for trace in in_window:
                if len(found) == query.limit:
                    break
                if query.matches(trace.spans):
                    found.append(trace.sorted_spans())
            return found

    def service_names(self) -> list[str]:
        with self._lock:
            self._expire(self._clock())
            return self._index.services()

    def span_names(self, service_name: str) -> list[str]:
        with self._lock:
            self._expire(self._clock())
            return self._index.span_names(service_name)

    def remote_service_names(self, service_name: str) -> list[str]:
        with self._lock:
            self._expire(self._clock())
            return self._index.remote_services(service_name)

    def clear(self) -> None:
        """Forget every span and zero the counters."""
        with self._lock:
            self._traces.clear()
            self._index = _ServiceIndex()
            self._span_count = self._received = self._duplicates = self._evicted = 0

    def stats(self) -> StoreStats:
        with self._lock:
            self._expire(self._clock())
            return StoreStats(self._span_count, len(self._traces), self._received, self._duplicates, self._evicted)

    def _add(self, span: Span, now: float) -> int:
        self._received += 1
        trace = self._traces.get(span.trace_id)
        if trace is None:
            trace = self._traces[span.trace_id] = _Trace()
        if span in trace.spans:
            self._duplicates += 1
            return 0
        trace.add(span)
        trace.updated = now
        self._traces.move_to_end(span.trace_id)
        self._index.add(span)
        self._span_count += 1
        return 1

    def _expire(self, now: float) -> None:
        while self._traces:
            trace_id, oldest = next(iter(self._traces.items()))
            if oldest.updated >= now - self.max_age:
                return
            self._evict_trace(trace_id)

    def _enforce_max_spans(self) -> None:
        while self._span_count > self.max_spans and len(self._traces) > 1:
            self._evict_trace(next(iter(self._traces)))
        if self._span_count > self.max_spans:
            trace = next(iter(self._traces.values()))
            for span in trace.pop_oldest(self._span_count - self.max_spans):
                self._forget(span)

    def _evict_trace(self, trace_id: int) -> None:
        for span in self._traces.pop(trace_id).spans:
            self._forget(span)

    def _forget(self, span: Span) -> None:
        self._index.remove(span)
        self._span_count -= 1
        self._evicted += 1


@dataclass(slots=True)
class _Trace:
    spans: dict[Span, None] = field(default_factory=dict)
    updated: float = 0.0
    root_timestamp: int | None = None
    first_timestamp: int | None = None

    @property
    def timestamp(self) -> int | None:
        """The root span's timestamp, else the earliest one, as zipkin2.storage.QueryRequest.test() takes it."""
        return self.root_timestamp if self.root_timestamp is not None else self.first_timestamp

    def add(self, span: Span) -> None:
        self.spans[span] = None
        if span.timestamp is None:
            return
        self.first_timestamp = _earliest(self.first_timestamp, span.timestamp)
        if span.parent_id is None:
            self.root_timestamp = _earliest(self.root_timestamp, span.timestamp)

    def pop_oldest(self, count: int) -> list[Span]:
        spans = list(self.spans)
        self.spans.clear()
        self.root_timestamp = self.first_timestamp = None
        for span in spans[count:]:
            self.add(span)
        return spans[:count]

    def sorted_spans(self) -> list[Span]:
        # Arrival order breaks ties, so a trace reads back the same way every time.
        return sorted(self.spans, key=lambda span: span.timestamp or 0)


class _ServiceIndex:
    """Per local service: its traces, span names and remote services, each counted so eviction can undo it."""

    def __init__(self) -> None:
        self._traces: dict[str, Counter[int]] = {}
        self._span_names: dict[str, Counter[str]] = {}
        self._remote_services: dict[str, Counter[str]] = {}

    def add(self, span: Span) -> None:
        self._update(span, 1)

    def remove(self, span: Span) -> None:
        self._update(span, -1)

    def services(self) -> list[str]:
        return sorted(service for service in self._traces if service)

    def trace_ids(self, service: str) -> list[int]:
        return list(self._traces.get(service, ()))

    def span_names(self, service: str) -> list[str]:
        return sorted(self._span_names.get(service, ()))

    def remote_services(self, service: str) -> list[str]:
        return sorted(self._remote_services.get(service, ()))

    def _update(self, span: Span, delta: int) -> None:
        # Spans without a local service are indexed under "", which no query names.
        service = span.local_service or ""
        _count(self._traces, service, span.trace_id, delta)
        if span.name:
            _count(self._span_names, service, span.name, delta)
        if span.remote_service:
            _count(self._remote_services, service, span.remote_service, delta)


def _count(index: dict[str, Counter[_K]], service: str, key: _K, delta: int) -> None:
    counts = index.setdefault(service, Counter())
    counts[key] += delta
    if counts[key] <= 0:
        del counts[key]
    if not counts:
        del index[service]


def _earliest(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)
