"""OTLP/HTTP traces (protobuf or JSON) as the collector's Zipkin-model spans, so that both land in one store and page.

The translation is the OpenTelemetry Collector's Zipkin exporter's, in short: the resource's ``service.name`` is the
local endpoint's service; the peer's ``server.address``/``server.port`` (CLIENT) or ``client.address``/``client.port``
(SERVER) the remote endpoint; attributes become tags; status ERROR the ``error`` tag (its message, else "true");
the W3C trace state the ``w3c.tracestate`` tag. OTLP/JSON writes ids in hex, which protobuf's JSON mapping would read
as base64: they are turned into base64 before parsing, as the OTLP spec's note on JSON says a receiver must.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from gateway_devtools.collector.codec import JSON, PROTOBUF, PROTOBUF_ALIAS
from gateway_devtools.collector.model import CLIENT, CONSUMER, PRODUCER, SERVER, Endpoint, Span
from gateway_devtools.collector.normalise import PayloadError, make_endpoint, make_span

TRACES_PATH = "/v1/traces"
_KINDS = {
    OtlpSpan.SpanKind.SPAN_KIND_SERVER: SERVER,
    OtlpSpan.SpanKind.SPAN_KIND_CLIENT: CLIENT,
    OtlpSpan.SpanKind.SPAN_KIND_PRODUCER: PRODUCER,
    OtlpSpan.SpanKind.SPAN_KIND_CONSUMER: CONSUMER,
}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def decode_otlp(data: bytes, content_type: str | None) -> list[Span]:
    """The spans of an ``ExportTraceServiceRequest`` (already decompressed), protobuf or JSON."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    request = ExportTraceServiceRequest()
    if media_type in (PROTOBUF, PROTOBUF_ALIAS):
        try:
            request.ParseFromString(data)
        except DecodeError as exc:
            raise PayloadError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    elif media_type == JSON:
        try:
            json_format.ParseDict(_ids_as_base64(json.loads(data)), request)
        except (ValueError, json_format.ParseError) as exc:
            raise PayloadError(f"not OTLP/JSON: {str(exc).splitlines()[0][:200]}") from None
    else:
        raise PayloadError(f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}")
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name")
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, service) for span in scope_spans.spans)
    return spans


def _span(span: OtlpSpan, service: str | None) -> Span:
    if len(span.trace_id) != 16 or len(span.span_id) != 8 or len(span.parent_span_id) not in (0, 8):
        raise PayloadError("an OTLP span needs a 16-byte trace id, an 8-byte span id and an 8-byte or empty parent")
    trace_id, span_id = int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big")
    if not trace_id or not span_id:
        raise PayloadError("an OTLP span has an all-zero trace or span id")
    kind = _KINDS.get(span.kind)
    tags = _attributes(span.attributes)
    if span.status.code == Status.StatusCode.STATUS_CODE_ERROR:
        tags["error"] = span.status.message or "true"
    if span.trace_state:
        tags["w3c.tracestate"] = span.trace_state
    start = span.start_time_unix_nano // 1000
    return make_span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=int.from_bytes(span.parent_span_id, "big") or None,
        name=span.name,
        kind=kind,
        timestamp=start,
        duration=max(1, span.end_time_unix_nano // 1000 - start),
        local_endpoint=make_endpoint(service, None, None, 0),
        remote_endpoint=_remote(tags, kind),
        tags=tags.items(),
    )


def _remote(tags: dict[str, str], kind: str | None) -> Endpoint | None:
    prefix = "server" if kind in (CLIENT, PRODUCER) else "client"
    address, port = tags.get(f"{prefix}.address"), tags.get(f"{prefix}.port", "0")
    if not address:
        return None
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    number = int(port) if port.isdigit() else 0
    if ip is None:
        return make_endpoint(address, None, None, number)
    return make_endpoint(None, ip if ip.version == 4 else None, ip if ip.version == 6 else None, number)


def _attributes(pairs: Any) -> dict[str, str]:
    return {pair.key: _text(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    return json_format.MessageToJson(value, indent=None)


def _ids_as_base64(document: Any) -> Any:
    """OTLP/JSON's hex ids in the places protobuf's JSON mapping wants base64."""
    if isinstance(document, dict):
        return {
            key: _base64_of_hex(value) if key in _ID_FIELDS and isinstance(value, str) else _ids_as_base64(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [_ids_as_base64(item) for item in document]
    return document


def _base64_of_hex(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise PayloadError(f"an OTLP/JSON id is not hex: {value[:40]!r}") from None
