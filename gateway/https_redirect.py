"""Where the cleartext listener sends a client: `https://<host>[:<port>]<path>?<query>`, or nowhere (400).

The Host header comes from the internet, so only a syntactically valid host is echoed: a DNS name (RFC 1123
labels), an IPv4 address or a bracketed IPv6 address, with an optional port that is dropped (HTTPS has its own).
Anything else, a missing Host included, gets no Location at all: a redirect must not carry a client's bytes to
another site or into a header.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, urlsplit

HTTPS_DEFAULT_PORT = 443
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_NAME = 253
# Kept as sent in a path and query (RFC 3986 pchar, "/" and "?", and "%" of existing escapes); all else is escaped.
_SAFE = "/?:@!$&'()*+,;=-._~%"


def redirect_location(host_header: str | None, target: str, https_port: int) -> str | None:
    """The Location for a request with this Host header and request target; None when the host is not valid."""
    host = valid_host(host_header)
    if host is None:
        return None
    port = "" if https_port == HTTPS_DEFAULT_PORT else f":{https_port}"
    return f"https://{host}{port}{_path_and_query(target)}"


def valid_host(host_header: str | None) -> str | None:
    """The host of a Host header, lower-cased and without its port, or None unless it is a valid name or address."""
    if not host_header:
        return None
    host, port = _split_port(host_header.strip())
    if port is not None and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    name = host.rstrip(".").lower() if host.endswith(".") and not host.endswith("..") else host.lower()
    if not name or len(name) > _MAX_NAME or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, None
        rest = host[end + 1 :]
        if not rest:
            return host, None
        return host[: end + 1], rest[1:] if rest.startswith(":") else rest
    name, colon, port = host.rpartition(":")
    return (name, port) if colon else (host, None)


def _path_and_query(target: str) -> str:
    # An absolute-form target (`GET http://host/path`) keeps only its path and query; `*` and junk become "/".
    if not target.startswith("/"):
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "") if parts.scheme else "/"
    if target.startswith("//"):
        target = "/" + target.lstrip("/")  # `https://host//evil.example` is still this host, but say it plainly
    return quote(target, safe=_SAFE)
