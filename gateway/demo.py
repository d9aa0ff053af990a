"""`python -m gateway.demo` (what `make run` runs): the gateway in front of the demo mesh, a collector and a vote-bot.

Every child listens on 127.0.0.1 and runs in a process group of its own, so that Ctrl-C in the terminal reaches this
process alone; it then stops the children by PID in order: the bot first, so no request is cut short, then the
gateway and the services, which flush their spans, and the collector, which receives them, last.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from gateway.devtools.mesh.tracing import Misbehaviour

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
# The gateway's route file: gRPC calls to EmojiService go to emoji-grpc over h2c, the rest to web.
_DEMO_ROUTES = """\
routes:
  - name: emojivoto-grpc
    path_prefix: /emojivoto.v1.EmojiService
    upstream: {upstream}
    protocol: h2c
"""
SAMPLE_RATE_ENV = "GATEWAY_SAMPLE_RATE"
DEFAULT_SAMPLE_RATE = "0.5"
BOT_ENV = "DEMO_BOT"
BOT_INTERVAL_ENV = "DEMO_BOT_INTERVAL"
DEFAULT_BOT_INTERVAL = 1.0
MISBEHAVE_ENV = "DEMO_MISBEHAVE"
# How the gateway reports to the demo's collector (issue 19): Zipkin v2 JSON, OTLP/HTTP protobuf, or both at once.
EXPORTER_ENV = "DEMO_EXPORTER"
EXPORTERS = ("zipkin", "otlp", "both")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
EXIT_BAD_ENVIRONMENT = 2
EXIT_FAILED = 1

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_COLOURS = ("36", "33", "35", "32", "34", "31")
# Children's output reaches the terminal line by line, as it is written, not when a pipe buffer fills.
_UNBUFFERED = {"PYTHONUNBUFFERED": "1"}


class DemoError(Exception):
    """Why the demo cannot start, in one line that names the variable to change."""


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
    ports = _ports(environ)
    misbehaviour = _misbehaviour(environ.get(MISBEHAVE_ENV, ""))
    bot = _flag(BOT_ENV, environ.get(BOT_ENV, "1"))
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
        interval = _positive(BOT_INTERVAL_ENV, environ.get(BOT_INTERVAL_ENV) or str(DEFAULT_BOT_INTERVAL))
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


def main() -> int:
    from gateway.devtools.demo_tls import write_demo_certificate

    tls_dir = tempfile.mkdtemp(prefix="ingress-gateway-demo-tls-")
    try:
        write_demo_certificate(Path(tls_dir))
        try:
            plan = make_plan(os.environ, tls_dir=tls_dir)
            _check_ports_free(plan.ports)
        except DemoError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return EXIT_BAD_ENVIRONMENT
        return Supervisor(plan, sys.stdout).run()
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)


class Supervisor:
    """Starts the plan's children, relays their output line by line with a prefix, and stops them by PID."""

    def __init__(self, plan: Plan, out: IO[str]) -> None:
        self._plan = plan
        self._out = out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: list[list[tuple[Child, subprocess.Popen[bytes]]]] = []
        self._relays: list[threading.Thread] = []
        self._colour = out.isatty() and not os.environ.get("NO_COLOR")

    def run(self) -> int:
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = self._start()
            if status is None:
                self._say(banner(self._plan))
                status = self._watch()
        finally:
            self._stop_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _start(self) -> int | None:
        """None once everything is ready; else the exit status (0 when a signal came during startup)."""
        for path, text in self._plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        names = ", ".join(child.name for stage in self._plan.stages for child in stage)
        self._say(f"demo: starting {names} on {HOST}; their output follows, prefixed with their name")
        for stage in self._plan.stages:
            self._running.append([(child, self._spawn(child)) for child in stage])
            for child, process in self._running[-1]:
                problem = self._wait_ready(child, process)
                if self._stop.is_set():
                    return 0
                if problem is not None:
                    self._say(f"demo: {child.name} {problem}; stopping the others")
                    return EXIT_FAILED
        return None

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            child.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **child.env},
            # Its own process group: Ctrl-C goes to the demo, which stops the children in order.
            process_group=0,
        )
        prefix = f"{child.name:>9} | "
        if self._colour:
            prefix = f"\x1b[{_COLOURS[len(self._relays) % len(_COLOURS)]}m{prefix}\x1b[0m"
        relay = threading.Thread(target=self._relay, args=(process, prefix), name=f"relay-{child.name}", daemon=True)
        relay.start()
        self._relays.append(relay)
        return process

    def _relay(self, process: subprocess.Popen[bytes], prefix: str) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self._say(prefix + raw.decode("utf-8", "replace").rstrip("\r\n"))
        process.stdout.close()

    def _wait_ready(self, child: Child, process: subprocess.Popen[bytes]) -> str | None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._stop.is_set():
            if process.poll() is not None:
                return f"exited with status {process.returncode} before it was ready (its output is above)"
            if _is_ready(child):
                return None
            if time.monotonic() > deadline:
                return f"was not ready after {READY_TIMEOUT:.0f}s"
            self._stop.wait(0.05)
        return None

    def _watch(self) -> int:
        while not self._stop.wait(0.2):
            for stage in self._running:
                for child, process in stage:
                    if process.poll() is not None:
                        self._say(f"demo: {child.name} exited with status {process.returncode}; stopping the others")
                        return EXIT_FAILED
        return 0

    def _stop_all(self) -> None:
        if self._running:
            self._say("demo: stopping every process")
        for stage in reversed(self._running):
            signalled = [(child, process) for child, process in stage if process.poll() is None]
            for _, process in signalled:
                os.kill(process.pid, signal.SIGTERM)
            for child, process in signalled:
                self._reap(child, process)
        for relay in self._relays:
            relay.join(5)
        if self._running:
            self._say("demo: stopped")

    def _reap(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        try:
            status = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._say(f"demo: {child.name} (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f}s: killed")
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        if status != 0:
            self._say(f"demo: {child.name} exited with status {status} while stopping")

    def _say(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _collector(ports: Mapping[str, int], python: str) -> Child:
    args = (python, "-m", "gateway.devtools.collector", "--host", HOST, "--port", str(ports[COLLECTOR]))
    return Child(COLLECTOR, args, _UNBUFFERED, ready_url=f"{_url(ports, COLLECTOR)}/health")


def _service(name: str, ports: Mapping[str, int], misbehaviour: Misbehaviour, python: str) -> Child:
    args = (
        *(python, "-m", "gateway.devtools.mesh", name, "--host", HOST, "--port", str(ports[name])),
        *("--zipkin-url", _spans_url(ports), "--trace-page-url", f"{_url(ports, COLLECTOR)}/"),
        *("--misbehave", misbehaviour.value),
        *(("--emoji-url", _url(ports, EMOJI), "--voting-url", _url(ports, VOTING)) if name == WEB else ()),
    )
    return Child(name, args, _UNBUFFERED, port=ports[name])


def _grpc_service(ports: Mapping[str, int], python: str) -> Child:
    args = (
        *(python, "-m", "gateway.devtools.mesh", EMOJI_GRPC, "--host", HOST, "--port", str(ports[EMOJI_GRPC])),
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
    args = (python, "-m", "gateway.devtools.mesh", "bot", "--target", _url(ports, GATEWAY), "--interval", str(interval))
    return Child(BOT, args, _UNBUFFERED)


def _url(ports: Mapping[str, int], name: str) -> str:
    return f"http://{HOST}:{ports[name]}"


def _spans_url(ports: Mapping[str, int]) -> str:
    return f"{_url(ports, COLLECTOR)}/api/v2/spans"


def _is_ready(child: Child) -> bool:
    if child.ready_url is not None:
        try:
            return httpx.get(child.ready_url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False
    if child.port is not None:
        try:
            with socket.create_connection((HOST, child.port), timeout=1.0):
                return True
        except OSError:
            return False
    return True


def _check_ports_free(ports: Mapping[str, int]) -> None:
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


def _ports(environ: Mapping[str, str]) -> dict[str, int]:
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


def _misbehaviour(text: str) -> dict[str, Misbehaviour]:
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


def _flag(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise DemoError(f"{variable} must be 1 or 0, got {text!r}")
    return value in _TRUE


def _positive(variable: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise DemoError(f"{variable} must be a number of seconds above 0, got {text!r}")
    return value


def _percent(rate: str) -> str:
    try:
        return f"{float(rate):.0%}"
    except ValueError:
        return rate


if __name__ == "__main__":
    raise SystemExit(main())
