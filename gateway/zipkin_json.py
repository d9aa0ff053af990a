"""Zipkin v2 JSON (``ListOfSpans``): the one writer of Zipkin spans, for the gateway's exchanges and for py_zipkin's
``Span`` (the demo mesh's services).

``span_value`` is the mapping of one span's fields to its JSON value; every span written goes through it. The
reporter's path, ``ZipkinJsonEncoder.encode``, turns each exchange into its two spans' values and dumps a slice of
them with one ``orjson.dumps``: dicts plus orjson were the fastest Python writer measured, and a C encoder that wrote
the bytes directly was no faster once the whole gateway was measured (docs/performance.md, "The span encoder").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from py_zipkin.encoding import Endpoint, Span

from gateway.context import MAX_64BIT
from gateway.routes import Upstream
from gateway.span_payload import JSON_LIST
from gateway.spans import (
    ERROR,
    HTTP_HOST,
    HTTP_METHOD,
    HTTP_PATH,
    HTTP_STATUS_CODE,
    Exchange,
    client_endpoint,
    upstream_endpoint,
)

JsonValue = dict[str, object]

# Client addresses come from the internet: the cache is emptied when it reaches this size, and refills from the
# addresses in use. Upstreams change only with the route table.
MAX_CACHED_CLIENTS = 4096
MAX_CACHED_UPSTREAMS = 1024

SERVER = "SERVER"
CLIENT = "CLIENT"
_MICROS = 1_000_000


def span_value(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str | None,
    kind: str | None,
    timestamp: float | None,
    duration: float | None,
    local: JsonValue | None,
    remote: JsonValue | None,
    tags: Mapping[str, str] | None,
    debug: bool,
    shared: bool = False,
    annotations: list[JsonValue] | None = None,
) -> JsonValue:
    """One span as Zipkin v2 JSON (zipkin2-api.yaml, ``Span``), fields as py_zipkin's V2 encoder writes them, with
    what it gets wrong put right: ``debug`` is written when set, a duration under one microsecond is 1 (the spec's
    minimum), never 0 or absent, and an endpoint with no fields is left out (as zipkin2's ``Span.Builder`` does),
    never written as ``{}``."""
    value: JsonValue = {"traceId": trace_id, "id": span_id}
    if debug:
        value["debug"] = True
    if name:
        value["name"] = name
    if parent_id:
        value["parentId"] = parent_id
    if timestamp:
        value["timestamp"] = int(timestamp * _MICROS)
    if duration is not None:
        value["duration"] = max(1, int(duration * _MICROS))
    if shared:
        value["shared"] = True
    if kind is not None:
        value["kind"] = kind
    if local:
        value["localEndpoint"] = local
    if remote:
        value["remoteEndpoint"] = remote
    if tags:
        value["tags"] = tags
    if annotations:
        value["annotations"] = annotations
    return value


def endpoint_value(endpoint: Endpoint) -> JsonValue:
    """An endpoint as Zipkin v2 JSON: only the fields it has (a port of 0 is none)."""
    value: JsonValue = {}
    if endpoint.service_name:
        value["serviceName"] = endpoint.service_name
    if endpoint.port:
        value["port"] = endpoint.port
    if endpoint.ipv4 is not None:
        value["ipv4"] = endpoint.ipv4
    if endpoint.ipv6 is not None:
        value["ipv6"] = endpoint.ipv6
    return value


def encode_spans(spans: Sequence[Span]) -> bytes:
    """py_zipkin spans as one JSON list, as the collector's POST /api/v2/spans takes it."""
    return orjson.dumps([_py_zipkin_span_value(span) for span in spans])


def _py_zipkin_span_value(span: Span) -> JsonValue:
    annotations: list[JsonValue] = [
        {"timestamp": int(timestamp * _MICROS), "value": key}
        for key, timestamp in (span.annotations or {}).items()
        if timestamp is not None
    ]
    return span_value(
        span.trace_id,
        span.span_id or "",
        span.parent_id,
        span.name,
        span.kind.value,
        span.timestamp,
        span.duration,
        endpoint_value(span.local_endpoint) if span.local_endpoint else None,
        endpoint_value(span.remote_endpoint) if span.remote_endpoint else None,
        {str(key): str(value) for key, value in span.tags.items()} if span.tags else None,
        bool(span.debug),
        span.shared is True,
        annotations,
    )


class ZipkinJsonEncoder:
    """The reporter's Zipkin format: a slice of exchanges as one JSON list of their SERVER and CLIENT spans, for
    one local endpoint. Endpoints are cached here, their JSON values ready: keep-alive clients and the routes'
    upstreams repeat."""

    __slots__ = ("_local", "_clients", "_upstreams")
    framing = JSON_LIST

    def __init__(self, local: Endpoint) -> None:
        self._local = endpoint_value(local)
        self._clients: dict[tuple[str | None, int | None], JsonValue | None] = {}
        self._upstreams: dict[Upstream, JsonValue] = {}

    def encode(self, exchanges: Sequence[Exchange]) -> bytes:
        values: list[JsonValue] = []
        for exchange in exchanges:
            values.extend(self.values(exchange))
        return orjson.dumps(values)

    def values(self, exchange: Exchange) -> tuple[JsonValue, JsonValue]:
        """The SERVER span for the request the gateway received and the CLIENT span, its child, for the upstream call.

        Tags follow Brave's HTTP conventions: ``error`` carries the gateway's error message when it has one, else
        the status code when it is not 1xx-3xx (Brave's ``HttpResponseParser``), on both spans. The SERVER span has
        the status the client got, the CLIENT span the one the upstream answered (none when it did not answer). A
        route's tags and the trace's ``w3c.tracestate`` are on both; the HTTP tags win a clash.
        """
        trace_id = _trace_id_hex(exchange.trace_id)
        server_id = exchange.server_span_id.to_bytes(8).hex()
        server_tags = dict(exchange.tags) if exchange.tags else {}
        server_tags[HTTP_METHOD] = exchange.method
        server_tags[HTTP_PATH] = exchange.path
        if exchange.host:
            server_tags[HTTP_HOST] = exchange.host
        client_tags = server_tags.copy()
        _add_status_tags(server_tags, exchange.error, exchange.status_code)
        _add_status_tags(client_tags, exchange.error, exchange.upstream_status_code)
        server = span_value(
            trace_id,
            server_id,
            None if exchange.parent_id is None else exchange.parent_id.to_bytes(8).hex(),
            exchange.name,
            SERVER,
            exchange.server_start,
            exchange.server_duration,
            self._local,
            self._client(exchange.client_host, exchange.client_port),
            server_tags,
            exchange.debug,
        )
        client = span_value(
            trace_id,
            exchange.client_span_id.to_bytes(8).hex(),
            server_id,
            exchange.name,
            CLIENT,
            exchange.client_start,
            exchange.client_duration,
            self._local,
            self._upstream(exchange.upstream),
            client_tags,
            exchange.debug,
        )
        return server, client

    def _client(self, host: str | None, port: int | None) -> JsonValue | None:
        key = (host, port)
        try:
            return self._clients[key]
        except KeyError:
            pass
        if len(self._clients) >= MAX_CACHED_CLIENTS:
            self._clients.clear()
        endpoint = client_endpoint(host, port)
        value = self._clients[key] = None if endpoint is None else endpoint_value(endpoint)
        return value

    def _upstream(self, upstream: Upstream) -> JsonValue:
        try:
            return self._upstreams[upstream]
        except KeyError:
            pass
        if len(self._upstreams) >= MAX_CACHED_UPSTREAMS:
            self._upstreams.clear()
        value = self._upstreams[upstream] = endpoint_value(upstream_endpoint(upstream))
        return value


def _trace_id_hex(trace_id: int) -> str:
    # int.to_bytes().hex() takes a fifth of the time of an f-string's "016x" here; a 128-bit id is two halves,
    # which beats one 16-byte conversion.
    if trace_id > MAX_64BIT:
        return (trace_id >> 64).to_bytes(8).hex() + (trace_id & MAX_64BIT).to_bytes(8).hex()
    return trace_id.to_bytes(8).hex()


def _add_status_tags(tags: dict[str, str], error_message: str | None, status_code: int | None) -> None:
    if status_code is not None:
        tags[HTTP_STATUS_CODE] = str(status_code)
    if error_message:
        tags[ERROR] = error_message
    elif status_code is not None and not 100 <= status_code <= 399:
        tags[ERROR] = str(status_code)
