"""Parameters of `GET /api/v2/traces` and friends, and which traces they select, as zipkin2.storage.QueryRequest."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway_devtools.collector.model import Span

SERVICE_NAME = "serviceName"
REMOTE_SERVICE_NAME = "remoteServiceName"
SPAN_NAME = "spanName"
ANNOTATION_QUERY = "annotationQuery"
MIN_DURATION = "minDuration"
MAX_DURATION = "maxDuration"
END_TS = "endTs"
LOOKBACK = "lookback"
LIMIT = "limit"
TRACE_IDS = "traceIds"

DEFAULT_LIMIT = 10
# Zipkin's QUERY_LOOKBACK: one day, in milliseconds.
DEFAULT_LOOKBACK_MS = 86_400_000

_INTEGER = re.compile(r"-?[0-9]{1,19}")
_TRACE_ID = re.compile(r"[0-9a-fA-F]{1,32}")


class QueryError(ValueError):
    """A query parameter the collector refuses; `str(error)` is the reason sent back with the 400."""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Times are epoch milliseconds and durations microseconds, as in the API.

    `annotation_query` holds (key, value) terms; a bare word has the value "".
    """

    end_ts: int
    lookback: int
    limit: int = DEFAULT_LIMIT
    service_name: str | None = None
    remote_service_name: str | None = None
    span_name: str | None = None
    annotation_query: tuple[tuple[str, str], ...] = ()
    min_duration: int | None = None
    max_duration: int | None = None

    def in_window(self, trace_timestamp: int | None) -> bool:
        """Whether a trace starting at `trace_timestamp` (epoch µs) lies within [endTs - lookback, endTs]."""
        if trace_timestamp is None:
            return False
        return (self.end_ts - self.lookback) * 1000 <= trace_timestamp <= self.end_ts * 1000

    def matches(self, spans: Iterable[Span]) -> bool:
        """Whether the trace's spans satisfy every filter; with a serviceName, only that service's spans count."""
        span_name, remote_service = self.span_name, self.remote_service_name
        service_seen = self.service_name is None
        duration_ok = self.min_duration is None
        remaining = dict(self.annotation_query)
        for span in spans:
            if self.service_name is not None and span.local_service != self.service_name:
                continue
            service_seen = True
            span_name = None if span.name == span_name else span_name
            remote_service = None if span.remote_service == remote_service else remote_service
            duration_ok = duration_ok or self._duration_matches(span.duration)
            _strike_annotation_terms(remaining, span)
        return service_seen and span_name is None and remote_service is None and duration_ok and not remaining

    def _duration_matches(self, duration: int | None) -> bool:
        if duration is None or self.min_duration is None or duration < self.min_duration:
            return False
        return self.max_duration is None or duration <= self.max_duration


def parse_trace_query(params: Mapping[str, str], now_ms: int) -> TraceQuery:
    end_ts = _positive(params, END_TS) or now_ms
    min_duration, max_duration = _positive(params, MIN_DURATION), _positive(params, MAX_DURATION)
    if max_duration is not None and min_duration is None:
        raise QueryError(f"{MAX_DURATION} is only valid with {MIN_DURATION}")
    if max_duration is not None and min_duration is not None and max_duration < min_duration:
        raise QueryError(f"{MAX_DURATION} is less than {MIN_DURATION}")
    return TraceQuery(
        end_ts=end_ts,
        lookback=_positive(params, LOOKBACK) or DEFAULT_LOOKBACK_MS,
        limit=_positive(params, LIMIT) or DEFAULT_LIMIT,
        service_name=_name(params, SERVICE_NAME),
        remote_service_name=_name(params, REMOTE_SERVICE_NAME),
        span_name=_name(params, SPAN_NAME),
        annotation_query=parse_annotation_query(params.get(ANNOTATION_QUERY, "")),
        min_duration=min_duration,
        max_duration=max_duration,
    )


def parse_annotation_query(text: str) -> tuple[tuple[str, str], ...]:
    """`http.uri=/foo and retried` -> (("http.uri", "/foo"), ("retried", "")), as Zipkin splits on " and "."""
    terms = []
    for term in text.split(" and "):
        key, _, value = term.strip().partition("=")
        if key:
            terms.append((key, value))
    return tuple(terms)


def required_service_name(params: Mapping[str, str]) -> str:
    name = _name(params, SERVICE_NAME)
    if name is None:
        raise QueryError(f"{SERVICE_NAME} is required")
    return name


def parse_trace_id(text: str) -> int:
    """A trace id from a URL: up to 32 hex characters, either case, as a lookup key needs no more rigour."""
    if not _TRACE_ID.fullmatch(text) or int(text, 16) == 0:
        raise QueryError(f"trace id {text[:40]!r} is not 16 or 32 hex characters")
    return int(text, 16)


def parse_trace_ids(params: Mapping[str, str]) -> list[int]:
    """`traceIds` of /api/v2/traceMany: at least two distinct ids, as the spec asks."""
    ids = [parse_trace_id(part.strip()) for part in params.get(TRACE_IDS, "").split(",") if part.strip()]
    if len(set(ids)) < 2 or len(set(ids)) != len(ids):
        raise QueryError(f"{TRACE_IDS} needs at least two distinct trace ids, comma-separated")
    return ids


def _positive(params: Mapping[str, str], key: str) -> int | None:
    text = params.get(key)
    if text is None or text == "":
        return None
    if not _INTEGER.fullmatch(text):
        raise QueryError(f"{key} must be an integer, got {text[:40]!r}")
    number = int(text)
    if number <= 0:
        raise QueryError(f"{key} must be positive, got {number}")
    return number


def _name(params: Mapping[str, str], key: str) -> str | None:
    # Zipkin lowercases names when it stores them, and so the names it is asked for.
    text = params.get(key, "").strip().lower()
    return text or None


def _strike_annotation_terms(remaining: dict[str, str], span: Span) -> None:
    for annotation in span.annotations:
        if remaining.get(annotation.value) == "":
            del remaining[annotation.value]
    for key, value in span.tags:
        if key in remaining and remaining[key] in ("", value):
            del remaining[key]
