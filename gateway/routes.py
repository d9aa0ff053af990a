"""The route model: a route's upstream, sampling and span settings, and the rules each value must follow."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# How the gateway speaks to a route's upstream: HTTP/1.1, or HTTP/2 with prior knowledge (gRPC services, meshes).
PROTOCOLS = ("http1", "h2c")
DEFAULT_MIN_SAMPLE_RATE = 0.001
DEFAULT_ADAPTIVE_INTERVAL = 10.0
MIN_ADAPTIVE_INTERVAL = 0.1
MAX_TIMEOUT = 3600.0
SPAN_NAME_FIELDS = ("method", "path")
# Tags the gateway writes on its spans itself (gateway/spans.py): a route may not set them.
RESERVED_TAGS = frozenset({"http.host", "http.method", "http.path", "http.status_code", "error"})
# The trace's tracestate, which the gateway appends to a sampled exchange's tags (gateway/spans.py). Not in
# RESERVED_TAGS, which the span encoders read as "a route's tags that clash", and this one never comes from a route.
TRACESTATE_TAG = "w3c.tracestate"

# Labels of letters, digits, '-' and '_' (Kubernetes service names carry no '_', but DNS allows it), optionally
# behind one leading '*.' label; an IPv6 literal goes in brackets, as in a Host header.
_LABELS = r"([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(\*\.)?{_LABELS}")
_UPSTREAM_HOST = re.compile(_LABELS)
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route's requests go. ``authority`` is what a Host header would carry for it."""

    scheme: str
    host: str
    port: int
    base_path: str = ""
    authority: bytes = field(init=False, repr=False)
    _url_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"
        object.__setattr__(self, "authority", authority.encode("ascii"))
        object.__setattr__(self, "_url_prefix", f"{self.scheme}://{authority}{self.base_path}")

    @property
    def url(self) -> str:
        """The base URL, as the gateway uses it (never with credentials: `parse_upstream` refuses them)."""
        return self._url_prefix

    def url_for(self, path: str, query: bytes) -> str:
        if query:
            return f"{self._url_prefix}{path}?{query.decode('latin-1')}"
        return self._url_prefix + path


@dataclass(frozen=True, slots=True)
class Adaptive:
    """A route's adaptive sampling: aim at ``target_traces_per_second`` new traces, never below the floor."""

    target_traces_per_second: float
    min_sample_rate: float = DEFAULT_MIN_SAMPLE_RATE
    interval: float = DEFAULT_ADAPTIVE_INTERVAL


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the route table. None means "the gateway-wide setting" (GATEWAY_SAMPLE_RATE, ...).

    ``span_name`` is a template with ``{method}`` and ``{path}``; None names spans ``"{method} <name>"``.
    ``max_traces_per_second`` of 0 means no cap for the route (the process-wide cap still holds).
    """

    name: str
    upstream: Upstream
    host: str | None = None
    path_prefix: str = "/"
    sample_rate: float | None = None
    span_name: str | None = None
    adaptive: Adaptive | None = None
    max_traces_per_second: float = 0.0
    timeout: float | None = None
    tags: tuple[tuple[str, str], ...] = ()
    protocol: str = "http1"  # one of PROTOCOLS; check_protocol() holds it to its upstream


def parse_upstream(url: str) -> Upstream:
    """Parse an upstream base URL such as ``http://web-svc.emojivoto:80`` or ``https://api.internal/v1``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    # Checked first so that no later message echoes a password.
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"must be an http:// or https:// URL (got {url!r})")
    if not parts.hostname:
        raise ValueError(f"has no host (got {url!r})")
    if not parts.hostname.isascii():
        raise ValueError(f"host must be ASCII; write an internationalised name in its xn-- form (got {url!r})")
    # urlsplit has already checked a bracketed IPv6 literal, the one host form with ':' in it.
    if ":" not in parts.hostname and not _UPSTREAM_HOST.fullmatch(parts.hostname):
        raise ValueError(f"has an invalid host name (got {url!r})")
    if "?" in url or "#" in url:
        raise ValueError(f"must not have a query or fragment (got {url!r})")
    return Upstream(parts.scheme, parts.hostname, _port(parts, url), parts.path.rstrip("/"))


def check_protocol(protocol: str, upstream: Upstream) -> str:
    """``protocol`` if it is one of PROTOCOLS and fits the upstream's scheme; raises ValueError otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"must be one of {', '.join(PROTOCOLS)} (got {protocol!r})")
    if protocol == "h2c" and upstream.scheme != "http":
        # h2c is HTTP/2 in cleartext with prior knowledge (RFC 9113 3.3); TLS upstreams would negotiate by ALPN.
        raise ValueError(f"h2c needs an http:// upstream (got {upstream.scheme}://)")
    return protocol


def check_host(host: str) -> str:
    """``host`` in lower case if it is a host name a route may match on; raises ValueError otherwise."""
    name = host.lower()
    if not (_HOST_NAME.fullmatch(name) or _IPV6_LITERAL.fullmatch(name)):
        raise ValueError(
            f"must be a host name such as 'example.com' or '*.example.com', without scheme, port or path (got {host!r})"
        )
    return name


def check_path_prefix(path_prefix: str) -> str:
    """``path_prefix`` if it is a path a route may match on; raises ValueError otherwise."""
    if not path_prefix.startswith("/"):
        raise ValueError(f"must start with '/' (got {path_prefix!r})")
    if "?" in path_prefix or "#" in path_prefix:
        raise ValueError(f"must be a path, without '?' or '#' (got {path_prefix!r})")
    return path_prefix


def check_span_name(template: str) -> str:
    """``template`` if `render_span_name` can fill it: only {method} and {path}; raises ValueError otherwise."""
    allowed = ", ".join(f"{{{name}}}" for name in SPAN_NAME_FIELDS)
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write a literal brace as {{{{ or }}}} (got {template!r})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in SPAN_NAME_FIELDS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"unknown placeholder {shown} (allowed: {allowed}) in {template!r}")
    return template


def render_span_name(template: str, method: str, path: str) -> str:
    """A span name from a route's ``span_name`` template (checked when the file was loaded)."""
    return template.format(method=method, path=path)


def _port(parts: SplitResult, url: str) -> int:
    try:
        port = parts.port  # raises for a port that is not a number or beyond 65535
    except ValueError:
        port = 0
    if port is None:
        return DEFAULT_PORTS[parts.scheme]
    if port == 0:
        raise ValueError(f"port must be a number within 1-65535 (got {url!r})")
    return port
