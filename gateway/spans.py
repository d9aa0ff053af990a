"""Zipkin v2 spans for one proxied request: py_zipkin's span model and its V2 JSON, the one Python writer of the
gateway's Zipkin spans (the C encoder in gateway/_spanjson.c is held to it)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import orjson
from py_zipkin import Kind
from py_zipkin.encoding import Endpoint, Span
from py_zipkin.encoding._encoders import JSONEndpoint, _V2JSONEncoder

from gateway.context import MAX_64BIT
from gateway.routes import TRACESTATE_TAG, Upstream

HTTP_HOST = "http.host"
HTTP_METHOD = "http.method"
HTTP_PATH = "http.path"
HTTP_STATUS_CODE = "http.status_code"
ERROR = "error"
# The span's W3C tracestate (with the gateway's `ot=th:` sampling threshold), as the OpenTelemetry Collector's
# Zipkin receiver reads it back into the span's trace state.
W3C_TRACESTATE = TRACESTATE_TAG


@dataclass(slots=True)
class Exchange:
    """What the gateway saw of one sampled request; the reporter turns it into spans off the request path.

    Not frozen, unlike the other values here: one is made on every sampled request, and a frozen dataclass's
    __init__ (object.__setattr__ per field) costs four times as much. Nothing changes one once made. The request
    flow makes it with positional arguments, which keyword arguments cost three times: keep the fields in order.
    """

    trace_id: int
    server_span_id: int
    client_span_id: int
    parent_id: int | None  # the trusted incoming span id, None at the root
    debug: bool
    name: str  # "<METHOD> <route or path>"
    method: str
    path: str
    host: str
    status_code: int | None  # what the client got; None when no response was sent
    upstream_status_code: int | None  # what the upstream answered; None when it did not
    error: str | None  # e.g. "upstream timed out"; becomes the `error` tag
    client_host: str | None
    client_port: int | None
    upstream: Upstream
    server_start: float  # epoch seconds
    server_duration: float  # seconds
    client_start: float
    client_duration: float
    # A route's static tags, on both spans, then W3C_TRACESTATE when the trace has one; the HTTP tags win a clash.
    tags: tuple[tuple[str, str], ...] = ()


def local_endpoint(service_name: str, host: str, port: int) -> Endpoint:
    """The gateway's own endpoint, built once: an IP only when ``host`` is a specific IP literal.

    Unlike py_zipkin's ``create_endpoint``, never a DNS lookup. The service name is lowercased, as
    zipkin2's ``Endpoint.Builder`` stores it.
    """
    ipv4, ipv6 = _ip_fields(host)
    return Endpoint(service_name=service_name.lower() or None, ipv4=ipv4, ipv6=ipv6, port=port or None)


def build_spans(exchange: Exchange, local: Endpoint) -> tuple[Span, Span]:
    """The SERVER span for the request the gateway received and the CLIENT span, its child, for the upstream call.

    Tags follow Brave's HTTP conventions: ``error`` carries the gateway's error message when it has one, else
    the status code when it is not 1xx-3xx (Brave's ``HttpResponseParser``), on both spans. The SERVER span has
    the status the client got, the CLIENT span the one the upstream answered (none when it did not answer).
    """
    trace_id = _trace_id_hex(exchange.trace_id)
    server_id = _span_id_hex(exchange.server_span_id)
    server_tags: dict[str, str | None] = dict(_http_tags(exchange, exchange.status_code))
    client_tags: dict[str, str | None] = dict(_http_tags(exchange, exchange.upstream_status_code))
    server = Span(
        trace_id=trace_id,
        name=exchange.name,
        parent_id=None if exchange.parent_id is None else _span_id_hex(exchange.parent_id),
        span_id=server_id,
        kind=Kind.SERVER,
        timestamp=exchange.server_start,
        duration=exchange.server_duration,
        local_endpoint=local,
        remote_endpoint=_client_endpoint(exchange.client_host, exchange.client_port),
        debug=exchange.debug,
        tags=server_tags,
    )
    client = Span(
        trace_id=trace_id,
        name=exchange.name,
        parent_id=server_id,
        span_id=_span_id_hex(exchange.client_span_id),
        kind=Kind.CLIENT,
        timestamp=exchange.client_start,
        duration=exchange.client_duration,
        local_endpoint=local,
        remote_endpoint=_upstream_endpoint(exchange.upstream),
        debug=exchange.debug,
        tags=client_tags,
    )
    return server, client


def encode_batch(spans: Sequence[Span]) -> bytes:
    """A Zipkin v2 JSON list (``ListOfSpans``), as the collector's POST /api/v2/spans takes it.

    The whole batch is one ``orjson.dumps``: py_zipkin's encoder dumps span by span with the standard library,
    and encoding was most of the reporter's cost at a high sampling rate (docs/performance.md).
    """
    return orjson.dumps([_ENCODER.span_json(span) for span in spans])


def _trace_id_hex(trace_id: int) -> str:
    return f"{trace_id:032x}" if trace_id > MAX_64BIT else f"{trace_id:016x}"


def _span_id_hex(span_id: int) -> str:
    return f"{span_id:016x}"


class _ZipkinV2JSONEncoder(_V2JSONEncoder):
    """py_zipkin's V2 JSON mapping as values to dump in a batch, with the two things it gets wrong put right.

    ``span_json`` follows ``_V2JSONEncoder.encode_span`` field by field (a test holds it to that encoder's output
    for every span the gateway builds), adds ``debug``, which the encoder never writes, and writes a duration
    under one microsecond as 1, where the encoder writes 0 or drops it (the spec's ``duration`` has minimum 1).
    """

    def span_json(self, span: Span) -> dict[str, object]:
        encoded: dict[str, object] = {"traceId": span.trace_id, "id": span.span_id}
        if span.debug:
            encoded["debug"] = True
        if span.name:
            encoded["name"] = span.name
        if span.parent_id:
            encoded["parentId"] = span.parent_id
        if span.timestamp:
            encoded["timestamp"] = int(span.timestamp * 1000000)
        if span.duration is not None:
            encoded["duration"] = max(1, int(span.duration * 1000000))
        if span.shared is True:
            encoded["shared"] = True
        if span.kind.value is not None:
            encoded["kind"] = span.kind.value
        if span.local_endpoint:
            encoded["localEndpoint"] = self.endpoint_json(span.local_endpoint)
        if span.remote_endpoint:
            encoded["remoteEndpoint"] = self.endpoint_json(span.remote_endpoint)
        if span.tags:
            encoded["tags"] = {str(key): str(value) for key, value in span.tags.items()}
        if span.annotations:
            encoded["annotations"] = [
                {"timestamp": int(timestamp * 1000000), "value": key}
                for key, timestamp in span.annotations.items()
                if timestamp is not None
            ]
        return encoded

    @lru_cache(maxsize=2048)  # noqa: B019 - one encoder for the process; endpoints repeat (keep-alive clients)
    def endpoint_json(self, endpoint: Endpoint) -> JSONEndpoint:
        return self._create_json_endpoint(endpoint, False)


_ENCODER = _ZipkinV2JSONEncoder()


def _http_tags(exchange: Exchange, status_code: int | None) -> dict[str, str]:
    tags = _request_tags(exchange)
    _add_status_tags(tags, exchange.error, status_code)
    return tags


def _request_tags(exchange: Exchange) -> dict[str, str]:
    tags = dict(exchange.tags) if exchange.tags else {}
    tags[HTTP_METHOD] = exchange.method
    tags[HTTP_PATH] = exchange.path
    if exchange.host:
        tags[HTTP_HOST] = exchange.host
    return tags


def _add_status_tags(tags: dict[str, str], error_message: str | None, status_code: int | None) -> None:
    if status_code is not None:
        tags[HTTP_STATUS_CODE] = str(status_code)
    error = _error(error_message, status_code)
    if error is not None:
        tags[ERROR] = error


def _error(message: str | None, status_code: int | None) -> str | None:
    if message:
        return message
    if status_code is not None and not 100 <= status_code <= 399:
        return str(status_code)
    return None


def endpoint_json(endpoint: Endpoint) -> JSONEndpoint:
    """An endpoint as a Zipkin v2 JSON value, as py_zipkin's encoder writes it."""
    return _ENCODER.endpoint_json(endpoint)


def client_address_json(host: str) -> JSONEndpoint:
    """The address fields of a client's endpoint (``ipv4`` or ``ipv6``; none for a name), without its port."""
    endpoint = _client_endpoint(host, None)
    return {} if endpoint is None else _ENCODER.endpoint_json(endpoint)


def upstream_endpoint_json(upstream: Upstream) -> JSONEndpoint:
    """The CLIENT span's remote endpoint: where the route sends its requests."""
    return _ENCODER.endpoint_json(_upstream_endpoint(upstream))


@lru_cache(maxsize=1024)  # keep-alive clients send many requests from one address and port
def _client_endpoint(host: str | None, port: int | None) -> Endpoint | None:
    ipv4, ipv6 = _ip_fields(host) if host else (None, None)
    if ipv4 is None and ipv6 is None and not port:
        return None
    return Endpoint(service_name=None, ipv4=ipv4, ipv6=ipv6, port=port or None)


@lru_cache(maxsize=64)
def _upstream_endpoint(upstream: Upstream) -> Endpoint:
    ipv4, ipv6 = _ip_fields(upstream.host)
    # A service name is a label in the service graph; an IP literal is not one.
    service_name = upstream.host if ipv4 is None and ipv6 is None else None
    return Endpoint(service_name=service_name, ipv4=ipv4, ipv6=ipv6, port=upstream.port)


@lru_cache(maxsize=1024)
def _ip_fields(host: str) -> tuple[str | None, str | None]:
    """(ipv4, ipv6) for an IP literal, (None, None) for a name or an unspecified address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # without an IPv6 zone ('fe80::1%eth0')
    except ValueError:
        return None, None
    if address.is_unspecified:
        return None, None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address), None
    # "Prefer using the ipv4 field for mapped addresses" (zipkin2-api.yaml, Endpoint.ipv6).
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped), None
    return None, str(address)
