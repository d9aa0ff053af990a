"""`python -m gateway_devtools.collector`: serve the collector with uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

import uvicorn

from gateway_devtools.collector.app import create_collector_app
from gateway_devtools.collector.store import DEFAULT_MAX_AGE, DEFAULT_MAX_SPANS, SpanStore
from gateway_devtools.serving import exit_cleanly_on_stop_signals, listen

EXIT_CANNOT_LISTEN = 1
_MAX_PORT = 65535


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store = SpanStore(max_spans=args.max_spans, max_age=args.max_age)
    app = create_collector_app(store, response_delay=args.response_delay, fail_first=args.fail_first)
    try:
        # Binding here, before uvicorn starts, lets the line below promise that the port is already listening
        # and name the real port when --port 0 asked the kernel to pick one.
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"collector: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"Zipkin collector listening on http://{shown_host}:{port} (trace page at /, API at /api/v2)", flush=True)
    exit_cleanly_on_stop_signals()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway_devtools.collector",
        description="A Zipkin-API-compatible span collector with a trace page, for development and tests.",
        epilog="Test hooks: GET /api/v2/_stats (counters), DELETE /api/v2/_reset (empty the store).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=9411, help="port to listen on, 0 for any (default: %(default)s)")
    parser.add_argument(
        "--max-spans", type=_positive(int), default=DEFAULT_MAX_SPANS, help="spans kept (default: %(default)s)"
    )
    parser.add_argument(
        "--max-age",
        type=_positive(float),
        default=DEFAULT_MAX_AGE,
        metavar="SECONDS",
        help="seconds a trace is kept after its last span arrived (default: %(default)s)",
    )
    parser.add_argument(
        "--response-delay",
        type=_non_negative(float),
        default=0.0,
        metavar="SECONDS",
        help="answer every POST /api/v2/spans this late (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-first",
        type=_non_negative(int),
        default=0,
        metavar="N",
        help="answer the first N POST /api/v2/spans with 503 (default: %(default)s)",
    )
    return parser


def _port(text: str) -> int:
    port = int(_non_negative(int)(text))
    if port > _MAX_PORT:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port")
    return port


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    return _number(kind, allow_zero=False)


def _non_negative(kind: Callable[[str], float]) -> Callable[[str], float]:
    return _number(kind, allow_zero=True)


def _number(kind: Callable[[str], float], *, allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'at least 0' if allow_zero else 'above 0'}")
        return value

    return parse
