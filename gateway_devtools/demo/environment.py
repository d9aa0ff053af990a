"""What the demo's environment asks for: where each component listens, which services misbehave, whether the bot runs.

Every reader raises DemoError with one line that names the variable to change.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from gateway_devtools.mesh.tracing import Misbehaviour

HOST = "127.0.0.1"
COLLECTOR, WEB, EMOJI, VOTING, GATEWAY, BOT = "collector", "web", "emoji", "voting", "gateway", "vote-bot"
ADMIN = "gateway admin"
# The demo's HTTPS: a second gateway with TLS, in front of the same web service and collector.
GATEWAY_HTTPS, HTTPS_ADMIN = "gateway-https", "gateway-https admin"
EMOJI_GRPC = "emoji-grpc"  # emojivoto's EmojiService over gRPC, behind the gateway's h2c route
MESH_SERVICES = (WEB, EMOJI, VOTING)
# (what listens, its environment variable, its default port)
PORTS = (
    (GATEWAY, "GATEWAY_PORT", 8080),
    (ADMIN, "GATEWAY_ADMIN_PORT", 9901),
    (COLLECTOR, "DEMO_COLLECTOR_PORT", 9411),
    (WEB, "DEMO_WEB_PORT", 8081),
    (EMOJI, "DEMO_EMOJI_PORT", 8082),
    (VOTING, "DEMO_VOTING_PORT", 8083),
    (GATEWAY_HTTPS, "DEMO_HTTPS_PORT", 8443),
    (HTTPS_ADMIN, "DEMO_HTTPS_ADMIN_PORT", 9902),
    (EMOJI_GRPC, "DEMO_EMOJI_GRPC_PORT", 8084),
)
SAMPLE_RATE_ENV = "GATEWAY_SAMPLE_RATE"
DEFAULT_SAMPLE_RATE = "0.5"
BOT_ENV = "DEMO_BOT"
BOT_INTERVAL_ENV = "DEMO_BOT_INTERVAL"
DEFAULT_BOT_INTERVAL = 1.0
MISBEHAVE_ENV = "DEMO_MISBEHAVE"
# How the gateway reports to the demo's collector (issue 19): Zipkin v2 JSON, OTLP/HTTP protobuf, or both at once.
EXPORTER_ENV = "DEMO_EXPORTER"
EXPORTERS = ("zipkin", "otlp", "both")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class DemoError(Exception):
    """Why the demo cannot start, in one line that names the variable to change."""


def check_ports_free(ports: Mapping[str, int]) -> None:
    variables = {name: variable for name, variable, _ in PORTS}
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers themselves bind: a port left in TIME_WAIT by the last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                raise DemoError(
                    f"port {port} for the {name} is taken on {HOST} ({exc.strerror}): stop what uses it or set "
                    f"{variables[name]} to a free port"
                ) from None


def read_ports(environ: Mapping[str, str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name, variable, default in PORTS:
        text = environ.get(variable) or str(default)
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise DemoError(f"{variable} must be a port number from 1 to 65535, got {text!r}")
        for other, port in ports.items():
            if port == int(text):
                raise DemoError(f"{variable} is {port}, already the {other}'s port")
        ports[name] = int(text)
    return ports


def read_misbehaviour(text: str) -> dict[str, Misbehaviour]:
    chosen: dict[str, Misbehaviour] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        service, _, flag = pair.partition("=")
        service, flag = service.strip(), flag.strip()
        if service not in MESH_SERVICES:
            raise DemoError(f"{MISBEHAVE_ENV}: {service!r} is not one of {', '.join(MESH_SERVICES)} (in {text!r})")
        try:
            chosen[service] = Misbehaviour(flag)
        except ValueError:
            flags = ", ".join(item.value for item in Misbehaviour)
            raise DemoError(f"{MISBEHAVE_ENV}: {flag!r} is not one of {flags} (in {text!r})") from None
    return {service: flag for service, flag in chosen.items() if flag is not Misbehaviour.NONE}


def read_flag(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise DemoError(f"{variable} must be 1 or 0, got {text!r}")
    return value in _TRUE


def read_seconds(variable: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise DemoError(f"{variable} must be a number of seconds above 0, got {text!r}")
    return value
