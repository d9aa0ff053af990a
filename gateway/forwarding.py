"""Header rules of a reverse proxy, on raw ASGI header lists (names are lowercase bytes)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from gateway.propagation import is_trace_header

Headers = list[tuple[bytes, bytes]]

CONNECTION = b"connection"
CONTENT_LENGTH = b"content-length"
HOST = b"host"
X_FORWARDED_FOR = b"x-forwarded-for"
X_FORWARDED_HOST = b"x-forwarded-host"
X_FORWARDED_PROTO = b"x-forwarded-proto"
MESH_CONTROL_PREFIX = b"l5d-"

# RFC 9110 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade; Trailer
# announces fields of a chunked body the proxy re-frames, and Proxy-Authorization/Proxy-Authenticate are
# consumed by the proxy they address (RFC 9110 11.7).
HOP_BY_HOP = frozenset(
    {
        CONNECTION,
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers the gateway writes itself: the client's copies are consumed, never forwarded as they came.
_REWRITTEN = frozenset({HOST, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO})

# Connection options that remove nothing more: already hop-by-hop, the 'close' option, or a header no peer may
# strip by naming it. Content-Length frames the body (RFC 9110 7.6.1 forbids nominating end-to-end fields) and the
# gateway writes Host itself; the client's X-Forwarded-* are replaced anyway, so naming them strips nothing the
# gateway adds. Skipping these also spares the common 'Connection: keep-alive' a second pass.
_IGNORED_OPTIONS = HOP_BY_HOP | {b"", b"close", CONTENT_LENGTH, HOST}


_PROXIED_SCHEMES = frozenset({b"http", b"https"})
_DOT_SEGMENTS = frozenset({b".", b".."})
# Some upstreams (IIS, and frameworks on Windows) take a backslash for a slash.
_SEGMENT_SEPARATOR = re.compile(rb"[/\\]")


def request_target_problem(target: bytes) -> str | None:
    """Why the gateway will not proxy this request-target (as sent on the request line), or None.

    Origin-form ("/path?query") and absolute-form ("http://host/path") are proxied; the asterisk-form of "OPTIONS *"
    and the authority-form of CONNECT are not. A path with a dot-segment ("/api/../admin", percent-encoded as
    "%2e%2e" or with a backslash) is refused: the gateway routes on the path as sent and the upstream resolves it,
    so "/public/../internal" would reach a path that no route exposes (RFC 3986 5.2.4; RFC 9110 4.2.3 leaves the
    normalization to the origin).
    """
    if target[:1] == b"/":
        path = target
    else:
        scheme, separator, rest = target.partition(b"://")
        if not separator or scheme.lower() not in _PROXIED_SCHEMES:
            return "only origin-form and absolute-form request targets are proxied"
        slash = rest.find(b"/")
        path = rest[slash:] if slash >= 0 else b""
    path = path.partition(b"?")[0].partition(b"#")[0]
    if b"." not in path and b"%" not in path:
        return None
    if any(segment in _DOT_SEGMENTS for segment in _SEGMENT_SEPARATOR.split(unquote_to_bytes(path))):
        return "dot-segments ('.' or '..') in the request path"
    return None


@dataclass(frozen=True, slots=True)
class ForwardedHeaders:
    """The request headers for the upstream, and what the client sent that the gateway acts on.

    ``host`` is the client's Host, lowercased with its port ("" when absent); ``had_trace_headers`` says a
    client trace header was dropped.
    """

    headers: Headers
    host: str
    had_trace_headers: bool


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    client_host: str | None,
    scheme: str,
    upstream_authority: bytes,
    preserve_host: bool,
) -> ForwardedHeaders:
    """What goes upstream: every header in order, less hop-by-hop, Connection-nominated, trace (the gateway sends
    its own) and Linkerd control (``l5d-*``) headers, with Host and X-Forwarded-For/-Host/-Proto rewritten.

    The first Host header is the request's host, the one the gateway routes on; a further Host is dropped, so the
    upstream never sees a host the gateway did not route on (RFC 9112 3.2 answers several Host lines with 400;
    h11 rejects them, httptools passes them on). An HTTP/1.0 request may carry no Host: its host is "", it gets
    no X-Forwarded-Host, and the upstream's authority goes as Host even when the client's is to be preserved.
    """
    # Host goes first, as RFC 9112 3.2 asks of a client; its value is known once the loop is done.
    kept: Headers = [(HOST, upstream_authority)]
    host: bytes | None = None
    forwarded_for: list[bytes] = []
    options: set[bytes] | None = None
    had_trace_headers = False
    for name, value in headers:
        if name in _REWRITTEN:
            if name == HOST:
                host = value if host is None else host
            elif name == X_FORWARDED_FOR:
                forwarded_for.append(value)
        elif name in HOP_BY_HOP:
            if name == CONNECTION:
                options = _connection_options(value, options)
        elif is_trace_header(name):
            had_trace_headers = True
        elif name.startswith(MESH_CONTROL_PREFIX):
            # Linkerd acts on l5d-* request headers (l5d-dst-override picks the destination service): from the
            # internet they would let a client reach any service in the cluster, so they never pass the edge.
            continue
        else:
            kept.append((name, value))
    if options:
        kept = [header for header in kept if header[0] not in options]
    if host is not None:
        if preserve_host:
            kept[0] = (HOST, host)
        kept.append((X_FORWARDED_HOST, host))
    _add_forwarded_for(kept, forwarded_for, client_host)
    kept.append((X_FORWARDED_PROTO, scheme.encode("latin-1")))
    return ForwardedHeaders(kept, "" if host is None else host.decode("latin-1").lower(), had_trace_headers)


def downstream_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The upstream's response headers for the client, in order, less hop-by-hop and Connection-nominated ones."""
    kept: Headers = []
    options: set[bytes] | None = None
    for name, value in headers:
        if name in HOP_BY_HOP:
            if name == CONNECTION:
                options = _connection_options(value, options)
        else:
            kept.append((name, value))
    if options:
        return [header for header in kept if header[0] not in options]
    return kept


def _connection_options(value: bytes, options: set[bytes] | None) -> set[bytes] | None:
    # Connection = #connection-option (RFC 9110 7.6.1): comma-separated tokens, case-insensitive, with optional
    # whitespace around them; several Connection lines add up.
    for token in value.split(b","):
        option = token.strip(b" \t").lower()
        if option not in _IGNORED_OPTIONS:
            if options is None:
                options = set()
            options.add(option)
    return options


def _add_forwarded_for(kept: Headers, forwarded_for: list[bytes], client_host: str | None) -> None:
    # Several X-Forwarded-For lines are one list (RFC 9110 5.3); the gateway's peer goes last.
    hops = [hop for value in forwarded_for if (hop := value.strip(b" \t"))]
    if client_host:
        hops.append(client_host.encode("latin-1"))
    if hops:
        kept.append((X_FORWARDED_FOR, b", ".join(hops)))
