"""`python -m loadtest.check`: read back from the trace backend every trace a load run caused, and judge it.

    python -m loadtest.check --backend zipkin --backend-url http://127.0.0.1:9411 --records records.json

The records file is what `locust -f loadtest/locustfile.py --trace-records FILE` writes. Spans reach a backend
late (every reporter batches them), so the check first waits until the backend's traces of the run stop changing
for `--settle` seconds, or `--timeout` passes; then it asks for every announced trace by id, `--concurrency`
requests at a time, for at most `--timeout` seconds more. Exit status: 0 when every trace is complete or cleanly
unsampled and the sampled fraction is as configured, 1 when not (or the run cannot be vouched for), 2 when the
check could not run at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gateway.route_file import RouteFileError, load_routes
from gateway.routes import Route
from loadtest.backends import (
    DEFAULT_CONCURRENCY,
    BackendKind,
    CheckError,
    fetch_all,
    open_backend,
)
from loadtest.expectations import DEFAULT_FILE, Expectations, ExpectationsError, load_expectations
from loadtest.rates import DEFAULT_SIGMAS, RouteLookup, check_rate, route_lookup
from loadtest.traces import (
    RatePolicy,
    Record,
    Recording,
    Report,
    SpanView,
    group_by_trace,
    judge,
    summary,
)

EXIT_PASSED = 0
EXIT_BROKEN = 1
EXIT_CANNOT_CHECK = 2

DEFAULT_BACKEND_URL = "http://127.0.0.1:9411"
DEFAULT_SETTLE = 3.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_CLOCK_SKEW = 1.0
POLL_INTERVAL = 0.25
HTTP_TIMEOUT = 30.0
MIN_LISTING_LIMIT = 10_000
RECORDS_FORMAT = 2

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CheckOptions:
    backend: BackendKind = BackendKind.ZIPKIN
    backend_url: str = DEFAULT_BACKEND_URL
    expectations: Expectations = field(default_factory=Expectations)
    settle: float = DEFAULT_SETTLE
    timeout: float = DEFAULT_TIMEOUT
    # Seconds by which the load generator's clock and the services' may disagree: the time window of the run is
    # widened by as much on both sides when the backend is asked for the run's traces.
    clock_skew: float = DEFAULT_CLOCK_SKEW
    check_unannounced: bool = True
    rates: RatePolicy = field(default_factory=RatePolicy)
    concurrency: int = DEFAULT_CONCURRENCY


def check(
    recording: Recording,
    options: CheckOptions,
    *,
    http: httpx.Client | None = None,
    log: Callable[[str], None] = lambda line: None,
    workers: int = 0,
    run_problems: Sequence[str] = (),
) -> Report:
    """Waits for the run's spans to settle in the backend, fetches every trace, and judges them all."""
    window = recording.window()
    if window is None:
        return judge(
            recording, {}, options.expectations, rates=options.rates, workers=workers, run_problems=run_problems
        )
    start, end = window[0] - options.clock_skew, window[1] + options.clock_skew
    limit = max(MIN_LISTING_LIMIT, 2 * len(recording.records))
    with contextlib.ExitStack() as stack:
        # trust_env=False: a proxy meant for the outside world must not stand between the check and its backend.
        client = http if http is not None else stack.enter_context(_client(options.concurrency))
        backend = open_backend(options.backend, options.backend_url, client)
        log(f"waiting for the run's spans to settle in {backend.api} (at most {options.timeout:g}s)")
        listing, settled = wait_until_stable(
            lambda: backend.traces_between(start, end, limit), _fingerprint, options.settle, options.timeout
        )
        if not settled:
            log(f"spans were still arriving after {options.timeout:g}s: judging what the backend holds now")
        traces = group_by_trace(span for trace in listing for span in trace)
        wanted = dict.fromkeys([record.trace_id for record in recording.records] + list(recording.forged))
        unlisted = [trace_id for trace_id in wanted if trace_id not in traces]
        log(f"{len(listing)} traces listed; asking for {len(unlisted)} more by id, {options.concurrency} at a time")
        fetched = fetch_all(
            backend, unlisted, concurrency=options.concurrency, deadline=time.monotonic() + options.timeout
        )
        traces.update(group_by_trace(fetched.spans))
    return judge(
        recording,
        traces,
        options.expectations,
        check_unannounced=options.check_unannounced,
        listing_truncated=len(listing) >= limit,
        rates=options.rates,
        unfetched=fetched.unfetched,
        workers=workers,
        run_problems=run_problems,
    )


def check_and_report(
    recording: Recording,
    options: CheckOptions,
    report_path: Path | None = None,
    *,
    out: Callable[[str], None] = print,
    log: Callable[[str], None] = lambda line: None,
    workers: int = 0,
    run_problems: Sequence[str] = (),
) -> tuple[int, Report | None]:
    """Runs the check, prints the summary (or why the check could not run), writes the JSON report, and returns
    the exit status with the report."""
    try:
        report = check(recording, options, log=log, workers=workers, run_problems=run_problems)
    except CheckError as exc:
        out(f"Trace check: could not run: {exc}")
        if report_path is not None:
            write_atomically(report_path, json.dumps({"passed": False, "error": str(exc)}, indent=2) + "\n")
        return EXIT_CANNOT_CHECK, None
    out(summary(report))
    if report_path is not None:
        write_atomically(report_path, json.dumps(report.as_json(), indent=2) + "\n")
    return (EXIT_PASSED if report.passed else EXIT_BROKEN), report


def wait_until_stable(
    probe: Callable[[], _T],
    fingerprint: Callable[[_T], Hashable],
    settle: float,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = POLL_INTERVAL,
) -> tuple[_T, bool]:
    """Probes until the fingerprint has not changed for `settle` seconds (True) or `timeout` has passed (False);
    returns the last value probed."""
    started = clock()
    value = probe()
    last, since = fingerprint(value), clock()
    while True:
        now = clock()
        if now - since >= settle:
            return value, True
        if now - started >= timeout:
            return value, False
        sleep(interval)
        value = probe()
        current = fingerprint(value)
        if current != last:
            last, since = current, clock()


def load_route_file(path: Path) -> list[Route]:
    """The gateway's route file, read as the gateway reads it; raises CheckError naming what is wrong."""
    try:
        return load_routes(path)
    except RouteFileError as exc:
        raise CheckError(str(exc)) from None


def rate_policy(
    rate: float | None,
    routes: Sequence[Route] | None,
    host: str | None,
    sigmas: float = DEFAULT_SIGMAS,
    upper_only: bool = False,
) -> RatePolicy:
    """The rate check for a gateway configured with `rate` and, optionally, the routes of its route file; `host`
    is the Host the load was sent with (the gateway routes by it)."""
    lookup: RouteLookup | None = None if routes is None else route_lookup(routes, host or "")
    return RatePolicy(rate, lookup, sigmas, upper_only)


def expectations_from(path: Path, gateway_service: str | None) -> Expectations:
    """Raises CheckError naming a bad expectations file."""
    try:
        return load_expectations(path, gateway_service)
    except ExpectationsError as exc:
        raise CheckError(str(exc)) from None


def save_recording(path: Path, recording: Recording, host: str | None = None) -> None:
    document = {
        "format": RECORDS_FORMAT,
        "host": host,
        "stopped": recording.stopped,
        "dropped": recording.dropped,
        "without_traceresponse": recording.without_traceresponse,
        "unanswered": recording.unanswered,
        "forged_sent": recording.forged_sent,
        "forged": [f"{trace_id:032x}" for trace_id in recording.forged],
        "records": [record.to_wire() for record in recording.records],
    }
    write_atomically(path, json.dumps(document, separators=(",", ":")) + "\n")


def load_recording(path: Path) -> tuple[Recording, str | None]:
    """The recording and the Host its load was sent with; raises CheckError, naming the file, when it cannot be
    read or is not a records file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckError(f"{path}: cannot read records: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != RECORDS_FORMAT:
        raise CheckError(f"{path}: not a records file of format {RECORDS_FORMAT}")
    try:
        host = document.get("host")
        recording = Recording(
            records=tuple(Record.from_wire(entry) for entry in document["records"]),
            dropped=int(document["dropped"]),
            without_traceresponse=int(document["without_traceresponse"]),
            unanswered=int(document["unanswered"]),
            stopped=None if document["stopped"] is None else float(document["stopped"]),
            forged=tuple(int(trace_id, 16) for trace_id in document["forged"]),
            forged_sent=int(document["forged_sent"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(f"{path}: malformed records file: {type(exc).__name__}: {exc}") from None
    return recording, host if isinstance(host, str) else None


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = [load_recording(path) for path in args.records]
        recording = Recording.merge(part for part, _ in loaded)
        host = args.route_host or next((host for _, host in loaded if host), None)
        options = CheckOptions(
            backend=BackendKind(args.backend),
            backend_url=args.backend_url,
            expectations=expectations_from(Path(args.expectations), args.gateway_service),
            settle=args.settle,
            timeout=args.timeout,
            clock_skew=args.clock_skew,
            check_unannounced=not args.only_announced,
            rates=rate_policy(
                args.rate,
                load_route_file(Path(args.routes_file)) if args.routes_file else None,
                host,
                args.rate_sigmas,
                args.rate_upper_only,
            ),
            concurrency=args.concurrency,
        )
    except CheckError as exc:
        print(f"Trace check: could not run: {exc}")
        return EXIT_CANNOT_CHECK
    status, _ = check_and_report(
        recording, options, args.report, log=lambda line: print(line, file=sys.stderr), workers=len(args.records)
    )
    return status


def add_check_arguments(parser: Any, prefix: str = "", env: Callable[[str], dict[str, str]] | None = None) -> None:
    """The check's options, for this command line (no prefix) and for locust's (`--trace-` and environment
    variables); `parser` is an argparse parser or locust's, whose add_argument also takes env_var."""

    def option(name: str, **kwargs: Any) -> None:
        parser.add_argument(f"--{prefix}{name}", **kwargs, **(env(name) if env else {}))

    # Plain strings only: locust's master sends its options to the workers, and could not serialise a Path.
    option(
        "backend",
        choices=[kind.value for kind in BackendKind],
        default=BackendKind.ZIPKIN.value,
        help="the trace backend's query API: zipkin (Zipkin, the demo collector) or jaeger (default: %(default)s)",
    )
    option(
        "backend-url",
        default=DEFAULT_BACKEND_URL,
        metavar="URL",
        help="its base URL, e.g. http://zipkin:9411 or http://jaeger-query:16686 (default: %(default)s)",
    )
    option(
        "expectations",
        default=str(DEFAULT_FILE),
        metavar="FILE",
        help="the spans a sampled trace of each endpoint holds (default: loadtest/expectations.yaml)",
    )
    option(
        "gateway-service",
        default=None,
        metavar="NAME",
        help="the gateway's GATEWAY_SERVICE_NAME (default: the expectations file's gateway_service)",
    )
    option(
        "rate",
        type=_rate,
        default=None,
        metavar="RATE",
        help="the gateway's GATEWAY_SAMPLE_RATE: fail when the sampled fraction disagrees (default: not checked)",
    )
    option(
        "routes-file",
        default=None,
        metavar="FILE",
        help="the gateway's GATEWAY_ROUTES_FILE: check each route's sample_rate on its own requests",
    )
    option(
        "rate-sigmas",
        type=_positive,
        default=DEFAULT_SIGMAS,
        metavar="N",
        help="standard deviations the sampled count may stray from the expected (default: %(default)s)",
    )
    option(
        "rate-upper-only",
        action="store_true",
        help="check only that no more than the rate was sampled: for a gateway whose GATEWAY_MAX_TRACES_PER_SECOND "
        "or full span queue (a spike) may sample fewer",
    )
    option(
        "settle",
        type=_seconds,
        default=DEFAULT_SETTLE,
        metavar="SECONDS",
        help="grace for span export: quiet seconds before judging; above every reporter's flush interval "
        "(default: %(default)s)",
    )
    option(
        "timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="wait at most this long for spans to settle, and as long again asking for traces (default: %(default)s)",
    )
    option(
        "clock-skew",
        type=_seconds,
        default=DEFAULT_CLOCK_SKEW,
        metavar="SECONDS",
        help="seconds by which this host's clock and the services' may differ (default: %(default)s)",
    )
    option(
        "concurrency",
        type=_count,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="requests to the trace backend at a time (default: %(default)s)",
    )
    option(
        "only-announced",
        action="store_true",
        help="judge only the traces responses announced: for a backend that other traffic also reports to",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.check",
        description="Check in a trace backend that every trace a load run caused is whole or absent.",
    )
    parser.add_argument(
        "--records",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="records written by the locustfile's --trace-records; repeatable, for runs saved separately",
    )
    add_check_arguments(parser)
    parser.add_argument(
        "--route-host",
        default=None,
        metavar="HOST",
        help="the Host the load was sent with, for --routes-file (default: the one in the records file)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the verdict as JSON")
    return parser


def _client(concurrency: int) -> httpx.Client:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(timeout=HTTP_TIMEOUT, trust_env=False, limits=limits)


def _rate(text: str) -> float:
    try:
        return check_rate(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sample rate within [0.0, 1.0]") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of 1 or more")
    return int(text)


def _fingerprint(listing: list[list[SpanView]]) -> Hashable:
    return len(listing), sum(len(trace) for trace in listing)


if __name__ == "__main__":
    raise SystemExit(main())
