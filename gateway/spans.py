"""What the gateway records of one sampled request (``Exchange``), the span tag names, and the endpoints its spans
name: the gateway itself, the client, the upstream. The span formats are written from these by
gateway/zipkin_json.py and gateway/otlp.py."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from py_zipkin.encoding import Endpoint

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


def client_endpoint(host: str | None, port: int | None) -> Endpoint | None:
    """The SERVER span's remote endpoint: the client's IP and port, None when neither is known."""
    ipv4, ipv6 = _ip_fields(host) if host else (None, None)
    if ipv4 is None and ipv6 is None and not port:
        return None
    return Endpoint(service_name=None, ipv4=ipv4, ipv6=ipv6, port=port or None)


def upstream_endpoint(upstream: Upstream) -> Endpoint:
    """The CLIENT span's remote endpoint: where the route sends its requests."""
    ipv4, ipv6 = _ip_fields(upstream.host)
    # A service name is a label in the service graph; an IP literal is not one.
    service_name = upstream.host if ipv4 is None and ipv6 is None else None
    return Endpoint(service_name=service_name, ipv4=ipv4, ipv6=ipv6, port=upstream.port)


@lru_cache(maxsize=1024)  # a client's address repeats across its connections, each with its own port
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
