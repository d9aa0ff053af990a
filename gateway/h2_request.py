"""HTTP/2 requests as ASGI sees them, and the budgets that bound what a client may make a connection do.

Values in, values out, as `h11/_connection.py` is: the asyncio side lives in gateway/h2_server.py. h2 has already
checked the header block's shape (pseudo-headers first and once each, lower-case names, no connection-specific
fields); what is left is the gateway's policy: proxied targets only, no CONNECT, a bounded header list.
"""

from __future__ import annotations

import http
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from gateway.forwarding import request_target_problem

# What an HTTP/2 response may not carry (RFC 9113 8.2.2); an HTTP/1.1 upstream's answer may.
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
# As HPACK counts a field (RFC 7541 4.1), so that the limit advertised and the limit enforced agree.
FIELD_OVERHEAD = 32

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the gateway answers itself: the status, the counted kind, one line for the client."""

    status: http.HTTPStatus
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    scheme: str
    authority: bytes
    target: bytes
    headers: Headers  # regular fields only, with `host` from `:authority` when the client sent none


def parse_request(fields: Sequence[tuple[bytes, bytes]], max_header_bytes: int) -> Request | Refusal:
    """The request of a HEADERS block (already validated by h2), or why the gateway refuses it."""
    size = sum(len(name) + len(value) + FIELD_OVERHEAD for name, value in fields)
    if size > max_header_bytes:
        return Refusal(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large", "header list too large")
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
        else:
            headers.append((name, value))
    method = pseudo.get(b":method", b"")
    if method == b"CONNECT":
        return Refusal(http.HTTPStatus.METHOD_NOT_ALLOWED, "bad_target", "CONNECT is not proxied")
    target = pseudo.get(b":path", b"")
    problem = request_target_problem(target) if target[:1] == b"/" else "only origin-form request paths are proxied"
    if problem is not None:
        return Refusal(http.HTTPStatus.BAD_REQUEST, "bad_target", problem)
    authority = pseudo.get(b":authority", b"")
    if authority and not any(name == b"host" for name, _ in headers):
        headers.insert(0, (b"host", authority))
    scheme = pseudo.get(b":scheme", b"http").decode("ascii", "replace")
    return Request(method.decode("ascii", "replace"), scheme, authority, target, headers)


def http_scope(
    request: Request,
    *,
    scheme: str,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    root_path: str,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The ASGI `http` scope of one stream (https when the connection is TLS, whatever `:scheme` claims)."""
    raw_path, _, query = request.target.partition(b"?")
    path = raw_path.decode("ascii", "replace")
    if "%" in path:
        path = unquote(path)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "2",
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": request.method,
        "root_path": root_path,
        "path": root_path + path,
        "raw_path": root_path.encode("ascii") + raw_path,
        "query_string": query,
        "headers": request.headers,
        "state": state,
        "extensions": {"http.response.trailers": {}},
    }


def response_headers(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """An ASGI response head as an HTTP/2 field list: `:status` first, names lower-case, no connection fields."""
    fields: Headers = [(b":status", str(status).encode("ascii"))]
    for name, value in headers:
        lowered = name.lower()
        if lowered not in CONNECTION_SPECIFIC:
            fields.append((lowered, value))
    return fields


def trailer_fields(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    return [(name.lower(), value) for name, value in headers if name.lower() not in CONNECTION_SPECIFIC]


class Budget:
    """A token bucket: `capacity` events at once, refilled at `per_second`; spend() is False once it runs dry.

    Bounds what costs the gateway work but a client nothing: resets of streams it opened (CVE-2023-44487), PINGs
    and SETTINGS, each of which the gateway must answer.
    """

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self._capacity = capacity
        self._per_second = per_second
        self._tokens = capacity
        self._at = now

    def spend(self, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
