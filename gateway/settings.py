"""Settings from the environment (prefix GATEWAY_, also a .env file), validated before anything starts."""

from __future__ import annotations

import re
from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_core import ErrorDetails, PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.masking import mask_url

ENV_PREFIX = "GATEWAY_"
# What Kubernetes sets <SERVICE>_PORT to (docs: "Environment variables" of Services).
SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://[0-9A-Fa-f.:\[\]]+:[0-9]+")
# Settings whose values an error message never repeats (API keys in OTLP headers).
SECRET_SETTINGS = frozenset({"otlp_headers"})
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Propagation(StrEnum):
    B3_MULTI = "b3multi"
    B3_SINGLE = "b3"
    TRACE_CONTEXT = "tracecontext"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _http_url(value: str) -> str:
    value = value.strip()
    if not value:
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _key_values(value: SecretStr) -> SecretStr:
    # Checked here so that the error names the variable; the message never repeats the value (a secret, often).
    from gateway.otlp import HeaderError, parse_key_values

    try:
        parse_key_values(value.get_secret_value())
    except (HeaderError, UnicodeDecodeError) as exc:
        raise ValueError(f"must be key=value,key=value with percent-encoded values: {exc}") from None
    return value


def _upstream_url(value: str) -> str:
    # Parsed again into a routes.Upstream at startup; checked here so the error names the variable.
    from gateway.routes import parse_upstream

    if value:
        parse_upstream(value)
    return value


def _unless_service_link(value: object) -> object:
    # A Service named `gateway` makes Kubernetes inject GATEWAY_PORT=tcp://10.0.0.1:8080 (and `gateway-admin`,
    # GATEWAY_ADMIN_PORT=...) into every pod of the namespace, unless the pod sets enableServiceLinks: false. An
    # explicit env or envFrom value wins over such a link, so one that gets here was never set by the operator:
    # the setting keeps its default, and gateway/environment.py warns.
    if isinstance(value, str) and SERVICE_LINK_VALUE.fullmatch(value.strip()):
        raise PydanticUseDefault
    return value


def _network_without_host_bits(value: object) -> object:
    # pydantic's own message ("value is not a valid IPv4 or IPv6 network") says neither what is wrong nor what is
    # expected.
    if isinstance(value, str):
        try:
            ip_network(value, strict=True)
        except ValueError:
            try:
                network = ip_network(value, strict=False)
            except ValueError:
                raise ValueError("must be a network such as 10.0.0.0/8 or fd00::/8") from None
            raise ValueError(f"has host bits set: the network is {network}") from None
    return value


Network = Annotated[IPvAnyNetwork, BeforeValidator(_network_without_host_bits)]
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    """Every setting, with the description that `ingress-gateway --help` and the README's table show."""

    # An empty variable is an unset one (`GATEWAY_ROUTES_FILE=` in a ConfigMap means no route file, not ".").
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    host: str = Field("0.0.0.0", description="address the proxy (and the admin listener) listens on")
    port: Annotated[int, BeforeValidator(_unless_service_link)] = Field(
        8080, ge=1, le=65535, description="port the proxy listens on"
    )
    admin_port: Annotated[int, BeforeValidator(_unless_service_link)] = Field(
        9901, ge=0, le=65535, description="admin listener (/live, /ready, /metrics, /config); 0 turns it off"
    )
    workers: int = Field(1, ge=1, le=256, description="worker processes (metrics are summed across them)")

    upstream_url: Annotated[str, AfterValidator(_upstream_url)] = Field(
        "", description="default upstream base URL, e.g. http://web-svc.emojivoto:80 (required without a route file)"
    )
    routes_file: Path | None = Field(None, description="YAML route table: host / path prefix -> upstream, per route")
    # Seconds between checks of the route file for changes (a stat, off the request path); 0 = only on SIGHUP.
    routes_reload_interval: float = Field(
        2.0, ge=0.0, le=3600.0, description="seconds between checks of the route file for a change; 0 = SIGHUP only"
    )
    no_route_status: int = Field(404, ge=400, le=599, description="status of a request that no route matches")
    preserve_host: bool = Field(False, description="send the client's Host upstream instead of the upstream's")
    upstream_timeout: float = Field(30.0, gt=0.0, le=3600.0, description="seconds to wait for the upstream (504)")
    upstream_max_connections: int = Field(
        8, ge=1, le=1024, description="keep-alive connections per worker to the upstreams"
    )
    upstream_client: Literal["httptools", "aiohttp", "httpx"] = Field(
        "httptools", description="HTTP/1.1 client for the upstreams: httptools (the gateway's own), aiohttp, httpx"
    )
    # gRPC and HTTP/2 upstreams (gateway/h2_upstream.py, gateway/grpc_flow.py): the GATEWAY_UPSTREAM_URL route's
    # protocol, and the streams one h2c connection carries at most (fewer if the upstream's SETTINGS say so).
    upstream_protocol: Literal["http1", "h2c"] = Field(
        "http1", description="protocol to the GATEWAY_UPSTREAM_URL upstream: http1, or h2c (HTTP/2, for gRPC)"
    )
    upstream_h2_max_streams: int = Field(
        100, ge=1, le=10_000, description="streams one h2c upstream connection carries at most"
    )
    # What a client may take or send before the gateway gives up on it (gateway/client_guard.py).
    client_header_timeout: float = Field(
        10.0, gt=0.0, le=3600.0, description="seconds for a client's request head (408 past it)"
    )
    client_body_timeout: float = Field(
        30.0, gt=0.0, le=3600.0, description="seconds a request body may go without a byte (408)"
    )
    client_send_timeout: float = Field(
        30.0, gt=0.0, le=3600.0, description="seconds a client may leave the response unread"
    )
    client_keepalive_timeout: float = Field(
        5.0, gt=0.0, le=3600.0, description="seconds an idle keep-alive connection is kept"
    )
    client_max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="request line and headers, at most (431 past it)"
    )
    # HTTP/2 from clients (gateway/h2_server.py): streams one client connection may have open at once.
    http2_max_concurrent_streams: int = Field(
        100, ge=1, le=10_000, description="HTTP/2 streams one client connection may have open at once"
    )

    sample_rate: float = Field(0.5, ge=0.0, le=1.0, description="probability, 0.0 to 1.0, that a new trace is sampled")
    max_traces_per_second: float = Field(
        0.0, ge=0.0, description="cap on newly sampled traces per second per process; 0 = no cap"
    )
    trust_incoming_trace: bool = Field(False, description="honour trace context and decisions sent by every client")
    trusted_cidrs: Annotated[list[Network], NoDecode, BeforeValidator(_split_commas)] = Field(
        [], description="comma-separated client networks whose trace context is honoured"
    )
    trace_id_128bit: bool = Field(True, description="128-bit trace ids (else 64-bit)")
    trace_response_header: bool = Field(True, description="add a W3C traceresponse header to responses")
    propagation: Annotated[list[Propagation], NoDecode, BeforeValidator(_split_commas)] = Field(
        [Propagation.B3_MULTI], description="formats emitted upstream, comma-separated: b3multi, b3, tracecontext"
    )

    zipkin_url: Annotated[str, AfterValidator(_http_url)] = Field(
        "", description="Zipkin v2 span endpoint; empty = no Zipkin export (and no new trace is sampled without one)"
    )
    service_name: str = Field("ingress-gateway", min_length=1, description="serviceName of the gateway's spans")
    reporter_queue_size: int = Field(10_000, ge=2, description="spans queued before new traces stop being sampled")
    reporter_batch_size: int = Field(1000, ge=1, description="spans per POST to the collector")
    reporter_flush_interval: float = Field(
        1.0, gt=0.0, le=60.0, description="seconds between flushes of a partial batch"
    )
    reporter_queue_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="estimated memory the span queue may hold"
    )
    reporter_timeout: float = Field(10.0, gt=0.0, le=120.0, description="seconds one POST to the collector may take")
    # With the backoff (0.1 s doubling to 5 s, jittered), 10 attempts ride out a collector outage of 10 to 20 s.
    reporter_max_attempts: int = Field(10, ge=1, le=20, description="attempts per span batch (exponential backoff)")
    # OpenTelemetry export (issue 19): OTLP/HTTP protobuf beside or instead of Zipkin; headers as
    # OTEL_EXPORTER_OTLP_HEADERS writes them (an API key, often: a secret, never shown).
    otlp_url: Annotated[str, AfterValidator(_http_url)] = Field(
        "", description="OTLP/HTTP protobuf span endpoint, e.g. http://otel-collector:4318/v1/traces; empty = none"
    )
    otlp_headers: Annotated[SecretStr, AfterValidator(_key_values)] = Field(
        SecretStr(""), description="key=value,key=value sent with every OTLP export (values are never shown)"
    )

    # TLS termination (gateway/tls.py): the default certificate, more chosen by SNI, renewals, the 308 listener.
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (a kubernetes.io/tls Secret's tls.crt); with the key, the port speaks TLS only",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of GATEWAY_TLS_CERT_FILE (the Secret's tls.key)"
    )
    tls_certs_dir: Path | None = Field(
        None, description="more certificates chosen by SNI: subdirectories each holding tls.crt and tls.key"
    )
    tls_reload_interval: float = Field(
        2.0, ge=0.0, le=3600.0, description="seconds between checks for renewed certificate files; 0 = never"
    )
    tls_handshake_timeout: float = Field(10.0, gt=0.0, le=600.0, description="seconds a TLS handshake may take")
    http_redirect_port: int = Field(0, ge=0, le=65535, description="cleartext listener answering 308 to https; 0 = off")
    # The port in the redirect's Location: where clients reach HTTPS (a Service's 443); 0 = GATEWAY_PORT.
    http_redirect_https_port: int = Field(
        0, ge=0, le=65535, description="port in the redirect's https:// Location (a Service's 443); 0 = GATEWAY_PORT"
    )

    # WebSocket sessions (gateway/websocket_proxy.py): closed with 1001 after this many seconds without a message either
    # way (pings do not count); a message above the size is refused with close 1009, on either side.
    websocket_idle_timeout: float = Field(
        300.0, gt=0.0, le=86400.0, description="seconds a WebSocket session may pass no message before close 1001"
    )
    websocket_max_message_bytes: int = Field(
        1024 * 1024, ge=125, le=256 * 1024 * 1024, description="largest WebSocket message either way (close 1009)"
    )

    shutdown_timeout: float = Field(
        20.0, gt=0.0, le=600.0, description="on SIGTERM: seconds for requests in flight, then for queued spans"
    )
    log_level: LogLevel = Field("info", description="debug, info, warning, error or critical")
    access_log: bool = Field(True, description="one JSON access line per request")
    # The access log's buffer (gateway/access_log.py): lines beyond it are dropped while stderr does not keep up.
    access_log_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="bytes of access lines held for stderr; past it lines are dropped and counted",
    )

    @model_validator(mode="after")
    def _needs_an_upstream(self) -> Settings:
        if not self.upstream_url and self.routes_file is None:
            raise ValueError("GATEWAY_UPSTREAM_URL: required unless GATEWAY_ROUTES_FILE is set")
        if self.upstream_protocol == "h2c" and self.upstream_url.lower().startswith("https:"):
            raise ValueError(f"GATEWAY_UPSTREAM_PROTOCOL: h2c needs an http:// upstream (got {self.upstream_url!r})")
        return self


# The settings that each turn a span exporter on, named `<exporter>_url`; a branch that adds an exporter adds its own.
EXPORTER_URLS = ("zipkin_url", "otlp_url")


def exporters(settings: Settings) -> dict[str, str]:
    """The exporters configured, by name ("zipkin"), with their URLs."""
    return {name.removesuffix("_url"): getattr(settings, name) for name in EXPORTER_URLS if getattr(settings, name)}


def has_exporter(settings: Settings) -> bool:
    """Whether the gateway's spans go anywhere. Without an exporter no new trace is sampled (`sampling.decide`): the
    mesh would report its spans of a trace whose root span nobody receives."""
    return bool(exporters(settings))


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def describe(error: ErrorDetails) -> str:
    """One line for one bad setting: the variable, what is expected, what was given (once)."""
    location = error["loc"]
    message = _message(error)
    if not location:
        return message
    variable = env_name(str(location[0]))
    # A validator's own message may show the value already (parse_upstream's do, for the route file's sake); a
    # secret's value is never shown.
    shown = error["type"] != "missing" and "(got " not in message and location[0] not in SECRET_SETTINGS
    given = f" (got {_shown(error['input'])})" if shown else ""
    return f"{variable}: {message}{given}"


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return repr(",".join(str(item) for item in value))
    if isinstance(value, str):
        return repr(mask_url(value))
    return repr(value)
