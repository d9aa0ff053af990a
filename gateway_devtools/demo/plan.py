"""What the demo starts, in which order, with which settings: a plan, made from the environment and tested as a value.

The gateway in front of the demo mesh (web, emoji, voting and emoji-grpc), a collector and a vote-bot, every one on
127.0.0.1; a second gateway serves HTTPS when a certificate folder is given.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway_devtools.demo.environment import (
    ADMIN,
    BOT,
    BOT_ENV,
    BOT_INTERVAL_ENV,
    COLLECTOR,
    DEFAULT_BOT_INTERVAL,
    DEFAULT_SAMPLE_RATE,
    EMOJI,
    EMOJI_GRPC,
    EXPORTER_ENV,
    EXPORTERS,
    GATEWAY,
    GATEWAY_HTTPS,
    HOST,
    HTTPS_ADMIN,
    MISBEHAVE_ENV,
    SAMPLE_RATE_ENV,
    VOTING,
    WEB,
    DemoError,
    read_flag,
    read_misbehaviour,
    read_ports,
    read_seconds,
)
from gateway_devtools.mesh.tracing import Misbehaviour

# The gateway's route file: gRPC calls to EmojiService go to emoji-grpc over h2c, the rest to web.
_DEMO_ROUTES = """\
routes:
  - name: emojivoto-grpc
    path_prefix: /emojivoto.v1.EmojiService
    upstream: {upstream}
    protocol: h2c
"""
# Children's output reaches the terminal line by line, as it is written, not when a pipe buffer fills.
_UNBUFFERED = {"PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True, slots=True)
class Child:
    """One process: `ready_url` answers 200 once it is ready, else `port` accepts connections, else it just runs."""

    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to start, stage by stage (a stage starts once the one before is ready), and what to tell the user."""

    stages: tuple[tuple[Child, ...], ...]
    ports: Mapping[str, int]
    sample_rate: str
    bot: bool
    misbehaviour: Mapping[str, Misbehaviour]
    tls_dir: str | None = None  # where the HTTPS gateway's certificate and its CA (ca.crt) are
    files: Mapping[Path, str] = field(default_factory=dict)  # written before anything starts

    def url(self, name: str, path: str = "/") -> str:
        return _url(self.ports, name) + path


def make_plan(environ: Mapping[str, str], python: str = sys.executable, tls_dir: str | None = None) -> Plan:
    """The demo that `environ` asks for; raises DemoError naming the variable that is wrong. With `tls_dir`
    (holding tls.crt, tls.key and ca.crt) a second gateway serves HTTPS."""
    ports = read_ports(environ)
    misbehaviour = read_misbehaviour(environ.get(MISBEHAVE_ENV, ""))
    bot = read_flag(BOT_ENV, environ.get(BOT_ENV, "1"))
    sample_rate = environ.get(SAMPLE_RATE_ENV) or DEFAULT_SAMPLE_RATE
    services = tuple(
        _service(name, ports, misbehaviour.get(name, Misbehaviour.NONE), python) for name in (EMOJI, VOTING, WEB)
    )
    routes = Path(tempfile.gettempdir()) / f"ingress-gateway-demo-{ports[GATEWAY]}" / "routes.yaml"
    gateway = _gateway(ports, sample_rate, environ, python)
    gateway = Child(gateway.name, gateway.args, {**gateway.env, "GATEWAY_ROUTES_FILE": str(routes)}, gateway.ready_url)
    gateways = [gateway]
    if tls_dir is not None:
        gateways.append(_https_gateway(gateway, ports, tls_dir))
    stages = [(_collector(ports, python),), (*services, _grpc_service(ports, python)), tuple(gateways)]
    if bot:
        interval = read_seconds(BOT_INTERVAL_ENV, environ.get(BOT_INTERVAL_ENV) or str(DEFAULT_BOT_INTERVAL))
        stages.append((_bot(ports, interval, python),))
    files = {routes: _DEMO_ROUTES.format(upstream=_url(ports, EMOJI_GRPC))}
    return Plan(tuple(stages), ports, sample_rate, bot, misbehaviour, tls_dir, files)


def banner(plan: Plan) -> str:
    share = _percent(plan.sample_rate)
    bot = "vote-bot sends traffic through the gateway (DEMO_BOT=0 turns it off)" if plan.bot else "vote-bot is off"
    lines = [
        "demo: everything is up:",
        f"  the app, through the gateway   {plan.url(GATEWAY)}",
        f"  the trace page (collector)     {plan.url(COLLECTOR)}",
        f"  the gateway's metrics          {plan.url(ADMIN, '/metrics')}   (also /live and /ready)",
        f"  gRPC (h2c), EmojiService       {plan.url(GATEWAY, '')}   e.g. grpcurl-style calls to "
        "/emojivoto.v1.EmojiService/ListAll",
        *_https_lines(plan),
        f"demo: the gateway samples {share} of requests ({SAMPLE_RATE_ENV}={plan.sample_rate}) and web, emoji and "
        "voting honour its decision: a sampled request is one complete trace, an unsampled one leaves no span; "
        f"{bot}. Ctrl-C stops everything.",
    ]
    if plan.misbehaviour:
        flags = ", ".join(f"{name}={flag}" for name, flag in sorted(plan.misbehaviour.items()))
        lines.append(f"demo: misbehaving on purpose ({MISBEHAVE_ENV}): {flags}; expect partial traces.")
    return "\n".join(lines)


def _collector(ports: Mapping[str, int], python: str) -> Child:
    args = (python, "-m", "gateway_devtools.collector", "--host", HOST, "--port", str(ports[COLLECTOR]))
    return Child(COLLECTOR, args, _UNBUFFERED, ready_url=f"{_url(ports, COLLECTOR)}/health")


def _service(name: str, ports: Mapping[str, int], misbehaviour: Misbehaviour, python: str) -> Child:
    args = (
        *(python, "-m", "gateway_devtools.mesh", name, "--host", HOST, "--port", str(ports[name])),
        *("--zipkin-url", _spans_url(ports), "--trace-page-url", f"{_url(ports, COLLECTOR)}/"),
        *("--misbehave", misbehaviour.value),
        *(("--emoji-url", _url(ports, EMOJI), "--voting-url", _url(ports, VOTING)) if name == WEB else ()),
    )
    return Child(name, args, _UNBUFFERED, port=ports[name])


def _grpc_service(ports: Mapping[str, int], python: str) -> Child:
    args = (
        *(python, "-m", "gateway_devtools.mesh", EMOJI_GRPC, "--host", HOST, "--port", str(ports[EMOJI_GRPC])),
        *("--zipkin-url", _spans_url(ports)),
    )
    return Child(EMOJI_GRPC, args, _UNBUFFERED, port=ports[EMOJI_GRPC])


def _gateway(ports: Mapping[str, int], sample_rate: str, environ: Mapping[str, str], python: str) -> Child:
    exporter = (environ.get(EXPORTER_ENV) or "zipkin").strip().lower()
    if exporter not in EXPORTERS:
        raise DemoError(f"{EXPORTER_ENV}: must be one of {', '.join(EXPORTERS)} (got {environ.get(EXPORTER_ENV)!r})")
    env = {
        **_UNBUFFERED,
        "GATEWAY_HOST": HOST,
        "GATEWAY_PORT": str(ports[GATEWAY]),
        "GATEWAY_ADMIN_PORT": str(ports[ADMIN]),
        "GATEWAY_UPSTREAM_URL": _url(ports, WEB),
        # The collector takes both formats into one store: the same trace page either way.
        "GATEWAY_ZIPKIN_URL": _spans_url(ports) if exporter != "otlp" else "",
        "GATEWAY_OTLP_URL": f"{_url(ports, COLLECTOR)}/v1/traces" if exporter != "zipkin" else "",
        SAMPLE_RATE_ENV: sample_rate,
        # A line per request from every process would bury everything else; GATEWAY_ACCESS_LOG=true brings it back.
        "GATEWAY_ACCESS_LOG": environ.get("GATEWAY_ACCESS_LOG") or "false",
    }
    return Child(GATEWAY, (python, "-m", "gateway"), env, ready_url=f"{_url(ports, ADMIN)}/ready")


def _https_gateway(cleartext: Child, ports: Mapping[str, int], tls_dir: str) -> Child:
    env = {
        **cleartext.env,
        "GATEWAY_PORT": str(ports[GATEWAY_HTTPS]),
        "GATEWAY_ADMIN_PORT": str(ports[HTTPS_ADMIN]),
        "GATEWAY_TLS_CERT_FILE": os.path.join(tls_dir, "tls.crt"),
        "GATEWAY_TLS_KEY_FILE": os.path.join(tls_dir, "tls.key"),
    }
    return Child(GATEWAY_HTTPS, cleartext.args, env, ready_url=f"{_url(ports, HTTPS_ADMIN)}/ready")


def _https_lines(plan: Plan) -> list[str]:
    if plan.tls_dir is None:
        return []
    url = f"https://localhost:{plan.ports[GATEWAY_HTTPS]}/"
    ca_file = os.path.join(plan.tls_dir, "ca.crt")
    return [
        f"  the app over HTTPS (h2, TLS)   {url}   (curl --http2 --cacert {ca_file} {url})",
        f"  the HTTPS gateway's metrics    {plan.url(HTTPS_ADMIN, '/metrics')}   (gateway_tls_*)",
    ]


def _bot(ports: Mapping[str, int], interval: float, python: str) -> Child:
    args = (python, "-m", "gateway_devtools.mesh", "bot", "--target", _url(ports, GATEWAY), "--interval", str(interval))
    return Child(BOT, args, _UNBUFFERED)


def _url(ports: Mapping[str, int], name: str) -> str:
    return f"http://{HOST}:{ports[name]}"


def _spans_url(ports: Mapping[str, int]) -> str:
    return f"{_url(ports, COLLECTOR)}/api/v2/spans"


def _percent(rate: str) -> str:
    try:
        return f"{float(rate):.0%}"
    except ValueError:
        return rate
