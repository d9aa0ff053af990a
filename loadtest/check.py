"""`python -m loadtest.check`: read back from a Zipkin-API collector every trace a load run caused, and judge it.

    python -m loadtest.check --collector http://127.0.0.1:9411 --records records.json

The records file is what `locust -f loadtest/locustfile.py --trace-records FILE` writes. Spans reach a collector
late (every reporter batches them), so the check first waits until the collector's traces of the run stop changing
for `--settle` seconds, or `--timeout` passes. Exit status: 0 when every trace is complete or cleanly unsampled,
1 when one is not (or the run cannot be vouched for), 2 when the check could not run at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from loadtest.traces import (
    DEFAULT_GATEWAY_SERVICE,
    EXPECTED_SERVICES,
    Expectations,
    Record,
    Recording,
    Report,
    SpanView,
    group_by_trace,
    judge,
    span_from_json,
    summary,
    trace_hex,
)

EXIT_PASSED = 0
EXIT_BROKEN = 1
EXIT_CANNOT_CHECK = 2

DEFAULT_COLLECTOR = "http://127.0.0.1:9411"
DEFAULT_SETTLE = 3.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_CLOCK_SKEW = 1.0
API = "/api/v2"
POLL_INTERVAL = 0.25
HTTP_TIMEOUT = 30.0
# Ids per GET /api/v2/traceMany: 100 ids of 32 hex characters keep the URL near 3.5 kB.
TRACE_MANY_CHUNK = 100
MIN_LISTING_LIMIT = 10_000
RECORDS_FORMAT = 1

_T = TypeVar("_T")


class CheckError(Exception):
    """The check could not run; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class CheckOptions:
    collector: str = DEFAULT_COLLECTOR
    expectations: Expectations = field(default_factory=Expectations)
    settle: float = DEFAULT_SETTLE
    timeout: float = DEFAULT_TIMEOUT
    # Seconds by which the load generator's clock and the services' may disagree: the time window of the run is
    # widened by as much on both sides when the collector is asked for the run's traces.
    clock_skew: float = DEFAULT_CLOCK_SKEW
    check_unannounced: bool = True


def check(
    recording: Recording,
    options: CheckOptions,
    *,
    http: httpx.Client | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Report:
    """Waits for the run's spans to settle in the collector, fetches every trace, and judges them all."""
    window = recording.window()
    if window is None:
        return judge(recording, {}, options.expectations)
    start, end = window[0] - options.clock_skew, window[1] + options.clock_skew
    limit = max(MIN_LISTING_LIMIT, 2 * len(recording.records))
    with contextlib.ExitStack() as stack:
        # trust_env=False: a proxy meant for the outside world must not stand between the check and its collector.
        client = http if http is not None else stack.enter_context(httpx.Client(timeout=HTTP_TIMEOUT, trust_env=False))
        zipkin = ZipkinQuery(options.collector, client)
        log(f"waiting for the run's spans to settle in {zipkin.api} (at most {options.timeout:g}s)")
        listing, settled = wait_until_stable(
            lambda: zipkin.traces_between(start, end, limit), _fingerprint, options.settle, options.timeout
        )
        if not settled:
            log(f"spans were still arriving after {options.timeout:g}s: judging what the collector holds now")
        traces = group_by_trace(span for trace in listing for span in trace)
        unlisted = sorted({record.trace_id for record in recording.records} - traces.keys())
        log(f"{len(listing)} traces listed; fetching {len(unlisted)} more by id")
        traces.update(group_by_trace(zipkin.traces(unlisted)))
    return judge(
        recording,
        traces,
        options.expectations,
        check_unannounced=options.check_unannounced,
        listing_truncated=len(listing) >= limit,
    )


def check_and_report(
    recording: Recording,
    options: CheckOptions,
    report_path: Path | None = None,
    *,
    out: Callable[[str], None] = print,
    log: Callable[[str], None] = lambda line: None,
) -> int:
    """Runs the check, prints the summary (or why the check could not run) and returns the exit status."""
    try:
        report = check(recording, options, log=log)
    except CheckError as exc:
        out(f"Trace check: could not run: {exc}")
        return EXIT_CANNOT_CHECK
    out(summary(report))
    if report_path is not None:
        _write_atomically(report_path, json.dumps(report.as_json(), indent=2) + "\n")
    return EXIT_PASSED if report.passed else EXIT_BROKEN


class ZipkinQuery:
    """The few reads of Zipkin's v2 API the check needs; every failure is a CheckError."""

    def __init__(self, collector: str, http: httpx.Client) -> None:
        self.api = collector_api(collector)
        self._http = http
        self._trace_many = True

    def traces_between(self, start: float, end: float, limit: int) -> list[list[SpanView]]:
        """Every trace whose root (or first) span started within [start, end] (epoch seconds), at most `limit`."""
        params = {
            "endTs": str(math.ceil(end * 1000)),
            "lookback": str(max(1, math.ceil((end - start) * 1000))),
            "limit": str(limit),
        }
        return [_spans(trace) for trace in _list(self._get("/traces", params), "a list of traces")]

    def traces(self, trace_ids: Sequence[int]) -> list[SpanView]:
        """The spans of each trace in `trace_ids` the collector holds (a trace it does not hold adds nothing)."""
        spans: list[SpanView] = []
        for at in range(0, len(trace_ids), TRACE_MANY_CHUNK):
            chunk = trace_ids[at : at + TRACE_MANY_CHUNK]
            if len(chunk) > 1 and self._trace_many:
                found = self._get("/traceMany", {"traceIds": ",".join(map(trace_hex, chunk))}, missing_ok=True)
                if found is not None:
                    spans.extend(span for trace in _list(found, "a list of traces") for span in _spans(trace))
                    continue
                # A collector older than Zipkin 2.12 (or Jaeger's Zipkin API) has no traceMany: one GET per trace.
                self._trace_many = False
            for trace_id in chunk:
                found = self._get(f"/trace/{trace_hex(trace_id)}", missing_ok=True)
                spans.extend(_spans(found) if found is not None else ())
        return spans

    def _get(self, path: str, params: dict[str, str] | None = None, *, missing_ok: bool = False) -> Any:
        url = self.api + path
        try:
            response = self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            raise CheckError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            raise CheckError(f"GET {url} answered {response.status_code}: {' '.join(response.text.split())[:200]}")
        try:
            return response.json()
        except ValueError:
            raise CheckError(f"GET {url} answered something other than JSON") from None


def collector_api(collector: str) -> str:
    """The v2 API base of a collector given by its base URL, its API URL or its span endpoint (as the gateway's
    GATEWAY_ZIPKIN_URL names it)."""
    base = collector.strip().rstrip("/")
    for suffix in (f"{API}/spans", API):
        base = base.removesuffix(suffix)
    scheme, sep, rest = base.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise CheckError(f"collector must be an http:// or https:// URL, got {collector!r}")
    return base + API


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


def save_recording(path: Path, recording: Recording) -> None:
    document = {
        "format": RECORDS_FORMAT,
        "stopped": recording.stopped,
        "dropped": recording.dropped,
        "without_traceresponse": recording.without_traceresponse,
        "unanswered": recording.unanswered,
        "records": [
            [f"{r.trace_id:032x}", f"{r.span_id:016x}", r.sampled, r.endpoint, r.started] for r in recording.records
        ],
    }
    _write_atomically(path, json.dumps(document, separators=(",", ":")) + "\n")


def load_recording(path: Path) -> Recording:
    """Raises CheckError, naming the file, when it cannot be read or is not a records file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckError(f"{path}: cannot read records: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != RECORDS_FORMAT:
        raise CheckError(f"{path}: not a records file of format {RECORDS_FORMAT}")
    try:
        return Recording(
            records=tuple(_record(entry) for entry in document["records"]),
            dropped=int(document["dropped"]),
            without_traceresponse=int(document["without_traceresponse"]),
            unanswered=int(document["unanswered"]),
            stopped=None if document["stopped"] is None else float(document["stopped"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(f"{path}: malformed records file: {type(exc).__name__}: {exc}") from None


def parse_expectation(text: str) -> tuple[str, frozenset[str]]:
    """`/api/vote=web,emoji,voting` -> ("/api/vote", {"web", "emoji", "voting"}); `/health=` expects only the
    gateway."""
    endpoint, sep, services = text.partition("=")
    if not sep or not endpoint.startswith("/"):
        raise ValueError(f"expected ENDPOINT=SERVICE,SERVICE... with ENDPOINT a path, got {text!r}")
    return endpoint, frozenset(name.strip().lower() for name in services.split(",") if name.strip())


def expectations_from(gateway_service: str, overrides: Iterable[tuple[str, frozenset[str]]]) -> Expectations:
    return Expectations(gateway_service, {**EXPECTED_SERVICES, **dict(overrides)})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = CheckOptions(
        collector=args.collector,
        expectations=expectations_from(args.gateway_service, args.expect),
        settle=args.settle,
        timeout=args.timeout,
        clock_skew=args.clock_skew,
        check_unannounced=not args.only_announced,
    )
    try:
        recording = Recording.merge(load_recording(path) for path in args.records)
    except CheckError as exc:
        print(f"Trace check: could not run: {exc}")
        return EXIT_CANNOT_CHECK
    return check_and_report(recording, options, args.report, log=lambda line: print(line, file=sys.stderr))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.check",
        description="Check in a Zipkin-API collector that every trace a load run caused is whole or absent.",
    )
    parser.add_argument(
        "--collector", default=DEFAULT_COLLECTOR, help="collector base URL (default: %(default)s)", metavar="URL"
    )
    parser.add_argument(
        "--records",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="records written by the locustfile's --trace-records; repeat for each worker of a distributed run",
    )
    parser.add_argument(
        "--gateway-service",
        default=DEFAULT_GATEWAY_SERVICE,
        help="the gateway's GATEWAY_SERVICE_NAME (default: %(default)s)",
    )
    parser.add_argument(
        "--expect",
        type=_expectation,
        action="append",
        default=[],
        metavar="ENDPOINT=SERVICE,...",
        help="services whose spans a trace of ENDPOINT must hold besides the gateway's (repeatable; default: "
        + "; ".join(f"{path}={','.join(sorted(names))}" for path, names in EXPECTED_SERVICES.items())
        + ")",
    )
    parser.add_argument(
        "--settle",
        type=_seconds,
        default=DEFAULT_SETTLE,
        help="seconds without a new span before judging; longer than every reporter's flush interval "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, help="seconds to wait at most (default: %(default)s)"
    )
    parser.add_argument(
        "--clock-skew",
        type=_seconds,
        default=DEFAULT_CLOCK_SKEW,
        help="seconds by which this host's clock and the services' may differ (default: %(default)s)",
    )
    parser.add_argument(
        "--only-announced",
        action="store_true",
        help="judge only the traces responses announced: for a collector other traffic also reports to",
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the verdict as JSON")
    return parser


def _expectation(text: str) -> tuple[str, frozenset[str]]:
    try:
        return parse_expectation(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def _fingerprint(listing: list[list[SpanView]]) -> Hashable:
    return len(listing), sum(len(trace) for trace in listing)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CheckError(f"the collector answered something other than {what}")
    return value


def _spans(trace: Any) -> list[SpanView]:
    try:
        return [span_from_json(span) for span in _list(trace, "a list of spans")]
    except ValueError as exc:
        raise CheckError(str(exc)) from None


def _record(entry: Any) -> Record:
    trace_id, span_id, sampled, endpoint, started = entry
    if not isinstance(sampled, bool) or not isinstance(endpoint, str):
        raise ValueError(f"bad record {entry!r}")
    return Record(int(trace_id, 16), int(span_id, 16), sampled, endpoint, float(started))


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
