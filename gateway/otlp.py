"""OTLP: exchanges as an ``ExportTraceServiceRequest`` (opentelemetry-proto's messages), the resource, the headers.

No I/O. Spans follow OpenTelemetry's HTTP semantic conventions: the SERVER span has ``http.request.method``,
``url.path``, ``server.address`` (the Host the client asked for), ``client.address``/``client.port`` and the status
the client got; the CLIENT span has ``server.address``/``server.port`` of the upstream and the status it answered. An
error is status ERROR with the gateway's message, or, without one, a 5xx on either span and a 4xx on the CLIENT span
(a 4xx is the client's fault, not the server's: the conventions' rule). A route's static tags become string attributes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from gateway import __version__
from gateway.span_payload import PROTOBUF
from gateway.spans import W3C_TRACESTATE, Exchange

HTTP_REQUEST_METHOD = "http.request.method"
URL_PATH = "url.path"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
SCOPE_NAME = "ingress-gateway"
# The downward-API variables a Kubernetes Deployment sets (deploy/), and the resource attributes they become. The
# OTEL_RESOURCE_ATTRIBUTES variable is read too; the gateway's own settings win over it.
K8S_ENVIRONMENT = (
    ("k8s.pod.name", ("POD_NAME", "K8S_POD_NAME")),
    ("k8s.pod.uid", ("POD_UID", "K8S_POD_UID")),
    ("k8s.namespace.name", ("POD_NAMESPACE", "K8S_NAMESPACE_NAME")),
    ("k8s.node.name", ("NODE_NAME", "K8S_NODE_NAME")),
)
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"

_SERVER = Span.SpanKind.SPAN_KIND_SERVER
_CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
_ERROR = Status.StatusCode.STATUS_CODE_ERROR


class HeaderError(ValueError):
    """A ``key=value,...`` list (OTEL_EXPORTER_OTLP_HEADERS' format) with an entry that is not one."""


def parse_key_values(value: str) -> list[tuple[str, str]]:
    """``key=value,key=value`` as OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES write it: keys and values
    trimmed, values percent-decoded (W3C Baggage's encoding). The error never repeats a value: it may be a secret."""
    pairs: list[tuple[str, str]] = []
    for position, entry in enumerate(value.split(","), start=1):
        if not entry.strip():
            continue
        key, equals, raw = entry.partition("=")
        key = key.strip()
        if not equals or not key or any(char in key for char in " \t\r\n:"):
            raise HeaderError(f"entry {position} is not key=value")
        decoded = unquote(raw.strip(), errors="strict")
        if any(char in decoded for char in "\r\n\0"):
            raise HeaderError(f"the value of {key!r} holds a line break or NUL")
        pairs.append((key, decoded))
    return pairs


def resource_attributes(
    service_name: str, environ: Mapping[str, str] | None = None, host_name: str | None = None
) -> dict[str, str]:
    """The resource: OTEL_RESOURCE_ATTRIBUTES, then ``host.name``, the ``k8s.*`` of the downward API, and last
    ``service.name`` and ``service.version``, which are the gateway's to say."""
    env = os.environ if environ is None else environ
    attributes: dict[str, str] = {}
    try:
        attributes.update(parse_key_values(env.get(OTEL_RESOURCE_ATTRIBUTES, "")))
    except (HeaderError, UnicodeDecodeError):
        pass  # the SDKs' rule: a malformed list is ignored as a whole
    attributes["host.name"] = host_name if host_name is not None else socket.gethostname()
    for attribute, variables in K8S_ENVIRONMENT:
        for variable in variables:
            if env.get(variable):
                attributes[attribute] = env[variable]
                break
    attributes["service.name"] = service_name
    attributes["service.version"] = __version__
    return attributes


class OtlpEncoder:
    """Exchanges as one serialized ``ExportTraceServiceRequest``: a SERVER and a CLIENT span each.

    Serialized requests concatenate into one (protobuf merges repeated fields), which is how the reporter joins the
    slices of a batch: each slice is a ``ResourceSpans`` of the same resource.
    """

    __slots__ = ("_resource", "_scope")
    framing = PROTOBUF

    def __init__(self, resource: Mapping[str, str]) -> None:
        self._resource = Resource(attributes=[_string(key, value) for key, value in resource.items()])
        self._scope = InstrumentationScope(name=SCOPE_NAME, version=__version__)

    def encode(self, exchanges: Sequence[Exchange]) -> bytes:
        spans: list[Span] = []
        for exchange in exchanges:
            spans.extend(exchange_spans(exchange))
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=self._resource, scope_spans=[ScopeSpans(scope=self._scope, spans=spans)])
            ]
        )
        return request.SerializeToString()


def exchange_spans(exchange: Exchange) -> tuple[Span, Span]:
    trace_id = exchange.trace_id.to_bytes(16, "big")
    server_id = exchange.server_span_id.to_bytes(8, "big")
    trace_state = ""
    tags: list[KeyValue] = []
    for name, value in exchange.tags:
        if name == W3C_TRACESTATE:
            trace_state = value  # the span's trace_state in OTLP, not an attribute
        else:
            tags.append(_string(name, value))
    request = [_string(HTTP_REQUEST_METHOD, exchange.method), _string(URL_PATH, exchange.path)]
    server = Span(
        trace_id=trace_id,
        span_id=server_id,
        trace_state=trace_state,
        parent_span_id=b"" if exchange.parent_id is None else exchange.parent_id.to_bytes(8, "big"),
        name=exchange.name,
        kind=_SERVER,
        start_time_unix_nano=_nanos(exchange.server_start),
        end_time_unix_nano=_nanos(exchange.server_start) + max(1, _nanos(exchange.server_duration)),
        attributes=[*tags, *request, *_server_attributes(exchange)],
        status=_status(exchange.error, exchange.status_code, client_errors_too=False),
    )
    upstream = exchange.upstream
    client = Span(
        trace_id=trace_id,
        span_id=exchange.client_span_id.to_bytes(8, "big"),
        trace_state=trace_state,
        parent_span_id=server_id,
        name=exchange.name,
        kind=_CLIENT,
        start_time_unix_nano=_nanos(exchange.client_start),
        end_time_unix_nano=_nanos(exchange.client_start) + max(1, _nanos(exchange.client_duration)),
        attributes=[
            *tags,
            *request,
            _string(SERVER_ADDRESS, upstream.host),
            _int(SERVER_PORT, upstream.port),
            *_status_attributes(exchange.upstream_status_code),
        ],
        status=_status(exchange.error, exchange.upstream_status_code, client_errors_too=True),
    )
    return server, client


def _server_attributes(exchange: Exchange) -> list[KeyValue]:
    attributes: list[KeyValue] = []
    if exchange.host:
        address, port = split_authority(exchange.host)
        attributes.append(_string(SERVER_ADDRESS, address))
        if port is not None:
            attributes.append(_int(SERVER_PORT, port))
    if exchange.client_host:
        attributes.append(_string(CLIENT_ADDRESS, exchange.client_host))
    if exchange.client_port:
        attributes.append(_int(CLIENT_PORT, exchange.client_port))
    attributes.extend(_status_attributes(exchange.status_code))
    return attributes


def split_authority(authority: str) -> tuple[str, int | None]:
    """``host[:port]`` (a Host header, an IPv6 literal in brackets) as the conventions' address and port; a port
    that is not a number stays part of the address, as the client sent it."""
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0:
            rest = authority[end + 1 :]
            return authority[1:end], int(rest[1:]) if rest[:1] == ":" and rest[1:].isdigit() else None
        return authority, None
    host, colon, port = authority.rpartition(":")
    if colon and ":" not in host and port.isdigit():
        return host, int(port)
    return authority, None


def _status_attributes(status_code: int | None) -> list[KeyValue]:
    return [] if status_code is None else [_int(HTTP_RESPONSE_STATUS_CODE, status_code)]


def _status(message: str | None, status_code: int | None, *, client_errors_too: bool) -> Status:
    if message:
        return Status(code=_ERROR, message=message)
    if status_code is not None and (status_code >= 500 or (client_errors_too and status_code >= 400)):
        return Status(code=_ERROR, message=f"HTTP {status_code}")
    return Status()


def _nanos(seconds: float) -> int:
    # Whole microseconds, as the clock gives them: a float of epoch seconds times 1e9 has no exact nanoseconds.
    return round(seconds * 1_000_000) * 1000


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _int(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))
