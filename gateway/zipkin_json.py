"""Zipkin v2 JSON (``ListOfSpans``): the one module that writes Zipkin spans, for the gateway's exchanges and for
py_zipkin's ``Span`` (the demo mesh's services).

``span_value`` is the mapping of one span's fields to its JSON value. py_zipkin's spans are written through it, and
the reporter's writer, ``ZipkinJsonEncoder``, is held to it by a property test (tests/unit/test_zipkin_json.py). That
writer formats each exchange's two spans as text, with what repeats between exchanges (names, endpoints, tags) kept
as ready JSON: at rate 1.0 the dicts and ``orjson.dumps`` it replaced were the largest part of what tracing cost
(docs/performance.md, "Tracing under 10 %").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring as _string

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
# Span names (the fallback route's carry the path), tag sets and status/error pairs, bounded the same way.
MAX_CACHED_NAMES = 4096
MAX_CACHED_TAG_HEADS = 4096
MAX_CACHED_OUTCOMES = 1024

SERVER = "SERVER"
CLIENT = "CLIENT"
_MICROS = 1_000_000  # the exchange writer inlines it: a global costs a lookup


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
    one local endpoint.

    The spans are written as text rather than as dicts for orjson: what repeats from one exchange to the next (a
    route's name, endpoints, tags, a status) is kept here as ready JSON, so each span costs its ids, times, path and
    one format. It writes what ``span_value`` would for the same fields (a property test holds it to that) in 2.9 us
    an exchange where the dicts took 4.4 (docs/performance.md).
    """

    __slots__ = ("_local", "_clients", "_upstreams", "_names", "_tag_heads", "_statuses", "_outcomes")
    framing = JSON_LIST

    def __init__(self, local: Endpoint) -> None:
        value = endpoint_value(local)
        self._local = f'"localEndpoint":{_json(value)},' if value else ""
        self._clients: dict[tuple[str | None, int | None], str] = {}
        self._upstreams: dict[int, tuple[Upstream, str]] = {}
        self._names: dict[str, str] = {}
        self._tag_heads: dict[tuple[tuple[tuple[str, str], ...], str, str], _TagHead] = {}
        # A span's status and error tags: by status alone when there is no error message, the common case.
        self._statuses: dict[int | None, str] = {}
        self._outcomes: dict[tuple[int | None, str | None], str] = {}

    def encode(self, exchanges: Sequence[Exchange]) -> bytes:
        """The exchanges' spans as one JSON list, UTF-8; a text that is not valid Unicode (a lone surrogate) fails
        the slice with UnicodeEncodeError, which the reporter counts.

        Each exchange is the SERVER span for the request the gateway received and the CLIENT span, its child, for
        the upstream call. Tags follow Brave's HTTP conventions: ``error`` carries the gateway's error message when
        it has one, else the status code when it is not 1xx-3xx (Brave's ``HttpResponseParser``), on both spans. The
        SERVER span has the status the client got, the CLIENT span the one the upstream answered (none when it did
        not answer). A route's tags and the trace's ``w3c.tracestate`` are on both; the HTTP tags win a clash.
        """
        # One loop with the caches in locals: a method call and an attribute lookup per cache and per exchange were
        # a fifth of the writer's time.
        names, tag_heads, statuses, clients, upstreams = (
            self._names,
            self._tag_heads,
            self._statuses,
            self._clients,
            self._upstreams,
        )
        spans: list[str] = []
        for exchange in exchanges:
            trace_id = exchange.trace_id
            # int.to_bytes().hex() takes a fifth of the time of an f-string's "016x" here.
            head = f'{{"traceId":"{trace_id.to_bytes(16 if trace_id > MAX_64BIT else 8).hex()}","id":"'
            server_id = exchange.server_span_id.to_bytes(8).hex()
            name = names.get(exchange.name)
            if name is None:
                name = self._name(exchange.name)
            if exchange.debug:
                name = '","debug":true,' + name[2:]
            parent = exchange.parent_id
            server_parent = "" if parent is None else f'"parentId":"{parent.to_bytes(8).hex()}",'
            tags = tag_heads.get((exchange.tags, exchange.method, exchange.host))
            if tags is None:
                tags = self._tag_head(exchange.tags, exchange.method, exchange.host)
            server_tail = clients.get((exchange.client_host, exchange.client_port))
            if server_tail is None:
                server_tail = self._client(exchange.client_host, exchange.client_port)
            upstream = upstreams.get(id(exchange.upstream))
            client_tail = upstream[1] if upstream is not None and upstream[0] is exchange.upstream else None
            if client_tail is None:
                client_tail = self._upstream(exchange.upstream)
            error = exchange.error
            server_status = exchange.status_code
            client_status = exchange.upstream_status_code
            if error is None:
                server_outcome = statuses.get(server_status)
                if server_outcome is None:
                    server_outcome = self._outcome(server_status, None)
                if client_status == server_status:  # the upstream's answer passed on, the usual case
                    client_outcome = server_outcome
                else:
                    found = statuses.get(client_status)
                    client_outcome = found if found is not None else self._outcome(client_status, None)
            else:
                server_outcome = self._outcome(server_status, error)
                client_outcome = self._outcome(client_status, error)
            if tags.fallback:
                server_outcome = tags.with_fallback(server_status, error, server_outcome)
                client_outcome = tags.with_fallback(client_status, error, client_outcome)
            # Epoch microseconds, a duration at least 1 us (the spec's minimum).
            server_start = exchange.server_start
            client_start = exchange.client_start
            server_micros = int(exchange.server_duration * 1000000)
            client_micros = int(exchange.client_duration * 1000000)
            path = _string(exchange.path)
            if server_start and client_start:
                # As few pieces as the cached texts allow: each costs a copy when the f-string is joined.
                spans.append(
                    f'{head}{server_id}{name}{server_parent}"timestamp":{int(server_start * 1000000)},"duration":'
                    f"{server_micros if server_micros > 0 else 1},{server_tail}{tags.text}{path}{server_outcome}}}}},"
                    f'{head}{exchange.client_span_id.to_bytes(8).hex()}{name}"parentId":"{server_id}",'
                    f'"timestamp":{int(client_start * 1000000)},"duration":{client_micros if client_micros > 0 else 1},'
                    f"{client_tail}{tags.text}{path}{client_outcome}}}}}"
                )
                continue
            # A timestamp of 0 is left out, as py_zipkin leaves it (records made by hand; the gateway's have a clock).
            server_time = f'"timestamp":{int(server_start * 1000000)},' if server_start else ""
            client_time = f'"timestamp":{int(client_start * 1000000)},' if client_start else ""
            spans.append(
                f'{head}{server_id}{name}{server_parent}{server_time}"duration":'
                f"{server_micros if server_micros > 0 else 1},{server_tail}{tags.text}{path}{server_outcome}}}}},"
                f'{head}{exchange.client_span_id.to_bytes(8).hex()}{name}"parentId":"{server_id}",{client_time}'
                f'"duration":{client_micros if client_micros > 0 else 1},{client_tail}{tags.text}{path}'
                f"{client_outcome}}}}}"
            )
        return ("[" + ",".join(spans) + "]").encode()

    # What encode() did not find in its caches, made and kept.

    def _name(self, name: str) -> str:
        # The fallback route names spans by path: names come from the internet too.
        if len(self._names) >= MAX_CACHED_NAMES:
            self._names.clear()
        # With the end of the id before it: one piece fewer in each span.
        text = self._names[name] = f'","name":{_string(name)},' if name else '",'
        return text

    def _tag_head(self, tags: tuple[tuple[str, str], ...], method: str, host: str) -> _TagHead:
        key = (tags, method, host)
        if len(self._tag_heads) >= MAX_CACHED_TAG_HEADS:
            self._tag_heads.clear()
        head = self._tag_heads[key] = _TagHead(tags, method, host)
        return head

    def _outcome(self, status_code: int | None, error_message: str | None) -> str:
        """The status and error tags of a span as JSON members, each after a comma (none: "")."""
        key = (status_code, error_message)
        text = self._outcomes.get(key)
        if text is not None:
            return text
        text = ""
        if status_code is not None:
            text = f',"{HTTP_STATUS_CODE}":"{status_code}"'
        if error_message:
            text += f',"{ERROR}":{_string(error_message)}'
        elif status_code is not None and not 100 <= status_code <= 399:
            text += f',"{ERROR}":"{status_code}"'
        if error_message is None:
            self._statuses[status_code] = text  # bounded: a status is an int of three digits, or None
        else:
            if len(self._outcomes) >= MAX_CACHED_OUTCOMES:
                self._outcomes.clear()
            self._outcomes[key] = text
        return text

    def _client(self, host: str | None, port: int | None) -> str:
        key = (host, port)
        if len(self._clients) >= MAX_CACHED_CLIENTS:
            self._clients.clear()
        endpoint = client_endpoint(host, port)
        value = endpoint_value(endpoint) if endpoint is not None else None
        remote = f'"remoteEndpoint":{_json(value)},' if value else ""
        # The SERVER span's members from its kind to the opening of its tags, whose only variable is the client.
        text = self._clients[key] = f'"kind":"{SERVER}",{self._local}{remote}"tags":{{'
        return text

    def _upstream(self, upstream: Upstream) -> str:
        # Kept by identity: an Upstream's hash is computed from its fields on every call. The object is kept in the
        # entry, so that its id cannot be reused while the entry stands.
        if len(self._upstreams) >= MAX_CACHED_UPSTREAMS:
            self._upstreams.clear()
        value = endpoint_value(upstream_endpoint(upstream))
        remote = f'"remoteEndpoint":{_json(value)},' if value else ""
        # The CLIENT span's members from its kind to the opening of its tags, whose only variable is the upstream.
        text = f'"kind":"{CLIENT}",{self._local}{remote}"tags":{{'
        self._upstreams[id(upstream)] = (upstream, text)
        return text


class _TagHead:
    """The tags an exchange's two spans share, as JSON members each followed by a comma (a route's tags, the trace's
    tracestate, the method and the host), then the name of the path's member, whose value each exchange writes.

    A route's tag named as an HTTP tag is overridden by it (route files refuse those names; records made elsewhere
    may have them): ``fallback`` keeps a route's status or error tag for a span that has none of its own.
    """

    __slots__ = ("text", "fallback")

    def __init__(self, tags: tuple[tuple[str, str], ...], method: str, host: str) -> None:
        members = dict(tags)
        members[HTTP_METHOD] = method
        members.pop(HTTP_PATH, None)  # written after these, from each exchange
        if host:
            members[HTTP_HOST] = host
        self.fallback = {name: members.pop(name) for name in (HTTP_STATUS_CODE, ERROR) if name in members}
        self.text = "".join(f"{_string(name)}:{_string(value)}," for name, value in members.items()) + '"http.path":'

    def with_fallback(self, status_code: int | None, error_message: str | None, outcome: str) -> str:
        if status_code is None and HTTP_STATUS_CODE in self.fallback:
            outcome = f',"{HTTP_STATUS_CODE}":{_string(self.fallback[HTTP_STATUS_CODE])}' + outcome
        has_error = bool(error_message) or (status_code is not None and not 100 <= status_code <= 399)
        if not has_error and ERROR in self.fallback:
            outcome += f',"{ERROR}":{_string(self.fallback[ERROR])}'
        return outcome


def _json(value: JsonValue) -> str:
    return orjson.dumps(value).decode()
