"""Decode and validate `POST /api/v2/spans` bodies: JSON or protobuf ListOfSpans, optionally gzipped.

The spans are normalised as Zipkin does it (normalise.py). Where Zipkin pads short ids, this collector answers 400:
specs/zipkin2-api.yaml asks for 16 or 32 lower-hex characters, and a development collector that silently repairs
ids would hide the reporter's bug.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from py_zipkin.encoding.protobuf import zipkin_pb2

from gateway_devtools.collector.model import KINDS, Annotation, Endpoint, Span
from gateway_devtools.collector.normalise import PayloadError, make_endpoint, make_span

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
PROTOBUF_ALIAS = "application/protobuf"
GZIP = "gzip"
IDENTITY = "identity"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

_TRACE_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_MAX_INT64 = (1 << 63) - 1
_PROTO_KINDS = {zipkin_pb2.Span.Kind.Value(kind): kind for kind in KINDS}
_SHOWN_CHARS = 40
_JSON_NAMES: dict[type[Any], str] = {str: "a string", int: "an integer", bool: "a boolean"}
_JSON_TYPES: dict[type[Any], str] = {
    dict: "object",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
}


def decode_spans(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Span]:
    """Spans in `body`; an absent content type means JSON, as in Zipkin's HTTP collector."""
    media_type = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media_type not in (JSON, PROTOBUF, PROTOBUF_ALIAS):
        raise PayloadError(f"unsupported content type {_show(content_type)}: use {JSON} or {PROTOBUF}")
    data = decompress(body, content_encoding, max_bytes)
    if not data:
        raise PayloadError("empty body: expected a list of spans")
    return decode_json(data) if media_type == JSON else decode_protobuf(data)


def decompress(body: bytes, content_encoding: str | None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    coding = (content_encoding or IDENTITY).strip().lower()
    if coding == IDENTITY:
        if len(body) > max_bytes:
            raise PayloadError(f"body exceeds {max_bytes} bytes")
        return body
    if coding != GZIP:
        raise PayloadError(f"unsupported content encoding {_show(content_encoding)}: use gzip or none")
    # wbits=16+MAX_WBITS accepts the gzip container only; max_length stops a small bomb from filling memory.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise PayloadError(f"bad gzip body: {exc}") from None
    if len(data) > max_bytes:
        raise PayloadError(f"body exceeds {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise PayloadError("bad gzip body: the stream is truncated")
    if inflater.unused_data:
        raise PayloadError("bad gzip body: data follows the end of the gzip stream")
    return data


def decode_json(data: bytes) -> list[Span]:
    try:
        document = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"body is not JSON: {_first_line(exc)}") from None
    if not isinstance(document, list):
        raise PayloadError(f"body is a JSON {_json_type(document)}, expected a list of spans")
    return [_indexed(index, _span_from_json, item) for index, item in enumerate(document)]


def decode_protobuf(data: bytes) -> list[Span]:
    try:
        message = zipkin_pb2.ListOfSpans.FromString(data)
    except DecodeError as exc:
        raise PayloadError(f"body is not a protobuf ListOfSpans: {_first_line(exc)}") from None
    # Anything but field 1 at the top level means the body is some other message (or not protobuf at all).
    if len(UnknownFieldSet(message)):
        raise PayloadError("body is not a protobuf ListOfSpans: it has fields other than spans (1)")
    return [_indexed(index, _span_from_proto, span) for index, span in enumerate(message.spans)]


def _indexed(index: int, convert: Callable[[Any], Span], item: Any) -> Span:
    try:
        span = convert(item)
    except PayloadError as exc:
        raise PayloadError(f"span {index}: {exc}") from None
    return span


# --- JSON ----------------------------------------------------------------------------------------------------------


def _span_from_json(item: object) -> Span:
    if not isinstance(item, dict):
        raise PayloadError(f"expected a span object, got {_json_type(item)}")
    trace_id = _hex_id(item.get("traceId"), "traceId", _TRACE_ID, "16 or 32")
    span_id = _hex_id(item.get("id"), "id", _SPAN_ID, "16")
    raw_parent = item.get("parentId")
    parent_id = None if raw_parent is None else _hex_id(raw_parent, "parentId", _SPAN_ID, "16", zero_ok=True)
    kind = _optional(item, "kind", str)
    if kind is not None and kind not in KINDS:
        raise PayloadError(f"kind {_show(kind)} is not one of {', '.join(KINDS)}")
    return make_span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=_optional(item, "name", str),
        kind=kind,
        timestamp=_optional_int(item, "timestamp"),
        duration=_optional_int(item, "duration"),
        local_endpoint=_endpoint_from_json(item.get("localEndpoint"), "localEndpoint"),
        remote_endpoint=_endpoint_from_json(item.get("remoteEndpoint"), "remoteEndpoint"),
        annotations=_annotations_from_json(item.get("annotations")),
        tags=_tags_from_json(item.get("tags")),
        debug=bool(_optional(item, "debug", bool)),
        shared=bool(_optional(item, "shared", bool)),
    )


def _hex_id(value: object, field: str, pattern: re.Pattern[str], length: str, *, zero_ok: bool = False) -> int:
    if value is None:
        raise PayloadError(f"{field} is missing")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise PayloadError(f"{field} {_show(value)} is not {length} lower-hex characters")
    number = int(value, 16)
    if number == 0 and not zero_ok:
        raise PayloadError(f"{field} is all zeros")
    return number


def _optional(item: Mapping[str, Any], field: str, kind: type[Any]) -> Any:
    value = item.get(field)
    # bool is an int in Python, never in JSON.
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise PayloadError(f"{field} must be {_JSON_NAMES[kind]}, got {_json_type(value)}")
    return value


def _optional_int(item: Mapping[str, Any], field: str) -> int | None:
    value: int | None = _optional(item, field, int)
    if value is not None and value > _MAX_INT64:
        raise PayloadError(f"{field} {value} does not fit in 64 bits")
    return value


def _endpoint_from_json(value: object, field: str) -> Endpoint | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(f"{field} must be an object, got {_json_type(value)}")
    try:
        port = _optional(value, "port", int)
        return make_endpoint(
            _optional(value, "serviceName", str),
            _ip(_optional(value, "ipv4", str)),
            _ip(_optional(value, "ipv6", str)),
            port or 0,
        )
    except PayloadError as exc:
        raise PayloadError(f"{field}.{exc}") from None


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Zipkin drops an address it cannot parse rather than the span.
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


def _annotations_from_json(value: object) -> list[Annotation]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"annotations must be a list, got {_json_type(value)}")
    annotations = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or entry.get("timestamp") is None or entry.get("value") is None:
            raise PayloadError(f"annotations[{index}] needs a timestamp and a value")
        try:
            annotations.append(Annotation(_optional_int(entry, "timestamp") or 0, _optional(entry, "value", str)))
        except PayloadError as exc:
            raise PayloadError(f"annotations[{index}].{exc}") from None
    return annotations


def _tags_from_json(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise PayloadError(f"tags must be an object, got {_json_type(value)}")
    tags = []
    for key, tag in value.items():
        # Zipkin's JSON reader reads a number or boolean tag as its text.
        if isinstance(tag, bool | int | float):
            tag = json.dumps(tag)
        if not isinstance(tag, str):
            raise PayloadError(f"tags.{key} must be a string, got {_json_type(tag)}")
        tags.append((key, tag))
    return tags


# --- protobuf ------------------------------------------------------------------------------------------------------


def _span_from_proto(span: zipkin_pb2.Span) -> Span:
    kind = _PROTO_KINDS.get(span.kind) if span.kind else None
    if span.kind and kind is None:
        raise PayloadError(f"kind {span.kind} is not a zipkin.proto3.Span.Kind")
    return make_span(
        trace_id=_bytes_id(span.trace_id, "trace_id", (8, 16)),
        span_id=_bytes_id(span.id, "id", (8,)),
        parent_id=_bytes_id(span.parent_id, "parent_id", (8,), zero_ok=True) if span.parent_id else None,
        name=span.name,
        kind=kind,
        timestamp=span.timestamp,
        duration=span.duration,
        local_endpoint=_endpoint_from_proto(span.local_endpoint) if span.HasField("local_endpoint") else None,
        remote_endpoint=_endpoint_from_proto(span.remote_endpoint) if span.HasField("remote_endpoint") else None,
        annotations=[Annotation(a.timestamp, a.value) for a in span.annotations],
        tags=span.tags.items(),
        debug=span.debug,
        shared=span.shared,
    )


def _bytes_id(value: bytes, field: str, lengths: tuple[int, ...], *, zero_ok: bool = False) -> int:
    if not value:
        raise PayloadError(f"{field} is missing")
    if len(value) not in lengths:
        allowed = " or ".join(str(n) for n in lengths)
        raise PayloadError(f"{field} is {len(value)} bytes, expected {allowed}")
    number = int.from_bytes(value, "big")
    if number == 0 and not zero_ok:
        raise PayloadError(f"{field} is all zeros")
    return number


def _endpoint_from_proto(endpoint: zipkin_pb2.Endpoint) -> Endpoint | None:
    ipv4 = ipaddress.IPv4Address(endpoint.ipv4) if len(endpoint.ipv4) == 4 else None
    ipv6 = ipaddress.IPv6Address(endpoint.ipv6) if len(endpoint.ipv6) == 16 else None
    return make_endpoint(endpoint.service_name, ipv4, ipv6, endpoint.port)


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__
