"""`python -m loadtest.demo` (what `make loadtest` runs): the trace check under load against the local demo stack.

Starts the demo (`python -m gateway_devtools.demo`: collector, web, emoji, voting and the gateway, without its
vote-bot) on free ports of 127.0.0.1, runs `locust -f loadtest/locustfile.py --headless` against it with the trace
check, and stops the demo by its PID whatever happens. The exit status is locust's: 0 when every trace is whole or
absent and the sampled fraction is as configured.

    python -m loadtest.demo -u 20 -t 30s --sample-rate 0.2 --misbehave voting=drop-spans -- --csv build/loadtest/run
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from gateway_devtools.demo.environment import MISBEHAVE_ENV, PORTS

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
BUILD = REPO / "build" / "loadtest"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOCUST_STOP_TIMEOUT = "5"
EXIT_DEMO_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    ports = {variable: _free_port() for _, variable, _ in PORTS}
    gateway, admin = ports["GATEWAY_PORT"], ports["GATEWAY_ADMIN_PORT"]
    collector = ports["DEMO_COLLECTOR_PORT"]
    log_path = args.report.with_name("demo.log")
    env = {
        **os.environ,
        **{variable: str(port) for variable, port in ports.items()},
        "DEMO_BOT": "0",
        "GATEWAY_SAMPLE_RATE": args.sample_rate,
        MISBEHAVE_ENV: args.misbehave,
    }
    print(f"loadtest: starting the demo stack on {HOST} (its output: {log_path})", flush=True)
    with log_path.open("wb") as log:
        # A process group of its own: Ctrl-C reaches locust, which still checks what it sent; the demo is stopped
        # after, by its PID.
        demo = subprocess.Popen(
            [sys.executable, "-m", "gateway_devtools.demo"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            process_group=0,
        )
    try:
        if not _wait_ready(f"http://{HOST}:{admin}/ready", demo):
            print(f"loadtest: the demo stack did not start; the end of {log_path}:", flush=True)
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-20:]), flush=True)
            return EXIT_DEMO_FAILED
        command = [
            *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"),
            *("-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.run_time),
            *("--stop-timeout", LOCUST_STOP_TIMEOUT, "--host", f"http://{HOST}:{gateway}"),
            *("--trace-backend", "zipkin", "--trace-backend-url", f"http://{HOST}:{collector}"),
            *("--trace-rate", args.sample_rate, "--trace-report", str(args.report)),
            *_after_dashes(args.locust_args),
        ]
        print(f"loadtest: {' '.join(command[2:])}", flush=True)
        # The demo serves EmojiService over gRPC too: the gRPC user's traces are checked with the HTTP ones.
        locust = subprocess.Popen(command, cwd=REPO, env={**os.environ, "LOADTEST_GRPC": "1"})
        try:
            status = locust.wait()
        except KeyboardInterrupt:
            # locust got the same Ctrl-C: it stops its users and still checks the traces it caused.
            status = locust.wait()
        print(f"loadtest: the verdict as JSON: {args.report}", flush=True)
        return status
    finally:
        _stop(demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.demo",
        description="Start the demo stack, run the locust trace check against it, stop the stack.",
        epilog="Arguments after -- go to locust as they are.",
    )
    parser.add_argument("-u", "--users", type=int, default=10, help="users (default: %(default)s)")
    parser.add_argument("-r", "--spawn-rate", type=float, default=10.0, help="users started per second")
    parser.add_argument("-t", "--run-time", default="20s", help="how long the load lasts (default: %(default)s)")
    parser.add_argument(
        "--sample-rate", default="0.5", help="the gateway's GATEWAY_SAMPLE_RATE, checked too (default: %(default)s)"
    )
    parser.add_argument(
        "--misbehave",
        default="",
        metavar="SERVICE=FLAG,...",
        help="break the mesh on purpose, e.g. voting=drop-spans (see DEMO_MISBEHAVE); the check must then fail",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=BUILD / "report.json",
        help="the verdict as JSON; the demo's output goes next to it, in demo.log (default: %(default)s)",
    )
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="-- then more locust arguments")
    return parser


def _after_dashes(extra: list[str]) -> list[str]:
    return extra[1:] if extra[:1] == ["--"] else extra


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, demo: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and demo.poll() is None:
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _stop(demo: subprocess.Popen[bytes]) -> None:
    if demo.poll() is not None:
        return
    # The demo stops its own children in order (the gateway flushes its spans first) on SIGTERM.
    os.kill(demo.pid, signal.SIGTERM)
    try:
        demo.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait()


if __name__ == "__main__":
    raise SystemExit(main())
