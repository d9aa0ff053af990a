"""Spans and endpoints as zipkin2's Span.Builder and Endpoint.Builder make them, whatever the encoding they came in
(Zipkin JSON or protobuf, OTLP); PayloadError, the one-line refusal every decoder raises.

Names and service names are lowercased, a 32-hex trace id whose high half is zeros becomes 16 hex, an all-zeros or
self-referencing parentId is dropped, non-positive timestamps and durations are absent, `shared` is cleared on CLIENT
spans, annotations are sorted and de-duplicated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway_devtools.collector.model import CLIENT, Annotation, Endpoint, Span

_MAX_PORT = 65535


class PayloadError(ValueError):
    """A body the collector refuses; `str(error)` is the one-line reason sent back with the 400."""


def make_span(
    *,
    trace_id: int,
    span_id: int,
    parent_id: int | None = None,
    name: str | None = None,
    kind: str | None = None,
    timestamp: int | None = None,
    duration: int | None = None,
    local_endpoint: Endpoint | None = None,
    remote_endpoint: Endpoint | None = None,
    annotations: Iterable[Annotation] = (),
    tags: Iterable[tuple[str, str]] = (),
    debug: bool = False,
    shared: bool = False,
) -> Span:
    """A Span normalised as zipkin2.Span.Builder.build() does."""
    return Span(
        trace_id=trace_id,
        id=span_id,
        parent_id=parent_id if parent_id and parent_id != span_id else None,
        name=name.lower() if name else None,
        kind=kind,
        timestamp=timestamp if timestamp and timestamp > 0 else None,
        duration=duration if duration and duration > 0 else None,
        local_endpoint=local_endpoint,
        remote_endpoint=remote_endpoint,
        annotations=tuple(sorted(set(annotations))),
        tags=tuple(sorted(dict(tags).items())),
        debug=debug,
        shared=shared and kind != CLIENT,
    )


def make_endpoint(
    service_name: str | None,
    ipv4: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    ipv6: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    port: int,
) -> Endpoint | None:
    """An Endpoint as zipkin2.Endpoint.Builder makes it; None when nothing is known, as Zipkin drops empty ones."""
    if port > _MAX_PORT:
        raise PayloadError(f"port {port} is above {_MAX_PORT}")
    # Zipkin prefers the ipv4 field for an IPv4-mapped IPv6 address.
    mapped = ipv6.ipv4_mapped if isinstance(ipv6, ipaddress.IPv6Address) else None
    v4 = ipv4 if isinstance(ipv4, ipaddress.IPv4Address) else mapped
    v6 = ipv6 if isinstance(ipv6, ipaddress.IPv6Address) and mapped is None else None
    endpoint = Endpoint(
        service_name=service_name.lower() if service_name else None,
        ipv4=str(v4) if v4 else None,
        ipv6=str(v6) if v6 else None,
        port=port if port > 0 else None,
    )
    return None if endpoint == Endpoint() else endpoint
