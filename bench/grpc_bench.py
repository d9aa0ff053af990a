"""Unary gRPC through the gateway beside nginx `grpc_pass`, by h2load: many concurrent calls over few connections.

    .venv/bin/python bench/grpc_bench.py            # 3 rounds of 20,000 calls per target
    .venv/bin/python bench/grpc_bench.py --quick    # smoke run: 1 round of 2,000 calls

The gRPC upstream is nginx itself, answering every call with one 13-byte message and `grpc-status: 0` in the trailers
(a static reply, so that the upstream costs next to nothing and is the same for every target). The targets:
`nginx-grpc` (nginx `grpc_pass`, 1 worker), `gateway-0.0` and `gateway-1.0` (`ingress-gateway`, 1 worker,
`GATEWAY_UPSTREAM_PROTOCOL=h2c`, at sample rates 0.0 and 1.0, spans to the benchmark's span sink). h2load sends the
same framed request with `content-type: application/grpc` and `te: trailers` over `--connections` connections with
`--streams` concurrent streams each. The proxy runs on its own CPU, everything else on the other, as in bench/run.py.
h2load counts HTTP statuses only: a target is measured only after a real grpcio call through it returned the reply.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from tempfile import TemporaryDirectory

from services import LOOPBACK, Service, ServiceError, free_port, start
from targets import GATEWAY_SCRIPT, SPANS_PATH, nginx_config, start_sink

NGINX_GRPC = "nginx-grpc"
GATEWAY_RATES = {"gateway-0.0": 0.0, "gateway-1.0": 1.0}
METHOD_PATH = "/bench.Echo/Unary"
REPLY = b"Hello, World!"
_REQ_PER_SECOND = re.compile(r"finished in [^,]+, ([0-9.]+) req/s")
_SUCCEEDED = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded")

# One server block inside bench/targets.py's nginx_config(), HTTP/2 in cleartext (h2c, prior knowledge).
_SERVER = """\
    http2_max_concurrent_streams 1000;
    server {{
        listen {host}:{port} http2;
{body}    }}
"""
# nginx refuses POST to a static file (405); error_page turns that into the file itself with a 200.
_UPSTREAM_BODY = """\
        root {root};
        location / {{
            types {{ }}
            default_type application/grpc;
            try_files /reply.bin =404;
            error_page 405 =200 $uri;
            add_trailer grpc-status 0 always;
        }}
"""
_PROXY_BODY = """\
        location / {{ grpc_pass grpc://{upstream}; }}
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    rounds, calls = (1, 2_000) if args.quick else (args.rounds, args.calls)
    with TemporaryDirectory(prefix="grpc-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        (workdir / "reply.bin").write_bytes(_frame(REPLY))
        (workdir / "reply.bin").chmod(0o644)
        request = workdir / "request.bin"
        request.write_bytes(_frame(b"hello"))
        upstream = _nginx(stack, "grpc-upstream", workdir, [0], _UPSTREAM_BODY.format(root=workdir))
        sink = start_sink(stack, workdir, [0])
        targets: dict[str, Service] = {}
        body = _PROXY_BODY.format(upstream=f"{LOOPBACK}:{upstream.port}")
        targets[NGINX_GRPC] = _nginx(stack, NGINX_GRPC, workdir, [1], body)
        for name, rate in GATEWAY_RATES.items():
            try:
                targets[name] = _gateway(stack, name, rate, workdir, upstream, sink)
            except ServiceError as exc:
                print(f"{name}: not available: {exc}", file=sys.stderr)
        for name, service in list(targets.items()):
            if (problem := _check(service)) is not None:
                print(f"{name}: not available: {problem}", file=sys.stderr)
                del targets[name]
        rates: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, service in targets.items():
                rates[name].append(_h2load(service.port, request, calls, args.connections, args.streams))
    _report(rates)
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2,000 calls: a smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per target per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams per connection")
    return parser.parse_args(argv)


def _frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def _nginx(stack: ExitStack, name: str, workdir: Path, cpus: list[int], body: str) -> Service:
    prefix = workdir / name
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, _SERVER.format(host=LOOPBACK, port=port, body=body)))
    return start(
        stack,
        name,
        ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        cpus=cpus,
        port=port,
        log_dir=workdir,
    )


def _gateway(stack: ExitStack, name: str, rate: float, workdir: Path, upstream: Service, sink: Service) -> Service:
    if not GATEWAY_SCRIPT.exists():
        raise ServiceError(f"{GATEWAY_SCRIPT} is not installed")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env.update(
        GATEWAY_HOST=LOOPBACK,
        GATEWAY_PORT=str(port),
        GATEWAY_ADMIN_PORT=str(free_port()),
        GATEWAY_UPSTREAM_URL=upstream.url,
        GATEWAY_UPSTREAM_PROTOCOL="h2c",
        GATEWAY_SAMPLE_RATE=str(rate),
        GATEWAY_ZIPKIN_URL=sink.url + SPANS_PATH,
        GATEWAY_ACCESS_LOG="false",
        GATEWAY_LOG_LEVEL="warning",
    )
    cwd = workdir / name
    cwd.mkdir()
    return start(stack, name, [str(GATEWAY_SCRIPT)], cpus=[1], port=port, log_dir=workdir, env=env, cwd=cwd)


def _check(service: Service) -> str | None:
    """What is wrong with a real gRPC call through the target, if anything (h2load sees HTTP statuses only)."""
    import grpc  # a dev dependency; imported here so that --help works without it

    with grpc.insecure_channel(f"{LOOPBACK}:{service.port}") as channel:
        try:
            reply = channel.unary_unary(METHOD_PATH)(b"hello", timeout=10)
        except grpc.RpcError as exc:
            return f"a gRPC call failed: {exc.code()} {exc.details()}"
    return None if reply == REPLY else f"a gRPC call returned {reply!r}, not {REPLY!r}"


def _h2load(port: int, request: Path, calls: int, connections: int, streams: int) -> float:
    args = [
        *("taskset", "--cpu-list", "0", "h2load", "-n", str(calls), "-c", str(connections), "-m", str(streams)),
        *("-d", str(request), "-H", "content-type: application/grpc", "-H", "te: trailers"),
        f"http://{LOOPBACK}:{port}{METHOD_PATH}",
    ]
    output = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False).stdout
    rate, succeeded = _REQ_PER_SECOND.search(output), _SUCCEEDED.search(output)
    if rate is None or succeeded is None or succeeded[1] != succeeded[2]:
        raise SystemExit(f"h2load failed against port {port}:\n{output[-2000:]}")
    return float(rate[1])


def _report(rates: dict[str, list[float]]) -> None:
    print(f"{'target':<14} {'calls/s (median)':>18}  rounds")
    for name, values in rates.items():
        print(f"{name:<14} {median(values):>18,.0f}  {', '.join(f'{value:,.0f}' for value in values)}")
    if not rates.get(NGINX_GRPC):
        return
    nginx = median(rates[NGINX_GRPC])
    for name in GATEWAY_RATES:
        if rates.get(name):
            print(f"{name} / {NGINX_GRPC}: {median(rates[name]) / nginx:.2f}")
    if rates.get("gateway-0.0") and rates.get("gateway-1.0"):
        print(f"gateway-1.0 / gateway-0.0: {median(rates['gateway-1.0']) / median(rates['gateway-0.0']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
