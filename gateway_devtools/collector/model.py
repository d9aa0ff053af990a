"""Zipkin v2 span values as the collector stores them, and their JSON form (specs/zipkin2-api.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLIENT = "CLIENT"
SERVER = "SERVER"
PRODUCER = "PRODUCER"
CONSUMER = "CONSUMER"
KINDS = (CLIENT, SERVER, PRODUCER, CONSUMER)

_LOW_64_BITS = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Endpoint:
    service_name: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True, order=True)
class Annotation:
    timestamp: int
    value: str


@dataclass(frozen=True, slots=True)
class Span:
    """One span after Zipkin's normalisation; ids are ints, tags are (key, value) pairs sorted by key.

    Every field is hashable so that a span re-sent by a retrying reporter is recognised as a duplicate.
    """

    trace_id: int
    id: int
    parent_id: int | None = None
    name: str | None = None
    kind: str | None = None
    timestamp: int | None = None
    duration: int | None = None
    local_endpoint: Endpoint | None = None
    remote_endpoint: Endpoint | None = None
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    debug: bool = False
    shared: bool = False

    @property
    def local_service(self) -> str | None:
        return self.local_endpoint.service_name if self.local_endpoint else None

    @property
    def remote_service(self) -> str | None:
        return self.remote_endpoint.service_name if self.remote_endpoint else None


def format_trace_id(trace_id: int) -> str:
    """16 hex characters for a 64-bit id, 32 otherwise: a 128-bit id whose high half is zero is 64-bit in Zipkin."""
    return f"{trace_id:016x}" if trace_id <= _LOW_64_BITS else f"{trace_id:032x}"


def format_span_id(span_id: int) -> str:
    return f"{span_id:016x}"


def span_to_json(span: Span) -> dict[str, Any]:
    """The span as Zipkin's JSON_V2 encoder writes it: absent fields left out, keys in Zipkin's order."""
    out: dict[str, Any] = {"traceId": format_trace_id(span.trace_id)}
    if span.parent_id is not None:
        out["parentId"] = format_span_id(span.parent_id)
    out["id"] = format_span_id(span.id)
    optional: dict[str, Any] = {
        "kind": span.kind,
        "name": span.name,
        "timestamp": span.timestamp,
        "duration": span.duration,
        "localEndpoint": _endpoint_to_json(span.local_endpoint),
        "remoteEndpoint": _endpoint_to_json(span.remote_endpoint),
        "annotations": [{"timestamp": a.timestamp, "value": a.value} for a in span.annotations] or None,
        "tags": dict(span.tags) or None,
        "debug": span.debug or None,
        "shared": span.shared or None,
    }
    out.update((key, value) for key, value in optional.items() if value is not None)
    return out


def _endpoint_to_json(endpoint: Endpoint | None) -> dict[str, Any] | None:
    if endpoint is None:
        return None
    fields = {"serviceName": endpoint.service_name, "ipv4": endpoint.ipv4, "ipv6": endpoint.ipv6, "port": endpoint.port}
    return {key: value for key, value in fields.items() if value is not None}
