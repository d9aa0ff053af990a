"""`make bench-instructions`: what tracing costs the gateway, and what the gateway costs beside the Python ceiling,
in instructions per request, under callgrind.

On a shared machine requests/s move by a third from one minute to the next, so a tracing cost of a few percent
drowns in the noise of `make bench`. callgrind counts instructions instead: the same figure for the same work,
whatever else the machine is doing. This runs the gateway at each rate under `valgrind --tool=callgrind`, with its
default settings otherwise (the access log on, as users run it, so its lines are counted too), and the Python ceiling
(bench/ceiling_proxy.py) beside them, sends each the same wrk load (few connections: under valgrind it is about fifty
times slower), counts only from the start of the load until its spans have reached the sink, and prints
instructions per request, the ceiling's and rate 0.0's against each rate as throughput ratios, and where the
difference between the rates is (the C functions with the largest inclusive difference per request).

At this slow speed a partial batch would go out at every flush interval, a few dozen spans per POST where
`make bench` sends full ones, and each POST costs about two million instructions: the gateways run with a flush
interval long enough for full batches (`--flush-interval`). What it leaves out: cache misses and memory stalls,
which cost time but not instructions. The ratio it prints is one of work, not of requests/s.

Usage: .venv/bin/python bench/instructions.py [--seconds S] [--targets NAME...] [--body 16k] [--cache-sim] [--keep D]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from itertools import zip_longest
from pathlib import Path

import services
import targets
import wrk
from plan import BODIES, CEILING, GATEWAY_RATE_0, GATEWAY_RATE_1, TARGETS
from services import LOOPBACK, Service

from gateway.settings import Settings

TOOLS = ("valgrind", "callgrind_control", "callgrind_annotate", "wrk", "taskset", "nginx")
COUNTED_TARGETS = [target for target in TARGETS if target.name in (CEILING, GATEWAY_RATE_0, GATEWAY_RATE_1)]
# Under valgrind the gateway takes tens of seconds to start.
START_TIMEOUT = 300.0
SPANS_DEADLINE = 60.0
_TOTALS = re.compile(r"^totals:((?:\s+\d+)+)", re.MULTILINE)
# The cache callgrind simulates as its last level: this CPU's L2, where the code and data of one core live.
_L2_SIZE = Path("/sys/devices/system/cpu/cpu0/cache/index2/size")
_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(\S.*)$")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (make bench-instructions installs them)", file=sys.stderr)
        return 2
    services.START_TIMEOUT = START_TIMEOUT
    os.sched_setaffinity(0, [0])  # with the load, off the gateway's CPU
    body = next(body for body in BODIES if body.name == args.body)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        keep = Path(args.keep) if args.keep else workdir
        keep.mkdir(parents=True, exist_ok=True)
        upstream = targets.start_upstream(stack, workdir, [0])
        sink = targets.start_sink(stack, workdir, [0])
        counts: dict[str, tuple[int, int, Path]] = {}
        for target in (target for target in COUNTED_TARGETS if target.name in args.targets):
            out = keep / f"callgrind.{target.name}.out"
            for stale in _dumps(out):
                stale.unlink()
            port = services.free_port()
            valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
            valgrind += _cache_options() if args.cache_sim else []
            if target.name == CEILING:
                connections = str(Settings.model_fields["upstream_max_connections"].default)
                proxy = [str(Path(__file__).parent / "ceiling_proxy.py"), upstream.url, str(port), connections]
                env = dict(os.environ)
            else:
                # Its defaults otherwise, as `make bench` runs it: the access log's lines are counted too.
                extra = {"GATEWAY_REPORTER_FLUSH_INTERVAL": str(args.flush_interval), **args.gateway_env}
                env = targets.gateway_env(
                    os.environ, target, port=port, upstream=upstream.url, sink=sink.url, extra=extra
                )
                proxy = ["-m", "gateway"]
            command = [*valgrind, sys.executable, *proxy]
            cwd = workdir / target.name
            cwd.mkdir()
            gateway = services.start(
                stack, target.name, command, cpus=[1], port=port, log_dir=workdir, env=env, cwd=cwd
            )
            url = f"http://{LOOPBACK}:{port}{body.path}"
            before = _sink_spans(sink)
            warmup = _load(url, 3, args.connections)  # imports, pools and caches, uncounted
            # Their spans too: with a long flush interval they would otherwise be sent, and counted, in the load's.
            _wait_for_spans(sink, before + warmup * (target.spans_per_request or 0.0), args.flush_interval)
            before = _sink_spans(sink)
            _callgrind(gateway, "--instr=on")
            requests = _load(url, args.seconds, args.connections)
            _wait_for_spans(sink, before + requests * (target.spans_per_request or 0.0), args.flush_interval)
            _callgrind(gateway, "--instr=off")
            _callgrind(gateway, "--dump")
            gateway.stop()
            totals = [sum(column) for column in zip_longest(*(_totals(dump) for dump in _dumps(out)), fillvalue=0)]
            instructions = totals[0]
            counts[target.name] = (instructions, requests, out)
            misses = ""
            if args.cache_sim:  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
                misses = (
                    f", L1 misses {sum(totals[3:6]) / requests:,.0f} and last-level misses "
                    f"{sum(totals[6:9]) / requests:,.0f} per request"
                )
            print(
                f"{target.label}: {requests:,} requests, {_sink_spans(sink) - before:,} spans, "
                f"{instructions / requests:,.0f} instructions per request{misses}",
                flush=True,
            )
    per_request = {name: instructions / requests for name, (instructions, requests, _) in counts.items()}
    if CEILING in per_request:
        print()
        for name in (GATEWAY_RATE_0, GATEWAY_RATE_1):
            if name in per_request:
                print(
                    f"{name} against the ceiling, as a throughput ratio: {per_request[CEILING] / per_request[name]:.3f}"
                )
    if GATEWAY_RATE_0 not in counts or GATEWAY_RATE_1 not in counts:
        return 0
    base_requests, base_out = counts[GATEWAY_RATE_0][1:]
    traced_requests, traced_out = counts[GATEWAY_RATE_1][1:]
    untraced, traced = per_request[GATEWAY_RATE_0], per_request[GATEWAY_RATE_1]
    print(
        f"\nrate 1.0 costs {traced - untraced:,.0f} instructions more per request "
        f"({traced / untraced:.3f}x rate 0.0; as a throughput ratio: {untraced / traced:.3f})"
    )
    if args.keep:
        print("\nlargest differences per request, inclusive (callgrind_annotate):")
        untraced_costs = _inclusive(base_out, base_requests)
        traced_costs = _inclusive(traced_out, traced_requests)
        names = sorted(
            set(untraced_costs) | set(traced_costs),
            key=lambda name: traced_costs.get(name, 0) - untraced_costs.get(name, 0),
            reverse=True,
        )
        for name in names[: args.top]:
            old, new = untraced_costs.get(name, 0.0), traced_costs.get(name, 0.0)
            print(f"{old:>12,.0f} {new:>12,.0f} {new - old:>+10,.0f}  {name}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30, help="seconds of counted load per rate (default 30)")
    parser.add_argument("--connections", type=int, default=4, help="wrk -c (default 4)")
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=10.0,
        help="GATEWAY_REPORTER_FLUSH_INTERVAL of the gateways (default 10)",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=[target.name for target in COUNTED_TARGETS],
        default=[target.name for target in COUNTED_TARGETS],
        help="what to count (default: all three)",
    )
    parser.add_argument(
        "--body", choices=[body.name for body in BODIES], default=BODIES[0].name, help="the response body"
    )
    parser.add_argument("--cache-sim", action="store_true", help="also simulate the L1 and L2 caches (slower)")
    parser.add_argument("--keep", help="keep the callgrind files in this directory, and print the differences")
    parser.add_argument("--top", type=int, default=40, help="functions listed with --keep (default 40)")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway setting, repeatable (e.g. GATEWAY_ACCESS_LOG=false, to count what the access log costs)",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.gateway_env):
        parser.error("--gateway-env takes NAME=VALUE")
    args.gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
    return args


def _load(url: str, seconds: int, connections: int) -> int:
    result, _ = wrk.run(url, cpus=[0], seconds=seconds, connections=connections, threads=1)
    return result.requests


def _callgrind(gateway: Service, option: str) -> None:
    subprocess.run(["callgrind_control", option, str(gateway.pid)], check=True, capture_output=True, timeout=120)


def _sink_spans(sink: Service) -> int:
    return targets.sink_stats(sink)["spans"]


def _wait_for_spans(sink: Service, expected: float, flush_interval: float) -> None:
    deadline = time.monotonic() + flush_interval + SPANS_DEADLINE
    while _sink_spans(sink) < expected and time.monotonic() < deadline:
        time.sleep(0.5)


def _totals(dump: Path) -> list[int]:
    match = _TOTALS.search(dump.read_text())
    return [int(count) for count in match.group(1).split()] if match else []


def _cache_options() -> list[str]:
    size = _L2_SIZE.read_text().strip() if _L2_SIZE.exists() else "1024K"
    kilobytes = int(size.rstrip("K")) if size.endswith("K") else int(size.rstrip("M")) * 1024
    return ["--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", _last_level(kilobytes * 1024)]


def _last_level(size: int) -> str:
    """valgrind's --LL for a cache of ``size`` bytes: it takes only a power-of-two number of sets, so a 1.25 MiB L2 is
    described with the 20 ways it has, and a size no common way count fits is rounded down."""
    for ways in (16, 20, 10, 12, 24, 8):
        sets, rest = divmod(size, 64 * ways)
        if not rest and sets & (sets - 1) == 0:
            return f"--LL={size},{ways},64"
    return f"--LL={1 << (size.bit_length() - 1)},16,64"


def _dumps(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + "*"))


def _inclusive(out: Path, requests: int) -> dict[str, float]:
    costs: dict[str, float] = {}
    for dump in _dumps(out):
        annotated = subprocess.run(
            # Instructions only: with --cache-sim the other events would be columns of their own.
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--show=Ir", "--sort=Ir", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in annotated.splitlines():
            if match := _ANNOTATED.match(line):
                name = re.sub(r" \[.*", "", match.group(2).strip())
                costs[name] = costs.get(name, 0.0) + int(match.group(1).replace(",", "")) / requests
    return costs


if __name__ == "__main__":
    sys.exit(main())
