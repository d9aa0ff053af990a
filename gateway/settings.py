"""Settings from the environment (prefix GATEWAY_, also a .env file), validated before anything starts."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, IPvAnyNetwork, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GATEWAY_"
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


def _upstream_url(value: str) -> str:
    # Parsed again into a routes.Upstream at startup; checked here so the error names the variable.
    from gateway.routes import parse_upstream

    if value:
        parse_upstream(value)
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    admin_port: int = Field(9901, ge=0, le=65535, description="0 disables the admin listener")
    workers: int = Field(1, ge=1, le=256)

    upstream_url: Annotated[str, AfterValidator(_upstream_url)] = ""
    routes_file: Path | None = None
    # Seconds between checks of the route file for changes (a stat, off the request path); 0 = only on SIGHUP.
    routes_reload_interval: float = Field(2.0, ge=0.0, le=3600.0)
    no_route_status: int = Field(404, ge=400, le=599, description="status of a request that no route matches")
    preserve_host: bool = False
    upstream_timeout: float = Field(30.0, gt=0.0, le=3600.0)
    upstream_max_connections: int = Field(8, ge=1, le=1024)
    upstream_client: Literal["aiohttp", "httpx"] = "aiohttp"
    # gRPC and HTTP/2 upstreams (gateway/h2_upstream.py, gateway/grpc_flow.py): the GATEWAY_UPSTREAM_URL route's
    # protocol, and the streams one h2c connection carries at most (fewer if the upstream's SETTINGS say so).
    upstream_protocol: Literal["http1", "h2c"] = "http1"
    upstream_h2_max_streams: int = Field(100, ge=1, le=10_000)
    # What a client may take or send before the gateway gives up on it (gateway/client_guard.py).
    client_header_timeout: float = Field(10.0, gt=0.0, le=3600.0)
    client_body_timeout: float = Field(30.0, gt=0.0, le=3600.0)
    client_send_timeout: float = Field(30.0, gt=0.0, le=3600.0)
    client_keepalive_timeout: float = Field(5.0, gt=0.0, le=3600.0)
    client_max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # HTTP/2 from clients (gateway/h2_server.py): streams one client connection may have open at once.
    http2_max_concurrent_streams: int = Field(100, ge=1, le=10_000)

    sample_rate: float = Field(0.5, ge=0.0, le=1.0)
    max_traces_per_second: float = Field(0.0, ge=0.0)
    trust_incoming_trace: bool = False
    trusted_cidrs: Annotated[list[IPvAnyNetwork], NoDecode, BeforeValidator(_split_commas)] = []
    trace_id_128bit: bool = True
    trace_response_header: bool = True
    propagation: Annotated[list[Propagation], NoDecode, BeforeValidator(_split_commas)] = [Propagation.B3_MULTI]

    zipkin_url: Annotated[str, AfterValidator(_http_url)] = ""
    service_name: str = Field("ingress-gateway", min_length=1)
    reporter_queue_size: int = Field(10_000, ge=2)
    reporter_batch_size: int = Field(1000, ge=1)
    reporter_flush_interval: float = Field(1.0, gt=0.0, le=60.0)
    reporter_queue_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    reporter_timeout: float = Field(10.0, gt=0.0, le=120.0)
    # With the backoff (0.1 s doubling to 5 s, jittered), 10 attempts ride out a collector outage of 10 to 20 s.
    reporter_max_attempts: int = Field(10, ge=1, le=20)

    shutdown_timeout: float = Field(20.0, gt=0.0, le=600.0)
    log_level: LogLevel = "info"
    access_log: bool = True

    @model_validator(mode="after")
    def _needs_an_upstream(self) -> Settings:
        if not self.upstream_url and self.routes_file is None:
            raise ValueError("GATEWAY_UPSTREAM_URL: required unless GATEWAY_ROUTES_FILE is set")
        if self.upstream_protocol == "h2c" and self.upstream_url.lower().startswith("https:"):
            raise ValueError(f"GATEWAY_UPSTREAM_PROTOCOL: h2c needs an http:// upstream (got {self.upstream_url!r})")
        return self


def describe(error: ErrorDetails) -> str:
    """One line for one bad setting: the variable, what is allowed, what was given."""
    location = error["loc"]
    if not location:
        return _message(error)
    variable = f"{ENV_PREFIX}{str(location[0]).upper()}"
    given = "" if error["type"] == "missing" else f" (got {_shown(error['input'])})"
    return f"{variable}: {_message(error)}{given}"


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return repr(",".join(str(item) for item in value))
    return repr(value)
