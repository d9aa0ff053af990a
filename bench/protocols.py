"""`make bench-protocols`: the gateway beside nginx on every protocol: HTTP/2 over h2c and TLS, TLS HTTP/1.1,
unary gRPC and WebSocket messages (issue 22).

Each row runs the same load at nginx doing the job and then at the gateway (its default settings, rate 1.0, the
span sink), pinned as `make bench` pins them: the load, the upstreams and the sink on the load CPU, the proxy on
its own. h2load drives HTTP/2 and gRPC, wrk TLS HTTP/1.1, `ws_load.py` WebSocket messages. A row whose protocol
the gateway does not speak yet (a setting it lacks, or a probe it fails) prints why and measures nginx alone.

Usage: .venv/bin/python bench/protocols.py [--quick] [--duration S] [--rows h2c,grpc,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import h2load
import procfs
import protocol_targets as pt
import services
import targets
import wrk
from plan import BODIES, GATEWAY_RATE_1, TARGETS
from services import LOOPBACK, Service, ServiceError

TOOLS = ("nginx", "wrk", "h2load", "taskset")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_DIR = Path(__file__).resolve().parent
GATEWAY = next(t for t in TARGETS if t.name == GATEWAY_RATE_1)
SMALL = BODIES[0]
# 32 requests in flight, as `make bench`'s wrk -c32: 8 connections of 4 streams each for HTTP/2.
H2_CONNECTIONS, H2_STREAMS, CONNECTIONS = 8, 4, 32
WS_MESSAGE_BYTES = 64
EXIT_ERROR = 2


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    label: str
    tls: bool = False
    settings: tuple[str, ...] = ()  # settings the gateway needs for the row


@dataclass(frozen=True, slots=True)
class Measured:
    count: int  # requests or messages answered
    failed: int
    seconds: float
    per_second: float
    latency: str  # "p99 1.23 ms" or "mean 1.23 ms" (h2load has no percentiles)
    cpu_us_per_unit: float  # CPU time of the proxy's process tree per request or message


ROWS = (
    Row("h2c", "HTTP/2 cleartext (h2c, prior knowledge), h2load"),
    Row("h2-tls", "HTTP/2 over TLS (ALPN h2), h2load", tls=True, settings=("tls_cert_file", "tls_key_file")),
    Row("http1-tls", "HTTP/1.1 over TLS, wrk", tls=True, settings=("tls_cert_file", "tls_key_file")),
    Row("grpc", "unary gRPC over h2c, h2load", settings=("upstream_protocol",)),
    Row("websocket", f"WebSocket echo, {WS_MESSAGE_BYTES} B messages, ws_load.py"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (make bench-protocols installs them)", file=sys.stderr)
        return EXIT_ERROR
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print("needs 2 CPUs: one for the load, one for the proxy", file=sys.stderr)
        return EXIT_ERROR
    load, proxy = available[:1], available[1:2]
    os.sched_setaffinity(0, load)
    rows = [row for row in ROWS if args.rows is None or row.name in args.rows]
    results: list[dict[str, object]] = []
    print(f"load on CPU {load[0]}, proxies on CPU {proxy[0]}; {args.duration} s per run after {args.warmup} s")
    with tempfile.TemporaryDirectory(prefix="ingress-bench-protocols-") as name, ExitStack() as stack:
        bench = ProtocolBench(Path(name), stack, load, proxy, args)
        try:
            bench.start()
            for row in rows:
                results.append(bench.row(row))
        except (ServiceError, h2load.H2loadError, wrk.WrkError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        print("stopping every process the benchmark started, by pid", flush=True)
    path = _write_results(results, args)
    print(f"\nresults: {path}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per run after 1 s of warm-up")
    parser.add_argument("--duration", type=int, help="seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, help="unrecorded seconds first (default 2)")
    parser.add_argument("--rows", type=lambda text: text.split(","), help=f"subset of {[r.name for r in ROWS]}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    unknown = set(args.rows or ()) - {row.name for row in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}")
    return args


class ProtocolBench:
    def __init__(
        self, workdir: Path, stack: ExitStack, load: list[int], proxy: list[int], args: argparse.Namespace
    ) -> None:
        self.workdir, self.stack, self.load, self.proxy, self.args = workdir, stack, load, proxy, args
        self.ports = pt.ProxyPorts(*(services.free_port() for _ in range(4)))

    def start(self) -> None:
        w, load = self.workdir, self.load
        self.cert, self.key = pt.write_certificates(w)
        grpc_root, self.grpc_request = pt.write_grpc_files(w)
        self.sink = targets.start_sink(self.stack, w, load)
        self.upstream = targets.start_upstream(self.stack, w, load)
        self.grpc_upstream = targets.start_nginx(
            self.stack, "grpc-upstream", w, load, lambda p, port: pt.grpc_responder_config(p, grpc_root, port)
        )
        ws_port = services.free_port()
        echo = [sys.executable, str(BENCH_DIR / "ws_load.py"), "echo", str(ws_port)]
        self.ws_upstream = services.start(self.stack, "ws-echo", echo, cpus=load, port=ws_port, log_dir=w)
        self.nginx = targets.start_nginx(
            self.stack,
            "nginx-protocols",
            w,
            self.proxy,
            lambda prefix, _: pt.proxy_config(
                prefix,
                self.ports,
                upstream=self.upstream.port,
                grpc_upstream=self.grpc_upstream.port,
                ws_upstream=self.ws_upstream.port,
                cert=self.cert,
                key=self.key,
            ),
            port=self.ports.h2c,
        )

    def row(self, row: Row) -> dict[str, object]:
        nginx_port = {"h2c": self.ports.h2c, "grpc": self.ports.grpc, "websocket": self.ports.ws}.get(row.name)
        nginx = self._measure(self.nginx, row, nginx_port or self.ports.tls)
        outcome: dict[str, object] = {"row": row.name, "label": row.label, "nginx": asdict(nginx)}
        gateway, why_not = self._gateway_for(row)
        line = f"{row.label}\n    nginx   {_figures(nginx)}"
        if gateway is None:
            outcome["gateway"] = None
            outcome["skipped"] = why_not
            line += f"\n    gateway skipped: {why_not}"
        else:
            try:
                measured = self._measure(gateway, row, gateway.port)
            finally:
                gateway.stop()
            outcome["gateway"] = asdict(measured)
            rate = measured.per_second / max(nginx.per_second, 1e-9)
            cpu = measured.cpu_us_per_unit / max(nginx.cpu_us_per_unit, 1e-9)
            outcome["ratios"] = {"per_second_x_nginx": rate, "cpu_per_unit_x_nginx": cpu}
            line += (
                f"\n    gateway {_figures(measured)}\n    gateway {rate:.2f}x nginx's rate, {cpu:.1f}x its CPU per unit"
            )
        print(line, flush=True)
        return outcome

    def _gateway_for(self, row: Row) -> tuple[Service | None, str]:
        for setting in row.settings:
            if (why := pt.missing_setting(setting)) is not None:
                return None, why
        extra = {}
        if row.tls:
            extra = {"GATEWAY_TLS_CERT_FILE": str(self.cert), "GATEWAY_TLS_KEY_FILE": str(self.key)}
        upstream = self.upstream.url
        if row.name == "grpc":
            upstream = self.grpc_upstream.url
            extra["GATEWAY_UPSTREAM_PROTOCOL"] = "h2c"
        elif row.name == "websocket":
            upstream = self.ws_upstream.url
        port = services.free_port()
        env = targets.gateway_env(os.environ, GATEWAY, port=port, upstream=upstream, sink=self.sink.url, extra=extra)
        name, command, w = f"gateway-{row.name}", [str(targets.GATEWAY_SCRIPT)], self.workdir
        (w / name).mkdir()
        gateway = services.start(
            self.stack, name, command, cpus=self.proxy, port=port, log_dir=w, env=env, cwd=w / name
        )
        problem = self._probe(row, port)
        if problem is not None:
            gateway.stop()
            return None, problem
        return gateway, ""

    def _probe(self, row: Row, port: int) -> str | None:
        """Why the gateway at `port` does not do `row`'s job (None when one exchange works)."""
        if row.name == "websocket":
            status = pt.websocket_handshake_status(port)
            return None if " 101 " in f"{status} " else f"the gateway does not proxy WebSocket upgrades yet: {status}"
        if row.name == "http1-tls":
            return None
        try:
            result, _ = h2load.run(self._h2load_args(row, port, seconds=None), timeout=10)
        except h2load.H2loadError as exc:
            return f"the gateway does not answer HTTP/2 here yet: {str(exc).splitlines()[0]}"
        if result.requests != 1:
            return "the gateway does not answer HTTP/2 here yet (h2load: its one request failed)"
        # h2load sees HTTP statuses only; a failed gRPC call is a 200 with an error in its trailers.
        return pt.grpc_call_problem(port) if row.name == "grpc" else None

    def _measure(self, service: Service, row: Row, port: int) -> Measured:
        for seconds, recorded in ((self.args.warmup, False), (self.args.duration, True)):
            if not seconds:
                continue
            pids = service.tree()
            cpu_before = procfs.cpu_seconds(pids)
            count, failed, elapsed, rate, latency = self._load(row, port, seconds)
            cpu = procfs.cpu_seconds(pids) - cpu_before
            if recorded:
                return Measured(count, failed, elapsed, rate, latency, 1e6 * cpu / max(count, 1))
        raise ValueError("a run needs a duration")

    def _load(self, row: Row, port: int, seconds: int) -> tuple[int, int, float, float, str]:
        """(answered, failed, seconds, per second, latency) of one run."""
        if row.name == "http1-tls":
            return self._wrk_load(port, seconds)
        if row.name == "websocket":
            return self._websocket_load(port, seconds)
        done, _ = h2load.run(self._h2load_args(row, port, seconds=seconds), timeout=seconds)
        return done.requests, done.failed, done.seconds, done.requests_per_second, f"mean {done.mean_ms:.2f} ms"

    def _wrk_load(self, port: int, seconds: int) -> tuple[int, int, float, float, str]:
        url = f"https://{LOOPBACK}:{port}{SMALL.path}"
        done, _ = wrk.run(url, cpus=self.load, seconds=seconds, connections=CONNECTIONS, threads=1)
        failed = done.bad_status + sum(done.socket_errors.values())
        latency = f"p99 {done.latency_ms['99']:.2f} ms"
        return done.requests, failed, done.seconds, done.requests_per_second, latency

    def _websocket_load(self, port: int, seconds: int) -> tuple[int, int, float, float, str]:
        url = f"ws://{LOOPBACK}:{port}/ws"
        client = [sys.executable, str(BENCH_DIR / "ws_load.py"), "load", url, str(CONNECTIONS), str(seconds)]
        args = ["taskset", "--cpu-list", ",".join(map(str, self.load)), *client, str(WS_MESSAGE_BYTES)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=True)
        figures = json.loads(done.stdout)
        latency = f"p99 {figures['p99_ms']:.2f} ms"
        return figures["messages"], figures["failed"], figures["seconds"], figures["messages_per_second"], latency

    def _h2load_args(self, row: Row, port: int, *, seconds: int | None) -> list[str]:
        scheme = "https" if row.tls else "http"
        grpc = row.name == "grpc"
        url = f"{scheme}://{LOOPBACK}:{port}{pt.GRPC_PATH if grpc else SMALL.path}"
        return h2load.command(
            url,
            cpus=self.load,
            seconds=seconds,
            connections=H2_CONNECTIONS if seconds is not None else 1,
            streams=H2_STREAMS if seconds is not None else 1,
            body=self.grpc_request if grpc else None,
            headers=pt.GRPC_HEADERS if grpc else (),
        )


def _figures(measured: Measured) -> str:
    failed = f", {measured.failed} FAILED" if measured.failed else ""
    return (
        f"{measured.per_second:>10,.0f}/s  {measured.latency}  {measured.cpu_us_per_unit:6.0f} us CPU per unit"
        f"  ({measured.count:,} in {measured.seconds:.1f} s{failed})"
    )


def _write_results(results: list[dict[str, object]], args: argparse.Namespace) -> Path:
    directory: Path = args.results_dir
    directory.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    path = directory / f"protocols-{started:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    document = {"finished_at": started.isoformat(), "command": [sys.executable, *sys.argv], "rows": results}
    path.write_text(json.dumps(document, indent=1))
    return path


if __name__ == "__main__":
    sys.exit(main())
